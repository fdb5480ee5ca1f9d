"""A fixed, generated English sentence set for encoder benchmarks (no data download).

Sentences are built from templates with a seeded shuffle, so every run sees the same text.

>>> len(sentence_set()[0]), len(sentence_set()[1])
(256, 64)
"""

from __future__ import annotations

import random

_SUBJECTS = [
    "The engineer", "A small child", "My neighbour", "The old fisherman", "A tired nurse", "The new manager",
    "Our teacher", "A street musician", "The pilot", "A young painter", "The chef", "A quiet student",
    "The farmer", "A retired judge", "The cyclist", "A famous writer",
]  # fmt: skip
_ACTIONS = [
    "repaired the broken bicycle", "wrote a long letter to a friend", "cooked dinner for the whole family",
    "watched the storm from the window", "planted tomatoes in the garden", "lost the keys to the car",
    "played the violin at the wedding", "read the news on a train", "climbed the hill before sunrise",
    "paid the bills at the bank", "fixed a bug in the server code", "painted the fence bright blue",
    "sold fresh bread at the market", "forgot the meeting with the doctor", "fed the cats next door",
    "measured the latency of the new model", "trained a neural network overnight",
    "argued about football with a stranger",
]  # fmt: skip
_TAILS = ["", " yesterday", " last week", " in the rain", " after work", " without saying a word", " again"]


def sentence_set(seed: int = 0, train: int = 256, test: int = 64) -> tuple[list[str], list[str]]:
    """Disjoint ``(train, test)`` lists of sentences.

    >>> train, test = sentence_set(train=3, test=2)
    >>> len(train), len(test), set(train) & set(test)
    (3, 2, set())
    """
    everything = [f"{s} {a}{t}." for s in _SUBJECTS for a in _ACTIONS for t in _TAILS]
    random.Random(seed).shuffle(everything)
    return everything[:train], everything[train : train + test]
