"""The compiled wheel the images ship: built from exactly what the Dockerfile copies, its hot path
compiled, and the sidecar's own tests passing against it.

The development venv runs the sidecar as Python source (an editable install is never compiled:
scripts/build_backend.py), so without this file nothing would run the C extensions the
container images serve traffic with. Builds through pip's isolated build, as ``docker build`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import build_backend  # noqa: E402  scripts/, put on the path just above
import compiled_site  # noqa: E402

NO_COMPILER = "no C compiler for mypyc: make compiler (apt-get install gcc)"
NO_HEADERS = "no Python headers for mypyc (apt-get install python3-dev)"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("cc") is None, reason=NO_COMPILER),
    pytest.mark.skipif(not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists(), reason=NO_HEADERS),
]
#: Every test that runs the sidecar, run again against the compiled modules: its framing, limits,
#: memory bounds, the attacks and V2 conformance through it (tests/serving), its metrics, the
#: drift service it ships samples to, and the closed loop it feeds (about 3 minutes).
SIDECAR_TESTS = (
    "tests/serving",
    "tests/monitoring/test_loop_metrics.py",
    "tests/monitoring/test_drift_service.py",
    "tests/monitoring/test_closed_loop.py",
)


def build_stage(dockerfile: Path) -> str:
    """The build stage's instructions: the text after the first FROM, up to the second."""
    return dockerfile.read_text().split("\nFROM ")[1]


def build_stage_copies(dockerfile: Path) -> list[str]:
    """The sources of the build stage's ``COPY`` instructions (the build context it reads)."""
    sources: list[str] = []
    for line in build_stage(dockerfile).splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built, as the image builds it, from a context holding only what the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for source in build_stage_copies(ROOT / "Dockerfile"):
        origin, target = ROOT / source, context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(origin, target)
    return compiled_site.build(tmp_path_factory.mktemp("compiled"), source=context)


def test_both_dockerfiles_build_the_compiled_wheel() -> None:
    cpu, gpu = ROOT / "Dockerfile", ROOT / "Dockerfile.gpu"
    assert build_stage_copies(cpu) == build_stage_copies(gpu)
    for dockerfile in (cpu, gpu):
        stage = build_stage(dockerfile)
        assert re.search(r"^ENV .*\bPRUNEOPS_COMPILE=1\b", stage, re.MULTILINE), dockerfile.name
        assert re.search(r"apt-get install .*\bgcc=", stage, re.DOTALL), f"{dockerfile.name}: mypyc needs a C compiler"


def test_the_hot_path_is_imported_compiled_from_the_wheel(site: Path) -> None:
    env = compiled_site.site_env(dict(os.environ), site)
    compiled = compiled_site.compiled_modules()
    assert len(build_backend.COMPILED) == len(compiled) == 3
    assert compiled_site.strays(env, site, compiled, ".so") == {}, "not compiled, or not from the wheel"
    # The pure modules beside them are the wheel's source, untouched.
    assert compiled_site.strays(env, site, ("pruneops.serving.v2tensors",), ".py") == {}


def test_the_sidecar_tests_pass_against_the_compiled_modules(site: Path) -> None:
    env = compiled_site.site_env(dict(os.environ), site)
    env["PYTHONPATH"] += os.pathsep + str(ROOT)  # after the wheel: for the tests' own helpers (python -m tests...)
    # The compiled modules are imported before pytest starts, so every test gets them from sys.modules;
    # the sidecar processes the tests start inherit the environment. importlib mode: pytest puts no
    # test folder on sys.path, where this repository's pruneops/ would come first.
    runner = ("import sys, importlib, pytest\n"
              "for name in sys.argv[1].split(','):\n"
              "    assert importlib.import_module(name).__file__.endswith('.so'), name\n"
              "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--import-mode=importlib', *sys.argv[2:]]))"
              )  # fmt: skip
    command = [sys.executable, "-c", runner, ",".join(compiled_site.compiled_modules()), *SIDECAR_TESTS]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout), run.stdout[-2000:]
