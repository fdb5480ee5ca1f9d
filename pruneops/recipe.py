"""The recipe: one YAML document saying what to prune, how to recover, and what must hold.

Validated once, where it is read, by pydantic models with ``extra="forbid"``; every error
names the field and says how to fix it. ``load_recipe`` and ``dump_recipe`` round-trip.

>>> r = load_recipe('''
... prune: {method: wanda, pattern: "2:4"}
... finetune: {epochs: 1}
... ''')
>>> r.prune.sparsity, r.prune.nm
(0.5, (2, 4))
>>> load_recipe(dump_recipe(r)) == r
True
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pruneops import patterns
from pruneops.errors import RecipeError

Method = Literal["magnitude", "wanda", "sparsegpt", "taylor", "movement", "bn_scale", "random"]
Runtime = Literal["torch", "torch-compile", "torch-sparse", "onnxruntime"]

# The pattern rules (granularities, the criteria and scopes each takes) are the engine's:
# pruneops.patterns, which the configs check with too.
STRUCTURED_PATTERNS = patterns.STRUCTURED


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSpec(_Strict):
    """One-shot, or iterative pruning over ``steps`` rounds with fine-tuning between them."""

    kind: Literal["oneshot", "iterative"] = "oneshot"
    steps: int = Field(default=1, ge=1, le=100)
    curve: Literal["cubic", "linear"] = "cubic"
    rewind_epoch: int | None = Field(
        default=None, ge=0, description="rewind surviving weights to this epoch (lottery ticket)"
    )

    @model_validator(mode="after")
    def _steps_match_kind(self) -> ScheduleSpec:
        if self.kind == "oneshot" and self.steps != 1:
            raise ValueError("a oneshot schedule has steps: 1; use kind: iterative for several steps")
        return self


class PruneSpec(_Strict):
    """What to prune: criterion, granularity, amount and which layers."""

    method: Method = "magnitude"
    pattern: str = Field(
        default="unstructured",
        description='"unstructured", an N:M pattern such as "2:4", or "channels", "heads", "blocks"',
    )
    sparsity: float | None = Field(default=None, description="fraction of weights (or structures) removed, in (0, 1)")
    scope: Literal["layer", "global", "row"] | None = Field(
        default=None,
        description="which scores compete: each layer, all layers (global) or each output row; "
        "unset: row for wanda, layer for the others",
    )
    norm: Literal[1, 2] = 1
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    calibration_batches: int = Field(default=8, ge=1)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)

    # Field by field first, so the error names prune.pattern or prune.sparsity; then the rules
    # that join fields. PruningError is a ValueError, which pydantic reports as such.
    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        patterns.parse_pattern(value)
        return value

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, value: float | None) -> float | None:
        return patterns.check_sparsity(value)

    @model_validator(mode="after")
    def _consistent(self) -> PruneSpec:
        checked = patterns.check(self.method, self.pattern, self.sparsity, self.scope)
        object.__setattr__(self, "sparsity", checked.sparsity)
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M pattern, else ``None``."""
        return patterns.parse_pattern(self.pattern)

    @property
    def structured(self) -> bool:
        """Whether the pattern removes whole structures (the model physically shrinks)."""
        return patterns.is_structured(self.pattern)


class DistillSpec(_Strict):
    """Knowledge distillation from the dense teacher: KL on softened logits, mixed with the task loss."""

    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the distillation loss")


class EarlyStopSpec(_Strict):
    """Stop fine-tuning when the primary metric has not improved for ``patience`` epochs."""

    patience: int = Field(default=2, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class FinetuneSpec(_Strict):
    """Recovery fine-tuning with masks held in place."""

    epochs: int = Field(default=0, ge=0, le=1000)
    lr: float = Field(default=1e-3, gt=0, lt=10)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    distill: DistillSpec | None = None
    early_stopping: EarlyStopSpec | None = None
    seed: int = 0


class ValidateSpec(_Strict):
    """Where and how the candidate is measured."""

    target: Literal["cpu", "cuda"] = "cpu"
    runtimes: list[Runtime] = Field(default_factory=lambda: list[Runtime](["onnxruntime"]))
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=100, ge=5)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError(f"needs one or more batch sizes >= 1, got {value}; e.g. [1, 32]")
        return value

    @model_validator(mode="after")
    def _runtime_fits_target(self) -> ValidateSpec:
        if not self.runtimes:
            raise ValueError("runtimes: list at least one runtime, e.g. [onnxruntime]")
        if "torch-sparse" in self.runtimes and self.target != "cuda":
            raise ValueError("runtime torch-sparse needs target: cuda (sparse tensor cores)")
        return self


class GatesSpec(_Strict):
    """What must hold before a candidate may become the challenger."""

    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    min_speedup: float | dict[str, float] | None = Field(
        default=None, description="one ratio for every runtime, or a ratio per runtime name"
    )
    max_p99_ms: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)

    @field_validator("min_speedup")
    @classmethod
    def _positive_speedup(cls, value: float | dict[str, float] | None) -> float | dict[str, float] | None:
        ratios = value.values() if isinstance(value, dict) else [value] if value is not None else []
        if any(r <= 0 for r in ratios):
            raise ValueError(f"speedup ratios must be > 0, got {value}; e.g. 1.1 for 10% faster")
        return value


class RolloutSpec(_Strict):
    """What the rollout controller's analysis of a serving challenger must see before promotion.

    Ratios compare the challenger with the champion over the same ``window`` of live
    traffic, read from Prometheus. ``successes`` passing analyses in a row promote; more than
    ``failure_limit`` failing ones reject the challenger. An analysis with fewer than
    ``min_samples`` challenger requests, or with any series missing, is inconclusive and
    counts as neither.
    """

    max_latency_ratio: float = Field(default=1.2, gt=0, description="challenger p99 / champion p99")
    min_latency_excess_ms: float = Field(
        default=0.0,
        ge=0,
        description="a p99 ratio over max_latency_ratio fails only if the challenger is also this many ms slower "
        "(at a few ms, a p99 of a few hundred requests moves by more than any ratio from noise alone)",
    )
    max_error_ratio: float = Field(default=0.01, ge=0, le=1, description="challenger 5xx share of requests")
    max_drift_share: float = Field(default=0.5, ge=0, le=1)
    min_shadow_agreement: float = Field(default=0.95, ge=0, le=1, description="used when the server shadows")
    min_samples: int = Field(default=100, ge=1)
    successes: int = Field(default=3, ge=1)
    failure_limit: int = Field(default=2, ge=0)
    window: str = Field(default="1m", pattern=r"^[0-9]+[smh]$", description="PromQL range, e.g. 1m")


class Recipe(_Strict):
    """The whole recipe; only ``prune`` is required."""

    prune: PruneSpec
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    validate_: ValidateSpec = Field(default_factory=ValidateSpec, alias="validate")
    gates: GatesSpec = Field(default_factory=GatesSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sha256(self) -> str:
        """A stable digest of the recipe's content, recorded on registered versions.

        >>> len(Recipe(prune=PruneSpec(sparsity=0.5)).sha256())
        64
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, with ``validate`` under its YAML name."""
        return self.model_dump(mode="json", by_alias=True)


def parse_recipe(data: Any) -> Recipe:
    """Validate already-parsed recipe data; raise :class:`RecipeError` with every problem.

    >>> parse_recipe({"prune": {"sparsty": 0.5}})
    Traceback (most recent call last):
    ...
    pruneops.errors.RecipeError: invalid recipe: prune.sparsty: unknown field; did you mean 'sparsity'?
    """
    if not isinstance(data, dict):
        raise RecipeError(f"invalid recipe: expected a mapping with a 'prune' section, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError("invalid recipe: " + "; ".join(_explain(e) for e in err.errors())) from None


def load_recipe(source: str | Path) -> Recipe:
    """Load a recipe from a YAML file path or a YAML/JSON string.

    >>> load_recipe("prune: {method: magnitude, sparsity: 0.3}").prune.sparsity
    0.3
    """
    text = source.read_text() if isinstance(source, Path) else source
    if isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json")):
        path = Path(source)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {source}")
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe is not valid YAML: {err}") from None
    return parse_recipe(data)


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML, complete with defaults, so that it loads back equal.

    >>> "prune:" in dump_recipe(Recipe(prune=PruneSpec(sparsity=0.5)))
    True
    """
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def _explain(error: Any) -> str:
    """One readable line for one pydantic error: the field path, what is wrong, how to fix it."""
    loc = ".".join(str(part) for part in error["loc"] if part != "function-after")
    loc = loc.replace("validate_", "validate")
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, _, name = loc.rpartition(".")
        hint = _suggest(parent, name)
        return f"{loc}: unknown field" + (f"; did you mean {hint!r}?" if hint else "; remove it")
    if kind == "missing":
        return f"{loc}: required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def _suggest(parent: str, name: str) -> str | None:
    model: type[BaseModel] = Recipe
    for part in filter(None, parent.split(".")):
        field = model.model_fields.get(part) or model.model_fields.get(part + "_")
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(name, names, n=1)
    return close[0] if close else None
