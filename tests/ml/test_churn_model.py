from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from ml.artifacts import ArtifactError
from ml.baselines import LightGBMOptions
from ml.churn_model import ChurnModel, ChurnModelConfig
from ml.finetune import FineTuneConfig
from ml.hybrid import HybridConfig
from ml.serialize import SerializeConfig
from ml.snapshot import snapshot_at
from tests.artifact_forgery import edit_metadata_and_resign

from .churn_histories import START, churn_histories

# The tiny test vocabulary misses most words of these texts; the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::ml.finetune.UnknownTokenWarning", "ignore::FutureWarning")
AS_OF = START + timedelta(days=270)
FAST_LIGHTGBM = LightGBMOptions(
    num_leaves_grid=(7,), max_rounds=60, early_stopping_rounds=15, min_child_samples=5, n_jobs=1
)
FAST_FINETUNE = FineTuneConfig(lr=3e-3, head_lr=3e-2, epochs=2, batch_size=16, patience=2, show_progress=False)


def _config(mode: str, tiny_bert_dir: Path) -> ChurnModelConfig:
    return ChurnModelConfig(
        horizon_days=60,
        max_training_cutoffs=3,
        serialize=SerializeConfig(token_budget=60),
        hybrid=HybridConfig(
            text_mode=mode,
            encoder=str(tiny_bert_dir),
            device="cpu",
            max_length=64,
            inner_folds=2,
            frozen_head_c=10.0,
            lightgbm=FAST_LIGHTGBM,
            finetune=FAST_FINETUNE,
        ),
    )


@pytest.fixture(scope="module")
def histories():  # noqa: ANN201
    return churn_histories(90)


@pytest.mark.parametrize("mode", ["none", "tfidf", "frozen", "top-k", "lora", "full"])
def test_every_mode_fits_saves_loads_predicts_and_explains(
    mode: str, tiny_bert_dir: Path, tmp_path: Path, histories: list
) -> None:
    seen: list[float] = []
    model = ChurnModel(_config(mode, tiny_bert_dir)).fit(
        histories, as_of=AS_OF, progress=lambda fraction, message: seen.append(fraction)
    )
    snapshots = [snapshot_at(h, AS_OF) for h in histories[:6]]
    probabilities = model.predict_proba(snapshots)

    model.save(tmp_path / "model")
    reloaded = ChurnModel.load(tmp_path / "model", device="cpu")
    explanations = reloaded.explain(snapshots[:2], top_n=4)

    assert probabilities.shape == (6,) and ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(reloaded.predict_proba(snapshots), probabilities, atol=1e-6)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert len(explanations) == 2 and all(1 <= len(factors) <= 4 for factors in explanations)
    assert all(set(f) == {"factor", "direction", "weight", "evidence"} for factors in explanations for f in factors)
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["mode"] == mode and metadata["model_type"] == ("lightgbm" if mode == "none" else "hybrid")
    assert reloaded.holdout_metrics["roc_auc"] == pytest.approx(model.holdout_metrics["roc_auc"])


def test_metadata_records_what_a_deployment_needs(tiny_bert_dir: Path, tmp_path: Path, histories: list) -> None:
    model = ChurnModel(_config("frozen", tiny_bert_dir)).fit(histories, as_of=AS_OF)
    model.save(tmp_path / "model")

    metadata = ChurnModel.load(tmp_path / "model", device="cpu").metadata

    assert len(metadata["encoder"]["fingerprint"]) == 64 and metadata["encoder"]["id"] == str(tiny_bert_dir)
    assert "orders_30d" in metadata["features"] and "text_churn_score" in metadata["stacked_features"]
    assert metadata["calibration"]["method"] in {"platt", "isotonic"}
    assert len(metadata["training_data_sha256"]) == 64 and metadata["seed"] == 0
    assert {"torch", "lightgbm", "numpy"} <= set(metadata["libraries"])
    assert metadata["cutoffs"][0] == metadata["holdout_cutoff"] == (AS_OF - timedelta(days=60)).isoformat()
    assert set(metadata["metrics"]) >= {"roc_auc", "pr_auc", "lift_at_10", "brier", "ece", "n"}


def test_the_newest_cutoff_is_held_out_from_training(tiny_bert_dir: Path, histories: list) -> None:
    model = ChurnModel(_config("none", tiny_bert_dir)).fit(histories, as_of=AS_OF)
    metadata = model.metadata

    newest = AS_OF - timedelta(days=60)
    eligible_at_newest = model.holdout_metrics["n"]
    assert eligible_at_newest > 0 and metadata["holdout_cutoff"] == newest.isoformat()
    assert metadata["n_train"] + metadata["n_holdout"] > metadata["n_holdout"] == eligible_at_newest
    assert len(metadata["cutoffs"]) == 3


def test_same_seed_gives_identical_probabilities(tiny_bert_dir: Path, histories: list) -> None:
    snapshots = [snapshot_at(h, AS_OF) for h in histories[:10]]

    first = ChurnModel(_config("frozen", tiny_bert_dir)).fit(histories, as_of=AS_OF).predict_proba(snapshots)
    second = ChurnModel(_config("frozen", tiny_bert_dir)).fit(histories, as_of=AS_OF).predict_proba(snapshots)

    np.testing.assert_array_equal(first, second)


@pytest.fixture(scope="module")
def saved_model(tiny_bert_dir: Path, histories: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("churn-model") / "model"
    ChurnModel(_config("tfidf", tiny_bert_dir)).fit(histories, as_of=AS_OF).save(path)
    return path


@pytest.mark.parametrize("name", ["model.safetensors", "metadata.json", "lightgbm-lightgbm_model.txt"])
def test_a_changed_byte_in_any_file_is_refused(name: str, saved_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in saved_model.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=name):
        ChurnModel.load(copy, device="cpu")


def test_missing_truncated_or_pickle_files_are_refused(saved_model: Path, tmp_path: Path) -> None:
    def copy_of(label: str) -> Path:
        target = tmp_path / label
        target.mkdir()
        for file in saved_model.iterdir():
            (target / file.name).write_bytes(file.read_bytes())
        return target

    missing = copy_of("missing")
    (missing / "text-vocabulary.json").unlink()
    truncated = copy_of("truncated")
    (truncated / "model.safetensors").write_bytes((saved_model / "model.safetensors").read_bytes()[:100])
    pickled = copy_of("pickled")
    (pickled / "extra.pkl").write_bytes(b"\x80\x04N.")

    with pytest.raises(ArtifactError, match="text-vocabulary.json is missing"):
        ChurnModel.load(missing)
    with pytest.raises(ArtifactError, match="truncated"):
        ChurnModel.load(truncated)
    with pytest.raises(ArtifactError, match="pickle"):
        ChurnModel.load(pickled)
    assert ChurnModel.load(saved_model).predict_proba([]).shape == (0,)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("hybrid", lambda m: m["hybrid"].pop("columns")),
        ("hybrid", lambda m: m["hybrid"]["lightgbm"].pop("params")),
        ("text model", lambda m: m["hybrid"]["text_model"].pop("options")),
        ("config", lambda m: m["config"]["hybrid"].update(unknown_option=1)),
    ],
)
def test_metadata_of_another_version_is_an_artifact_error_naming_the_artifact(
    where: str, change: object, saved_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in saved_model.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    edit_metadata_and_resign(copy, change)  # type: ignore[arg-type] # as another version would have written it

    with pytest.raises(ArtifactError) as caught:
        ChurnModel.load(copy, device="cpu")
    assert str(copy) in str(caught.value) and "churn-unpack" not in str(caught.value), (where, caught.value)


def test_training_too_early_for_any_cutoff_says_what_to_change(tiny_bert_dir: Path, histories: list) -> None:
    with pytest.raises(ValueError, match="no training cutoff fits"):
        ChurnModel(_config("none", tiny_bert_dir)).fit(histories, as_of=START + timedelta(days=80))
    with pytest.raises(RuntimeError, match="not fitted"):
        ChurnModel().predict_proba([])


def test_score_gives_what_predict_proba_and_explain_give_and_counts_the_encodings(
    tiny_bert_dir: Path, tmp_path: Path, histories: list
) -> None:
    ChurnModel(_config("frozen", tiny_bert_dir)).fit(histories, as_of=AS_OF).save(tmp_path / "model")
    snapshots = [snapshot_at(h, AS_OF) for h in histories[:12]]
    picked = [3, 0, 7]

    first = ChurnModel.load(tmp_path / "model", device="cpu", cache_dir=tmp_path / "cache")
    batch = first.score(snapshots, top_n=6, text_factor_rows=lambda probabilities: picked)
    # A fresh process: only the on-disk encoding cache remembers the texts and their leave-one-part-out variants.
    again = ChurnModel.load(tmp_path / "model", device="cpu", cache_dir=tmp_path / "cache")
    cached = again.score(snapshots, top_n=6, text_factor_rows=lambda probabilities: picked)
    plain = ChurnModel.load(tmp_path / "model", device="cpu")  # no cache at all
    probabilities = plain.predict_proba(snapshots)
    features_only = plain.explain(snapshots, top_n=6, text_factors=False)
    detailed = plain.explain([snapshots[i] for i in picked], top_n=6)

    np.testing.assert_allclose(batch.probabilities, probabilities, atol=1e-9)
    np.testing.assert_allclose(cached.probabilities, probabilities, atol=1e-9)
    expected = [detailed[picked.index(i)] if i in picked else features_only[i] for i in range(len(snapshots))]
    assert batch.factors == expected and cached.factors == expected
    distinct = len({first._texts([s])[0] for s in snapshots})
    assert batch.texts_encoded == distinct and batch.explanation_texts_encoded > 0
    assert cached.texts_encoded == 0 and cached.explanation_texts_encoded == 0


def test_score_without_text_reports_no_encodings(tiny_bert_dir: Path, histories: list) -> None:
    model = ChurnModel(_config("none", tiny_bert_dir)).fit(histories, as_of=AS_OF)
    snapshots = [snapshot_at(h, AS_OF) for h in histories[:5]]

    batch = model.score(snapshots, top_n=3, text_factor_rows=lambda probabilities: [0])

    np.testing.assert_array_equal(batch.probabilities, model.predict_proba(snapshots))
    assert batch.factors == model.explain(snapshots, top_n=3)
    assert batch.texts_encoded is None and batch.explanation_texts_encoded is None


def test_a_customers_probability_does_not_depend_on_the_rest_of_the_batch(tiny_bert_dir: Path) -> None:
    # "plan" mixes numbers and words (a categorical column at training), "vip" is a flag (numeric); churners are
    # mostly on plan 1 and not vip. A batch of plan-1 customers alone looks numeric; a word in "vip" looks categorical.
    histories = []
    for i, h in enumerate(churn_histories(120)):
        leaves = not h.orders or h.orders[-1].placed_at < START + timedelta(days=250)
        plan = 1 if leaves and i % 10 else ("premium", 2)[i % 2]
        histories.append(replace(h, customer=replace(h.customer, attributes={"plan": plan, "vip": not leaves})))
    model = ChurnModel(_config("none", tiny_bert_dir)).fit(histories, as_of=AS_OF)
    snapshots = [snapshot_at(h, AS_OF) for h in histories]
    plain = next(i for i, h in enumerate(histories) if h.customer.attributes == {"plan": 1, "vip": False})
    odd_history = replace(histories[0], customer=replace(histories[0].customer, attributes={"plan": "x", "vip": "yes"}))

    alone = model.predict_proba([snapshots[plain]])[0]
    with_an_odd_one = model.predict_proba([snapshots[plain], snapshot_at(odd_history, AS_OF)])[0]
    everyone = model.predict_proba(snapshots)[plain]

    assert model.column_kinds_ == {**model.column_kinds_, "attr_plan": "categorical", "attr_vip": "numeric"}
    assert alone == with_an_odd_one == everyone


@pytest.mark.parametrize("mode", ["frozen", "top-k"])
def test_every_encoder_mode_warns_about_and_records_the_unknown_token_rate(
    mode: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import warnings

    from ml.finetune import UnknownTokenWarning

    chinese = "我要取消订单，退款太慢了。我要投诉！"
    histories = [replace(h, messages=tuple(replace(m, text=chinese) for m in h.messages)) for h in churn_histories(90)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ChurnModel(_config(mode, tiny_bert_dir)).fit(histories, as_of=AS_OF)

    assert any(issubclass(w.category, UnknownTokenWarning) for w in caught), [str(w.message) for w in caught]
    assert 0.05 < model.metadata["unk_rate"] <= 1
    assert ChurnModel.load(model.save(tmp_path / "m")).metadata["unk_rate"] == model.metadata["unk_rate"]


def test_a_model_whose_saved_calibration_is_not_finite_is_refused(tmp_path: Path) -> None:
    import warnings

    config = ChurnModelConfig(
        horizon_days=60,
        max_training_cutoffs=3,
        hybrid=HybridConfig(
            text_mode="none",
            inner_folds=2,
            lightgbm=LightGBMOptions(
                num_leaves_grid=(7,), max_rounds=60, early_stopping_rounds=15, min_child_samples=5, n_jobs=1
            ),
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ChurnModel(config).fit(churn_histories(90), as_of=START + timedelta(days=270)).save(tmp_path / "m")

    edit_metadata_and_resign(
        tmp_path / "m", lambda metadata: metadata["hybrid"]["calibration"].update(method="platt", a=1.0, b=1e999)
    )  # json.dumps writes Infinity

    with pytest.raises(ArtifactError, match="not valid JSON.*Infinity is not a number JSON allows"):
        ChurnModel.load(tmp_path / "m")


def test_a_configuration_saved_before_verbatim_attribute_names_keeps_the_ascii_naming() -> None:
    state = json.loads(json.dumps(ChurnModelConfig().to_json()))
    assert ChurnModelConfig.from_json(state).features.attribute_names == "verbatim"
    del state["features"]["attribute_names"]  # as models trained before the option saved it
    assert ChurnModelConfig.from_json(state).features.attribute_names == "ascii"
