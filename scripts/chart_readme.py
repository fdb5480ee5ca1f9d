"""Write helm/pruneops/README.md from the chart's values.yaml, in the manner of helm-docs.

Every leaf value gets a row: its key path, type, default, and the comment above it (or, if
it has none, its block's). Run ``make chart-readme``; a test fails when the
committed README is stale.

>>> rows = value_rows("# The image.\\nimage:\\n  # Its tag.\\n  tag: v1\\n  pullPolicy: Always\\n")
>>> [(r.key, r.default, r.description) for r in rows]
[('image.tag', '"v1"', 'Its tag.'), ('image.pullPolicy', '"Always"', 'The image.')]
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "pruneops"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"']+):(?P<rest>.*)$")


@dataclass(frozen=True)
class Row:
    key: str
    kind: str
    default: str
    description: str


def value_rows(text: str) -> list[Row]:
    """One row per leaf of the values file, with the comments that describe it."""
    data = yaml.safe_load(text)
    rows: list[Row] = []
    stack: list[tuple[int, str, str]] = []  # (indent, key, description)
    comment: list[str] = []
    leaf_indent: int | None = None  # lines deeper than a leaf are its value (a list, a block of text)
    for line in text.splitlines():
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        if leaf_indent is not None and (not stripped or depth > leaf_indent):
            continue
        leaf_indent = None
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not stripped or not match or stripped.startswith("- "):
            if not stripped:
                comment = []
            continue
        indent, key = len(match["indent"]), match["key"].strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        own = " ".join(c for c in comment if c)
        comment = []
        path = [k for _, k, _ in stack] + [key]
        value = _lookup(data, path)
        if isinstance(value, dict) and value:
            stack.append((indent, key, own))
            continue
        inherited = stack[-1][2] if stack else ""  # the block's own comment, not a grandparent's
        rows.append(Row(".".join(path), _kind(value), _shown(value), own or inherited))
        leaf_indent = indent
    return rows


def _lookup(data: object, path: list[str]) -> object:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _shown(value: object) -> str:
    """A default as JSON; a long text (an embedded recipe) only by its first line."""
    text = json.dumps(value)
    if isinstance(value, str) and ("\n" in value or len(text) > 80):
        return json.dumps(value.splitlines()[0][:60] + " ...")
    return text


def _kind(value: object) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "null"
    )


def render(chart: Path = CHART) -> str:
    """The chart's README: a short introduction and the table of values."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    rows = value_rows((chart / "values.yaml").read_text())
    lines = [
        f"# {meta['name']}",
        "",
        f"{meta.get('description', '')} Version {meta['version']}, app version {meta.get('appVersion', '')}.",
        "",
        "Install, upgrade and the cluster prerequisites are in pruneops's",
        "[deployment guide](../../docs/deployment.md#deploy-on-kubernetes). `helm test RELEASE`",
        "checks that the model server answers ready. `values.schema.json` checks every override.",
        "",
        "This file is generated from `values.yaml` by `make chart-readme`; edit the comments there.",
        "",
        "## Values",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for row in rows:
        default, description = row.default.replace("|", "\\|"), row.description.replace("|", "\\|")
        lines.append(f"| `{row.key}` | {row.kind} | `{default}` | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = CHART / "README.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
