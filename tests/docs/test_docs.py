"""The documentation's commands work: the README's quickstart runs as written, every
``pruneops`` command in the docs parses with the real CLI, and every ``make`` target exists.

A fenced block preceded by ``<!-- docs-test: quickstart -->`` is a bash block the quickstart
test runs (all of them in order, in one shell); ``<!-- docs-test: quickstart file=NAME -->``
before a block writes it to ``NAME`` first.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pruneops.cli import app

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- docs-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    lang: str
    body: str
    mark: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with their docs-test marks."""
    return [Block(path, m["lang"], m["body"], m["mark"]) for m in FENCE.finditer(path.read_text())]


def shell_commands(block: Block) -> list[str]:
    """One command per line (continuations joined), comments and trailing ``&`` dropped."""
    joined = block.body.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        if words:
            commands.append(shlex.join(words))
    return commands


def doc_commands(program: str) -> list[tuple[str, list[str]]]:
    """Every ``program ...`` command in the docs' bash blocks: (where, its arguments)."""
    found = []
    for path in DOCS:
        for block in blocks(path):
            if block.lang not in ("bash", "sh", "console"):
                continue
            for command in shell_commands(block):
                words = shlex.split(command)
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words and Path(words[0]).name == program:
                    found.append((f"{path.relative_to(ROOT)}: {command}", words[1:]))
    return found


def parse(args: list[str]) -> str | None:
    """Parse ``pruneops ARGS`` with the real CLI without running it (``--help`` is eager: it
    stops the command after its arguments were parsed). Returns the usage error, if any: an
    unknown command, an unknown option, an option without its value."""
    result = CliRunner().invoke(app, [*args, "--help"])
    return None if result.exit_code == 0 else result.output.strip()


@pytest.mark.unit
def test_the_docs_show_pruneops_commands() -> None:
    assert len(doc_commands("pruneops")) >= 15  # the check below looks at something


@pytest.mark.unit
@pytest.mark.parametrize(("where", "args"), doc_commands("pruneops"), ids=lambda v: str(v)[:80])
def test_every_pruneops_command_in_the_docs_parses(where: str, args: list[str]) -> None:
    error = parse(args)
    assert error is None, f"{where}\n{error}"


@pytest.mark.unit
def test_a_stale_command_fails_the_parse() -> None:
    assert "No such option: --too" in (parse(["rollback", "digits", "--too", "1"]) or "")
    assert "No such command 'rollout'" in (parse(["rollout", "digits"]) or "")
    assert parse(["rollback", "digits", "--to", "1"]) is None


@pytest.mark.unit
@pytest.mark.parametrize(("where", "args"), doc_commands("make"), ids=lambda v: str(v)[:60])
def test_every_make_target_in_the_docs_exists(where: str, args: list[str]) -> None:
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True)
    assert "No rule to make target" not in dry.stderr, f"{where}: {dry.stderr}"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    found, fence = set(), False
    for line in path.read_text().splitlines():
        fence = not fence if line.startswith("```") else fence
        if not fence and (heading := re.match(r"#{1,4} (.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.unit
@pytest.mark.parametrize("page", [*DOCS, ROOT / "CHANGELOG.md"], ids=lambda p: p.name)
def test_every_link_between_the_pages_resolves(page: Path) -> None:
    broken = []
    for label, target in re.findall(r"\[([^\]]*)\]\(([^)\s]*)\)", page.read_text()):
        path, _, anchor = target.partition("#")
        if path.startswith(("http://", "https://")):
            continue
        dest = (page.parent / path) if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(f"[{label}]({target})")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.integration
@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in blocks(ROOT / "README.md"):
        if not block.mark or not block.mark.startswith("quickstart"):
            continue
        if "file=" in block.mark:
            (tmp_path / block.mark.split("file=", 1)[1].strip()).write_text(block.body)
        else:
            script.append(block.body)
    assert len(script) >= 4, "the quickstart's blocks are marked"
    # The reader has activated .venv: its bin first on PATH, as `source .venv/bin/activate` does.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    out = ran.stdout
    assert ran.returncode == 0, (out + ran.stderr)[-4000:]
    assert "cancer v2 (from v1): gate passed, alias challenger" in out
    assert re.search(r"x-pruneops-version: 2\s.*x-pruneops-version: 1", out, re.S | re.I), out[-3000:]
    assert re.search(r'^pruneops_requests_total\{.*code="200".*\} [1-9]', out, re.M), out[-3000:]
    assert "quickstart: back to the dense model" in out  # the rollback, in `pruneops history`
