"""MLflow's ``pickle`` format, only when the operator allows it, and only with trusted classes.

Loading a pickle runs whatever it names, so a pickled source model is refused unless the
operator sets ``PRUNEOPS_ALLOW_PICKLE=true``. Even then nothing is unpickled freely: torch's
weights-only unpickler loads the file, and the only globals it may use beyond torch's own
tensor rebuilding are the classes :func:`torch.serialization.get_unsafe_globals_in_checkpoint`
lists (read from the pickle's opcodes, without running it), each of which must be an
``nn.Module`` subclass from a trusted module (:mod:`pruneops.trust`: ``torch.nn`` and
``PRUNEOPS_TRUSTED_MODULES``). A function, ``os.system`` or a class from anywhere else is
refused before anything is loaded.

The loaded module is saved pickle-free as an exported program (see :mod:`pruneops.graph`):
pruneops does not know the arguments its class was built with.

>>> pickle_allowed()
False
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from pruneops.errors import ModelFormatError, UntrustedCodeError
from pruneops.trust import resolve_trusted

ALLOW_PICKLE_ENV = "PRUNEOPS_ALLOW_PICKLE"


def pickle_allowed() -> bool:
    """Whether the operator allowed pickled source models (``PRUNEOPS_ALLOW_PICKLE=true``).

    >>> os.environ[ALLOW_PICKLE_ENV] = "true"
    >>> pickle_allowed()
    True
    >>> del os.environ[ALLOW_PICKLE_ENV]
    >>> pickle_allowed()
    False
    """
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def load_pickled(path: str | Path) -> nn.Module:
    """Load a pickled ``nn.Module`` (``torch.save``) with only trusted module classes allowed.

    Raises :class:`UntrustedCodeError` naming the first global that is not a trusted
    ``nn.Module`` subclass, and :class:`ModelFormatError` when pickles are not allowed or the
    file is not a module.

    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), folder + "/model.pth")
    >>> load_pickled(folder + "/model.pth")  # refused until the operator allows pickles
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: pickled models are refused; ... with PRUNEOPS_ALLOW_PICKLE=true
    >>> os.environ[ALLOW_PICKLE_ENV] = "true"
    >>> load_pickled(folder + "/model.pth")
    Sequential(
      (0): Linear(in_features=4, out_features=2, bias=True)
    )
    >>> class Payload:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> torch.save(Payload(), folder + "/payload.pth")
    >>> load_pickled(folder + "/payload.pth")  # read from the opcodes: nothing ran
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: refusing to unpickle 'posix:system': module 'posix' is not trusted ...
    >>> del os.environ[ALLOW_PICKLE_ENV]
    """
    import torch

    if not pickle_allowed():
        raise ModelFormatError(f"pickled models are refused; the operator may allow them with {ALLOW_PICKLE_ENV}=true")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - a file that is not a torch zip checkpoint
        raise ModelFormatError(f"{path} is not a torch checkpoint: {str(err).splitlines()[0]}") from None
    classes: list[Any] = [_trusted_class(name) for name in names]
    try:
        with torch.serialization.safe_globals(classes):
            loaded = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - the weights-only unpickler raises several types
        first = str(err).splitlines()[0] if str(err) else repr(err)
        raise ModelFormatError(f"{path} does not load with the weights-only unpickler: {first}") from None
    if not isinstance(loaded, nn.Module):
        raise ModelFormatError(f"{path} holds a {type(loaded).__name__}, not a torch module")
    return loaded.eval()


def _trusted_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    found = resolve_trusted(f"{module}:{name}", what="unpickle")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UntrustedCodeError(f"refusing to unpickle {dotted!r}: only nn.Module subclasses may be unpickled")
    return found
