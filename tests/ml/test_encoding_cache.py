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


def test_a_row_whose_bytes_are_not_a_whole_vector_is_skipped(tmp_path: Path) -> None:
    import sqlite3

    from ml.encoding_cache import text_sha256

    cache = EncodingCache(tmp_path / "c.sqlite3")
    key, other = text_sha256("cancel my order"), text_sha256("thanks")
    cache.put_many("ns", {key: np.ones(32, dtype=np.float32), other: np.zeros(32, dtype=np.float32)})
    with sqlite3.connect(tmp_path / "c.sqlite3") as connection:  # a torn row: 127 of its 128 bytes
        connection.execute("UPDATE vectors SET vector = substr(vector, 1, 127) WHERE text_sha256 = ?", [key])
    found = cache.get_many("ns", [key, other])
    assert list(found) == [other] and np.array_equal(found[other], np.zeros(32, dtype=np.float32))


def test_a_damaged_cache_file_is_set_aside_and_encoding_goes_on(
    tiny_bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "encodings.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)  # a header, then garbage: an interrupted copy
    encoder = TextEncoder(*load_encoder(str(tiny_bert_dir)), device="cpu", workers=1)

    with caplog.at_level("WARNING", logger="ml.encoding_cache"):
        cache = EncodingCache(path)
    result = encode_with_cache(encoder, ["cancel my order", "thanks"], cache=cache)

    assert result.n_encoded == 2 and cache.count() == 2
    assert "cannot be read" in caplog.text and "set aside" in caplog.text
    assert len(list(tmp_path.glob("encodings.sqlite3.damaged-*"))) == 1
    np.testing.assert_allclose(result.vectors, encoder.encode(["cancel my order", "thanks"]), atol=1e-6)


def test_the_namespace_changes_with_a_configuration_that_changes_the_vectors(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from .test_encoder import relu_copy

    other = relu_copy(tiny_bert_dir, tmp_path / "relu")
    first = TextEncoder(*load_encoder(str(tiny_bert_dir)), device="cpu", workers=1)
    second = TextEncoder(*load_encoder(str(other)), device="cpu", workers=1)
    texts = ["cancel my order", "thanks great delivery"]
    assert first.fingerprint == second.fingerprint  # the same weights
    assert not np.allclose(first.encode(texts), second.encode(texts), atol=1e-4)

    cache = EncodingCache(tmp_path / "c.sqlite3")
    encode_with_cache(first, texts, cache=cache)
    served = encode_with_cache(second, texts, cache=cache)

    assert first.cache_namespace != second.cache_namespace and served.n_encoded == 2
    np.testing.assert_allclose(served.vectors, second.encode(texts), atol=1e-6)


def test_a_tokenizer_saved_to_cut_or_pad_on_the_left_still_keeps_the_start_of_a_text(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from transformers import AutoTokenizer

    left = tmp_path / "left"
    shutil.copytree(tiny_bert_dir, left)
    AutoTokenizer.from_pretrained(str(left), truncation_side="left", padding_side="left").save_pretrained(str(left))
    texts = ["cancel refund angry worst leaving " + "thanks love great happy again " * 3, "thanks"]

    right = TextEncoder(*load_encoder(str(tiny_bert_dir)), device="cpu", workers=1, max_length=8)
    saved_left = TextEncoder(*load_encoder(str(left)), device="cpu", workers=1, max_length=8)

    assert saved_left.tokenizer.truncation_side == "right" and saved_left.tokenizer.padding_side == "right"
    np.testing.assert_allclose(saved_left.encode(texts), right.encode(texts), atol=1e-6)
