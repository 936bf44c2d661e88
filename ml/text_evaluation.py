"""The text models of the evaluation harness: ``tfidf``, ``transformer``, ``hybrid`` and the hybrid's ablations.

:func:`register_text_models` adds them to :data:`ml.evaluation.MODEL_REGISTRY` with the encoder options of a
run (the evaluation commands call it with ``--encoder-mode`` and ``--encoder``):

* ``transformer``: the text model alone (``frozen``: logistic head on frozen vectors; ``top-k``/``lora``/``full``:
  :class:`ml.finetune.TransformerChurnClassifier` fine-tuned in that mode);
* ``hybrid``: :class:`ml.hybrid.HybridChurnModel` with that text model;
* ``hybrid_no_messages``: the same hybrid on texts with the customer messages removed (profile and behaviour
  lines only), so the difference to ``hybrid`` is what the messages bring;
* ``hybrid_no_text``: the hybrid without any text model (LightGBM on the features, calibrated the same way).

In ``frozen`` mode one :class:`ml.hybrid.SharedEmbedder` serves every model and every fold of the run, so each
distinct text is encoded once per dataset (and, with a cache folder, once per machine).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ml.encoder import QUANTIZATIONS
from ml.evaluation import MODEL_REGISTRY, FittedModel, FoldData, register_model
from ml.explain import MESSAGES_HEADER
from ml.hybrid import FrozenEmbeddingHead, HybridChurnModel, HybridConfig, SharedEmbedder

__all__ = ["ENCODER_MODES", "TextEvaluationOptions", "register_text_models", "resolve_encoder_mode", "strip_messages"]

ENCODER_MODES: tuple[str, ...] = ("auto", "frozen", "top-k", "lora", "full")


@dataclass(frozen=True)
class TextEvaluationOptions:
    """Encoder options of an evaluation run.

    Attributes:
        encoder_mode: ``"auto"`` (``frozen`` without a GPU, ``lora`` with one), ``"frozen"``, ``"top-k"``,
            ``"lora"`` or ``"full"``.
        encoder: encoder spec (``None``: the packaged all-MiniLM-L6-v2).
        cache_dir: folder of the on-disk encoding cache (``None``: in-process only).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        inner_folds: K of the hybrid's out-of-fold stacking.
        embedding_dims: PCA dimensions of the frozen vectors added to the hybrid's features.
        nested_stacking: the hybrid's second level cross-fitted too (``HybridConfig.nested_stacking``; ``None``:
            with 3 or more inner folds).
        max_length: tokens kept per text.
        quantize: ``"none"`` or ``"int8"``: the frozen encoder's linear layers in int8 on the CPU
            (``frozen`` mode only; see :mod:`ml.quantize`).
    """

    encoder_mode: str = "auto"
    encoder: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    inner_folds: int = 5
    embedding_dims: int = 0
    nested_stacking: bool | None = None
    max_length: int = 256
    quantize: str = "none"

    def __post_init__(self) -> None:
        if self.encoder_mode not in ENCODER_MODES:
            raise ValueError(f"encoder mode must be one of {', '.join(ENCODER_MODES)}, not {self.encoder_mode!r}")
        if self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {self.quantize!r}")


def resolve_encoder_mode(mode: str, device: str = "auto") -> str:
    """``"auto"`` becomes ``"frozen"`` on CPU (fine-tuning there is too slow for a 5-fold evaluation), else ``"lora"``."""
    if mode != "auto":
        return mode
    from ml.encoder import resolve_device

    return "lora" if resolve_device(device) == "cuda" else "frozen"


def strip_messages(text: str) -> str:
    """A serialised text without its customer messages (the lines from the messages header on)."""
    lines = text.split("\n")
    return "\n".join(lines[: lines.index(MESSAGES_HEADER)]) if MESSAGES_HEADER in lines else text


class _TextAdapter:
    def __init__(self, estimator: object) -> None:
        self.estimator = estimator

    def predict_proba(self, data: FoldData) -> np.ndarray:
        return self.estimator.predict_proba(data.texts or [])  # type: ignore[attr-defined]


class _UncheckedTextAdapter(_TextAdapter):
    """TF-IDF reads the texts as a trained TF-IDF model gets them: not checked with an encoder's tokenizer."""

    def predict_proba(self, data: FoldData) -> np.ndarray:
        return self.estimator.predict_proba(_unchecked(data))  # type: ignore[attr-defined]


def _unchecked(data: FoldData) -> list[str]:
    return data.unchecked_texts if data.unchecked_texts is not None else data.texts or []


class _HybridAdapter:
    def __init__(self, model: HybridChurnModel, *, messages: bool = True) -> None:
        self.model, self.messages = model, messages

    def predict_proba(self, data: FoldData) -> np.ndarray:
        texts = data.texts if self.messages or data.texts is None else [strip_messages(t) for t in data.texts]
        return self.model.predict_proba(data.frame, texts if self.model.uses_text else None)


def _texts_of(train: FoldData, model: str) -> list[str]:
    if train.texts is None:
        from ml.baselines import ModelNotApplicable

        raise ModelNotApplicable(f"the {model} model needs texts")
    return train.texts


def register_text_models(options: TextEvaluationOptions | None = None) -> dict[str, str]:
    """Register ``tfidf``, ``transformer``, ``hybrid``, ``hybrid_no_messages`` and ``hybrid_no_text``.

    Returns:
        What was registered, in words, for the report's notes.
    """
    options = options or TextEvaluationOptions()
    mode = resolve_encoder_mode(options.encoder_mode, options.device)
    base = HybridConfig(
        text_mode=mode,
        encoder=options.encoder,
        max_length=options.max_length,
        quantize=options.quantize,
        inner_folds=options.inner_folds,
        embedding_dims=options.embedding_dims if mode == "frozen" else 0,
        nested_stacking=options.nested_stacking,
        cache_dir=options.cache_dir,
        device=options.device,
    )
    embedder = SharedEmbedder.for_config(base) if mode == "frozen" else None

    def transformer(train: FoldData) -> FittedModel:
        texts = _texts_of(train, "transformer")
        if mode == "frozen":
            assert embedder is not None
            head = FrozenEmbeddingHead(embedder, c_grid=base.frozen_head_c_grid)
            return _TextAdapter(head.fit(texts, train.y, groups=train.groups))
        from ml.finetune import TransformerChurnClassifier

        finetune = replace(base.finetune, mode=mode, device=options.device)
        classifier = TransformerChurnClassifier(finetune, encoder=options.encoder, cache_dir=options.cache_dir)
        return _TextAdapter(classifier.fit(texts, train.y, groups=train.groups))

    def hybrid(train: FoldData) -> FittedModel:
        texts = _texts_of(train, "hybrid")
        model = HybridChurnModel(base, embedder=embedder).fit(train.frame, texts, train.y, groups=train.groups)
        return _HybridAdapter(model)

    def hybrid_no_messages(train: FoldData) -> FittedModel:
        texts = [strip_messages(t) for t in _texts_of(train, "hybrid_no_messages")]
        model = HybridChurnModel(base, embedder=embedder).fit(train.frame, texts, train.y, groups=train.groups)
        return _HybridAdapter(model, messages=False)

    def hybrid_no_text(train: FoldData) -> FittedModel:
        config = replace(base, text_mode="none", embedding_dims=0)
        return _HybridAdapter(HybridChurnModel(config).fit(train.frame, None, train.y, groups=train.groups))

    if "tfidf" not in MODEL_REGISTRY:

        def tfidf(train: FoldData) -> FittedModel:
            from ml.text_baseline import TfidfChurnClassifier

            _texts_of(train, "tfidf")  # refuses data without texts
            return _UncheckedTextAdapter(TfidfChurnClassifier().fit(_unchecked(train), train.y))

        register_model("tfidf", tfidf, needs_text=True)
    register_model("transformer", transformer, needs_text=True)
    register_model("hybrid", hybrid, needs_text=True)
    register_model("hybrid_no_messages", hybrid_no_messages, needs_text=True)
    register_model("hybrid_no_text", hybrid_no_text)
    encoder = options.encoder or "the packaged all-MiniLM-L6-v2"
    return {
        "encoder_mode": mode,
        "encoder": encoder,
        "note": (
            f"text models: encoder {encoder}, mode {mode}"
            + (f" ({options.quantize} linear layers)" if options.quantize != "none" else "")
            + (" (encodings computed once and shared by all folds)" if mode == "frozen" else "")
            + f"; hybrid: {options.inner_folds}-fold out-of-fold text score"
            + (" (second level cross-fitted too)" if base.nests_stacking else " (second level not nested)")
            + (f" + {options.embedding_dims} PCA dims" if base.embedding_dims else "")
            + ", calibration chosen on out-of-fold scores"
        ),
    }
