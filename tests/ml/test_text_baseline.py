from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml.artifacts import ArtifactError
from ml.text_baseline import TfidfChurnClassifier

from .conftest import keyword_texts

CHINESE_CHURN = ["我要退款", "取消我的账户", "太慢了我不买了", "质量很差要退货"]
CHINESE_STAY = ["谢谢你们", "很喜欢这个产品", "下次还会再买", "包装很好"]


def test_tfidf_learns_a_keyword_and_reloads_to_identical_probabilities(tmp_path: Path) -> None:
    texts, labels = keyword_texts(40)
    held_out, held_labels = keyword_texts(20, seed=1)

    model = TfidfChurnClassifier().fit(texts, labels)
    probabilities = model.predict_proba(held_out)
    model.save(tmp_path / "tfidf")
    reloaded = TfidfChurnClassifier.load(tmp_path / "tfidf")

    assert probabilities.shape == (20, 2)
    assert roc_auc_score(held_labels, probabilities[:, 1]) > 0.9
    np.testing.assert_allclose(reloaded.predict_proba(held_out), probabilities, rtol=1e-6)
    assert not any(p.suffix in {".pkl", ".joblib"} for p in (tmp_path / "tfidf").iterdir())


def test_tfidf_reads_chinese_text_that_an_english_vocabulary_cannot(tmp_path: Path) -> None:
    texts = [f"{text}{suffix}" for suffix in ("", "。", "!") for text in CHINESE_CHURN + CHINESE_STAY]
    labels = ([1] * 4 + [0] * 4) * 3

    model = TfidfChurnClassifier().fit(texts, labels)
    model.save(tmp_path / "zh")
    churn = TfidfChurnClassifier.load(tmp_path / "zh").predict_proba(["我要退款, 太慢了", "谢谢, 很喜欢"])[:, 1]

    assert churn[0] > 0.5 > churn[1]
    assert any("退" in ngram or "慢" in ngram for ngram, _ in model.top_ngrams(10))


def test_a_tampered_vocabulary_is_refused(tmp_path: Path) -> None:
    texts, labels = keyword_texts(20)
    directory = TfidfChurnClassifier().fit(texts, labels).save(tmp_path / "tfidf")
    vocabulary = (directory / "vocabulary.json").read_text(encoding="utf-8")
    (directory / "vocabulary.json").write_text(vocabulary.replace('"ca', '"xa', 1), encoding="utf-8")

    with pytest.raises(ArtifactError, match="vocabulary.json does not match its sha256"):
        TfidfChurnClassifier.load(directory)


def test_a_non_text_row_is_refused_with_its_row_number() -> None:
    with pytest.raises(TypeError, match="row 1"):
        TfidfChurnClassifier().fit(["cancel", 3.5, "thanks"], [1, 0, 0])
