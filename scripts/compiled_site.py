"""Build the compiled wheel and lay it out as a folder to run pruneops from, beside the editable install.

The container images install pruneops with ``PRUNEOPS_COMPILE=1`` (scripts/build_backend.py), so
their sidecar runs mypyc-compiled modules; the development venv's editable install runs the
same modules as Python source. To measure and test what the images ship without an image,
:func:`build` makes that wheel from a source tree and installs it, with no dependencies, into a
folder, and :func:`site_env` gives a process environment that imports ``pruneops`` from there
(benchmarks/serving_overhead.py, benchmarks/proxy_instructions.py,
tests/packaging/test_compiled_wheel.py). The same works for a plain package tree of another
version (scripts/package_tree.py), which is how the benchmarks compare before and after.

>>> env = site_env({"PATH": "/usr/bin"}, Path("/opt/site"))
>>> env["PYTHONPATH"], env["PYTHONSAFEPATH"]
('/opt/site', '1')
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import build_backend

ROOT = Path(__file__).resolve().parents[1]


def build(dest: Path, source: Path = ROOT, timeout: float = 900) -> Path:
    """Build ``source``'s compiled wheel (pip's isolated build) and install it alone into ``dest/site``.

    >>> site = build(Path(tempfile.mkdtemp()))  # about 25 s on 2 cores  # doctest: +SKIP
    >>> sorted(path.name for path in site.glob("*__mypyc*"))  # doctest: +SKIP
    ['pruneops_hot_path__mypyc.cpython-311-x86_64-linux-gnu.so']
    """
    wheels, site = dest / "wheel", dest / "site"
    env = {**os.environ, build_backend.COMPILE_ENV: "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)],
                   env=env, check=True, timeout=timeout)  # fmt: skip
    wheel = next(wheels.glob("pruneops-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
                   check=True, timeout=timeout)  # fmt: skip
    return site


def site_env(env: dict[str, str], site: Path) -> dict[str, str]:
    """``env`` with ``site`` first on the import path, ahead of this repository's editable install.

    PYTHONSAFEPATH keeps ``python -m`` from putting the working directory first, where this
    repository's ``pruneops/`` would win.

    >>> site_env({}, Path("/opt/site"))["PYTHONPATH"]
    '/opt/site'
    """
    return {**env, "PYTHONPATH": str(site.resolve()), "PYTHONSAFEPATH": "1"}


def module_files(env: dict[str, str], modules: tuple[str, ...]) -> dict[str, str]:
    """Where a process with ``env`` imports each of ``modules`` from (their ``__file__``).

    >>> module_files(dict(os.environ), ("json",))["json"].endswith("json/__init__.py")
    True
    """
    code = "import importlib, sys; [print(importlib.import_module(name).__file__) for name in sys.argv[1:]]"
    out = subprocess.run([sys.executable, "-c", code, *modules], env=env, capture_output=True, text=True, check=True)
    return dict(zip(modules, out.stdout.split(), strict=True))


def strays(env: dict[str, str], site: Path, modules: tuple[str, ...], suffix: str) -> dict[str, str]:
    """Those of ``modules`` that a process with ``env`` does not import from ``site`` as ``suffix`` files.

    >>> strays(dict(os.environ), Path("/opt/site"), ("json",), ".py")["json"].endswith("json/__init__.py")
    True
    """
    root = str(site.resolve())
    return {name: file for name, file in module_files(env, modules).items()
            if not (file.startswith(root) and file.endswith(suffix))}  # fmt: skip


def compiled_modules() -> tuple[str, ...]:
    """The installed names of build_backend.COMPILED.

    >>> compiled_modules()
    ('pruneops.serving.http1', 'pruneops.serving.sidecar', 'pruneops.monitoring.loop_metrics')
    """
    return tuple("pruneops." + path.removesuffix(".py").replace("/", ".") for path in build_backend.COMPILED)
