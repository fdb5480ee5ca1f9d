"""Source models as teams register them: recognise the format, refuse what cannot apply, import the rest.

A source version is either a pruneops model (``arch.json``) or an MLflow model whose
``MLmodel`` names its flavor:

- ``pytorch`` saved as ``pt2`` (``data/model.pt2``, MLflow 3's default): imported through the
  checked loader (:mod:`pruneops.pt2`) with its layers lifted (:mod:`pruneops.graph`), and
  saved as a pruneops model whose architecture is the program itself. Unstructured and N:M
  patterns apply; structured ones cannot (the graph fixes every width).
- ``pytorch`` saved as ``pickle`` (``data/model.pth``): loading it runs code the file names,
  so it is refused, with the reason and the pt2 alternative, unless the operator allows
  pickles (:mod:`pruneops.pickled`: trusted ``nn.Module`` classes only, weights-only
  unpickler). An allowed pickle is then kept as an exported program, like pt2.
- ``transformers`` (``mlflow.transformers.log_model``): a BERT, DistilBERT or MiniLM encoder
  saved as safetensors, imported as pruneops' own encoder (:mod:`pruneops.encoders`); every
  pattern applies, structured ones included.
- anything else (``sklearn``, ``onnx``, ...): refused, naming the flavors it has.

:func:`check_source` decides from the file list and ``MLmodel`` alone, so ``pruneops run`` and the trigger refuse
a run before its first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pruneops.encoders import check_flavor, import_encoder
from pruneops.errors import ModelFormatError
from pruneops.graph import STRUCTURED_REFUSAL, load_program
from pruneops.modelio import ARCH_FILE, PROGRAM_FACTORY, ArchSpec, load_model, saved_spec
from pruneops.patterns import is_structured
from pruneops.pickled import load_pickled, pickle_allowed

PRUNEOPS, PT2, PICKLE, TRANSFORMERS = "pruneops", "pt2", "pickle", "transformers"
PICKLE_REFUSAL = (
    "is an MLflow pytorch model saved with pickle: loading it runs whatever code the file names, "
    "so pruneops does not load it; log it with mlflow.pytorch.log_model(..., serialization_format='pt2', "
    "input_example=...), register its code and weights with pruneops register, or have the operator "
    "allow pickles of trusted classes (PRUNEOPS_ALLOW_PICKLE=true)"
)


def read_mlmodel(folder: str | Path) -> dict[str, Any]:
    """The ``MLmodel`` file of a folder, parsed as plain YAML (no tags, no objects).
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "MLmodel").write_text("flavors:\\n  pytorch:\\n    model_data: data\\n")
    >>> read_mlmodel(folder)
    {'flavors': {'pytorch': {'model_data': 'data'}}}
    >>> _ = (folder / "MLmodel").write_text("flavors: !!python/object/apply:os.system [id]")
    >>> read_mlmodel(folder)
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: ... has no readable MLmodel: could not determine a constructor for the tag ...
    """
    import yaml

    path = Path(folder) / "MLmodel"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelFormatError(f"{folder} has no readable MLmodel: {err}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not an MLmodel file")
    return data


def check_source(files: list[str], mlmodel: dict[str, Any] | None, pattern: str | None = None) -> str:
    """The source format (``pruneops``, ``pt2``, ``pickle``, ``transformers``), or :class:`ModelFormatError`.

    ``files`` are the model folder's file paths (``data/model.pt2``); ``mlmodel`` its parsed
    ``MLmodel`` (None if it has none). ``pattern`` is the recipe's: structured patterns are
    refused for exported programs.

    >>> mlmodel = {"flavors": {"pytorch": {"model_data": "data"}}}
    >>> check_source(["MLmodel", "data/model.pt2"], mlmodel, "2:4")
    'pt2'
    >>> check_source(["MLmodel", "data/model.pt2"], mlmodel, "channels")
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: structured pruning (channels, heads, blocks) cannot apply to an exported ...
    >>> check_source(["MLmodel", "model.pkl"], {"flavors": {"sklearn": {}}})
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: the source is neither a pruneops model nor ... (flavors: ['sklearn'])
    """
    if ARCH_FILE in files:
        return PRUNEOPS
    flavors = (mlmodel or {}).get("flavors") or {}
    torch_flavor = flavors.get("pytorch")
    if isinstance(flavors.get(TRANSFORMERS), dict):
        check_flavor(flavors[TRANSFORMERS], files)
        return TRANSFORMERS
    if not isinstance(torch_flavor, dict):
        raise ModelFormatError(
            "the source is neither a pruneops model nor an MLflow pytorch or transformers model "
            f"(flavors: {sorted(flavors)})"
        )
    data = str(torch_flavor.get("model_data", "data")).strip("/")
    if f"{data}/model.pt2" in files:
        found = PT2
    elif f"{data}/model.pth" in files and pickle_allowed():
        found = PICKLE  # loaded with trusted classes only, then kept as an exported program
    else:
        raise ModelFormatError(f"the source {PICKLE_REFUSAL}")
    if pattern is not None and is_structured(pattern):
        raise ModelFormatError(STRUCTURED_REFUSAL)
    return found


def import_model(folder: str | Path) -> tuple[nn.Module, ArchSpec]:
    """A source folder as a module and the spec to save it with (the folder must outlive the save).

    >>> import_model("missing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: missing has no readable MLmodel: ...
    """
    folder = Path(folder)
    if (folder / ARCH_FILE).is_file():
        return load_model(folder), saved_spec(folder)
    mlmodel = read_mlmodel(folder)
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    found = check_source(files, mlmodel)
    if found == TRANSFORMERS:
        return import_encoder(folder, mlmodel["flavors"][TRANSFORMERS])
    data = folder / str(mlmodel["flavors"]["pytorch"].get("model_data", "data")).strip("/")
    if not data.resolve().is_relative_to(folder.resolve()):
        raise ModelFormatError(f"{folder}: the pytorch flavor's model_data points outside the model")
    if found == PICKLE:
        return load_pickled(data / "model.pth"), ArchSpec(PROGRAM_FACTORY)
    return load_program(data / "model.pt2"), ArchSpec(PROGRAM_FACTORY)


def check_version(registry: Any, name: str, version: str, pattern: str | None = None) -> str:
    """:func:`check_source` for a registered version, from its file list and ``MLmodel`` (nothing else is read).
    >>> import tempfile, torch
    >>> from pruneops.modelio import save_model
    >>> from pruneops.probe import VALUES, record
    >>> from pruneops.registry import Registry
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> model = torch.nn.Linear(4, 2)
    >>> spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, probe=record(model, torch.ones(3, 4), VALUES))
    >>> version = registry.register("linear", folder).version
    >>> check_version(registry, "linear", version, "2:4")
    'pruneops'
    """
    import yaml

    files = registry.model_files(name, version)
    mlmodel = None
    if ARCH_FILE not in files and "MLmodel" in files:
        try:
            mlmodel = yaml.safe_load(registry.read_file(name, version, "MLmodel"))
        except yaml.YAMLError as err:
            raise ModelFormatError(f"{name} v{version}: MLmodel is not YAML: {err}") from None
    try:
        return check_source(files, mlmodel if isinstance(mlmodel, dict) else None, pattern)
    except ModelFormatError as err:
        raise ModelFormatError(f"{name} v{version}: {err}") from None
