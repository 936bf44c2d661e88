from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml.artifacts import ArtifactError
from ml.finetune import FineTuneConfig, TransformerChurnClassifier, UnknownTokenWarning

from .conftest import keyword_texts
from .test_encoder import cased_copy, relu_copy

# Settings that let a 2-layer random BERT learn a keyword in a few epochs on 40 texts.
FAST = {
    "frozen": FineTuneConfig(mode="frozen", head_c=100.0, device="cpu", show_progress=False),
    "top-k": FineTuneConfig(
        mode="top-k",
        top_k=1,
        lr=3e-3,
        head_lr=3e-2,
        epochs=8,
        batch_size=8,
        patience=8,
        device="cpu",
        show_progress=False,
    ),
    "lora": FineTuneConfig(
        mode="lora",
        lora_r=4,
        lr=1e-2,
        head_lr=3e-2,
        epochs=8,
        batch_size=8,
        patience=8,
        device="cpu",
        show_progress=False,
    ),
    "full": FineTuneConfig(
        mode="full",
        lr=3e-3,
        head_lr=3e-2,
        epochs=8,
        batch_size=8,
        grad_accum_steps=2,
        patience=8,
        device="cpu",
        show_progress=False,
    ),
}


@pytest.mark.parametrize("mode", ["frozen", "top-k", "lora", "full"])
def test_every_mode_learns_a_keyword_and_reloads_to_identical_probabilities(
    mode: str, tiny_bert_dir: Path, tmp_path: Path, keyword_data: tuple[list[str], list[int]]
) -> None:
    texts, labels = keyword_data
    held_out_texts, held_out_labels = keyword_texts(20, seed=1)
    seen: list[float] = []
    model = TransformerChurnClassifier(FAST[mode], encoder=str(tiny_bert_dir), cache_dir=tmp_path / "cache")

    model.fit(texts, labels, progress=lambda fraction, message: seen.append(fraction))
    probabilities = model.predict_proba(held_out_texts)
    model.save(tmp_path / "model")
    reloaded = TransformerChurnClassifier.load(tmp_path / "model", device="cpu")

    assert probabilities.shape == (20, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert roc_auc_score(held_out_labels, probabilities[:, 1]) > 0.75, (
        f"{mode} did not learn the keyword (untrained: about 0.5)"
    )
    np.testing.assert_allclose(reloaded.predict_proba(held_out_texts), probabilities, atol=1e-6)
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["mode"] == mode and metadata["encoder"]["fingerprint"] == model.encoder_fingerprint_
    assert metadata["unk_rate"] == 0.0 and "torch" in metadata["libraries"]


def test_topk_artifact_holds_only_the_trained_layers(tiny_bert_dir: Path, tmp_path: Path, keyword_data) -> None:
    from ml.artifacts import load_artifact

    texts, labels = keyword_data
    config = FineTuneConfig(mode="top-k", top_k=1, epochs=1, device="cpu", show_progress=False)
    TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels).save(tmp_path / "m")

    names = set(load_artifact(tmp_path / "m").tensors)
    assert {"head.weight", "head.bias"} <= names
    assert all(name.startswith(("head.", "encoder.encoder.layer.1.")) for name in names), sorted(names)[:5]


@pytest.mark.parametrize("mode", ["frozen", "top-k", "lora", "full"])
def test_two_fits_with_the_same_seed_give_identical_probabilities(mode: str, tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    config = FineTuneConfig(mode=mode, epochs=2, batch_size=8, lr=1e-3, device="cpu", show_progress=False)

    first = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels).predict_proba(texts)
    second = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels).predict_proba(texts)
    other_seed = FineTuneConfig(mode=mode, epochs=2, batch_size=8, lr=1e-3, device="cpu", show_progress=False, seed=7)
    third = TransformerChurnClassifier(other_seed, encoder=str(tiny_bert_dir)).fit(texts, labels).predict_proba(texts)

    np.testing.assert_array_equal(first, second)
    if mode != "frozen":  # the frozen head is a convex fit: the seed only picks the validation split
        assert not np.array_equal(first, third)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(tiny_bert_dir: Path, keyword_data) -> None:
    from sklearn.metrics import average_precision_score

    texts, labels = keyword_data
    val_texts, val_labels = keyword_texts(16, seed=3)
    flipped = [1 - label for label in val_labels]  # learning the keyword makes this validation set worse
    config = FineTuneConfig(
        mode="full", lr=3e-3, head_lr=3e-2, epochs=10, batch_size=8, patience=2, device="cpu", show_progress=False
    )

    model = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels, val_texts, flipped)

    aucs = [record.val_pr_auc for record in model.history_]
    assert len(aucs) < 10 and len(aucs) == model.best_epoch_ + 2, aucs
    assert model.best_val_pr_auc_ == max(aucs)
    restored = average_precision_score(flipped, model.predict_proba(val_texts)[:, 1])
    assert restored == pytest.approx(model.best_val_pr_auc_)


def test_without_a_validation_set_a_stratified_share_is_held_out(tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    model = TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels)
    assert (model.n_train_, model.n_validation_) == (32, 8)
    assert model.best_val_pr_auc_ is not None


def test_a_validation_share_without_churners_is_not_held_out(tiny_bert_dir: Path, keyword_data) -> None:
    texts, _ = keyword_data
    labels = [1, 1] + [0] * 38  # a stratified 8-row share would round the 2 churners down to none

    model = TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels)

    assert (model.n_train_, model.n_validation_) == (40, 0)


def test_progress_ends_at_one_when_early_stopping_ends_training(tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    val_texts, val_labels = keyword_texts(16, seed=3)
    config = FineTuneConfig(
        mode="full", lr=3e-3, head_lr=3e-2, epochs=10, batch_size=8, patience=2, device="cpu", show_progress=False
    )
    seen: list[tuple[float, str]] = []

    model = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(
        texts, labels, val_texts, [1 - label for label in val_labels], progress=lambda f, m: seen.append((f, m))
    )

    assert len(model.history_) < 10 and seen[-1][0] == 1.0
    assert (
        seen[-1][1]
        == f"stopped early after epoch {len(model.history_)} of 10; kept the weights of epoch {model.best_epoch_}"
    )
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_checkpoint_trains_in_float32(
    dtype: str, tiny_bert_dir: Path, tmp_path: Path, keyword_data
) -> None:
    import shutil

    import torch
    from transformers import AutoModel

    half = tmp_path / dtype
    shutil.copytree(tiny_bert_dir, half)
    AutoModel.from_pretrained(tiny_bert_dir, dtype=getattr(torch, dtype)).save_pretrained(half)
    texts, labels = keyword_data

    model = TransformerChurnClassifier(FAST["top-k"], encoder=str(half)).fit(texts, labels)

    assert model.predict_proba(texts).shape == (40, 2) and model._model.dtype == torch.float32


@pytest.mark.parametrize("mode", ["frozen", "top-k"])
def test_loading_with_another_tokenizer_on_the_same_weights_is_refused(
    mode: str, tiny_bert_dir: Path, tmp_path: Path, keyword_data
) -> None:
    texts, labels = keyword_data
    TransformerChurnClassifier(FAST[mode], encoder=str(tiny_bert_dir)).fit(texts, labels).save(tmp_path / "m")
    cased = cased_copy(tiny_bert_dir, tmp_path / "cased")

    with pytest.raises(ArtifactError, match="tokenizer of fingerprint"):
        TransformerChurnClassifier.load(tmp_path / "m", encoder=str(cased))
    assert TransformerChurnClassifier.load(tmp_path / "m", encoder=str(tiny_bert_dir)).predict_proba(texts).shape == (
        40,
        2,
    )


def test_loading_onto_the_same_weights_with_another_configuration_is_refused(
    tiny_bert_dir: Path, tmp_path: Path, keyword_data
) -> None:
    texts, labels = keyword_data
    TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels).save(tmp_path / "m")

    with pytest.raises(ArtifactError, match="encoder configuration of fingerprint"):
        TransformerChurnClassifier.load(tmp_path / "m", encoder=str(relu_copy(tiny_bert_dir, tmp_path / "relu")))
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert len(metadata["encoder"]["config_fingerprint"]) == 64


def test_fit_gives_back_the_callers_determinism_settings_warn_only_included(tiny_bert_dir: Path, keyword_data) -> None:
    import torch

    texts, labels = keyword_data
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels)
        after = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert after == (True, True)


def test_a_max_length_with_no_room_for_text_is_refused(tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    config = replace(FAST["frozen"], max_length=2)  # [CLS] and [SEP] only: nothing would be truncated
    with pytest.raises(ValueError, match="max_length 2 leaves no room for text: the tokenizer adds 2 special tokens"):
        TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels)
    model = TransformerChurnClassifier(replace(config, max_length=3), encoder=str(tiny_bert_dir)).fit(texts, labels)
    assert model.predict_proba(["cancel my order " * 100]).shape == (1, 2)  # longer than the 128 positions


def test_mostly_unknown_training_text_warns_and_records_the_rate(tiny_bert_dir: Path, tmp_path: Path) -> None:
    texts = ["我要取消订单", "我很喜欢", "退款太慢了", "谢谢你们", "cancel", "thanks"] * 3
    labels = [1, 0, 1, 0, 1, 0] * 3
    config = FineTuneConfig(mode="frozen", device="cpu", show_progress=False)

    with pytest.warns(UnknownTokenWarning, match="CHURN_ENCODER") as caught:
        model = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels)
    model.save(tmp_path / "m")

    assert "multilingual or Chinese" in str(caught[0].message)
    assert model.unk_rate_ > 0.5
    assert json.loads((tmp_path / "m" / "metadata.json").read_text())["unk_rate"] == pytest.approx(model.unk_rate_)


def test_english_training_text_does_not_warn(tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokenWarning)
        TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels)


def test_loading_onto_a_different_base_encoder_is_refused(tiny_bert_dir: Path, tmp_path: Path, keyword_data) -> None:
    import shutil

    import torch
    from transformers import AutoModel

    texts, labels = keyword_data
    TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir)).fit(texts, labels).save(tmp_path / "m")
    other = tmp_path / "other-bert"
    shutil.copytree(tiny_bert_dir, other)
    changed = AutoModel.from_pretrained(other)
    with torch.no_grad():
        changed.pooler.dense.bias.add_(0.1)
    changed.save_pretrained(other)

    with pytest.raises(ArtifactError, match="fingerprint"):
        TransformerChurnClassifier.load(tmp_path / "m", encoder=str(other))


def test_bad_labels_are_refused_with_the_row(tiny_bert_dir: Path) -> None:
    model = TransformerChurnClassifier(FAST["frozen"], encoder=str(tiny_bert_dir))
    with pytest.raises(ValueError, match="row 2"):
        model.fit(["a", "b", "c"], [0, 1, 2])
    with pytest.raises(TypeError, match="row 1"):
        model.fit(["a", None, "c"], [0, 1, 0])


def _layer_calls(model: TransformerChurnClassifier, tiny_bert_dir: Path, texts, labels) -> tuple[np.ndarray, list[int]]:  # noqa: ANN001
    """Fit with forward hooks counting the rows each encoder layer sees; returns the probabilities and counts."""
    import ml.finetune as finetune
    from ml.encoder import load_encoder
    from ml.finetune import _encoder_layers

    counts: list[int] = []
    real_load = finetune.load_encoder

    def counting_load(spec: str):  # noqa: ANN202
        tokenizer, encoder = real_load(spec)
        layers = _encoder_layers(encoder)
        counts.extend([0] * len(layers))
        for position, layer in enumerate(layers):
            layer.register_forward_hook(
                lambda m, a, o, p=position: counts.__setitem__(p, counts[p] + len(o[0] if isinstance(o, tuple) else o))
            )
        return tokenizer, encoder

    assert load_encoder is real_load
    finetune.load_encoder = counting_load
    try:
        model.fit(texts, labels)
    finally:
        finetune.load_encoder = real_load
    return model.predict_proba(texts)[:, 1], counts


def test_top_k_runs_the_frozen_layers_once_per_text_with_the_result_of_running_them_every_step(
    tiny_bert_dir: Path, keyword_data
) -> None:
    texts, labels = keyword_data
    config = FineTuneConfig(
        mode="top-k", top_k=1, epochs=3, batch_size=8, lr=1e-3, patience=3, device="cpu", show_progress=False
    )
    cached = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir))
    cached_p, cached_calls = _layer_calls(cached, tiny_bert_dir, texts, labels)
    uncached = TransformerChurnClassifier(replace(config, prefix_cache_mb=0), encoder=str(tiny_bert_dir))
    uncached_p, uncached_calls = _layer_calls(uncached, tiny_bert_dir, texts, labels)

    n_fit = cached.n_train_ + cached.n_validation_
    # Cached: the frozen layer 0 sees each training and validation text once; the trained layer 1 sees the
    # training texts in 3 epochs and the validation texts after each; both then score the texts once more.
    assert cached_calls[0] == n_fit + len(texts)
    assert cached_calls[1] == 3 * cached.n_train_ + 3 * cached.n_validation_ + len(texts)
    assert uncached_calls[0] == uncached_calls[1] == cached_calls[1]
    np.testing.assert_allclose(cached_p, uncached_p, atol=1e-5)
    assert cached.metadata()["frozen_layers_seconds"] > 0 and uncached.metadata()["frozen_layers_seconds"] is None
    assert [r.val_pr_auc for r in cached.history_] == pytest.approx([r.val_pr_auc for r in uncached.history_], abs=1e-6)
    # The real layers are back in place after training: a new text runs through all of them.
    from ml.finetune import _encoder_layers

    assert all(type(layer).__name__ != "_Replay" for layer in _encoder_layers(cached._network.encoder))


def test_top_k_keeps_the_frozen_layers_in_eval_mode_while_training(tiny_bert_dir: Path, keyword_data) -> None:
    texts, labels = keyword_data
    config = FineTuneConfig(mode="top-k", top_k=1, epochs=1, batch_size=8, device="cpu", show_progress=False)
    model = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels)
    network = model._network
    network.train(True)
    assert network.frozen_layers and all(not m.training for layer in network.frozen_layers for m in layer.modules())
    assert not network.encoder.embeddings.training
    assert network.head.training and all(m.training for layer in network.trained_layers for m in layer.modules())
    network.train(False)
    assert not any(m.training for m in network.encoder.modules())
    with pytest.raises(ValueError, match="prefix_cache_mb must be 0 or more"):
        FineTuneConfig(mode="top-k", prefix_cache_mb=-1)


def test_settings_that_would_stop_learning_are_refused() -> None:
    with pytest.raises(ValueError, match="patience must be at least 1, not 0"):
        FineTuneConfig(mode="lora", patience=0)
    with pytest.raises(ValueError, match="max_grad_norm must be above 0"):
        FineTuneConfig(mode="lora", max_grad_norm=0.0)


def test_a_refit_that_does_not_run_the_frozen_layers_once_records_no_time_for_them(
    tiny_bert_dir: Path, keyword_data
) -> None:
    texts, labels = keyword_data
    config = FineTuneConfig(mode="top-k", top_k=1, epochs=1, batch_size=8, device="cpu", show_progress=False)
    model = TransformerChurnClassifier(config, encoder=str(tiny_bert_dir)).fit(texts, labels)
    assert model.prefix_seconds_ is not None and model.prefix_seconds_ > 0
    model.config = replace(config, prefix_cache_mb=0)  # no room to keep them: they run in every step
    assert model.fit(texts, labels).prefix_seconds_ is None
