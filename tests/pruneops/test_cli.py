"""The pruneops CLI as a user runs it: real subprocesses, tables, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pruneops.cli", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_init_demo_then_manage_aliases(tmp_path: Path) -> None:
    first = run_cli("init-demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "champion" in first.stdout and "baseline" in first.stdout

    again = run_cli("init-demo", cwd=tmp_path)  # reuses the champion, registers nothing new
    assert again.returncode == 0
    versions = run_cli("versions", "digits", cwd=tmp_path)
    assert versions.returncode == 0 and "│ 1 " in versions.stdout and "│ 2 " not in versions.stdout
    # Narrower than the table (a small terminal; a pipe is 80): one block per row, no cell cut.
    narrow = run_cli("versions", "digits", cwd=tmp_path, env={"COLUMNS": "40"})
    assert narrow.returncode == 0 and "…" not in narrow.stdout and "│" not in narrow.stdout
    assert "  version: 1\n  aliases: champion\n  source: baseline\n" in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 40

    rollback = run_cli("rollback", "digits", cwd=tmp_path)
    assert rollback.returncode == 1
    assert rollback.stderr.strip() == (
        "error: model 'digits' has no previous version to roll back to; pass one with --to"
    )
    assert "Traceback" not in rollback.stderr

    history = run_cli("history", "digits", cwd=tmp_path)
    assert history.returncode == 0 and "init-demo" in history.stdout and "champion" in history.stdout

    # Champion moved with MLflow's API (what a click in its UI does): history shows it, and
    # rollback goes back to what served before.
    from mlflow import MlflowClient

    from pruneops.registry import Registry

    registry = Registry()
    second = registry.register("digits", registry.download("digits", "1", tmp_path / "v1"), tags={"gate": "passed"})
    MlflowClient(registry.tracking_uri, registry.tracking_uri).set_registered_model_alias("digits", "champion", "2")
    seen = run_cli("history", "digits", cwd=tmp_path)
    assert seen.returncode == 0 and "│ outside " in seen.stdout and "MLflow UI or API" in seen.stdout, seen.stdout
    back = run_cli("rollback", "digits", "--reason", "undo the UI change", cwd=tmp_path)
    assert back.returncode == 0 and "champion v2 -> v1" in back.stdout, back.stdout + back.stderr
    assert registry.aliases("digits")["champion"] == "1" and second.version == "2"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("history", "nope"), {}, "error: model 'nope' is not registered"),
        (("promote", "nope"), {}, "error: model 'nope' is not registered"),
        (("history", "x"), {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "cannot reach the MLflow tracking server"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.unit
def test_unknown_model_leaves_registry_empty(tmp_path: Path) -> None:
    run_cli("rollback", "ghost", cwd=tmp_path)
    result = run_cli("versions", "ghost", cwd=tmp_path)
    assert result.returncode == 1 and "not registered" in result.stderr


@pytest.mark.unit
def test_check_recipe(tmp_path: Path) -> None:
    good = run_cli("check-recipe", str(Path("recipes/wanda-2to4-gpu.yaml").resolve()), cwd=tmp_path)
    assert good.returncode == 0 and "valid" in good.stdout and "pattern: '2:4'" in good.stdout
    typo = tmp_path / "typo.yaml"
    typo.write_text("prune: {method: wanda, patern: '2:4'}\n")
    bad = run_cli("check-recipe", str(typo), cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: invalid recipe: prune.patern: unknown field; did you mean 'pattern'?"


@pytest.mark.unit
@pytest.mark.parametrize("command", ["serve", "sidecar", "controller", "trigger"])
def test_every_server_listens_on_loopback_unless_told(command: str) -> None:
    import typer

    from pruneops.cli import app

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    (host,) = [p for p in click_command.params if p.name == "host"]
    assert host.default == "127.0.0.1" and "--host" in host.opts
