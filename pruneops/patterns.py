"""The pattern rules, in one place: the granularities, what each implies, and which criteria and
scopes apply to it.

The recipe (``pruneops.recipe.PruneSpec``, pydantic) and the engine's configs
(``pruneops.pruning.config``) both call :func:`check`, so a rule is written once and says the
same sentence wherever it is broken. Pure Python: the engine imports nothing beyond torch and
numpy.

>>> check("wanda", "2:4", None, None)
Pattern(name='2:4', nm=(2, 4), sparsity=0.5)
>>> check("bn_scale", "2:4", None, None)
Traceback (most recent call last):
...
pruneops.errors.PruningError: method 'bn_scale' does not apply to pattern '2:4'; use one of: magnitude, movement, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pruneops.errors import PruningError

UNSTRUCTURED = "unstructured"
#: Patterns that remove whole structures, so the model physically shrinks.
STRUCTURED = ("channels", "heads", "blocks")
#: Which scores compete for an unstructured budget: each layer, all layers, each output row.
SCOPES = ("layer", "global", "row")
_NM = re.compile(r"^(\d+):(\d+)$")

#: Which criteria make sense for which granularity. Wanda and SparseGPT score single weights
#: from calibration activations; BN scale scores whole channels; movement scores come from
#: training (or labelled calibration batches) and rank single weights, in N:M groups too.
METHODS_FOR = {
    UNSTRUCTURED: ("magnitude", "wanda", "sparsegpt", "taylor", "movement", "random"),
    "nm": ("magnitude", "wanda", "sparsegpt", "taylor", "movement", "random"),
    "channels": ("magnitude", "taylor", "bn_scale", "random"),
    "heads": ("magnitude", "taylor", "random"),
    "blocks": ("magnitude", "taylor", "random"),
}


@dataclass(frozen=True)
class Pattern:
    """A checked pattern: its name, ``(N, M)`` when it is one, and the sparsity it prunes to."""

    name: str
    nm: tuple[int, int] | None
    sparsity: float

    @property
    def structured(self) -> bool:
        return self.name in STRUCTURED


def is_structured(pattern: str) -> bool:
    """Whether ``pattern`` removes whole structures (channels, heads, blocks).

    >>> is_structured("heads"), is_structured("2:4"), is_structured("unstructured")
    (True, False, False)
    """
    return pattern in STRUCTURED


def family(pattern: str) -> str:
    """The granularity a pattern belongs to: ``unstructured``, ``nm``, or the structure's name.

    >>> family("2:4"), family("channels"), family("unstructured")
    ('nm', 'channels', 'unstructured')
    """
    return "nm" if _NM.match(pattern) else pattern


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``(N, M)`` for an N:M pattern, ``None`` for the others; refuses a pattern that is neither.

    >>> parse_pattern("2:4"), parse_pattern("channels")
    ((2, 4), None)
    >>> parse_pattern("4:2")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: N:M pattern '4:2' needs 0 < N < M, e.g. "2:4"
    """
    if pattern == UNSTRUCTURED or pattern in STRUCTURED:
        return None
    match = _NM.match(pattern)
    if not match:
        raise PruningError(
            f'unknown pattern {pattern!r}; use "unstructured", an N:M pattern such as "2:4", '
            f"or one of {', '.join(STRUCTURED)}"
        )
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise PruningError(f'N:M pattern {pattern!r} needs 0 < N < M, e.g. "2:4"')
    return n, m


def check_sparsity(sparsity: float | None) -> float | None:
    """Refuse a sparsity outside (0, 1); ``None`` (not given) passes.

    >>> check_sparsity(1.0)
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: must be in (0, 1) exclusive, got 1.0; e.g. 0.5 removes half
    """
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        raise PruningError(f"must be in (0, 1) exclusive, got {sparsity}; e.g. 0.5 removes half")
    return sparsity


def check(method: str | None, pattern: str, sparsity: float | None, scope: str | None) -> Pattern:
    """Every rule at once; returns the pattern with the sparsity it implies or was given.

    ``method`` ``None`` skips the criterion rule (a config type that names no criterion).

    >>> check("magnitude", "channels", 0.5, "row")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: scope: row applies only to pattern: unstructured, not 'channels'; use scope: layer
    """
    nm = parse_pattern(pattern)
    if method is not None and method not in METHODS_FOR[family(pattern)]:
        allowed = ", ".join(sorted(METHODS_FOR[family(pattern)]))
        raise PruningError(f"method {method!r} does not apply to pattern {pattern!r}; use one of: {allowed}")
    try:
        check_sparsity(sparsity)
    except PruningError as err:
        raise PruningError(f"sparsity {err}") from None
    if nm is not None:
        implied = 1.0 - nm[0] / nm[1]
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise PruningError(
                f"pattern {pattern!r} implies sparsity {implied:g}, got {sparsity}; "
                "drop sparsity or set it to the implied value"
            )
        sparsity = implied
    elif sparsity is None:
        raise PruningError(f"pattern {pattern!r} needs a sparsity in (0, 1), e.g. sparsity: 0.5")
    if scope is not None and scope not in SCOPES:
        raise PruningError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope in ("global", "row") and pattern != UNSTRUCTURED:
        raise PruningError(f"scope: {scope} applies only to pattern: unstructured, not {pattern!r}; use scope: layer")
    if method == "sparsegpt" and scope not in (None, "layer"):
        raise PruningError(f"sparsegpt prunes layer by layer, not by {scope}; use scope: layer")
    return Pattern(pattern, nm, sparsity)
