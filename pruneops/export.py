"""ONNX export with a parity check against torch; the only module that imports onnx.

``torch.onnx.export(..., dynamo=True)`` with a dynamic batch dimension, then the file is
checked with ``onnx.checker`` and run once in ONNX Runtime against torch on real inputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneops.errors import ExportError, ModelFormatError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ExportResult:
    """Where the ONNX file is, how big it is, and its opset."""

    path: Path
    bytes: int
    opset: int


@dataclass(frozen=True)
class Parity:
    """Largest absolute and relative difference between ONNX Runtime and torch outputs."""

    max_abs: float
    max_rel: float

    def within(self, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
        """True when every output matches within ``atol`` or ``rtol``."""
        return self.max_abs <= atol or self.max_rel <= rtol


#: The first output's name in every exported file: what V2 clients see in metadata and
#: responses, instead of the exporter's name for the last node (``linear_7``).
OUTPUT_NAME = "output"


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = True) -> ExportResult:
    """Export ``model`` (eval mode, on CPU) to ``path`` and validate the file; its output is named ``output``.

    Raises :class:`ExportError` with the exporter's reason when the model cannot be
    exported, instead of writing a file that would fail later.

    >>> import tempfile
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> result = export_onnx(model, torch.randn(2, 4), tempfile.mkdtemp() + "/model.onnx")
    >>> result.path.name, result.bytes > 0, port_names(result.path)[1]
    ('model.onnx', True, 'output')
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with _quiet():
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False, output_names=[OUTPUT_NAME]
            )
            if program is None:  # dynamo=True always returns one; say so plainly if that ever changes
                raise ExportError(f"cannot export {type(model).__name__} to ONNX: the exporter returned nothing")
            program.save(str(path))
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; all mean "cannot export"
        first_line = _ANSI.sub("", str(err)).splitlines()[0] if str(err) else repr(err)
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: {first_line}") from None
    return describe_onnx(path)


def describe_onnx(path: str | Path) -> ExportResult:
    """Check an existing ONNX file and describe it: size and opset (:class:`ExportError` when invalid).

    >>> describe_onnx("/nonexistent.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ExportError: /nonexistent.onnx is not a valid ONNX model: ...
    """
    path = Path(path)
    proto = check_onnx(path)
    return ExportResult(path, path.stat().st_size, int(proto.opset_import[0].version))


def check_onnx(path: str | Path) -> Any:
    """Load and check an ONNX file; a missing, truncated or invalid file raises :class:`ExportError`.
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "model.onnx"
    >>> _ = export_onnx(torch.nn.Linear(4, 3), torch.randn(2, 4), path)
    >>> check_onnx(path).graph.output[0].name
    'output'
    >>> _ = path.write_bytes(path.read_bytes()[:100])  # truncated
    >>> check_onnx(path)
    Traceback (most recent call last):
    ...
    pruneops.errors.ExportError: ... is not a valid ONNX model: ...
    """
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # noqa: BLE001 - protobuf and checker errors alike mean "corrupt"
        raise ExportError(
            f"{path} is not a valid ONNX model: {str(err).splitlines()[0] if str(err) else err!r}"
        ) from None
    return proto


def parity(model: nn.Module, path: str | Path, inputs: torch.Tensor) -> Parity:
    """Run ``inputs`` through torch and through ONNX Runtime (CPU) and compare the outputs.
    >>> import tempfile
    >>> model = torch.nn.Linear(4, 3)
    >>> path = export_onnx(model, torch.randn(2, 4), tempfile.mkdtemp() + "/model.onnx").path
    >>> parity(model, path, torch.randn(5, 4)).within()
    True
    >>> with torch.no_grad():
    ...     _ = model.bias.add_(1.0)  # torch changed, the file did not
    >>> round(parity(model, path, torch.randn(5, 4)).max_abs, 3)
    1.0
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(inputs).detach().cpu().numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs.cpu().numpy()})[0]
    diff = np.abs(got - expected)
    return Parity(float(diff.max()), float((diff / np.maximum(np.abs(expected), 1e-12)).max()))


def onnx_outputs(path: str | Path, inputs: np.ndarray) -> np.ndarray:
    """The first output of an ONNX file run on ``inputs`` with ONNX Runtime (CPU); a file that will not run raises.

    >>> onnx_outputs("missing.onnx", np.zeros((1, 2), np.float32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ExportError: missing.onnx does not run in ONNX Runtime: ...
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        result: np.ndarray = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    except Exception as err:  # noqa: BLE001 - ORT raises its own types for corrupt or mismatched files
        first = str(err).splitlines()[0] if str(err) else repr(err)
        raise ExportError(f"{path} does not run in ONNX Runtime: {first}") from None
    return result


def port_names(path: str | Path) -> tuple[str, str]:
    """The names of an ONNX file's first input and first output (what V2 clients and pyfunc callers see).

    >>> port_names("missing.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return graph.input[0].name, graph.output[0].name


@contextlib.contextmanager
def _quiet():  # type: ignore[no-untyped-def]
    """The dynamo exporter prints progress and torchvision warnings; keep logs readable."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_registered(folder: str | Path, task_path: str | None, target: str | Path) -> Path:
    """Export a registered model folder that has no ``model.onnx``; its task gives the example input.

    Used by the model server for baselines registered without ONNX, and by the rollback drill.

    >>> export_registered("model-dir", None, "m.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: model-dir has no model.onnx and no pruneops.task tag to export one
    """
    from pruneops.modelio import load_model
    from pruneops.tasks import load_task

    if not task_path:
        raise ModelFormatError(f"{folder} has no model.onnx and no pruneops.task tag to export one")
    return export_onnx(load_model(folder), load_task(task_path).example_input(2), target).path
