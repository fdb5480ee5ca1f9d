"""Every installed module's docstring examples run, under the name it is installed as.

pytest's ``--doctest-modules`` imports a file by its path, so ``serving/app.py`` would load as
``serving.app``: a second copy of ``pruneops.serving.app`` (and its Prometheus metrics, which
register once per process). This test imports each module by its installed name instead and
runs its examples with the flags pytest uses (``ELLIPSIS``).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import pkgutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def public_functions() -> dict[str, Callable[..., Any]]:
    """Every public module-level function, by its installed dotted name; CLI verbs document
    themselves through ``--help`` and are left out."""
    from pruneops.cli import app

    verbs = {inspect.unwrap(command.callback) for command in app.registered_commands if command.callback}
    found = {}
    for name in MODULES:
        for attr, obj in vars(importlib.import_module(name)).items():
            public = not attr.startswith("_") and inspect.isfunction(obj) and obj.__module__ == name
            if public and inspect.unwrap(obj) not in verbs:
                found[f"{name}.{attr}"] = obj
    return found


def test_every_public_function_shows_an_example() -> None:
    without = sorted(name for name, function in public_functions().items() if ">>>" not in (function.__doc__ or ""))
    assert not without, f"public functions without a docstring example: {without}"
