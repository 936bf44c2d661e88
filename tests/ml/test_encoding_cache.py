from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.encoder import TextEncoder, load_encoder
from ml.encoding_cache import EncodingCache, encode_with_cache


class CountingEncoder(TextEncoder):
    """Records every text that really goes through the model."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.encoded_texts: list[str] = []

    def encode(self, texts, **kwargs):  # noqa: ANN001, ANN201 - test double
        self.encoded_texts.extend(texts)
        return super().encode(texts, **kwargs)


@pytest.fixture
def counting_encoder(tiny_bert_dir: Path) -> CountingEncoder:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    return CountingEncoder(tokenizer, model, device="cpu", batch_size=4)


def test_unchanged_text_is_never_encoded_twice(counting_encoder: CountingEncoder, tmp_path: Path) -> None:
    cache = EncodingCache(tmp_path / "cache" / "encodings.sqlite3")
    first = encode_with_cache(counting_encoder, ["my order", "cancel it", "my order"], cache=cache)

    second = encode_with_cache(counting_encoder, ["cancel it", "refund now", "my order"], cache=cache)

    assert counting_encoder.encoded_texts == ["my order", "cancel it", "refund now"]
    assert (first.n_encoded, first.n_reused) == (2, 0)
    assert (second.n_encoded, second.n_reused) == (1, 2)
    np.testing.assert_array_equal(second.vectors[0], first.vectors[1])
    np.testing.assert_array_equal(second.vectors[2], first.vectors[0])
    np.testing.assert_allclose(
        second.vectors, counting_encoder.encode(["cancel it", "refund now", "my order"]), atol=1e-6
    )


def test_cache_survives_a_new_process_and_is_keyed_by_the_encoder_weights(
    counting_encoder: CountingEncoder, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import torch

    path = tmp_path / "encodings.sqlite3"
    encode_with_cache(counting_encoder, ["my order"], cache=EncodingCache(path))

    reopened = encode_with_cache(counting_encoder, ["my order"], cache=EncodingCache(path))
    assert (reopened.n_encoded, reopened.n_reused) == (0, 1)

    tokenizer, model = load_encoder(str(tiny_bert_dir))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(1.5)
    changed = CountingEncoder(tokenizer, model, device="cpu")
    after_change = encode_with_cache(changed, ["my order"], cache=EncodingCache(path))
    assert (after_change.n_encoded, after_change.n_reused) == (1, 0)
    assert EncodingCache(path).count() == 2
