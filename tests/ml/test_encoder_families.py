"""Other encoder families than BERT: RoBERTa (byte-level BPE, offset positions) and DistilBERT (its own layer and
projection names, no token types) through encoding, int8, every fine-tuning mode, save and load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml.encoder import TextEncoder, load_encoder, tokenize, unknown_token_rate, usable_max_length
from ml.finetune import TransformerChurnClassifier
from tests.tiny_bert import LETTERS, write_tiny_bert, write_tiny_distilbert, write_tiny_roberta

from .conftest import WORDS, keyword_texts
from .test_finetune import FAST

# peft still calls transformers' deprecated is_gradient_checkpointing when it wraps a model.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
POSITIONS = 40  # fewer than the default max_length of 256: long texts must be cut to fit, not crash


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    texts, _ = keyword_texts(200, seed=3)
    tokens = [".", ",", "!", "?", *LETTERS, *WORDS]
    return {
        "bert": write_tiny_bert(root / "bert", tokens=tokens, word_pieces=LETTERS, max_position_embeddings=POSITIONS),
        "roberta": write_tiny_roberta(
            root / "roberta", texts=[*texts, " ".join(WORDS)], max_position_embeddings=POSITIONS
        ),
        "distilbert": write_tiny_distilbert(
            root / "distilbert", tokens=tokens, word_pieces=LETTERS, max_position_embeddings=POSITIONS
        ),
    }


@pytest.mark.parametrize(
    ("family", "usable"), [("bert", POSITIONS), ("roberta", POSITIONS - 2), ("distilbert", POSITIONS)]
)
def test_texts_longer_than_the_positions_are_cut_to_what_the_model_embeds(
    family: str, usable: int, family_dirs: dict[str, Path]
) -> None:
    tokenizer, model = load_encoder(str(family_dirs[family]))
    encoder = TextEncoder(tokenizer, model, device="cpu", max_length=256)
    long_text = " ".join(["my order arrived late and i want a refund"] * 30)
    cut = tokenizer.decode(tokenize(tokenizer, [long_text], max_length=usable).input_ids[0], skip_special_tokens=True)

    vectors = encoder.encode([long_text, "thanks"])

    assert usable_max_length(model, 256) == usable == encoder.max_length
    assert usable_max_length(model, 16) == 16
    assert f":{usable}" in encoder.cache_namespace
    np.testing.assert_allclose(vectors[0], encoder.encode([cut])[0], atol=1e-5)
    assert np.isfinite(vectors).all()


def test_byte_level_bpe_has_no_unknown_tokens(family_dirs: dict[str, Path]) -> None:
    tokenizer, _ = load_encoder(str(family_dirs["roberta"]))
    assert unknown_token_rate(tokenizer, ["我要退款", "order"]) == 0.0


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_int8_encoding_stays_close_to_float32(family: str, family_dirs: dict[str, Path]) -> None:
    tokenizer, model = load_encoder(str(family_dirs[family]))
    texts, _ = keyword_texts(12, seed=4)
    exact = TextEncoder(tokenizer, model, device="cpu").encode(texts)
    quantised = TextEncoder(tokenizer, model, device="cpu", quantize="int8").encode(texts)
    cosine = (exact * quantised).sum(axis=1)  # both L2-normalised
    assert cosine.min() > 0.98 and not np.array_equal(exact, quantised)


TRAINED = {  # what each mode trains, by family: the top layer for top-k, the query/value projections for LoRA
    ("roberta", "top-k"): "encoder.encoder.layer.1.",
    ("roberta", "lora"): "attention.self.query.lora_A",
    ("distilbert", "top-k"): "encoder.transformer.layer.1.",
    ("distilbert", "lora"): "attention.q_lin.lora_A",
}


@pytest.mark.parametrize("mode", ["frozen", "top-k", "lora", "full"])
@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_every_mode_fits_and_reloads_to_identical_probabilities(
    family: str, mode: str, family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    texts, labels = keyword_texts(40)
    held_out_texts, _ = keyword_texts(20, seed=1)
    model = TransformerChurnClassifier(FAST[mode], encoder=str(family_dirs[family]))

    fitted = model.fit(texts, labels).predict_proba(texts)[:, 1]
    probabilities = model.predict_proba([*held_out_texts, " ".join(texts)])
    model.save(tmp_path / "model")
    reloaded = TransformerChurnClassifier.load(tmp_path / "model", device="cpu")

    # Tiny random encoders generalise unevenly from 40 texts (LoRA least); fitting the labels shows the mode trains.
    assert roc_auc_score(labels, fitted) > 0.85, f"{family} {mode} did not fit the keyword labels"
    if (family, mode) in TRAINED:
        assert any(TRAINED[family, mode] in name for name in model._network.trainable), sorted(model._network.trainable)
    np.testing.assert_allclose(reloaded.predict_proba([*held_out_texts, " ".join(texts)]), probabilities, atol=1e-6)


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_the_churn_model_fits_saves_loads_and_explains_on_a_roberta_encoder(
    mode: str, family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from ml.churn_model import ChurnModel
    from ml.snapshot import snapshot_at

    from .churn_histories import churn_histories
    from .test_churn_model import AS_OF, _config

    histories = churn_histories(90)
    model = ChurnModel(_config(mode, family_dirs["roberta"])).fit(histories, as_of=AS_OF)
    snapshots = [snapshot_at(history, AS_OF) for history in histories[:6]]
    model.save(tmp_path / "model")
    reloaded = ChurnModel.load(tmp_path / "model", device="cpu")

    np.testing.assert_allclose(reloaded.predict_proba(snapshots), model.predict_proba(snapshots), atol=1e-6)
    explanations = reloaded.explain(snapshots[:2], top_n=4)
    assert all(1 <= len(factors) <= 4 for factors in explanations)
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["encoder"]["id"] == str(family_dirs["roberta"]) and metadata["mode"] == mode
