"""Fixtures for ml tests: a tiny randomly initialised BERT saved as a local model directory (no download)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_bert import LETTERS, write_tiny_bert

WORDS = (
    "i my the a is was and to it of for with order orders delivery product products item items "
    "thanks thank you great love happy fast good nice again buy bought will more "
    "cancel refund angry slow broken never late worst leaving account close bad "
    "customer service support question about size colour color shipping package arrived today week"
).split()
CHURN_WORDS = ("cancel", "refund", "angry", "worst", "leaving")
STAY_WORDS = ("thanks", "love", "great", "happy", "again")
NEUTRAL_WORDS = ("order", "delivery", "product", "item", "package", "arrived", "today", "size", "question", "about")


def _write_tiny_bert(directory: Path) -> Path:
    tokens = [".", ",", "!", "?", *LETTERS, *WORDS]
    return write_tiny_bert(directory, tokens=tokens, word_pieces=LETTERS, max_position_embeddings=128)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine thrash."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local directory holding a 2-layer, hidden-32 random BERT and its tokenizer."""
    return _write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def keyword_texts(n: int, *, seed: int = 0) -> tuple[list[str], list[int]]:
    """Short customer messages whose label is whether a churn keyword appears (half of them)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for row in range(n):
        label = row % 2
        words = rng.sample(NEUTRAL_WORDS, k=rng.randint(2, 6))
        keyword = rng.choice(CHURN_WORDS if label else STAY_WORDS)
        words.insert(rng.randint(0, len(words)), keyword)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture
def keyword_data() -> tuple[list[str], list[int]]:
    return keyword_texts(40)
