from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import MODEL_REGISTRY, cross_validate_profile
from ml.features import ProfileData
from ml.text_evaluation import TextEvaluationOptions, register_text_models, resolve_encoder_mode, strip_messages

from .conftest import keyword_texts


def test_the_text_models_run_through_the_cross_validation_harness(tiny_bert_dir: Path) -> None:
    texts, labels = keyword_texts(200)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"orders_total": rng.poisson(3, 200).astype(float), "last_message": texts})
    data = ProfileData(name="keywords", frame=frame, y=np.array(labels), ids=[str(i) for i in range(200)])
    options = TextEvaluationOptions(
        encoder_mode="frozen", encoder=str(tiny_bert_dir), device="cpu", inner_folds=2, max_length=64
    )

    note = register_text_models(options)["note"]
    report = cross_validate_profile(
        data, models=["tfidf", "transformer", "hybrid", "hybrid_no_text"], folds=2, progress=False
    )

    assert {"transformer", "hybrid", "hybrid_no_messages", "hybrid_no_text"} <= set(MODEL_REGISTRY)
    assert "mode frozen" in note and "encodings computed once" in note
    assert set(report.per_fold) == {"tfidf", "transformer", "hybrid", "hybrid_no_text"}
    # The keyword is in the text only: models that read it separate the classes, the features-only one cannot.
    assert report.summary("tfidf")["roc_auc"] > 0.8
    assert report.summary("hybrid")["roc_auc"] > report.summary("hybrid_no_text")["roc_auc"] + 0.1


def test_strip_messages_keeps_the_record_lines_only() -> None:
    text = "segment: gold\norders: 3\nmessages, newest first:\n[2024-05-01 chat] I want a refund"

    assert strip_messages(text) == "segment: gold\norders: 3"
    assert strip_messages("segment: gold") == "segment: gold"


def test_auto_mode_is_frozen_without_a_gpu_and_unknown_modes_are_refused() -> None:
    assert resolve_encoder_mode("auto", "cpu") == "frozen"
    assert resolve_encoder_mode("lora", "cpu") == "lora"
    with pytest.raises(ValueError, match="encoder mode"):
        TextEvaluationOptions(encoder_mode="half-frozen")
