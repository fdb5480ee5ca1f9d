"""Lay out the installed package as symlinks, for tools that cannot follow setuptools' mapping.

pyproject.toml maps the repository's top-level folders (``serving/``, ``monitoring/``, ...) to
``pruneops.serving``, ``pruneops.monitoring``, ...; the editable install resolves that with an
import hook, which mypy does not run. This script builds ``DEST/pruneops/`` whose entries link
to the real files, so mypy checks every module under the name it is installed as (``make check``
runs it first; ``mypy_path`` points there).

>>> mapping = package_dirs(ROOT / "pyproject.toml")
>>> mapping["pruneops.serving"], mapping["pruneops"]
('serving', 'pruneops')
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path) -> dict[str, str]:
    """The ``[tool.setuptools] package-dir`` table: installed package name to repository folder.

    >>> package_dirs(ROOT / "pyproject.toml")["pruneops.monitoring"]
    'monitoring'
    """
    return dict(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"])


def build(root: Path, dest: Path) -> Path:
    """Replace ``dest`` with a tree of symlinks shaped like the installed ``pruneops``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     top = build(ROOT, Path(tmp) / "tree")
    ...     (top / "serving" / "sidecar.py").resolve() == ROOT / "serving" / "sidecar.py"
    True
    """
    mapping = package_dirs(root / "pyproject.toml")
    shutil.rmtree(dest, ignore_errors=True)
    top = dest / "pruneops"
    top.mkdir(parents=True)
    for entry in (root / mapping["pruneops"]).iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry.resolve())
    for name, folder in mapping.items():
        if name != "pruneops":
            (dest / name.replace(".", "/")).symlink_to((root / folder).resolve(), target_is_directory=True)
    return top


if __name__ == "__main__":
    build(ROOT, Path(sys.argv[1]))
