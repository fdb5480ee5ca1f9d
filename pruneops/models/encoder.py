"""A BERT-style encoder in plain torch, with Hugging Face BERT's parameter names.

The names match ``transformers``' ``BertModel`` (``encoder.layer.0.attention.self.query`` ...),
so a BERT checkpoint in safetensors (such as all-MiniLM-L6-v2) loads with
``load_state_dict``. Every width is a constructor argument and attention reads its
``num_heads`` at run time, so head pruning and layer dropping leave a model that still runs.
Used for head/block pruning tests, the GPU 2:4 benchmark (BERT-base shapes) and MiniLM.

>>> import torch
>>> model = build(vocab_size=100, hidden=64, layers=2, heads=4, intermediate=128, max_positions=32)
>>> model(torch.randint(0, 100, (2, 16))).shape
torch.Size([2, 16, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruneops.trust import model_factory


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embedded = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        # Called as a module (not indexed) so Torch-Pruning's graph sees the dependency.
        embedded = embedded + self.token_type_embeddings(torch.zeros_like(input_ids))
        return self.LayerNorm(embedded)


class SelfAttention(nn.Module):
    """Multi-head attention whose head count is an attribute (head pruning changes it)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask
        )
        return context.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)


class DenseNorm(nn.Module):
    """Projection, residual and LayerNorm (BERT's ``SelfOutput`` and ``Output``)."""

    def __init__(self, inner: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = DenseNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One transformer block: attention then the MLP, each with residual and LayerNorm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = DenseNorm(intermediate, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class EncoderStack(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, intermediate, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.layer:
            x = block(x, mask)
        return x


class Encoder(nn.Module):
    """Token ids ``(batch, tokens)`` to hidden states ``(batch, tokens, hidden)``; optional classifier."""

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden: int = 768,
        layers: int = 12,
        heads: int = 12,
        intermediate: int = 3072,
        max_positions: int = 512,
        type_vocab: int = 2,
        num_labels: int = 0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.embeddings = Embeddings(vocab_size, hidden, max_positions, type_vocab, eps)
        self.encoder = EncoderStack(layers, hidden, heads, intermediate, eps)
        self.classifier = nn.Linear(hidden, num_labels) if num_labels else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = None
        if attention_mask is not None:
            mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = self.encoder(self.embeddings(input_ids), mask)
        if self.classifier is not None:
            return self.classifier(hidden.mean(dim=1))
        return hidden


@model_factory
def build(**kwargs: int | float) -> Encoder:
    """The architecture factory named in ``arch.json``: ``Encoder(**kwargs)``.

    >>> encoder = build(vocab_size=100, hidden=16, layers=2, heads=2, intermediate=32)
    >>> encoder(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 16])
    """
    return Encoder(**kwargs)  # type: ignore[arg-type]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as sentence-transformers computes it: the mean over real tokens.

    >>> mean_pool(torch.ones(1, 3, 2), torch.tensor([[1, 1, 0]])).tolist()
    [[1.0, 1.0]]
    """
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def bert_base_config() -> dict[str, int]:
    """BERT-base shapes (110M parameters) for speed benchmarks with random weights.

    >>> encoder = Encoder(**bert_base_config())
    >>> round(sum(p.numel() for p in encoder.parameters()) / 1e6)
    109
    """
    return {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}
