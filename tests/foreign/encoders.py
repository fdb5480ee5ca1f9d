"""Encoders as a team logs them: a transformers model and tokenizer, ``mlflow.transformers.log_model``.

The tokenizer is all-MiniLM-L6-v2's (shipped in a package); the encoders are either that
pretrained MiniLM or small BERT/DistilBERT models with seeded random weights that pruneops
never saw. No pruneops code is used to build or log them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from pruneops.models import minilm, sentences

#: What MLflow would infer, named: its inference imports torchvision, which is not installed.
PIP_REQUIREMENTS = ["transformers", "torch", "tokenizers"]
TOKENS = 24


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm.model_dir()))


def tiny(kind: str = "bert", seed: int = 0) -> Any:
    """A small random encoder with MiniLM's vocabulary: 4 heads of 8, 2 layers."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    if kind == "distilbert":
        config = AutoConfig.for_model("distilbert", vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                      max_position_embeddings=64)  # fmt: skip
    else:
        config = AutoConfig.for_model("bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=64,
                                      max_position_embeddings=64)  # fmt: skip
    return AutoModel.from_config(config).eval()


def pretrained_minilm() -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm.model_dir()), use_safetensors=True).eval()


def log(model: Any, registered_name: str, artifacts: Path) -> str:
    """Log ``model`` with the MiniLM tokenizer as a feature-extraction pipeline and register it."""
    existing = mlflow.get_experiment_by_name(f"team-{registered_name}")
    experiment = (
        existing.experiment_id
        if existing
        else mlflow.create_experiment(f"team-{registered_name}", artifact_location=artifacts.as_uri())
    )
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer()},
            name="model",
            task="feature-extraction",
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=registered_name,
        )
    return str(info.model_uri)


def token_file(path: Path, rows: int = 160) -> Path:
    """An npz of token ids (``inputs`` only, padded to :data:`TOKENS`) from the offline sentence set."""
    train, test = sentences.sentence_set(train=rows - 40, test=40)
    encoded = tokenizer()(train + test, padding="max_length", truncation=True, max_length=TOKENS)
    np.savez(path, inputs=np.asarray(encoded["input_ids"], dtype=np.int64))
    return path


def mean_pooled(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """What a team computes from the transformers model: the mean of the last hidden states over real tokens."""
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
