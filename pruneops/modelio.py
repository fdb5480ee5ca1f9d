"""Save and load models without pickle: ``arch.json`` + ``model.safetensors``.

``arch.json`` names a factory by import path (``pkg.module:function``) and its keyword
arguments. Structured pruning changes widths and head counts, so the file also records the
scalar and tuple attributes that differ from a fresh build (``overrides``, e.g. ``{"features.0":
{"out_channels": 16}}`` or ``{"norm": {"normalized_shape": [32]}}``: JSON keeps tuples as lists,
and the loader makes them tuples again). The loader applies them and reshapes every parameter
and buffer to the stored tensor's shape before loading it. Nothing is unpickled: weights go through
safetensors. The factory and every ``replaced`` class are resolved through
:mod:`pruneops.trust`: only ``nn.Module`` subclasses (or marked factories) from trusted
modules are imported and called, because whoever writes the registry writes ``arch.json``.
Files that belong with a model but are not weights (an encoder's tokenizer) live in
``assets/``: a loaded model names that folder (:data:`ASSETS_ATTR`) and a save copies it, so
they travel from a source through every step to the pruned version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.errors import ModelFormatError
from pruneops.probe import Probe, check_finite_weights, check_round_trip
from pruneops.trust import resolve_module_class

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "model.safetensors"
#: A model imported from an exported program (MLflow's pt2) keeps the program as its architecture.
PROGRAM_FILE = "program.pt2"
PROGRAM_FACTORY = "pruneops.graph:load_program"
#: Files that travel with a model but are not weights (a tokenizer): ``assets/`` in the folder.
#: A loaded model names its folder's assets in this attribute, and a save copies them.
ASSETS_DIR = "assets"
ASSETS_ATTR = "_pruneops_assets"
FORMAT_VERSION = 1
_SCALARS = (int, float, bool, str)
# Module state that is not architecture: train/eval mode is set by the loader.
_NOT_ARCH = {"training"}


@dataclass(frozen=True)
class ArchSpec:
    """How to rebuild a model: ``factory(**kwargs)`` then per-module attribute ``overrides``."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Modules replaced after the build (dropped blocks), by name: class import path,
    #: constructed without arguments.
    replaced: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The spec as JSON, with a format version."""
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """Parse ``arch.json``; a malformed file raises :class:`ModelFormatError`."""
        try:
            data = json.loads(text)
            if data.pop("format", None) != FORMAT_VERSION:
                raise ValueError(f"unsupported format version, expected {FORMAT_VERSION}")
            return cls(**data)
        except (ValueError, TypeError) as err:
            raise ModelFormatError(f"{ARCH_FILE} is malformed: {err}") from None


def saved_spec(folder: str | Path) -> ArchSpec:
    """The factory and arguments a saved model was built from (its overrides left out).

    A model pruned from it is saved with this spec; its own overrides are computed afresh.

    >>> import tempfile
    >>> norm = build_model(ArchSpec("torch.nn:LayerNorm", {"normalized_shape": 8}))
    >>> norm.eps = 1e-3  # an override: kept in arch.json, left out of the spec
    >>> folder = save_model(norm, tempfile.mkdtemp(), ArchSpec("torch.nn:LayerNorm", {"normalized_shape": 8}))
    >>> saved_spec(folder)
    ArchSpec(factory='torch.nn:LayerNorm', kwargs={'normalized_shape': 8}, overrides={}, replaced={})
    """
    spec = ArchSpec.from_json((Path(folder) / ARCH_FILE).read_text())
    return ArchSpec(spec.factory, dict(spec.kwargs))


def build_model(spec: ArchSpec) -> nn.Module:
    """A fresh, randomly initialised model from its spec (overrides not applied).

    The factory must be a trusted ``nn.Module`` subclass or marked factory; it is checked
    before it is called.

    >>> build_model(ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2}))
    Linear(in_features=4, out_features=2, bias=True)
    >>> build_model(ArchSpec("os:system", {"command": "id"}))
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: refusing to import 'os:system': module 'os' is not trusted ...
    """
    if not isinstance(spec.kwargs, dict) or not all(isinstance(k, str) for k in spec.kwargs):
        raise ModelFormatError(f"{ARCH_FILE}: kwargs must be an object of named arguments")
    model = resolve_module_class(spec.factory)(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise ModelFormatError(f"factory {spec.factory!r} returned {type(model).__name__}, not a torch module")
    return model


def replaced_modules(model: nn.Module, spec: ArchSpec) -> dict[str, str]:
    """Modules of ``model`` whose class differs from a fresh build (dropped blocks).
    >>> spec = ArchSpec("pruneops.models.resnet:build", {"widths": [8, 16], "blocks": 2})
    >>> model = build_model(spec)
    >>> model.layers[1] = nn.Identity()  # a block dropped by structured pruning
    >>> replaced_modules(model, spec)
    {'layers.1': 'torch.nn.modules.linear:Identity'}
    """
    fresh = dict(build_model(spec).named_modules())
    replaced = {}
    for name, module in model.named_modules():
        if name in fresh and type(fresh[name]) is not type(module):
            replaced[name] = f"{type(module).__module__}:{type(module).__qualname__}"
    return replaced


def _build_with_replacements(spec: ArchSpec) -> nn.Module:
    model = build_model(spec)
    for name, import_path in spec.replaced.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = resolve_module_class(import_path, what="replacement module")()
    return model


def scalar_overrides(model: nn.Module, spec: ArchSpec) -> dict[str, dict[str, Any]]:
    """The scalar and tuple module attributes of ``model`` that differ from a fresh build of ``spec``.

    This is how a structurally pruned model records its new widths, head counts and
    normalized shapes.

    >>> spec = ArchSpec("torch.nn:LayerNorm", {"normalized_shape": 8})
    >>> norm = build_model(spec)
    >>> norm.normalized_shape = (4,)
    >>> scalar_overrides(norm, spec)
    {'': {'normalized_shape': [4]}}
    """
    fresh = dict(_build_with_replacements(spec).named_modules())
    overrides: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        reference = fresh.get(name)
        if reference is None:
            raise ModelFormatError(f"module {name!r} is not in the architecture {spec.factory!r}")
        changed = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in vars(module).items()
            if _is_arch_value(value)
            and not key.startswith("_")
            and key not in _NOT_ARCH
            and vars(reference).get(key) != value
        }
        if changed:
            overrides[name] = changed
    return overrides


def _is_arch_value(value: Any) -> bool:
    """A scalar, or a tuple of scalars (``normalized_shape``, ``kernel_size``): what JSON keeps."""
    if isinstance(value, tuple):
        return all(isinstance(item, _SCALARS) for item in value)
    return isinstance(value, _SCALARS)


def _restored(current: Any, stored: Any) -> Any:
    """``stored`` as the type the fresh module holds: JSON turns tuples into lists."""
    if isinstance(current, tuple) and isinstance(stored, list):
        return tuple(stored)
    return stored


def save_model(model: nn.Module, folder: str | Path, spec: ArchSpec, probe: Probe | None = None) -> Path:
    """Write ``arch.json`` and ``model.safetensors`` (and ``probe.safetensors``) into ``folder``; return it.

    Tensors are saved contiguous and detached; reparametrizations (pruning masks) must
    already be made permanent. ``probe`` (:func:`pruneops.probe.record`, taken from this
    model in memory) is what registration checks the stored files against.

    >>> import tempfile, torch
    >>> from pruneops.probe import VALUES, record
    >>> model = torch.nn.Linear(4, 2)
    >>> spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, probe=record(model, torch.ones(1, 4), VALUES))
    >>> sorted(p.name for p in folder.iterdir())
    ['arch.json', 'model.safetensors', 'probe.safetensors']
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if spec.factory == PROGRAM_FACTORY:
        full = _save_program(model, folder, probe)
    else:
        with_replacements = ArchSpec(spec.factory, dict(spec.kwargs), replaced=replaced_modules(model, spec))
        full = ArchSpec(
            spec.factory, dict(spec.kwargs), scalar_overrides(model, with_replacements), with_replacements.replaced
        )
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    if any(".parametrizations." in name for name in state):
        raise ModelFormatError("model still has parametrizations; call make_permanent(model) before saving")
    save_file(state, str(folder / WEIGHTS_FILE))
    _copy_assets(model, folder)
    (folder / ARCH_FILE).write_text(full.to_json())
    if probe is not None:
        probe.save(folder)
    return folder


def _copy_assets(model: nn.Module, folder: Path) -> None:
    """Copy the folder named by the model's assets attribute (set on load or import) to ``folder/assets``."""
    import shutil

    source = getattr(model, ASSETS_ATTR, None)
    if source and Path(source).resolve() != (folder / ASSETS_DIR).resolve():
        shutil.copytree(source, folder / ASSETS_DIR, dirs_exist_ok=True)


def _save_program(model: nn.Module, folder: Path, probe: Probe | None) -> ArchSpec:
    """Put the model's exported program beside its weights: the one it was loaded from, or a new export.

    A module with no program (an allowed pickle) is exported on the probe's inputs, with a
    dynamic batch dimension.
    """
    import shutil

    from pruneops.graph import PROGRAM_ATTR

    source = getattr(model, PROGRAM_ATTR, None)
    if source is None:
        if probe is None:
            raise ModelFormatError("saving a module as an exported program needs a probe (its example inputs)")
        example = torch.from_numpy(probe.inputs[:2])
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        torch.export.save(program, str(folder / PROGRAM_FILE))
    elif Path(source).resolve() != (folder / PROGRAM_FILE).resolve():
        shutil.copy(source, folder / PROGRAM_FILE)
    return ArchSpec(PROGRAM_FACTORY)


def verify_saved(folder: str | Path) -> nn.Module:
    """Load a saved model and prove it before it is registered; returns the loaded model.

    Its weights must be finite, and it must reproduce the outputs recorded in its probe by
    the model in memory (a save that lost a width or an attribute fails here).

    >>> import tempfile, torch
    >>> from pruneops.probe import VALUES, record
    >>> model = torch.nn.Linear(4, 2)
    >>> spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, record(model, torch.randn(3, 4), VALUES))
    >>> verify_saved(folder).out_features
    2
    """
    folder = Path(folder)
    probe = Probe.load(folder)
    model = load_model(folder)
    check_finite_weights(model.state_dict(), str(folder))
    check_round_trip(model, probe, str(folder))
    return model


def load_model(folder: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, in eval mode.

    Missing files, a corrupt weights file, or weights that do not fit the architecture raise
    :class:`ModelFormatError` naming what is wrong.

    >>> import tempfile, torch
    >>> spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> model = build_model(spec)
    >>> loaded = load_model(save_model(model, tempfile.mkdtemp(), spec))
    >>> torch.equal(loaded.weight, model.weight), loaded.training
    (True, False)
    >>> load_model(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: ... is not a pruneops model: arch.json is missing
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    for required in (ARCH_FILE, WEIGHTS_FILE):
        if not (folder / required).is_file():
            raise ModelFormatError(f"{folder} is not a pruneops model: {required} is missing")
    spec = ArchSpec.from_json((folder / ARCH_FILE).read_text())
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFormatError(f"{folder / WEIGHTS_FILE} is corrupt: {err}") from None
    if spec.factory == PROGRAM_FACTORY:
        model = _load_program(folder, spec)
    else:
        try:
            model = _build_with_replacements(spec)
        except (AttributeError, TypeError) as err:
            raise ModelFormatError(f"{ARCH_FILE} lists a replacement that does not fit: {err}") from None
    modules = dict(model.named_modules())
    for name, attrs in spec.overrides.items():
        if name not in modules:
            raise ModelFormatError(f"override for unknown module {name!r} in {ARCH_FILE}")
        for key, value in attrs.items():
            setattr(modules[name], key, _restored(getattr(modules[name], key, None), value))
    _reshape_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFormatError(f"weights do not fit the architecture {spec.factory!r}: {err}") from None
    if (folder / ASSETS_DIR).is_dir():
        setattr(model, ASSETS_ATTR, str(folder / ASSETS_DIR))
    return model.eval()


def _load_program(folder: Path, spec: ArchSpec) -> nn.Module:
    """The architecture of a model imported from an exported program: the program, checked and lifted."""
    from pruneops.graph import STRUCTURED_REFUSAL, load_program

    if spec.overrides or spec.replaced or spec.kwargs:
        raise ModelFormatError(f"{ARCH_FILE}: {STRUCTURED_REFUSAL}")
    if not (folder / PROGRAM_FILE).is_file():
        raise ModelFormatError(f"{folder} is not a pruneops model: {PROGRAM_FILE} is missing")
    return load_program(folder / PROGRAM_FILE)


def _reshape_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter and buffer the shape of its stored tensor (structured pruning)."""
    for full_name, tensor in state.items():
        owner_name, _, leaf = full_name.rpartition(".")
        try:
            owner = model.get_submodule(owner_name) if owner_name else model
        except AttributeError:
            continue  # not in this architecture: load_state_dict names it as unexpected
        current = owner._parameters.get(leaf)
        if current is not None:
            if current.shape != tensor.shape:
                owner._parameters[leaf] = nn.Parameter(torch.empty_like(tensor), current.requires_grad)
            continue
        buffer = owner._buffers.get(leaf)
        if buffer is not None and buffer.shape != tensor.shape:
            owner._buffers[leaf] = torch.empty_like(tensor)
