"""Exception types shared by the library, the CLI and the services.

Every error a user can cause derives from :class:`PruneopsError`, so the CLI prints one line
and exits non-zero, and the servers map them to 4xx statuses instead of 500.

>>> try:
...     raise RecipeError("prune.sparsity: must be in (0, 1)")
... except PruneopsError as err:
...     str(err)
'prune.sparsity: must be in (0, 1)'
"""


class PruneopsError(Exception):
    """Base class of every error a user can cause; its message is one readable line."""


class RecipeError(PruneopsError, ValueError):
    """A recipe that does not validate; the message names the field and the fix."""


class RegistryError(PruneopsError):
    """The registry cannot do what was asked (unreachable server, a conflicting state)."""


class NotFoundError(RegistryError, LookupError):
    """A model, version or alias that does not exist in the registry."""


class ModelFormatError(PruneopsError):
    """A stored model that is missing files, corrupt, or does not match its architecture."""


class TaskError(PruneopsError):
    """A task import path that does not resolve to a usable Task."""


class PruningError(PruneopsError, ValueError):
    """A pruning request the model cannot take; the message names the layer or field."""


class ExportError(PruneopsError):
    """A model that cannot be exported, or an exported file that is corrupt."""


class RuntimeUnavailable(PruneopsError):
    """A runtime the recipe asks for that cannot run on this machine; never silently replaced."""


class UntrustedCodeError(ModelFormatError, TaskError):
    """An import path (factory, replaced module, task) outside the operator's trusted modules.

    It derives from both :class:`ModelFormatError` and :class:`TaskError`, so code that
    refuses a bad model or a bad task refuses this too.
    """


class IntegrityError(ModelFormatError):
    """A stored file whose sha256 differs from the digest recorded when it was registered."""


class ProbeMismatch(ModelFormatError):
    """A model whose outputs on its probe inputs are non-finite, of another shape, or disagree with those recorded."""
