"""The ``pruneops`` command line (typer + rich).

Results print as tables; a failure prints one line and exits with status 1.

>>> from typer.testing import CliRunner
>>> CliRunner().invoke(app, ["--help"]).exit_code
0
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pruneops.errors import PruneopsError

app = typer.Typer(
    name="pruneops",
    help="Prune neural networks, prove the speedup on the target, serve, watch and roll back.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
ModelArg = Annotated[str, typer.Argument(help="Registered model name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why; recorded in the audit trail.")]


def _one_line_errors(func: F) -> F:
    """Print a user error as one red line and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PruneopsError as err:
            err_console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version_table(title: str, rows: list[Any]) -> Table:
    table = Table(title=title)
    for column in ("version", "aliases", "source", "method", "pattern", "sparsity", "accuracy", "gate", "created"):
        table.add_column(column)
    for info in rows:
        table.add_row(
            info.version,
            ", ".join(info.aliases) or "-",
            info.tag("source", "-"),
            info.tag("method", "-"),
            info.tag("pattern", "-"),
            info.tag("sparsity", "-"),
            info.tag("accuracy", "-"),
            info.tag("gate", "-"),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


@app.command("init-demo")
@_one_line_errors
def init_demo_cmd(
    name: Annotated[str, typer.Option(help="Model name to register.")] = "digits",
    task: Annotated[str, typer.Option(help="Task import path.")] = "pruneops.tasks.digits:task",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Register a new baseline even if a champion exists.")] = False,
) -> None:
    """Train the task's dense baseline and register it as version 1, alias champion."""
    from pruneops.demo import init_demo
    from pruneops.settings import tracking_uri

    with console.status(f"training and registering the {name} baseline"):
        info = init_demo(name, task, seed, force)
    console.print(_version_table(f"{name} @ {tracking_uri()}", [info]))


@app.command("demo")
@_one_line_errors
def demo_cmd(name: Annotated[str, typer.Option(help="Model name.")] = "digits") -> None:
    """Run the embedded demo from nothing: register the digits baseline and show the registry."""
    from pruneops.demo import init_demo
    from pruneops.registry import Registry

    with console.status("training and registering the digits baseline"):
        init_demo(name)
    console.print(_version_table(f"registered versions of {name}", Registry().versions(name)))


@app.command("check-recipe")
@_one_line_errors
def check_recipe_cmd(path: Annotated[str, typer.Argument(help="Recipe YAML file.")]) -> None:
    """Validate a recipe and print it with every default filled in."""
    from pruneops.recipe import dump_recipe, load_recipe

    recipe = load_recipe(path if path.endswith((".yaml", ".yml", ".json")) else path + ".yaml")
    console.print(f"[green]{path}: valid[/] (sha256 {recipe.sha256()[:12]})")
    console.print(dump_recipe(recipe), highlight=False, markup=False)


@app.command("versions")
@_one_line_errors
def versions_cmd(model: ModelArg) -> None:
    """List a model's versions with their aliases, lineage tags and gate."""
    from pruneops.registry import Registry

    console.print(_version_table(f"versions of {model}", Registry().versions(model)))


@app.command("history")
@_one_line_errors
def history_cmd(model: ModelArg) -> None:
    """Print every alias change of a model: when, what, who and why."""
    from pruneops.registry import Registry

    events = Registry().history(model)
    table = Table(title=f"alias history of {model}")
    for column in ("when (UTC)", "action", "alias", "from", "to", "who", "why"):
        table.add_column(column)
    for event in events:
        table.add_row(
            event.at.replace("T", " ")[:19],
            event.action,
            event.alias,
            f"v{event.from_version}" if event.from_version else "-",
            f"v{event.version}" if event.version else "(removed)",
            event.who,
            event.why or "-",
        )
    console.print(table)


@app.command("promote")
@_one_line_errors
def promote_cmd(
    model: ModelArg,
    version: Annotated[str | None, typer.Argument(help="Version to promote; default: the challenger.")] = None,
    reason: ReasonOpt = "manual promotion",
) -> None:
    """Make a version (default: the challenger) champion; the old champion becomes previous."""
    from pruneops.registry import Registry

    change = Registry().promote(model, version, why=reason)
    console.print(
        f"[green]{model}:[/] {change.message}" if change.changed else f"{model}: {change.message} (no change)"
    )


@app.command("rollback")
@_one_line_errors
def rollback_cmd(
    model: ModelArg,
    to: Annotated[str | None, typer.Option("--to", help="Version to roll back to; default: previous.")] = None,
    reason: ReasonOpt = "manual rollback",
) -> None:
    """Make the previous version (or --to VERSION) champion again."""
    from pruneops.registry import Registry

    change = Registry().rollback(model, to, why=reason)
    console.print(
        f"[green]{model}:[/] {change.message}" if change.changed else f"{model}: {change.message} (no change)"
    )


def main() -> None:
    """Console-script entry point."""
    import os

    # MLflow logs schema migrations at INFO on every new store; the CLI shows its own progress.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    app()


if __name__ == "__main__":
    main()
