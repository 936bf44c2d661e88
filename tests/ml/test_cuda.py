"""The CUDA path: every text mode and the whole churn model trained on a GPU, then scored there and on the CPU.

These run only where torch sees a CUDA device (a GPU worker's machine; no machine of this project's CI has one), and
skip elsewhere with the reason. ``CHURN_TEST_DEVICE=cpu`` runs the same tests with the CPU standing in for the GPU,
which checks the tests themselves but not the CUDA path.

What a GPU can break and the CPU tests cannot see: a tensor left on the CPU that meets one on the GPU (labels,
masks, class weights, the top-k layers' stored states), weights saved or fingerprinted straight from GPU memory, and
a model trained on a GPU that must load and score on a CPU-only web or scoring worker.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ml.churn_model import ChurnModel
from ml.encoder import TextEncoder, load_encoder
from ml.finetune import FineTuneConfig, TransformerChurnClassifier
from ml.snapshot import snapshot_at

from .churn_histories import START, churn_histories
from .conftest import keyword_texts
from .test_churn_model import _config as churn_model_config
from .test_finetune import FAST

DEVICE = os.environ.get("CHURN_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch sees none here); CHURN_TEST_DEVICE=cpu runs these tests on the CPU instead",
    ),
    pytest.mark.filterwarnings("ignore::ml.finetune.UnknownTokenWarning", "ignore::FutureWarning"),
]
# GPU kernels sum in other orders than the CPU's (and TF32 may round products): close, not identical.
ACROSS_DEVICES = 2e-3


def _finetune(mode: str, device: str) -> FineTuneConfig:
    """The settings with which the CPU tests' tiny BERT learns a keyword (tests/ml/test_finetune.py), on ``device``."""
    return replace(FAST[mode], device=device)


@pytest.mark.parametrize("mode", ["frozen", "top-k", "lora", "full"])
def test_every_mode_trains_on_the_gpu_and_scores_the_same_there_and_on_a_cpu(
    mode: str, tiny_bert_dir: Path, tmp_path: Path, keyword_data: tuple[list[str], list[int]]
) -> None:
    texts, labels = keyword_data
    held_out_texts, held_out_labels = keyword_texts(20, seed=1)
    model = TransformerChurnClassifier(_finetune(mode, DEVICE), encoder=str(tiny_bert_dir), cache_dir=tmp_path / "c")

    model.fit(texts, labels)
    on_gpu = model.predict_proba(held_out_texts)
    model.save(tmp_path / "model")
    on_cpu = TransformerChurnClassifier.load(tmp_path / "model", device="cpu").predict_proba(held_out_texts)
    reloaded_on_gpu = TransformerChurnClassifier.load(tmp_path / "model", device=DEVICE).predict_proba(held_out_texts)

    assert model.device_ == DEVICE
    assert roc_auc_score(held_out_labels, on_gpu[:, 1]) > 0.75, f"{mode} did not learn the keyword on {DEVICE}"
    np.testing.assert_allclose(on_cpu, on_gpu, atol=ACROSS_DEVICES)
    np.testing.assert_allclose(reloaded_on_gpu, on_gpu, atol=1e-5)
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["encoder"]["fingerprint"] == model.encoder_fingerprint_  # read from the weights in GPU memory


def test_the_encoders_vectors_on_the_gpu_match_the_cpus(tiny_bert_dir: Path) -> None:
    texts, _ = keyword_texts(40, seed=2)
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    on_cpu = TextEncoder(tokenizer, model, device="cpu").encode(texts)
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    on_gpu = TextEncoder(tokenizer, model, device=DEVICE).encode(texts)

    assert on_gpu.shape == on_cpu.shape and on_gpu.dtype == np.float32
    np.testing.assert_allclose(on_gpu, on_cpu, atol=ACROSS_DEVICES)


@pytest.mark.parametrize("mode", ["frozen", "top-k"])
def test_the_churn_model_trained_on_the_gpu_scores_and_explains_on_a_cpu(
    mode: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    histories = churn_histories(90)
    as_of = START + timedelta(days=270)
    cpu_config = churn_model_config(mode, tiny_bert_dir)  # the CPU tests' model (tests/ml/test_churn_model.py)
    config = replace(
        cpu_config,
        hybrid=replace(cpu_config.hybrid, device=DEVICE, finetune=replace(cpu_config.hybrid.finetune, device=DEVICE)),
    )
    snapshots = [snapshot_at(history, as_of) for history in histories[:6]]

    model = ChurnModel(config).fit(histories, as_of=as_of)
    on_gpu = model.predict_proba(snapshots)
    model.save(tmp_path / "model")
    on_cpu = ChurnModel.load(tmp_path / "model", device="cpu")
    explanations = on_cpu.explain(snapshots[:2], top_n=4)

    np.testing.assert_allclose(on_cpu.predict_proba(snapshots), on_gpu, atol=ACROSS_DEVICES)
    assert len(explanations) == 2 and all(1 <= len(factors) <= 4 for factors in explanations)
