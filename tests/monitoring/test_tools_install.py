"""`make tools` (scripts/monitoring-tools) gets Prometheus and Alertmanager onto a machine
that has neither, without root, or says plainly why it could not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "monitoring-tools"
MONITORING = {"prometheus", "promtool", "prometheus-alertmanager", "alertmanager", "amtool"}


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH folder linking every command of this machine's PATH except Prometheus's
    and Alertmanager's (and ``hidden``): a machine that lacks them."""
    folder = tmp_path / "path"
    folder.mkdir(parents=True)
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        for command in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if command.name not in MONITORING | set(hidden) and command.is_file():
                (folder / command.name).unlink(missing_ok=True)
                (folder / command.name).symlink_to(command)
    return str(folder)


def run_script(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "TOOLS": str(tmp_path / ".tools"), "HOME": str(tmp_path)}
    return subprocess.run([str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_without_apt_it_says_what_to_install_and_does_not_fail(tmp_path: Path) -> None:
    out = run_script(tmp_path, path_without(tmp_path, "apt-get"))
    assert out.returncode == 0, out.stderr
    assert "WARNING no apt-get" in out.stderr and "make demo" in out.stderr
    assert not (tmp_path / ".tools" / "bin" / "prometheus").exists()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_installs_prometheus_and_alertmanager_into_the_project(tmp_path: Path) -> None:
    first = run_script(tmp_path, path_without(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "installing Debian's prometheus and prometheus-alertmanager" in first.stdout
    assert "nothing installed system-wide" in first.stdout
    tools = tmp_path / ".tools" / "bin"
    says = {"prometheus": "prometheus", "promtool": "promtool", "prometheus-alertmanager": "alertmanager"}
    for name in ("prometheus", "promtool", "prometheus-alertmanager", "amtool"):
        version = subprocess.run([tools / name, "--version"], capture_output=True, text=True, check=True)
        assert f"{says.get(name, name)}, version" in version.stdout + version.stderr
    # A second run finds them and downloads nothing.
    again = run_script(tmp_path, path_without(tmp_path / "again") + os.pathsep + str(tools))
    assert again.returncode == 0 and again.stdout.startswith("monitoring tools: found")
