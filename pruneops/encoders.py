"""Encoders in MLflow's ``transformers`` flavor: BERT, DistilBERT and MiniLM in, the same flavor out.

**In.** A version logged with ``mlflow.transformers.log_model`` (a ``save_pretrained`` folder:
``config.json`` and safetensors, plus the tokenizer under ``components/``) is read with the
real ``transformers`` library (``use_safetensors=True``, ``trust_remote_code=False``, no
download) and its weights are copied into pruneops' own encoder
(:class:`pruneops.models.encoder.Encoder`, BERT's parameter names), wrapped as
:class:`PooledEncoder`: token ids in, the mean of the last hidden states over real tokens
out (the sentence embedding sentence-transformers computes). Heads, MLP channels, blocks and
every unstructured or N:M pattern then apply as to any pruneops model. The import is checked:
both models run on the same ids and must agree, or the source is refused. Only encoder
checkpoints (``BertModel``, ``DistilBertModel``) with GELU and absolute positions come in; a
checkpoint that needs its own code (``auto_map``, the flavor's ``code``) or holds only a
pickled ``pytorch_model.bin`` is refused with the reason.

**Out.** A version whose architecture is a :class:`PooledEncoder` also gets the
``transformers`` flavor (:func:`add_transformers_flavor`): the pruned weights in the source's
own architecture, written by ``mlflow.transformers.save_model``, so
``mlflow.transformers.load_model`` gives a ``feature-extraction`` pipeline. Transformers 5
builds every layer with the config's one head count and MLP width, so removed heads and
neurons are written as zeros (exactly equivalent: a zero value row and output column add
nothing, and GELU(0) = 0) and dropped blocks are left out. The flavor therefore carries the
pruned function at dense size; the speed comes from the ONNX ``python_function`` flavor.

>>> config = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1,
...           "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 20}
>>> model = encoder_from_config(config=config)
>>> model(torch.tensor([[5, 6, 0]])).shape
torch.Size([1, 16])
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.errors import ModelFormatError
from pruneops.modelio import ARCH_FILE, ASSETS_ATTR, ASSETS_DIR, ArchSpec
from pruneops.models.encoder import Encoder, Layer, mean_pool
from pruneops.trust import model_factory

FLAVOR = "transformers"
FACTORY = "pruneops.encoders:encoder_from_config"
#: What the flavor's ``pipeline_model_type`` may be, and the ``model_type`` it implies.
ENCODER_TYPES = {"BertModel": "bert", "DistilBertModel": "distilbert"}
#: The tokenizer and other components of a transformers source, kept as the pruneops model's assets.
COMPONENTS_DIR = "components"
PIPELINE_TASK = "feature-extraction"
#: How far the imported encoder's embeddings may stray from the source's (float32 reordering).
IMPORT_ATOL = 1e-4
#: DistilBERT's names for the parts of layer ``i`` beside BERT's (pruneops' Encoder uses BERT's).
_DISTILBERT_PARTS = [
    ("attention.q_lin", "attention.self.query"),
    ("attention.k_lin", "attention.self.key"),
    ("attention.v_lin", "attention.self.value"),
    ("attention.out_lin", "attention.output.dense"),
    ("sa_layer_norm", "attention.output.LayerNorm"),
    ("ffn.lin1", "intermediate.dense"),
    ("ffn.lin2", "output.dense"),
    ("output_layer_norm", "output.LayerNorm"),
]
_LAYER_PARAM = re.compile(r"^(?:transformer|encoder)\.layer\.(\d+)\.(.+)\.(weight|bias)$")


class PooledEncoder(nn.Module):
    """A BERT-shaped encoder that maps token ids (``pad_id`` = padding) to mean-pooled embeddings."""

    def __init__(self, encoder: Encoder, pad_id: int) -> None:
        super().__init__()
        self.bert = encoder
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        return mean_pool(self.bert(input_ids, mask), mask)


@model_factory
def encoder_from_config(config: dict[str, Any]) -> PooledEncoder:
    """The architecture factory ``arch.json`` names: a :class:`PooledEncoder` shaped by a transformers config.

    >>> encoder_from_config(config={"model_type": "distilbert", "vocab_size": 50, "dim": 16, "n_layers": 1,
    ...                             "n_heads": 2, "hidden_dim": 32, "max_position_embeddings": 20}).pad_id
    0
    """
    return PooledEncoder(Encoder(**encoder_kwargs(config)), int(config.get("pad_token_id") or 0))


def encoder_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """:class:`Encoder` arguments from a BERT or DistilBERT ``config.json``, or why it cannot be one.

    >>> encoder_kwargs({"model_type": "bert", "hidden_act": "relu"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: ...activation 'relu'...
    """
    kind = config.get("model_type")
    if config.get("auto_map"):
        raise ModelFormatError("the transformers config names its own code (auto_map); pruneops does not run it")
    if kind == "bert":
        activation = config.get("hidden_act", "gelu")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ModelFormatError("only absolute position embeddings are supported")
        keys = {
            "vocab_size": "vocab_size",
            "hidden": "hidden_size",
            "layers": "num_hidden_layers",
            "heads": "num_attention_heads",
            "intermediate": "intermediate_size",
            "max_positions": "max_position_embeddings",
        }
        extra = {"type_vocab": int(config.get("type_vocab_size", 2)), "eps": float(config.get("layer_norm_eps", 1e-12))}
    elif kind == "distilbert":
        activation = config.get("activation", "gelu")
        keys = {
            "vocab_size": "vocab_size",
            "hidden": "dim",
            "layers": "n_layers",
            "heads": "n_heads",
            "intermediate": "hidden_dim",
            "max_positions": "max_position_embeddings",
        }
        extra = {"type_vocab": 1, "eps": 1e-12}  # DistilBERT has no token types: one all-zero row
    else:
        raise ModelFormatError(f"model_type {kind!r} is not an encoder pruneops imports (bert, distilbert)")
    if activation != "gelu":
        raise ModelFormatError(f"activation {activation!r} is not supported (gelu)")
    try:
        kwargs = {name: int(config[key]) for name, key in keys.items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFormatError(f"the {kind} config lacks a usable {err}") from None
    return {**kwargs, **extra}


def check_flavor(flavor: dict[str, Any], files: list[str]) -> None:
    """Refuse a ``transformers`` flavor pruneops cannot import, from ``MLmodel`` and the file list alone.

    >>> check_flavor({"pipeline_model_type": "GPT2LMHeadModel"}, [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.ModelFormatError: ...GPT2LMHeadModel...
    """
    kind = flavor.get("pipeline_model_type")
    if kind not in ENCODER_TYPES:
        raise ModelFormatError(
            f"the transformers model is a {kind}; pruneops imports encoders ({', '.join(ENCODER_TYPES)}), "
            "logged with task='feature-extraction'"
        )
    if flavor.get("code"):
        raise ModelFormatError("the transformers model ships its own code; pruneops does not run it")
    binary = str(flavor.get("model_binary", "model")).strip("/")
    if f"{binary}/config.json" not in files:
        raise ModelFormatError("the transformers model has no config.json (was it logged as a hub name only?)")
    if not any(f.startswith(f"{binary}/") and f.endswith(".safetensors") for f in files):
        raise ModelFormatError(
            "the transformers model has no safetensors weights; a pickled pytorch_model.bin is not loaded "
            "(save it with save_pretrained(safe_serialization=True))"
        )


def import_encoder(folder: Path, flavor: dict[str, Any]) -> tuple[PooledEncoder, ArchSpec]:
    """The source's encoder as a :class:`PooledEncoder` and its spec, proven to embed as the source does.

    Its components folder (the tokenizer) becomes the model's assets, carried to every
    version pruned from it.

    A small random BERT with MiniLM's tokenizer, saved as ``mlflow.transformers`` saves it:

    >>> import mlflow.transformers
    >>> from transformers import AutoConfig, AutoModel, AutoTokenizer
    >>> from pruneops.models import minilm
    >>> from pruneops.sources import read_mlmodel
    >>> config = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                               intermediate_size=64, max_position_embeddings=64)
    >>> team = {"model": AutoModel.from_config(config).eval(),
    ...         "tokenizer": AutoTokenizer.from_pretrained(str(minilm.model_dir()))}
    >>> folder = Path(tempfile.mkdtemp()) / "team-model"
    >>> mlflow.transformers.save_model(team, str(folder), task="feature-extraction", pip_requirements=["torch"])
    >>> model, spec = import_encoder(folder, read_mlmodel(folder)["flavors"]["transformers"])
    >>> type(model).__name__, spec.factory, Path(getattr(model, ASSETS_ATTR)).name
    ('PooledEncoder', 'pruneops.encoders:encoder_from_config', 'components')
    """
    from transformers import AutoModel

    model_dir = (folder / str(flavor.get("model_binary", "model")).strip("/")).resolve()
    if not model_dir.is_relative_to(folder.resolve()):
        raise ModelFormatError(f"{folder}: the transformers flavor's model_binary points outside the model")
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelFormatError(f"{model_dir}/config.json is unreadable: {err}") from None
    model = encoder_from_config(config=config)  # refuses what it cannot be, before transformers loads
    source = AutoModel.from_pretrained(
        str(model_dir), use_safetensors=True, trust_remote_code=False, local_files_only=True
    ).eval()
    model.bert.load_state_dict(_pruneops_state(config["model_type"], source.state_dict(), model), strict=True)
    _check_agrees(model.eval(), _HFPooled(source, model.pad_id), config, "the imported encoder")
    components = folder / COMPONENTS_DIR
    if components.is_dir():
        setattr(model, ASSETS_ATTR, str(components))
    return model, ArchSpec(FACTORY, {"config": config})


def _pruneops_state(kind: str, state: dict[str, torch.Tensor], model: PooledEncoder) -> dict[str, torch.Tensor]:
    """A transformers state dict under the Encoder's names (the pooler, unused by embeddings, left out)."""
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("pooler.") or name.endswith(("position_ids", "token_type_ids")):
            continue
        renamed[_renamed(name, to_bert=True) if kind == "distilbert" else name] = tensor
    if kind == "distilbert":
        renamed["embeddings.token_type_embeddings.weight"] = torch.zeros_like(
            model.bert.embeddings.token_type_embeddings.weight
        )
    return renamed


class _HFPooled(nn.Module):
    """A transformers encoder, mean-pooled like :class:`PooledEncoder` (to compare the two)."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        return mean_pool(self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask)


def _check_agrees(ours: nn.Module, theirs: nn.Module, config: dict[str, Any], what: str) -> None:
    """Both models embed the same padded random ids alike, or ``what`` is refused."""
    kwargs = encoder_kwargs(config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, kwargs["vocab_size"], (3, min(16, kwargs["max_positions"])), generator=generator)
    ids[0, ids.shape[1] // 2 :] = int(config.get("pad_token_id") or 0)
    with torch.no_grad():
        gap = float((ours(ids) - theirs(ids)).abs().max())
    if not gap <= IMPORT_ATOL:
        raise ModelFormatError(f"{what} does not embed as transformers does (max difference {gap:.2e})")


def to_transformers(model: PooledEncoder, config: dict[str, Any]) -> nn.Module:
    """The pruned encoder in the source's transformers architecture (pruned widths zero-filled).

    >>> config = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
    ...           "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 20}
    >>> type(to_transformers(encoder_from_config(config=config), config)).__name__
    'BertModel'
    """
    from transformers import AutoConfig, AutoModel

    kind = config["model_type"]
    layers = [block for block in model.bert.encoder.layer if isinstance(block, Layer)]
    hidden = model.bert.embeddings.word_embeddings.embedding_dim
    if hidden != encoder_kwargs(config)["hidden"]:
        raise ModelFormatError("the hidden size changed; the transformers flavor cannot express it")
    width = max((block.intermediate.dense.out_features for block in layers), default=1)
    distil = kind == "distilbert"
    layer_key, width_key = ("n_layers", "hidden_dim") if distil else ("num_hidden_layers", "intermediate_size")
    settings = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
    hf_config = AutoConfig.for_model(kind, **{**settings, layer_key: len(layers), width_key: width})
    extra = {} if distil else {"add_pooling_layer": False}
    target = AutoModel.from_config(hf_config, **extra).eval()
    state = _transformers_state(model, layers, target.state_dict(), kind)
    target.load_state_dict(state, strict=True)
    return target


def _transformers_state(
    model: PooledEncoder, layers: list[Layer], template: dict[str, torch.Tensor], kind: str
) -> dict[str, torch.Tensor]:
    """Fill ``template`` (a fresh transformers state dict) from the pruned encoder, zero-padding widths."""
    ours = {k: v.detach() for k, v in model.bert.embeddings.state_dict().items()}
    state = {f"embeddings.{k}": v for k, v in ours.items()}
    if kind == "distilbert":  # fold the all-zero token type row (trained by fine-tuning) into positions
        state["embeddings.position_embeddings.weight"] = (
            ours["position_embeddings.weight"] + ours["token_type_embeddings.weight"][0]
        )
        del state["embeddings.token_type_embeddings.weight"]
    for index, block in enumerate(layers):
        for name, tensor in block.state_dict().items():
            state[f"encoder.layer.{index}.{name}"] = tensor.detach()
    if kind == "distilbert":
        state = {_renamed(name, to_bert=False): tensor for name, tensor in state.items()}
    for name, shape_of in template.items():
        if name in state and state[name].shape != shape_of.shape:
            state[name] = _zero_padded(state[name], shape_of.shape)
    for name in template.keys() - state.keys():
        if name.endswith(("position_ids", "token_type_ids")):
            state[name] = template[name]  # buffers transformers builds itself
    return state


def _renamed(name: str, to_bert: bool) -> str:
    """A layer parameter's name in BERT's terms (``to_bert``) or DistilBERT's; other names unchanged.

    >>> _renamed("transformer.layer.3.ffn.lin1.bias", to_bert=True)
    'encoder.layer.3.intermediate.dense.bias'
    """
    match = _LAYER_PARAM.match(name)
    if match is None:
        return name
    for distil, bert in _DISTILBERT_PARTS:
        old, new = (distil, bert) if to_bert else (bert, distil)
        if match[2] == old:
            return f"{'encoder' if to_bert else 'transformer'}.layer.{match[1]}.{new}.{match[3]}"
    return name


def _zero_padded(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``tensor`` in the corner of a zero tensor of ``shape`` (removed heads and neurons add nothing)."""
    padded = torch.zeros(shape, dtype=tensor.dtype)
    padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return padded


def add_transformers_flavor(folder: str | Path, model: nn.Module, probe: Any) -> bool:
    """Add the ``transformers`` flavor to a staged version whose model is a :class:`PooledEncoder`.

    The transformers model must reproduce the probe (else :class:`ModelFormatError`). Returns
    False, adding nothing, for other models and for an encoder without a tokenizer.

    >>> import torch
    >>> from pruneops.export import export_onnx
    >>> from pruneops.mlmodel import ONNX_FILE, add_mlmodel
    >>> from pruneops.modelio import load_model, save_model
    >>> from pruneops.models import minilm
    >>> from pruneops.probe import VALUES, record
    >>> config = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
    ...           "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}
    >>> model, ids = encoder_from_config(config=config).eval(), torch.tensor([[101, 7592, 102, 0]])
    >>> assets = Path(tempfile.mkdtemp())
    >>> _ = shutil.copytree(minilm.model_dir(), assets / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors"))
    >>> setattr(model, ASSETS_ATTR, str(assets))  # as an import sets it: the tokenizer travels with the model
    >>> spec = ArchSpec(FACTORY, {"config": config})
    >>> staged = save_model(model, tempfile.mkdtemp(), spec, record(model, ids, VALUES))
    >>> _ = export_onnx(model, ids, staged / ONNX_FILE)
    >>> _ = add_mlmodel(staged, record(model, ids, VALUES))
    >>> add_transformers_flavor(staged, load_model(staged), record(model, ids, VALUES))
    True
    >>> import mlflow.transformers  # plain MLflow gives a feature-extraction pipeline
    >>> type(mlflow.transformers.load_model(str(staged))).__name__
    'FeatureExtractionPipeline'
    """
    folder = Path(folder)
    spec = ArchSpec.from_json((folder / ARCH_FILE).read_text())
    tokenizer_dir = folder / ASSETS_DIR / "tokenizer"
    if spec.factory != FACTORY or not isinstance(model, PooledEncoder) or not tokenizer_dir.is_dir():
        return False
    import mlflow.transformers  # only now: importing transformers takes seconds
    from mlflow.models import Model
    from transformers import AutoTokenizer

    from pruneops.mlmodel import MLMODEL_FILE, pinned
    from pruneops.probe import check_round_trip

    config = spec.kwargs["config"]
    target = to_transformers(model, config)
    check_round_trip(_HFPooled(target, model.pad_id), probe, f"{folder} (transformers flavor)")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False, local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "hf"
        mlflow.transformers.save_model(
            {"model": target, "tokenizer": tokenizer},
            str(staged),
            task=PIPELINE_TASK,
            pip_requirements=pinned(("transformers", "tokenizers", "torch")),
        )
        for part in ("model", COMPONENTS_DIR):
            shutil.copytree(staged / part, folder / part, dirs_exist_ok=True)
        flavor = Model.load(str(staged / MLMODEL_FILE)).flavors[FLAVOR]
    mlmodel = Model.load(str(folder / MLMODEL_FILE))
    mlmodel.flavors[FLAVOR] = flavor
    mlmodel.save(str(folder / MLMODEL_FILE))
    return True
