"""Which optional extra a feature needs, and one clear error when it is not installed.

``pip install pruneops`` is the pruning engine and the verbs that need nothing else
(``check-recipe``); the registry client, the pipeline, the model server and the monitoring
stack are extras (``pyproject.toml``). Each extra is named here by the modules it brings, so a
verb can say which extra is missing before it starts any work, instead of failing with
``ModuleNotFoundError`` halfway through.

>>> require("registry", feature="pruneops versions", installed=lambda module: module != "mlflow")
Traceback (most recent call last):
...
pruneops.extras.MissingExtraError: pruneops versions needs the registry extra (...): pip install 'pruneops[registry]'
>>> require("serving", "monitoring", feature="pruneops demo", installed=lambda module: True)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from pruneops.errors import PruneopsError

#: The modules each extra brings that its features import (checked in this order, so the
#: message names the one a user is most likely to recognise). tests/packaging checks each
#: module's distribution is in that extra's requirements in pyproject.toml.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "registry": ("mlflow",),
    "pipeline": ("mlflow", "kfp", "onnx", "onnxruntime", "sklearn", "fastapi", "uvicorn"),
    "serving": ("mlflow", "kserve", "onnxruntime", "fastapi", "uvicorn", "httptools", "uvloop", "prometheus_client"),
    "monitoring": ("mlflow", "evidently", "prometheus_client", "fastapi", "uvicorn", "httpx"),
}


class MissingExtraError(PruneopsError):
    """A feature needs an optional extra that is not installed; the message says how to add it."""


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(*extras: str, feature: str, installed: Callable[[str], bool] = _importable) -> None:
    """Raise :class:`MissingExtraError` naming the first extra of ``extras`` not fully installed.

    Looks modules up without importing them, so it costs milliseconds.

    >>> require("registry", feature="pruneops history", installed=lambda module: True)
    >>> require("nonsense", feature="x")
    Traceback (most recent call last):
    ...
    KeyError: 'nonsense'
    """
    for extra in extras:
        absent = [module for module in EXTRA_MODULES[extra] if not installed(module)]
        if absent:
            raise MissingExtraError(
                f"{feature} needs the {extra} extra ({', '.join(absent)} "
                f"{'is' if len(absent) == 1 else 'are'} not installed): pip install 'pruneops[{extra}]'"
            )
