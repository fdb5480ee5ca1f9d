"""Exported programs (``.pt2``) as prunable modules: their linear and conv calls lifted into layers.

``ExportedProgram.module()`` calls ``aten.linear`` and ``aten.conv2d`` as functions on
parameters it holds as plain attributes, so nothing in it is an ``nn.Linear`` or ``nn.Conv2d``
that pruning could find, mask and fine-tune. :func:`lift_layers` rewrites each such call
whose weight is used by that call alone into a call of a real ``nn.Linear``/``nn.Conv2d``
holding the same parameter objects, under the same names, so ``state_dict`` keys do not
change. Unstructured and N:M pruning, Wanda and SparseGPT calibration and masked
fine-tuning then work as on a model built from code.

The graph fixes every width (shapes and ``LayerNorm`` sizes are constants in it), so
structured pruning cannot apply: :data:`STRUCTURED_REFUSAL` says why, before any step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

STRUCTURED_REFUSAL = (
    "structured pruning (channels, heads, blocks) cannot apply to an exported program: its graph "
    "fixes every width; use an unstructured or N:M pattern, or register the model's code and weights"
)
#: Attribute on a loaded program module: the ``.pt2`` file its graph came from (saved beside the weights).
PROGRAM_ATTR = "pruneops_program"


def load_program(path: str | Path) -> nn.Module:
    """Load a ``.pt2`` archive through the safe loader (:func:`pruneops.pt2.load_exported`) and lift its layers.
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/m.pt2"
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> torch.export.save(torch.export.export(model, (torch.randn(3, 4),)), path)
    >>> module = load_program(path)
    >>> [type(m).__name__ for name, m in module.named_modules() if name in ("0", "2")]
    ['Linear', 'Linear']
    >>> torch.allclose(module(torch.ones(3, 4)), model(torch.ones(3, 4)))
    True
    """
    from pruneops.pt2 import load_exported

    exported = load_exported(path)
    # A plain GraphModule of the same graph: the exported one refuses train() and eval(),
    # which fine-tuning calls. The graph already has inference semantics (BatchNorm with
    # running statistics, no dropout) in either mode.
    module = lift_layers(fx.GraphModule(exported, exported.graph))
    setattr(module, PROGRAM_ATTR, str(path))
    return module.eval()


def lift_layers(module: fx.GraphModule) -> fx.GraphModule:
    """Replace ``aten.linear``/``aten.conv2d`` calls on owned parameters by ``nn.Linear``/``nn.Conv2d`` calls.
    >>> program = torch.export.export(nn.Sequential(nn.Linear(4, 2)), (torch.randn(3, 4),)).module()
    >>> module = fx.GraphModule(program, program.graph)
    >>> [type(m).__name__ for m in module.modules()][:2]  # the weight is a plain attribute
    ['GraphModule', 'Module']
    >>> [type(m).__name__ for m in lift_layers(module).modules()][:2]
    ['GraphModule', 'Linear']
    """
    graph = module.graph
    lifted = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten.linear.default:
            layer = _linear(module, node)
        elif node.target is torch.ops.aten.conv2d.default:
            layer = _conv2d(module, node)
        else:
            continue
        if layer is None:
            continue
        owner, weight_node, bias_node = layer
        with graph.inserting_before(node):
            call = graph.call_module(owner, (node.args[0],))
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        for attr in (weight_node, bias_node):
            if attr is not None and not attr.users:
                graph.erase_node(attr)
        lifted += 1
    if lifted:
        graph.lint()
        module.recompile()
    return module


def _owned(module: fx.GraphModule, node: Any) -> tuple[str, nn.Parameter] | None:
    """``(owner path, parameter)`` when ``node`` reads a parameter that only this call uses."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return None
    owner, _, leaf = str(node.target).rpartition(".")
    if not owner:
        return None
    holder = module.get_submodule(owner)
    parameter = holder._parameters.get(leaf)
    if parameter is None or type(holder) is not nn.Module:
        return None  # a buffer, or an owner that is already a real layer
    return owner, parameter


def _bias(module: fx.GraphModule, node: Any, owner: str) -> tuple[nn.Parameter | None, bool]:
    """The bias parameter (or None), and whether the bias argument is usable (absent or owned alike)."""
    if node is None:
        return None, True
    found = _owned(module, node)
    if found is None or found[0] != owner:
        return None, False
    return found[1], True


def _install(
    module: fx.GraphModule, owner: str, layer: nn.Module, weight: nn.Parameter, bias: nn.Parameter | None
) -> None:
    holder = module.get_submodule(owner)
    if set(holder._parameters) - {"weight", "bias"} or holder._buffers or holder._modules:
        raise ValueError("owner holds more than a layer")
    layer.weight = weight
    layer.register_parameter("bias", bias)
    parent, _, child = owner.rpartition(".")
    (module.get_submodule(parent) if parent else module)._modules[child] = layer


def _linear(module: fx.GraphModule, node: fx.Node) -> tuple[str, fx.Node, fx.Node | None] | None:
    weight_node = node.args[1]
    bias_node = node.args[2] if len(node.args) > 2 else None
    found = _owned(module, weight_node)
    if found is None:
        return None
    owner, weight = found
    bias, usable = _bias(module, bias_node, owner)
    if not usable or weight.dim() != 2:
        return None
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    try:
        _install(module, owner, layer, weight, bias)
    except ValueError:
        return None
    return owner, weight_node, bias_node  # type: ignore[return-value]


def _conv2d(module: fx.GraphModule, node: fx.Node) -> tuple[str, fx.Node, fx.Node | None] | None:
    args: list[Any] = list(node.args) + [None] * (7 - len(node.args))
    _, weight_node, bias_node, stride, padding, dilation, groups = args
    found = _owned(module, weight_node)
    if found is None or isinstance(padding, str):
        return None
    owner, weight = found
    bias, usable = _bias(module, bias_node, owner)
    if not usable or weight.dim() != 4:
        return None
    groups = int(groups or 1)
    layer = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        (weight.shape[2], weight.shape[3]),
        stride=tuple(stride or (1, 1)),
        padding=tuple(padding or (0, 0)),
        dilation=tuple(dilation or (1, 1)),
        groups=groups,
        bias=bias is not None,
        device="meta",
    )
    try:
        _install(module, owner, layer, weight, bias)
    except ValueError:
        return None
    return owner, weight_node, bias_node
