"""The build backend: setuptools, plus mypyc when a wheel is asked to compile the sidecar's hot path.

``PRUNEOPS_COMPILE=1 pip install .`` (what the container images run) builds a wheel whose
:data:`COMPILED` modules are C extensions made by mypyc from their own annotated source
(``setup.py`` runs it), beside the same ``.py`` files, which Python then no longer imports.
On the 2-core development machine that takes the sidecar from 148k to 91k user-space
instructions per forwarded request (``benchmarks/proxy_instructions.py``) and its CPU per
request down by 7-18% (``benchmarks/serving_overhead.py``; the kernel's share does not move).
Without the variable, or for an editable install or an sdist, the build is plain setuptools:
an extension built once and left beside a source file someone then edits would silently
shadow the edit.

What changes from setuptools' hooks: a compiling wheel build asks for mypy (mypyc ships in
it), at the version ``make check`` type-checks with, so ``pip``'s isolated build gets it; a
wheel build starts from an empty ``build/lib``; an editable install says it does not compile.

>>> requested({"PRUNEOPS_COMPILE": "1"}), requested({}), compiles()
(True, False, False)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  every hook this backend leaves as setuptools has it

COMPILE_ENV = "PRUNEOPS_COMPILE"
MYPY = "mypy==2.4.1"  # the dev extra's pin: the compiler is the type checker make check runs
#: The sidecar's per-request path, compiled in a ``PRUNEOPS_COMPILE=1`` wheel (paths in this repository).
COMPILED = ("serving/http1.py", "serving/sidecar.py", "monitoring/loop_metrics.py")
_building_wheel = False  # set by build_wheel: setup.py also runs to read requirements and metadata


def requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the builder asked for compiled modules (``PRUNEOPS_COMPILE=1``).

    >>> requested({"PRUNEOPS_COMPILE": "1"}), requested({"PRUNEOPS_COMPILE": "0"})
    (True, False)
    """
    return env.get(COMPILE_ENV) == "1"


def compiles() -> bool:
    """Whether setup.py, now, compiles :data:`COMPILED`: asked for, and inside :func:`build_wheel`.

    Never for an editable install or an sdist, and not while pip reads requirements or metadata
    (setuptools runs setup.py for those too, before mypyc is installed).

    >>> compiles()  # outside build_wheel
    False
    """
    return _building_wheel and requested()


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' build requirements, and mypy when :func:`requested`.

    >>> "setuptools" in " ".join(get_requires_for_build_wheel())  # doctest: +SKIP
    True
    """
    extra = [MYPY] if requested() else []
    return [*_setuptools.get_requires_for_build_wheel(config_settings), *extra]


def build_wheel(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    """setuptools' wheel, with :data:`COMPILED` compiled when :func:`requested`.

    It starts from an empty ``build/lib``: setuptools copies into it and packs all it finds, so a
    compiled build's extensions left there would ride along in the next plain wheel.

    >>> build_wheel("dist")  # doctest: +SKIP
    'pruneops-0.1.0-cp311-cp311-linux_x86_64.whl'
    """
    global _building_wheel
    for stale in Path("build").glob("lib*"):
        shutil.rmtree(stale)
    _building_wheel = True
    try:
        return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))
    finally:
        _building_wheel = False


def build_editable(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    """setuptools' editable install, never compiled; it says so when ``PRUNEOPS_COMPILE=1`` asked otherwise.

    >>> build_editable("dist")  # doctest: +SKIP
    'pruneops-0.1.0-0.editable-py3-none-any.whl'
    """
    if requested():
        print(f"{COMPILE_ENV}=1 is ignored for an editable install: it runs the source (build a wheel to compile)",
              file=sys.stderr)  # fmt: skip
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
