"""Every installed module's docstring examples run, under the name it is installed as.

pytest's ``--doctest-modules`` imports a file by its path, so ``serving/app.py`` would load as
``serving.app``: a second copy of ``pruneops.serving.app`` (and its Prometheus metrics, which
register once per process). This test imports each module by its installed name instead and
runs its examples with the flags pytest uses (``ELLIPSIS``).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def installed_modules() -> list[str]:
    """Every module of the distribution: each package in pyproject's ``package-dir`` and below."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    names = set(packages)
    for package in packages:
        path = importlib.import_module(package).__path__
        names |= {info.name for info in pkgutil.walk_packages(path, prefix=f"{package}.")}
    return sorted(names)


MODULES = installed_modules()


def test_the_walk_reaches_every_mapped_folder() -> None:
    assert {
        "pruneops.serving.sidecar",
        "pruneops.monitoring.drift",
        "pruneops.pipelines.trigger",
        "pruneops.components.validate.component",
        "pruneops.pruning.api",
    } <= set(MODULES)
    assert not [name for name in MODULES if name.split(".")[0] != "pruneops"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
