"""A model's probe: a few real inputs and the outputs the model gave on them in memory.

A model that loads is not a model that works: a classifier cut to 7 outputs, weights scaled
by 1e37 or a mis-recorded width all load without complaint. So every saved model carries
``probe.safetensors`` (inputs, outputs and what kind of outputs they are), written from the
model while it is still in memory, and two checks read it:

- **Round trip** at registration (:func:`check_round_trip`): the stored model, loaded back,
  must reproduce the recorded outputs within float tolerance, so a save that loses anything
  is refused before it becomes a version.
- **Agreement** before a server swaps a version in (:func:`check_outputs`): the runtime that
  will serve (ONNX Runtime, torch on a GPU) must give finite outputs of the recorded shape
  that agree with the recorded ones: the same top class for ``classes``, cosine similarity
  of at least 0.99 for ``values``.

>>> import torch, tempfile
>>> model = torch.nn.Linear(4, 3).eval()
>>> probe = record(model, torch.randn(8, 4), CLASSES)
>>> folder = tempfile.mkdtemp()
>>> _ = probe.save(folder)
>>> Probe.load(folder).agreement(probe.outputs)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pruneops.errors import ModelFormatError, ProbeMismatch

PROBE_FILE = "probe.safetensors"
CLASSES, VALUES = "classes", "values"
KINDS = (CLASSES, VALUES)
#: Least agreement a runtime must reach with the recorded outputs before it serves.
MIN_AGREEMENT = 0.95
#: Cosine similarity at which a row of ``values`` counts as agreeing.
MIN_COSINE = 0.99


@dataclass(frozen=True)
class Probe:
    """Inputs, the outputs the model gave on them, and ``kind``: ``classes`` or ``values``."""

    inputs: np.ndarray
    outputs: np.ndarray
    kind: str

    def save(self, folder: str | Path) -> Path:
        """Write ``probe.safetensors`` into ``folder``; returns its path."""
        from safetensors.numpy import save_file

        path = Path(folder) / PROBE_FILE
        tensors = {"inputs": np.ascontiguousarray(self.inputs), "outputs": np.ascontiguousarray(self.outputs)}
        save_file(tensors, str(path), metadata={"kind": self.kind})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Probe:
        """Read a folder's probe; a missing or corrupt one raises :class:`ModelFormatError`."""
        from safetensors import SafetensorError, safe_open

        path = Path(folder) / PROBE_FILE
        if not path.is_file():
            raise ModelFormatError(f"{folder} has no {PROBE_FILE}: save the model with a probe of real inputs")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                kind = (handle.metadata() or {}).get("kind", "")
                inputs, outputs = handle.get_tensor("inputs"), handle.get_tensor("outputs")
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise ModelFormatError(f"{path} is corrupt: {err}") from None
        if kind not in KINDS or len(inputs) != len(outputs) or len(inputs) == 0:
            raise ModelFormatError(f"{path} is malformed: kind {kind!r}, {len(inputs)} inputs, {len(outputs)} outputs")
        return cls(inputs, outputs, kind)

    def agreement(self, outputs: np.ndarray) -> float:
        """Share of rows where ``outputs`` agree with the recorded ones (top class, or cosine >= 0.99).

        >>> probe = Probe(np.zeros((2, 1)), np.array([[1.0, 0.0], [0.0, 1.0]]), CLASSES)
        >>> probe.agreement(np.array([[2.0, 0.0], [3.0, 1.0]]))
        0.5
        """
        ours, theirs = _rows(outputs), _rows(self.outputs)
        if self.kind == CLASSES:
            return float((ours.argmax(axis=1) == theirs.argmax(axis=1)).mean())
        norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
        cosine = (ours * theirs).sum(axis=1) / np.maximum(norms, 1e-12)
        return float((cosine >= MIN_COSINE).mean())


def record(model: nn.Module, inputs: torch.Tensor, kind: str) -> Probe:
    """Run ``inputs`` through ``model`` (eval mode, no gradients) and keep both as a probe.

    >>> probe = record(torch.nn.Linear(4, 3), torch.ones(2, 4), CLASSES)
    >>> tuple(probe.inputs.shape), tuple(probe.outputs.shape), probe.kind
    ((2, 4), (2, 3), 'classes')
    """
    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    model.train(was_training)
    return Probe(inputs.detach().cpu().numpy(), outputs.detach().float().cpu().numpy(), kind)


def check_outputs(
    probe: Probe,
    outputs: np.ndarray,
    what: str,
    min_agreement: float = MIN_AGREEMENT,
    expected_shape: tuple[int, ...] | None = None,
) -> float:
    """Refuse outputs that are non-finite, of another shape, or that disagree with the probe; returns the agreement.

    ``expected_shape`` (without the batch dimension) is what clients see now, e.g. the
    version being served: a new version must keep it.

    >>> probe = Probe(np.zeros((2, 1)), np.eye(2), CLASSES)
    >>> check_outputs(probe, np.eye(2) * 1e39, "v2")
    Traceback (most recent call last):
    ...
    pruneops.errors.ProbeMismatch: v2 gives non-finite outputs on its probe inputs
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if not np.isfinite(outputs.astype(np.float32)).all():
        raise ProbeMismatch(f"{what} gives non-finite outputs on its probe inputs")
    if outputs.shape != probe.outputs.shape:
        raise ProbeMismatch(
            f"{what} gives outputs of shape {list(outputs.shape)} on its probe, "
            f"not the {list(probe.outputs.shape)} recorded at registration"
        )
    if expected_shape is not None and tuple(outputs.shape[1:]) != tuple(expected_shape):
        raise ProbeMismatch(
            f"{what} gives outputs shaped [N, {', '.join(map(str, outputs.shape[1:]))}] where clients get "
            f"[N, {', '.join(map(str, expected_shape))}] from the version being served"
        )
    agreement = probe.agreement(outputs)
    if agreement < min_agreement:
        raise ProbeMismatch(
            f"{what} agrees with the outputs recorded at registration on {agreement:.0%} of its probe "
            f"inputs (at least {min_agreement:.0%} required)"
        )
    return agreement


def check_round_trip(model: nn.Module, probe: Probe, what: str, atol: float = 1e-4, rtol: float = 1e-3) -> None:
    """Refuse a stored model that does not reproduce, within float tolerance, what it gave in memory.

    >>> model = torch.nn.Linear(4, 3)
    >>> probe = record(model, torch.ones(2, 4), CLASSES)
    >>> check_round_trip(model, probe, "digits v2")  # reproduces its probe: nothing raised
    >>> with torch.no_grad():
    ...     _ = model.bias.add_(1.0)
    >>> check_round_trip(model, probe, "digits v2")
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: digits v2: ... does not reproduce ... (largest difference 1 on the probe)...
    """
    try:
        with torch.no_grad():
            outputs = model.eval()(torch.from_numpy(probe.inputs)).detach().float().cpu().numpy()
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        # A lost width or head count shows up as a shape error inside forward.
        raise ModelFormatError(f"{what}: the stored model does not run on the probe: {err}") from None
    if outputs.shape != probe.outputs.shape:
        raise ModelFormatError(
            f"{what}: the stored model gives outputs of shape {list(outputs.shape)}, "
            f"the model in memory gave {list(probe.outputs.shape)}"
        )
    excess = np.abs(outputs - probe.outputs) - (atol + rtol * np.abs(probe.outputs))
    if not np.isfinite(outputs).all() or excess.max() > 0:
        worst = float(np.nanmax(np.abs(outputs - probe.outputs)))
        raise ModelFormatError(
            f"{what}: the stored model does not reproduce the outputs of the model in memory "
            f"(largest difference {worst:.3g} on the probe); something was lost in saving"
        )


def check_finite_weights(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights that hold NaN or infinity.

    >>> check_finite_weights({"w": torch.tensor([1.0, float("nan")])}, "m")
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: m: weight 'w' holds NaN or infinity
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelFormatError(f"{what}: weight {name!r} holds NaN or infinity")


def _rows(outputs: np.ndarray) -> np.ndarray:
    array = np.asarray(outputs, dtype=np.float64)
    return array.reshape(len(array), -1)
