"""How the CLI shows rows and run progress, readable at any width and in a log file.

A table that does not fit the console (a narrow terminal, or a pipe, which rich treats as
80 columns) prints as one block per row, ``column: value`` per line, so no cell is cut.

>>> from io import StringIO
>>> from rich.console import Console
>>> narrow = Console(file=StringIO(), width=30)
>>> show_rows(narrow, "versions", ["version", "aliases"], [["2", "champion, challenger"]])
>>> print(narrow.file.getvalue().strip())
versions
  version: 2
  aliases: champion, challenger
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pruneops.pipelines.kfplog import StepEvent

# rich draws a table cell as " value " plus a rule: three columns per cell, one more per table.
_CELL_PADDING = 3


def table_width(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Columns a table of these rows needs without cutting any cell.

    >>> table_width(["a", "bb"], [["ccc", "d"]])
    12
    """
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    return sum(w + _CELL_PADDING for w in widths) + 1


def show_rows(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table when it fits ``console``'s width, else one ``column: value`` block per row.

    >>> from io import StringIO
    >>> rows = [["1", "champion"], ["2", "challenger"]]
    >>> wide = Console(file=StringIO(), width=80)
    >>> show_rows(wide, "digits", ["version", "aliases"], rows)  # fits: a table
    >>> wide.file.getvalue().splitlines()[4]
    '│ 1       │ champion   │'
    >>> narrow = Console(file=StringIO(), width=10)
    >>> show_rows(narrow, "digits", ["version", "aliases"], rows)  # too narrow: one block per row
    >>> print(narrow.file.getvalue())
    digits
      version: 1
      aliases: champion
    <BLANKLINE>
      version: 2
      aliases: challenger
    <BLANKLINE>
    """
    if table_width(columns, rows) <= console.width:
        table = Table(title=title)
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    console.print(escape(title), soft_wrap=True, highlight=False)
    for number, row in enumerate(rows):
        if number:
            console.print()
        for column, cell in zip(columns, row, strict=True):
            console.print(f"  {escape(column)}: {escape(cell)}", soft_wrap=True, highlight=False)


def step_lines(console: Console) -> Callable[[StepEvent], None]:
    """A run's ``on_step``: one line per finished step with its duration (``ok prune 12.3s``).

    ``console`` must be bound to the real stdout before the run (inside it, stdout is KFP's log).

    >>> from io import StringIO
    >>> out = Console(file=StringIO(), width=80)
    >>> show = step_lines(out)
    >>> show(StepEvent("prune", "started")); show(StepEvent("prune", "SUCCESS", 12.34))
    >>> out.file.getvalue()
    '  ok     prune            12.3s\\n'
    """

    def show(event: StepEvent) -> None:
        if event.status == "started":
            return
        mark = "ok" if event.status == "SUCCESS" else "FAILED"
        took = f"{event.seconds:.1f}s" if event.seconds is not None else "?"
        console.print(f"  {mark:<6} {event.step:<14} {took:>7}", highlight=False, soft_wrap=True)

    return show
