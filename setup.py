"""setuptools' hook for the one thing pyproject.toml cannot say: the compiled wheel's extensions.

Everything else is in pyproject.toml. With ``PRUNEOPS_COMPILE=1`` (scripts/build_backend.py) mypyc
compiles the sidecar's hot path. It names a module by its folders, and this repository's
folders are not the installed ones (``serving/`` is ``pruneops.serving``), so it compiles from
``build/mypyc-src/pruneops/``, the installed layout as symlinks (scripts/package_tree.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_backend  # noqa: E402  scripts/, put on the path just above
import package_tree  # noqa: E402


def compiled_extensions() -> list[Extension]:
    """mypyc's extensions for build_backend.COMPILED when compiling, else none."""
    if not build_backend.compiles():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as missing:
        raise SystemExit(f"PRUNEOPS_COMPILE=1 needs mypyc ({build_backend.MYPY}): {missing}") from missing
    tree = package_tree.build(ROOT, ROOT / "build" / "mypyc-src")
    # serving/http1.py is pruneops/serving/http1.py in the tree (both folders are installed under their own names)
    modules = [str(tree / path) for path in build_backend.COMPILED]
    # They share one library, pruneops_hot_path__mypyc: a top-level name, where mypyc puts it (black's wheels too)
    return mypycify(modules, opt_level="3", group_name="pruneops_hot_path", target_dir=str(ROOT / "build" / "mypyc"))


setup(ext_modules=compiled_extensions())
