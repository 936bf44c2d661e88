from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ml.artifacts import ArtifactError
from ml.baselines import LightGBMChurn, LightGBMOptions
from ml.calibration import CalibrationConfig
from ml.hybrid import TEXT_SCORE_COLUMN, HybridChurnModel, HybridConfig, SharedEmbedder
from ml.metrics import churn_metrics

from .conftest import keyword_texts
from .test_encoder import cased_copy, relu_copy

FAST_LIGHTGBM = LightGBMOptions(
    num_leaves_grid=(7,), max_rounds=60, early_stopping_rounds=15, min_child_samples=5, n_jobs=1
)


def _data(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """A weak numeric signal, a category, and texts whose churn keyword is the strong signal."""
    texts, labels = keyword_texts(n, seed=seed)
    y = np.array(labels)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "orders_30d": rng.poisson(2.0 - y, n).astype(float),
            "segment": rng.choice(["gold", "basic"], n).astype(object),
        }
    )
    return frame, [f"{text} #{i}" for i, text in enumerate(texts)], y


def _config(mode: str, tiny_bert_dir: Path, **overrides: object) -> HybridConfig:
    values: dict[str, object] = {
        "text_mode": mode,
        "encoder": str(tiny_bert_dir),
        "device": "cpu",
        "max_length": 64,
        "inner_folds": 3,
        "lightgbm": FAST_LIGHTGBM,
        "frozen_head_c": 100.0,
    }
    values.update(overrides)
    return HybridConfig(**values)  # type: ignore[arg-type]


class LookupTextModel:
    """A text model that memorises its training labels: perfect on rows it saw, clueless elsewhere."""

    def fit(self, texts: Sequence[str], y: np.ndarray, *, groups: Sequence[object] | None = None) -> LookupTextModel:
        self.seen = dict(zip(texts, np.asarray(y).tolist(), strict=True))
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        churn = np.array([float(self.seen.get(t, 0.5)) for t in texts])
        return np.column_stack([1 - churn, churn])

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError


def test_no_training_row_gets_its_stacked_text_score_from_a_text_model_that_saw_its_label(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()

    model = HybridChurnModel(_config("tfidf", tiny_bert_dir)).fit(frame, texts, y)

    assert np.isfinite(model.oof_text_score_).all() and (model.oof_fold_ >= 0).all()
    for row, fold in enumerate(model.oof_fold_):
        assert row not in set(model.text_fold_train_rows_[fold]), f"row {row} was scored by a model trained on it"


def test_a_label_memorising_text_model_gives_the_lightgbm_stage_no_information_about_training_rows(
    tiny_bert_dir: Path,
) -> None:
    frame, texts, y = _data()
    in_sample = LookupTextModel().fit(texts, y).predict_proba(texts)[:, 1]
    assert roc_auc_score(y, in_sample) == 1.0  # what naive in-sample stacking would feed LightGBM

    model = HybridChurnModel(_config("tfidf", tiny_bert_dir), text_model_factory=LookupTextModel).fit(frame, texts, y)

    assert np.all(model.oof_text_score_ == 0.5), "an out-of-fold score leaked a training label"
    assert model.lightgbm_.feature_importances().get(TEXT_SCORE_COLUMN, 0.0) == 0.0


def test_a_customers_rows_at_several_cutoffs_stay_in_one_fold(tiny_bert_dir: Path) -> None:
    # Each customer appears at three cutoffs with the same text and label: a model that saw one of the rows
    # knows the others. Row folds leak that; folds grouped by customer do not.
    frame, texts, y = _data(60)
    rows = np.repeat(np.arange(60), 3)
    frame, texts, y = frame.iloc[rows].reset_index(drop=True), [texts[i] for i in rows], y[rows]
    customers = [f"c{i}" for i in rows]
    config = _config("tfidf", tiny_bert_dir)

    grouped = HybridChurnModel(config, text_model_factory=LookupTextModel).fit(frame, texts, y, groups=customers)
    by_row = HybridChurnModel(config, text_model_factory=LookupTextModel).fit(frame, texts, y)

    assert np.all(grouped.oof_text_score_ == 0.5), "an out-of-fold score came from a model that saw the customer"
    for fold, train_rows in enumerate(grouped.text_fold_train_rows_):
        held_out = {customers[i] for i in np.flatnonzero(grouped.oof_fold_ == fold)}
        assert held_out.isdisjoint(customers[i] for i in train_rows)
    assert roc_auc_score(y, by_row.oof_text_score_) > 0.95  # what the grouping prevents
    with pytest.raises(ValueError, match="2 customers cannot fill 3 folds"):
        HybridChurnModel(config).fit(frame[:6], texts[:6], y[:6] * 0 + np.array([0, 1] * 3), groups=["a", "b"] * 3)


def _fixed_folds(monkeypatch: pytest.MonkeyPatch, labels: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make the hybrid's folds those of ``labels`` whatever labels it is given (to flip one label, folds fixed)."""
    import ml.hybrid

    folds = ml.hybrid.stratified_folds(labels, k, seed=0)
    monkeypatch.setattr(ml.hybrid, "stratified_folds", lambda *args, **kwargs: folds)
    return folds


def test_with_nested_stacking_no_text_model_behind_a_folds_second_level_saw_that_fold(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()
    nested = HybridChurnModel(_config("tfidf", tiny_bert_dir, nested_stacking=True)).fit(frame, texts, y)
    plain = HybridChurnModel(_config("tfidf", tiny_bert_dir, nested_stacking=False)).fit(frame, texts, y)

    for model, leaks in ((nested, False), (plain, True)):
        assert len(model.second_level_left_out_) == 3
        for fold, left_out_of_models in enumerate(model.second_level_left_out_):
            assert len(left_out_of_models) == 2  # one text model per other fold, or per pair with the other folds
            saw_fold = [fold not in left_out for left_out in left_out_of_models]
            assert all(saw_fold) if leaks else not any(saw_fold), (fold, left_out_of_models)
    assert np.array_equal(nested.oof_text_score_, plain.oof_text_score_)  # the first level is the same


def test_with_nested_stacking_a_rows_out_of_fold_score_does_not_depend_on_its_own_label(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, texts, y = _data(90)
    folds = _fixed_folds(monkeypatch, y, 3)
    flipped_rows = folds[0][1][:4]
    flipped = y.copy()
    flipped[flipped_rows] = 1 - flipped[flipped_rows]
    # One leaf count and the text column always kept: nothing is chosen over all rows, so only the stacking could
    # carry a row's label into its out-of-fold score.
    fixed = {"lightgbm": replace(FAST_LIGHTGBM, num_leaves_grid=(7,)), "select_text_by_cv": False}

    def oof(labels: np.ndarray, nested: bool) -> np.ndarray:
        config = _config("tfidf", tiny_bert_dir, nested_stacking=nested, **fixed)
        return HybridChurnModel(config).fit(frame, texts, labels).oof_raw_score_

    assert np.array_equal(oof(y, True)[flipped_rows], oof(flipped, True)[flipped_rows])
    # Without it the other folds' text scores come from text models that saw the flipped labels.
    assert not np.array_equal(oof(y, False)[flipped_rows], oof(flipped, False)[flipped_rows])


def test_nested_stacking_is_the_default_with_three_or_more_folds_and_not_for_models_saved_before_it() -> None:
    assert HybridConfig().nests_stacking and HybridConfig(inner_folds=3).nests_stacking
    assert not HybridConfig(inner_folds=2).nests_stacking and not HybridConfig(nested_stacking=False).nests_stacking
    saved_before = HybridConfig().to_json()
    del saved_before["nested_stacking"]
    assert HybridConfig.from_json(saved_before).nests_stacking is False
    assert HybridConfig.from_json(HybridConfig().to_json()).nests_stacking is True


def test_nested_stacking_needs_three_folds_and_enough_churners_outside_each_pair(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="nested_stacking needs inner_folds of at least 3"):
        _config("tfidf", tiny_bert_dir, nested_stacking=True, inner_folds=2)
    frame, texts, y = _data(40)
    y = np.zeros(40, dtype=int)
    y[:5] = 1  # 2, 2 and 1 churners in the three folds: enough outside each fold, not outside each pair
    with pytest.raises(
        ValueError, match=r"outside each pair of its 3 folds; outside folds \d and \d there are \[\d+, 1\]"
    ):
        HybridChurnModel(_config("tfidf", tiny_bert_dir, nested_stacking=True)).fit(frame, texts, y)


def test_the_out_of_fold_metrics_measure_a_calibration_that_did_not_see_those_scores(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data(160)
    config = _config("tfidf", tiny_bert_dir, calibration=CalibrationConfig(method="isotonic"))

    model = HybridChurnModel(config).fit(frame, texts, y)

    held_out = model.calibrator_.held_out_
    assert held_out is not None and model.oof_metrics_ == churn_metrics(y, held_out)
    raw = model.raw_scores_from_stacked(model.stacked_frame(frame, texts))
    assert not np.allclose(held_out, model.calibrator_.transform(raw))


def test_too_few_churners_for_the_stacking_folds_is_refused_in_plain_words(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data(40)
    y = np.zeros(40, dtype=int)
    y[:2] = 1
    with pytest.raises(ValueError, match="at least 2 churners and 2 non-churners outside each of its 2 folds"):
        HybridChurnModel(_config("none", tiny_bert_dir, inner_folds=2)).fit(frame, None, y)
    with pytest.raises(ValueError, match=r"LightGBM needs at least 2 churners and 2 non-churners.*\[5, 1\]"):
        LightGBMChurn(FAST_LIGHTGBM).fit(frame[:6], np.array([1, 0, 0, 0, 0, 0]))


def test_the_text_score_adds_what_the_features_miss(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data(160)
    test_frame, test_texts, test_y = _data(80, seed=1)

    with_text = HybridChurnModel(_config("tfidf", tiny_bert_dir)).fit(frame, texts, y)
    without = HybridChurnModel(_config("none", tiny_bert_dir)).fit(frame, None, y)

    auc_with = roc_auc_score(test_y, with_text.predict_proba(test_frame, test_texts)[:, 1])
    auc_without = roc_auc_score(test_y, without.predict_proba(test_frame)[:, 1])
    assert with_text.text_selected_ and auc_with > auc_without + 0.1, (auc_with, auc_without)


def test_frozen_hybrid_with_embedding_dimensions_reloads_to_identical_probabilities(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    frame, texts, y = _data()
    model = HybridChurnModel(_config("frozen", tiny_bert_dir, embedding_dims=3)).fit(frame, texts, y)

    model.save(tmp_path / "hybrid")
    reloaded = HybridChurnModel.load(tmp_path / "hybrid", device="cpu")

    assert model.stacked_columns_[-4:] == [TEXT_SCORE_COLUMN, "text_dim_1", "text_dim_2", "text_dim_3"]
    np.testing.assert_allclose(reloaded.predict_proba(frame, texts), model.predict_proba(frame, texts), atol=1e-9)
    assert model.calibrator_.method_ in {"platt", "isotonic"} and 0 <= model.oof_metrics_["brier"] <= 1
    with pytest.raises(ArtifactError, match="tokenizer of fingerprint"):  # same weights, a cased tokenizer
        HybridChurnModel.load(tmp_path / "hybrid", encoder=str(cased_copy(tiny_bert_dir, tmp_path / "cased")))
    with pytest.raises(ArtifactError, match="encoder configuration of fingerprint"):  # same weights, another GELU
        HybridChurnModel.load(tmp_path / "hybrid", encoder=str(relu_copy(tiny_bert_dir, tmp_path / "relu")))


def test_embedding_dimensions_are_kept_only_when_they_win_on_out_of_fold_roc_auc(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()

    model = HybridChurnModel(_config("frozen", tiny_bert_dir, embedding_dims=3)).fit(frame, texts, y)

    scores = model.leaves_cv_roc_auc_
    assert any(key.endswith("without embedding dims") for key in scores), scores
    assert any(key.endswith("no text") for key in scores), scores
    winner = max(scores, key=lambda key: scores[key])
    used = set(model.lightgbm_.feature_importances())
    expected = {"text_dim_1", "text_dim_2", "text_dim_3"} if not winner.endswith(("dims", "no text")) else set()
    assert {c for c in used if c.startswith("text_dim_")} == expected, (winner, sorted(used))
    assert (TEXT_SCORE_COLUMN in used) == model.text_selected_ == (not winner.endswith("no text")), winner


def test_same_seed_gives_identical_probabilities(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()

    first = HybridChurnModel(_config("frozen", tiny_bert_dir)).fit(frame, texts, y).predict_proba(frame, texts)
    second = HybridChurnModel(_config("frozen", tiny_bert_dir)).fit(frame, texts, y).predict_proba(frame, texts)

    np.testing.assert_array_equal(first, second)


def test_bad_input_is_refused_with_a_clear_message(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data(40)
    model = HybridChurnModel(_config("tfidf", tiny_bert_dir))
    with pytest.raises(ValueError, match="needs one text per row"):
        model.fit(frame, None, y)
    with pytest.raises(TypeError, match="row 3"):
        model.fit(frame, texts[:3] + [None] + texts[4:], y)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="row 5"):
        model.fit(frame, texts, np.r_[y[:5], 2, y[6:]])
    with pytest.raises(ValueError, match="clashes"):
        model.fit(frame.assign(text_churn_score=1.0), texts, y)
    with pytest.raises(ValueError, match="embedding_dims needs"):
        HybridConfig(text_mode="tfidf", embedding_dims=2)


def test_the_embedding_memo_keeps_only_the_newest_vectors(tiny_bert_dir: Path) -> None:
    embedder = SharedEmbedder(str(tiny_bert_dir), max_length=64, device="cpu", memo_limit=5)
    texts = [f"order {i} arrived" for i in range(8)]

    first = embedder.embed(texts)
    again = embedder.embed(texts[-5:])

    assert first.shape == (8, 32) and embedder.n_encoded == 8
    np.testing.assert_array_equal(again, first[-5:])
    assert embedder.n_encoded == 8, "the newest five came from the memo"
    embedder.embed(texts[:1])
    assert embedder.n_encoded == 9, "the oldest were evicted"


def test_a_frozen_fit_reports_encoding_progress_first_and_never_goes_backwards(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()
    reports: list[tuple[float, str]] = []
    HybridChurnModel(_config("frozen", tiny_bert_dir)).fit(
        frame, texts, y, progress=lambda f, m: reports.append((f, m))
    )
    fractions = [fraction for fraction, _ in reports]
    assert any("encoded" in message for _, message in reports), reports
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, reports


def test_an_int8_frozen_hybrid_reloads_to_identical_probabilities_and_refuses_float_vectors(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from ml.artifacts import ArtifactError
    from ml.hybrid import FrozenEmbeddingHead

    frame, texts, y = _data()
    model = HybridChurnModel(_config("frozen", tiny_bert_dir, quantize="int8")).fit(frame, texts, y)
    model.save(tmp_path / "hybrid")

    reloaded = HybridChurnModel.load(tmp_path / "hybrid", device="cpu")

    assert reloaded.config.quantize == "int8" and reloaded.encoder_info()["quantize"] == "int8"  # type: ignore[index]
    np.testing.assert_allclose(reloaded.predict_proba(frame, texts), model.predict_proba(frame, texts), atol=1e-9)
    model.text_model_.save(tmp_path / "head")  # type: ignore[union-attr]
    float_embedder = SharedEmbedder(str(tiny_bert_dir), max_length=64, device="cpu")
    with pytest.raises(ArtifactError, match="trained on int8 encoder vectors"):
        FrozenEmbeddingHead.load(tmp_path / "head", embedder=float_embedder)


def test_an_int8_head_records_the_cpus_int8_arithmetic_and_warns_when_another_cpu_loads_it(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ml.quantize as quantize
    from ml.hybrid import FrozenEmbeddingHead

    frame, texts, y = _data()
    model = HybridChurnModel(_config("frozen", tiny_bert_dir, quantize="int8")).fit(frame, texts, y)
    assert model.encoder_info()["int8_arithmetic"] == "exact"  # type: ignore[index]
    model.text_model_.save(tmp_path / "head")  # type: ignore[union-attr]
    int8_embedder = SharedEmbedder(str(tiny_bert_dir), max_length=64, device="cpu", quantize="int8")
    with caplog.at_level("WARNING", logger="ml.hybrid"):
        FrozenEmbeddingHead.load(tmp_path / "head", embedder=int8_embedder)
    assert "another int8 arithmetic" not in caplog.text

    saturating = quantize.Int8MatmulProbe(1.0, 2.0, int_mm_exact=False, int_mm_fingerprint="e" * 64)
    monkeypatch.setattr(quantize, "int8_matmul_probe", lambda: saturating)
    with caplog.at_level("WARNING", logger="ml.hybrid"):
        FrozenEmbeddingHead.load(tmp_path / "head", embedder=int8_embedder)
    assert "another int8 arithmetic (exact) than this CPU's (kernel-eeeeeeeeeeee)" in caplog.text


def test_quantisation_is_refused_outside_the_frozen_mode_or_by_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="needs text_mode='frozen'"):
        HybridConfig(text_mode="lora", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        HybridConfig(text_mode="frozen", quantize="fp8")
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        SharedEmbedder(None, quantize="int4")


class ConstantTextModel:
    """A text model that tells nobody apart: every text scores 0.5."""

    def fit(self, texts: Sequence[str], y: np.ndarray, *, groups: Sequence[object] | None = None) -> ConstantTextModel:
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.full((len(list(texts)), 2), 0.5)

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError


def test_a_text_score_that_only_ties_with_the_features_is_left_out() -> None:
    frame, texts, y = _data(90)
    config = HybridConfig(text_mode="tfidf", inner_folds=3, lightgbm=FAST_LIGHTGBM)
    model = HybridChurnModel(config, text_model_factory=ConstantTextModel).fit(frame, texts, y)
    assert model.leaves_cv_roc_auc_["7 leaves"] == model.leaves_cv_roc_auc_["7 leaves, no text"]
    assert not model.text_selected_  # it was kept: the variant with text was tried first and a tie did not replace it
    assert TEXT_SCORE_COLUMN not in model.lightgbm_.columns_


def test_a_hybrid_of_few_customers_fits_and_scores_an_empty_batch() -> None:
    frame, _, y = _data(60)
    customers = [f"c{i // 10}" for i in range(60)]  # 6 customers: each fold's LightGBM trains on 4
    model = HybridChurnModel(HybridConfig(text_mode="none", inner_folds=3, lightgbm=FAST_LIGHTGBM)).fit(
        frame, None, y, groups=customers
    )  # LightGBM's inner split asked for 5 grouped folds, which 4 customers cannot fill
    assert model.predict_proba(frame).shape == (60, 2)
    assert model.predict_proba(frame.iloc[:0]).shape == (0, 2)


class _ConstantEmbedder(SharedEmbedder):
    """Every text gets the same vector: a text score and embedding dimensions that tell nobody apart."""

    def embed(self, texts: Sequence[str], **options: object) -> np.ndarray:
        return np.ones((len(list(texts)), 8), dtype=np.float32)


def test_embedding_dimensions_that_lose_never_reach_the_final_lightgbm(tiny_bert_dir: Path) -> None:
    frame, texts, y = _data()
    config = _config("frozen", tiny_bert_dir, embedding_dims=3)
    embedder = _ConstantEmbedder(str(tiny_bert_dir), device="cpu", max_length=64)
    model = HybridChurnModel(config, embedder=embedder).fit(frame, texts, y)

    scores = model.leaves_cv_roc_auc_
    assert scores["7 leaves, no text"] == max(scores.values()), scores  # the text adds nothing: it ties at best
    assert not model.text_selected_
    assert not [c for c in model.lightgbm_.columns_ if c == TEXT_SCORE_COLUMN or c.startswith("text_dim_")]


def test_training_data_hash_is_that_of_the_frame_boxed_whole_without_boxing_it_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hash of a training frame is the one it always was (its cells as objects, hashed row by row), computed a
    column at a time: a copy of the whole frame with a Python object per cell was a training's peak memory."""
    from ml.hybrid import _data_hash

    frame, texts, y = _data(60)
    frame["tier"] = [None if i % 4 else f"t{i % 3}" for i in range(len(frame))]
    expected = hashlib.sha256(pd.util.hash_pandas_object(frame.astype(object), index=False).to_numpy().tobytes())
    expected.update(",".join(map(str, frame.columns)).encode("utf-8"))
    for text in texts:
        expected.update(hashlib.sha256(text.encode("utf-8")).digest())
    expected.update(y.astype(np.int8).tobytes())

    def whole_frame_astype(self: pd.DataFrame, *args: object, **kwargs: object) -> pd.DataFrame:
        raise AssertionError("the whole frame was converted at once")

    monkeypatch.setattr(pd.DataFrame, "astype", whole_frame_astype)
    assert _data_hash(frame, texts, y) == expected.hexdigest()


@pytest.mark.skipif(int(pd.__version__.split(".")[0]) < 3, reason="pandas before 3 copies in reset_index itself")
def test_stacking_shares_the_feature_columns_and_never_changes_the_frame() -> None:
    """The LightGBM input holds the features without a copy of them (a copy of the training frame was held through
    every LightGBM fit); adding the text columns to it leaves the caller's frame as it was."""
    frame, _, _ = _data(40)
    frame.index = [f"c{i}" for i in range(len(frame))]
    plain = HybridChurnModel(HybridConfig(text_mode="none"))._stack(frame, np.full(len(frame), np.nan), None)
    assert np.shares_memory(plain["orders_30d"].to_numpy(), frame["orders_30d"].to_numpy())
    stacked = HybridChurnModel(HybridConfig(text_mode="tfidf"))._stack(frame, np.linspace(0, 1, len(frame)), None)
    stacked.loc[0, "orders_30d"] = -1.0
    assert list(frame.columns) == ["orders_30d", "segment"] and (frame["orders_30d"] >= 0).all()
    assert list(stacked.columns) == ["orders_30d", "segment", TEXT_SCORE_COLUMN] and stacked.index[0] == 0
