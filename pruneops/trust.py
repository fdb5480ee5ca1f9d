"""Which code pruneops may import when a registry entry or a config names it.

A registry writer controls ``arch.json`` (its ``factory`` and ``replaced`` import paths) and
a version's ``pruneops.task`` tag. Importing a module runs its top-level code, and calling
what it names runs more, so both are checked before they happen:

1. The module must sit under a **trusted prefix**: pruneops's own (``pruneops``), torch's
   layers (``torch.nn``), and whatever the operator lists in ``PRUNEOPS_TRUSTED_MODULES``
   (comma-separated, e.g. ``mycompany.models,mycompany.tasks``). Prefixes match whole
   package names: ``pruneops`` trusts ``pruneops.tasks`` but not ``pruneops_evil``.
2. After the import, the object must be of the kind asked for: a model architecture is an
   ``nn.Module`` subclass (or a function marked with :func:`model_factory`); a task is a
   :class:`pruneops.tasks.Task` instance or subclass. A function such as ``os.system`` is
   refused even if its module were trusted.

Anything else raises :class:`UntrustedCodeError` with a one-line reason.

>>> resolve_trusted("pruneops.modelio:ArchSpec").__name__
'ArchSpec'
>>> resolve_trusted("os:system")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pruneops.errors.UntrustedCodeError: refusing to import 'os:system': module 'os' is not trusted (trusted: pruneops, ...
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pruneops.errors import UntrustedCodeError

#: The one setting: extra module prefixes the operator trusts, comma-separated.
TRUSTED_ENV = "PRUNEOPS_TRUSTED_MODULES"
#: Always trusted: pruneops itself, and torch's layer classes (constructing them runs no user code).
BUILTIN_PREFIXES = ("pruneops", "torch.nn")
_IMPORT_PATH = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_FACTORY_MARK = "__pruneops_model_factory__"

F = TypeVar("F", bound=Callable[..., Any])


def trusted_prefixes() -> tuple[str, ...]:
    """The built-in prefixes plus ``PRUNEOPS_TRUSTED_MODULES``, in that order.

    >>> os.environ[TRUSTED_ENV] = "acme.models, acme.tasks"
    >>> trusted_prefixes()
    ('pruneops', 'torch.nn', 'acme.models', 'acme.tasks')
    >>> del os.environ[TRUSTED_ENV]
    """
    extra = [p.strip() for p in os.environ.get(TRUSTED_ENV, "").split(",") if p.strip()]
    for prefix in extra:
        if not _MODULE.match(prefix):
            raise UntrustedCodeError(f"{TRUSTED_ENV}: {prefix!r} is not a module name such as 'acme.models'")
    return (*BUILTIN_PREFIXES, *extra)


def is_trusted(module: str) -> bool:
    """Whether ``module`` is one of the trusted prefixes or inside one.

    >>> is_trusted("pruneops.tasks.digits"), is_trusted("pruneops_evil"), is_trusted("subprocess")
    (True, False, False)
    """
    return any(module == prefix or module.startswith(prefix + ".") for prefix in trusted_prefixes())


def resolve_trusted(import_path: str, what: str = "import") -> Any:
    """Import ``package.module:name`` from a trusted module and return the attribute.

    The prefix is checked before the import, so an untrusted module's code never runs.

    >>> resolve_trusted("pruneops.tasks.digits:nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: cannot import 'pruneops.tasks.digits:nope': ...
    """
    found = _IMPORT_PATH.match(import_path) if isinstance(import_path, str) else None
    if found is None:
        raise UntrustedCodeError(f"refusing to {what} {import_path!r}: it must look like 'package.module:Name'")
    module, attr = found["module"], found["attr"]
    if not is_trusted(module):
        trusted = ", ".join(trusted_prefixes())
        raise UntrustedCodeError(
            f"refusing to {what} {import_path!r}: module {module!r} is not trusted "
            f"(trusted: {trusted}; add prefixes with {TRUSTED_ENV})"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UntrustedCodeError(f"cannot import {import_path!r}: {err}") from None


def model_factory(func: F) -> F:
    """Mark a function as a model architecture factory that ``arch.json`` may name.

    Classes derived from ``nn.Module`` need no mark; a function does, so that no other
    function of a trusted module (one that deletes files, say) can be named as a factory.

    >>> @model_factory
    ... def tiny():
    ...     import torch
    ...     return torch.nn.Linear(2, 2)
    >>> is_model_factory(tiny)
    True
    """
    setattr(func, _FACTORY_MARK, True)
    return func


def is_model_factory(obj: Any) -> bool:
    """True for an ``nn.Module`` subclass or a function marked with :func:`model_factory`.

    >>> import torch
    >>> is_model_factory(torch.nn.Linear), is_model_factory(os.system)
    (True, False)
    """
    from torch import nn

    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    return callable(obj) and getattr(obj, _FACTORY_MARK, False) is True


def resolve_module_class(import_path: str, what: str = "model factory") -> Callable[..., Any]:
    """A trusted architecture factory: an ``nn.Module`` subclass or a marked function.

    >>> resolve_module_class("torch.nn:Linear").__name__
    'Linear'
    >>> resolve_module_class("pruneops.settings:tracking_uri")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: refusing model factory 'pruneops.settings:tracking_uri': it is a function, ...
    """
    found = resolve_trusted(import_path, what="import")
    if not is_model_factory(found):
        kind = "class" if isinstance(found, type) else type(found).__name__
        raise UntrustedCodeError(
            f"refusing {what} {import_path!r}: it is a {kind}, "
            "not an nn.Module subclass or a function marked @model_factory"
        )
    return found
