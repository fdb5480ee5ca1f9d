"""File digests: what registration records and every load checks.

Registration records the sha256 of every file it uploads as a version tag named after the
file's artifact path: ``pruneops.sha256.model/model.safetensors``,
``pruneops.sha256.reference/reference.parquet``. Every download of a version's folder is
checked against them before anything parses a byte: a changed, truncated, missing or added
file is refused with :class:`IntegrityError`. This catches whoever can write the artifact
store but not the registry's tags, and any corruption on the way; a registry writer who
registers a version of their own is stopped by the trust rules instead (:mod:`pruneops.trust`).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "a.txt").write_text("hello")
>>> digests = file_digests(folder, "model")
>>> digests
{'model/a.txt': '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'}
>>> verify_folder(folder, "model", digest_tags(digests))
>>> _ = (folder / "a.txt").write_text("tampered")
>>> verify_folder(folder, "model", digest_tags(digests))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pruneops.errors.IntegrityError: model/a.txt: sha256 d121... differs from the 2cf2... recorded at registration
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from pruneops.errors import IntegrityError

#: Short tag name prefix (the registry adds ``pruneops.``): ``sha256.<artifact path>``.
DIGEST_TAG = "sha256."
_CHUNK = 1 << 20
#: What MLflow itself writes into a model folder when it loads it: ``mlflow.pyfunc.load_model``
#: of ``models:/NAME/V`` on a local store writes ``registered_model_meta`` (name and version,
#: YAML) into the stored folder. pruneops never reads it, so it is neither recorded nor checked.
MLFLOW_BOOKKEEPING = frozenset({"registered_model_meta"})


def sha256_file(path: Path) -> str:
    """The hex sha256 of one file, read in 1 MiB chunks.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = path.write_bytes(b"")
    >>> sha256_file(path)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: str | Path, under: str) -> dict[str, str]:
    """``{"<under>/<relative path>": sha256}`` for every file below ``folder`` (but MLflow's bookkeeping).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "arch.json").write_text("{}")
    ...     file_digests(tmp, "model")
    {'model/arch.json': '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a'}
    """
    folder = Path(folder)
    return {
        f"{under}/{path.relative_to(folder).as_posix()}": sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() not in MLFLOW_BOOKKEEPING
    }


def digest_tags(digests: Mapping[str, str]) -> dict[str, str]:
    """Short tag names (``sha256.model/arch.json``) for :meth:`Registry.register`.

    >>> digest_tags({"model/arch.json": "44136f"})
    {'sha256.model/arch.json': '44136f'}
    """
    return {DIGEST_TAG + path: value for path, value in digests.items()}


def recorded_digests(tags: Mapping[str, str], under: str) -> dict[str, str]:
    """The digests recorded for the files under ``under``, from short or ``pruneops.``-prefixed tags.

    >>> recorded_digests({"pruneops.sha256.model/a": "1", "pruneops.sha256.reference/b": "2"}, "model")
    {'model/a': '1'}
    """
    found = {}
    for key, value in tags.items():
        short = key.removeprefix("pruneops.")
        if short.startswith(DIGEST_TAG) and short.removeprefix(DIGEST_TAG).startswith(under + "/"):
            found[short.removeprefix(DIGEST_TAG)] = value
    return found


def verify_folder(folder: str | Path, under: str, tags: Mapping[str, str], what: str = "") -> None:
    """Refuse ``folder`` unless its files are exactly those recorded in ``tags``, byte for byte.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "arch.json").write_text("{}")
    ...     recorded = digest_tags(file_digests(tmp, "model"))
    ...     verify_folder(tmp, "model", recorded)  # as registered: nothing to say
    ...     _ = (Path(tmp) / "arch.json").write_text('{"factory": "os:system"}')
    ...     verify_folder(tmp, "model", recorded, "digits v2")
    Traceback (most recent call last):
    ...
    pruneops.errors.IntegrityError: digits v2: model/arch.json: sha256 ... differs from the ... recorded at registration
    """
    expected = recorded_digests(tags, under)
    prefix = f"{what}: " if what else ""
    if not expected:
        raise IntegrityError(
            f"{prefix}no file digests are recorded for {under}/ (registered outside pruneops, or before "
            "pruneops recorded them); register it again with pruneops"
        )
    actual = file_digests(folder, under)
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            raise IntegrityError(f"{prefix}{path} is missing (it was registered with the version)")
        if path not in expected:
            raise IntegrityError(f"{prefix}{path} was not registered with the version")
        if actual[path] != expected[path]:
            raise IntegrityError(
                f"{prefix}{path}: sha256 {actual[path][:4]}... differs from the {expected[path][:4]}... "
                "recorded at registration"
            )
