"""The hybrid churn model: LightGBM on the tabular features plus a text model's out-of-fold churn score.

How :meth:`HybridChurnModel.fit` works (``K = inner_folds``)::

    training rows ──StratifiedKFold(K)──► for each fold k: text model fitted on the other K-1 folds
    (each customer's rows                 scores the rows of fold k  → out-of-fold text score
     in one fold: ml.folds)
    features + out-of-fold text score (+ optional PCA dimensions of the frozen embeddings)
        ├─► per leaf count of the grid, with and without the text columns: K LightGBM fits on the same folds
        │   → out-of-fold raw scores; the variant with the best out-of-fold ROC AUC wins (so the text score
        │   is kept only where it helps), and the calibration is chosen and fitted on its scores
        └─► LightGBM on all rows → the final booster
    text model refitted on all training rows → scores new customers

So no training row's stacked text score ever comes from a text model that saw that row's label
(:attr:`HybridChurnModel.oof_fold_` and :attr:`HybridChurnModel.text_fold_train_rows_` record it, and the tests
check it), and the calibration is fitted on held-out scores only.

A second-order path is closed too (``HybridConfig.nested_stacking``, on by default with 3 or more folds): the
LightGBM fitted on the folds other than k, whose out-of-fold scores choose the leaves and the text columns and fit
the calibration, learns from the text scores of those folds' rows. Scored by the first-level text models, which
were trained on fold k, they would carry fold k's labels to fold k's own scores at second hand. So the training
rows of fold k's second level are scored by text models fitted without fold k as well (one per pair of folds,
``K(K-1)/2`` more text fits), and a row's out-of-fold score does not depend on its own label at all
(:attr:`HybridChurnModel.second_level_left_out_` records it; a test flips labels and checks that the rows'
scores stay the same).

Text models (``HybridConfig.text_mode``):

* ``"none"``: features only (LightGBM + calibration): the ablation without text;
* ``"tfidf"``: :class:`ml.text_baseline.TfidfChurnClassifier`;
* ``"frozen"``: :class:`FrozenEmbeddingHead`, a class-weighted logistic regression on the frozen encoder's
  mean-pooled vectors; the vectors come from a :class:`SharedEmbedder`, which encodes each distinct text once
  per process (and once per machine with a cache folder), so the K folds and an evaluation's outer folds share them;
* ``"top-k"``, ``"lora"``, ``"full"``: :class:`ml.finetune.TransformerChurnClassifier` fine-tuned in that mode.

Everything saves into one artifact directory (:mod:`ml.artifacts`): the LightGBM model text, the text model's
tensors (prefixed ``text.``) and extra files (prefixed ``text-``), the calibration and the configuration in the
metadata.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ml.artifacts import ArtifactError, artifact_loader, load_artifact, save_artifact
from ml.baselines import LightGBMChurn, LightGBMOptions, with_string_columns
from ml.calibration import CalibrationConfig, Calibrator
from ml.encoder import QUANTIZATIONS, check_config, check_tokenizer
from ml.finetune import FineTuneConfig
from ml.folds import stratified_folds, stratified_holdout
from ml.metrics import churn_metrics, roc_auc
from ml.text_baseline import TfidfOptions

__all__ = [
    "TEXT_MODES",
    "TEXT_SCORE_COLUMN",
    "FrozenEmbeddingHead",
    "HybridChurnModel",
    "HybridConfig",
    "SharedEmbedder",
    "TextModel",
    "make_text_model",
]

TEXT_MODES: tuple[str, ...] = ("none", "tfidf", "frozen", "top-k", "lora", "full")
TEXT_SCORE_COLUMN = "text_churn_score"
TEXT_DIM_PREFIX = "text_dim_"
ARTIFACT_KIND = "hybrid"
logger = logging.getLogger(__name__)
ProgressCallback = Callable[[float, str], None]


class TextModel(Protocol):
    """What the hybrid needs of a text model (scikit-learn convention: column 1 is the churn probability)."""

    def fit(self, texts: Sequence[str], y: np.ndarray, *, groups: Sequence[object] | None = None) -> TextModel: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, path: str | Path) -> Path: ...


@dataclass(frozen=True)
class HybridConfig:
    """Options of :class:`HybridChurnModel`.

    Attributes:
        text_mode: ``"none"``, ``"tfidf"``, ``"frozen"``, ``"top-k"``, ``"lora"`` or ``"full"`` (module docstring).
        encoder: the encoder spec (``None``: the packaged all-MiniLM-L6-v2; a local directory; a cached hub id).
        finetune: options of the fine-tuning modes (its ``mode`` is replaced by ``text_mode``).
        tfidf: options of the ``tfidf`` text model.
        frozen_head_c: inverse L2 strength of the logistic head on frozen vectors (when the grid is empty).
        frozen_head_c_grid: C values the frozen head chooses from on an inner split of its own training rows.
        max_length: tokens kept per text by the frozen encoder.
        quantize: ``"none"`` or ``"int8"``: run the frozen encoder with int8 linear layers, always on the CPU
            (:mod:`ml.quantize`; faster, vectors within a cosine of about 0.99 of the float32 ones). ``frozen`` only.
        inner_folds: K of the out-of-fold stacking (and of the calibration's held-out scores).
        embedding_dims: PCA dimensions of the frozen vectors added as features (``frozen`` only; 0: none).
        lightgbm: options of the LightGBM stage (its inner split picks the number of trees).
        select_leaves_by_cv: choose the leaf count from ``lightgbm.num_leaves_grid`` by the out-of-fold ROC AUC
            over the ``inner_folds`` folds (False: LightGBM's own single inner split chooses).
        select_text_by_cv: let LightGBM without the text columns (and, with ``embedding_dims``, with the text score
            but without the dimensions) compete on the same out-of-fold ROC AUC, and keep text columns only when they
            win (:attr:`HybridChurnModel.text_selected_` says which won).
        nested_stacking: cross-fit the second level too (module docstring): the LightGBM fitted on the folds other
            than k learns from text scores of text models fitted without fold k as well, so no row's out-of-fold
            score depends on its own label (``K(K-1)/2`` more text fits). ``None`` (default): on when
            ``inner_folds`` is 3 or more (with 2 a pair of folds leaves no row to train on); True needs 3 or more.
        calibration: how the calibration method is chosen (on out-of-fold scores).
        cache_dir: folder of the on-disk encoding cache (``None``: in-process memo only).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the encoder.
        seed: seed of the folds (LightGBM and the text models keep their own seeds in their options).
    """

    text_mode: str = "frozen"
    encoder: str | None = None
    finetune: FineTuneConfig = field(default_factory=lambda: FineTuneConfig(show_progress=False))
    tfidf: TfidfOptions = field(default_factory=TfidfOptions)
    frozen_head_c: float = 1.0
    frozen_head_c_grid: tuple[float, ...] = (1.0, 10.0, 100.0)
    max_length: int = 256
    quantize: str = "none"
    inner_folds: int = 5
    embedding_dims: int = 0
    lightgbm: LightGBMOptions = field(default_factory=lambda: LightGBMOptions(num_leaves_grid=(3, 7, 15, 31)))
    select_leaves_by_cv: bool = True
    select_text_by_cv: bool = True
    nested_stacking: bool | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    cache_dir: str | None = None
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {', '.join(TEXT_MODES)}, not {self.text_mode!r}")
        if self.inner_folds < 2:
            raise ValueError(f"inner_folds must be at least 2, got {self.inner_folds}")
        if self.embedding_dims < 0:
            raise ValueError(f"embedding_dims must not be negative, got {self.embedding_dims}")
        if self.nested_stacking is True and self.inner_folds < 3:
            raise ValueError(
                f"nested_stacking needs inner_folds of at least 3 (its text models leave two folds out), "
                f"got {self.inner_folds}"
            )
        if self.embedding_dims and self.text_mode != "frozen":
            raise ValueError("embedding_dims needs text_mode='frozen' (the dimensions come from the frozen vectors)")
        if self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {self.quantize!r}")
        if self.quantize != "none" and self.text_mode != "frozen":
            raise ValueError(f"quantize={self.quantize!r} needs text_mode='frozen' (fine-tuned encoders run in float)")

    @property
    def nests_stacking(self) -> bool:
        """Whether the second level is cross-fitted (``nested_stacking``, or by default with 3 or more folds)."""
        return self.inner_folds >= 3 if self.nested_stacking is None else self.nested_stacking

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, state: Mapping[str, object]) -> HybridConfig:
        values = dict(state)
        values.setdefault("nested_stacking", False)  # written before it existed: fitted without it
        finetune = dict(values.pop("finetune"))  # type: ignore[arg-type]
        if finetune.get("lora_target_modules") is not None:
            finetune["lora_target_modules"] = tuple(finetune["lora_target_modules"])
        values["frozen_head_c_grid"] = tuple(values.get("frozen_head_c_grid") or ())  # type: ignore[arg-type]
        lightgbm = dict(values.pop("lightgbm"))  # type: ignore[arg-type]
        lightgbm["num_leaves_grid"] = tuple(lightgbm["num_leaves_grid"])
        return cls(
            finetune=FineTuneConfig(**finetune),
            tfidf=TfidfOptions(**dict(values.pop("tfidf"))),  # type: ignore[arg-type]
            lightgbm=LightGBMOptions(**lightgbm),
            calibration=CalibrationConfig(**dict(values.pop("calibration"))),  # type: ignore[arg-type]
            **values,  # type: ignore[arg-type]
        )


# --- frozen encoder vectors ----------------------------------------------------------------------------------


class SharedEmbedder:
    """Frozen-encoder vectors (mean pooling + L2), each distinct text encoded once.

    A memo in memory serves repeated texts within the process (the folds of a stacking and of an evaluation);
    with ``cache_dir`` the SQLite encoding cache of :mod:`ml.encoding_cache` also serves them across processes.

    Args:
        encoder: the encoder spec (see :func:`ml.encoder.resolve_encoder_path`).
        cache_dir: folder of ``encodings.sqlite3`` (``None``: memo only).
        max_length: tokens kept per text.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        quantize: ``"none"`` or ``"int8"`` (see :class:`ml.encoder.TextEncoder`); int8 always runs on the CPU.
    """

    def __init__(
        self,
        encoder: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        max_length: int = 256,
        device: str = "auto",
        batch_size: int = 64,
        memo_limit: int = 100_000,
        quantize: str = "none",
    ) -> None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
        self.encoder = encoder or ""
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_length = max_length
        self.device = device
        self.quantize = quantize
        self.batch_size = batch_size
        self._text_encoder: object | None = None
        self._memo: dict[str, np.ndarray] = {}
        self.memo_limit = memo_limit
        self.n_encoded = 0

    @classmethod
    def for_config(cls, config: HybridConfig) -> SharedEmbedder:
        """The embedder a hybrid's ``frozen`` text model uses."""
        return cls(
            config.encoder,
            cache_dir=config.cache_dir,
            max_length=config.max_length,
            device=config.device,
            quantize=config.quantize,
        )

    @property
    def text_encoder(self):  # noqa: ANN201 - ml.encoder.TextEncoder, imported lazily (torch)
        if self._text_encoder is None:
            from ml.encoder import TextEncoder

            self._text_encoder = TextEncoder.from_spec(
                self.encoder,
                batch_size=self.batch_size,
                max_length=self.max_length,
                # int8 vectors come from the CPU kernels wherever the model is scored, so they match training's.
                device="cpu" if self.quantize != "none" else self.device,
                quantize=self.quantize,
            )
        return self._text_encoder

    def identity(self) -> dict[str, object]:
        """Encoder id, weight and tokenizer fingerprints, spec, truncation and quantisation, for metadata."""
        encoder = self.text_encoder
        return {
            "spec": self.encoder,
            "id": encoder.encoder_id,
            "fingerprint": encoder.fingerprint,
            "tokenizer_fingerprint": encoder.tokenizer_fingerprint,
            "config_fingerprint": encoder.config_fingerprint,
            "max_length": self.max_length,
            "quantize": self.quantize,
            **({"int8_arithmetic": self._int8_arithmetic()} if self.quantize == "int8" else {}),
        }

    @staticmethod
    def _int8_arithmetic() -> str:
        from ml.quantize import int8_matmul_probe

        return int8_matmul_probe().arithmetic

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> np.ndarray:
        """Float32 vectors of ``texts`` in input order; ``progress(fraction, message)`` while encoding."""
        from ml.encoding_cache import EncodingCache, encode_with_cache, text_sha256

        keys = [text_sha256(text) for text in texts]
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in self._memo}
        if missing:
            cache = EncodingCache(self.cache_dir / "encodings.sqlite3") if self.cache_dir is not None else None
            result = encode_with_cache(self.text_encoder, list(missing.values()), cache=cache, progress=progress)
            self.n_encoded += result.n_encoded
            fresh = dict(zip(missing.keys(), result.vectors, strict=True))
        else:
            fresh = {}
        if not keys:
            return np.zeros((0, self.text_encoder.dimension), dtype=np.float32)
        vectors = np.stack([self._memo[key] if key in self._memo else fresh[key] for key in keys])
        self._remember(fresh)
        return vectors

    def _remember(self, fresh: dict[str, np.ndarray]) -> None:
        # A long-lived worker scores (and explains) new texts every day: keep the newest memo_limit vectors only.
        self._memo.update(fresh)
        overflow = len(self._memo) - self.memo_limit
        if overflow > 0:
            for key in list(self._memo)[:overflow]:
                del self._memo[key]


class FrozenEmbeddingHead:
    """Class-weighted logistic regression on frozen encoder vectors (the ``frozen`` text model).

    Args:
        embedder: where the vectors come from.
        c: inverse L2 strength, used as is when ``c_grid`` is empty.
        c_grid: when not empty, C is chosen from it by ROC AUC on a stratified 20% split of the training
            rows (unit-length vectors need far weaker regularisation than C=1), then refitted on all of them.
        seed: seed of that split and of the solver.
    """

    kind = "frozen_head"

    def __init__(
        self, embedder: SharedEmbedder, *, c: float = 1.0, c_grid: Sequence[float] = (), seed: int = 0
    ) -> None:
        self.embedder = embedder
        self.c = c
        self.c_grid = tuple(c_grid)
        self.seed = seed
        self.c_ = c
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0

    def fit(
        self, texts: Sequence[str], y: np.ndarray, *, groups: Sequence[object] | None = None
    ) -> FrozenEmbeddingHead:
        """Fit; ``groups`` (one customer id per text) keeps each customer on one side of the split that picks C."""
        from sklearn.linear_model import LogisticRegression

        vectors = self.embedder.embed(list(texts))
        labels = np.asarray(y, dtype=int)
        self.c_ = self._choose_c(vectors, labels, groups) if self.c_grid else self.c
        head = LogisticRegression(C=self.c_, class_weight="balanced", max_iter=3000, random_state=self.seed)
        head.fit(vectors, labels)
        self.coef_ = head.coef_[0].astype(np.float64)
        self.intercept_ = float(head.intercept_[0])
        return self

    def _choose_c(self, vectors: np.ndarray, labels: np.ndarray, groups: Sequence[object] | None) -> float:
        from sklearn.linear_model import LogisticRegression

        from ml.metrics import roc_auc

        if np.bincount(labels, minlength=2).min() < 5:
            return self.c
        try:
            train, valid = stratified_holdout(labels, 0.2, seed=self.seed, groups=groups)
        except ValueError:  # fewer customers than grouped folds
            return self.c
        if len(np.unique(labels[valid])) < 2 or len(np.unique(labels[train])) < 2:
            return self.c
        # Warm-started along increasing C: each fit starts from the previous solution.
        head = LogisticRegression(class_weight="balanced", max_iter=3000, warm_start=True, random_state=self.seed)
        scores: dict[float, float] = {}
        for c in sorted(self.c_grid):
            head.set_params(C=c)
            head.fit(vectors[train], labels[train])
            scores[c] = roc_auc(labels[valid], head.decision_function(vectors[valid]))
        return max(sorted(scores), key=lambda c: scores[c])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("this FrozenEmbeddingHead is not fitted yet")
        texts = list(texts)
        if not texts:
            return np.zeros((0, 2))
        logits = self.embedder.embed(texts).astype(np.float64) @ self.coef_ + self.intercept_
        churn = 1.0 / (1.0 + np.exp(-logits))
        return np.column_stack([1.0 - churn, churn])

    def save(self, path: str | Path) -> Path:
        if self.coef_ is None:
            raise RuntimeError("this FrozenEmbeddingHead is not fitted yet")
        return save_artifact(
            path,
            tensors={"head.weight": self.coef_, "head.bias": np.array([self.intercept_])},
            metadata={
                "kind": self.kind,
                "c": self.c_,
                "c_grid": list(self.c_grid),
                "seed": self.seed,
                "encoder": self.embedder.identity(),
            },
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path, *, embedder: SharedEmbedder) -> FrozenEmbeddingHead:
        """Load a head; ``embedder`` must hold the encoder whose fingerprint the artifact recorded."""
        tensors, metadata, _ = load_artifact(path)
        if metadata.get("kind") != cls.kind:
            raise ArtifactError(f"model artifact {path} holds a {metadata.get('kind')!r} model, not {cls.kind!r}")
        recorded = dict(metadata["encoder"])  # type: ignore[arg-type]
        found = embedder.identity()
        if found["fingerprint"] != recorded["fingerprint"]:
            raise ArtifactError(
                f"model artifact {path} was trained on encoder {recorded['id']!r} with fingerprint "
                f"{str(recorded['fingerprint'])[:12]}..., but the encoder found has fingerprint "
                f"{str(found['fingerprint'])[:12]}...; point CHURN_ENCODER at the same encoder weights"
            )
        check_tokenizer(path, recorded, str(found["tokenizer_fingerprint"]))
        check_config(path, recorded, str(found["config_fingerprint"]))
        if int(recorded["max_length"]) != embedder.max_length:  # type: ignore[arg-type]
            raise ArtifactError(f"model artifact {path} was trained with max_length {recorded['max_length']}")
        # Artifacts written before quantisation existed were float32.
        if recorded.get("quantize", "none") != embedder.quantize:
            raise ArtifactError(
                f"model artifact {path} was trained on {recorded.get('quantize', 'none')} encoder vectors, "
                f"but the encoder found runs with quantize={embedder.quantize!r}"
            )
        trained_on = recorded.get("int8_arithmetic")
        if trained_on is not None and trained_on != found.get("int8_arithmetic"):
            logger.warning(
                "model artifact %s was trained on int8 vectors of another int8 arithmetic (%s) than this CPU's (%s): "
                "its text scores here can differ slightly from those of the CPU it was trained on",
                path,
                trained_on,
                found.get("int8_arithmetic"),
            )
        model = cls(
            embedder,
            c=float(metadata["c"]),  # type: ignore[arg-type]
            c_grid=[float(c) for c in metadata.get("c_grid") or []],  # type: ignore[union-attr]
            seed=int(metadata["seed"]),  # type: ignore[arg-type]
        )
        weight = np.asarray(tensors["head.weight"], dtype=np.float64)
        if weight.shape != (embedder.text_encoder.dimension,):
            raise ArtifactError(f"model artifact {path}: head.weight has shape {weight.shape}")
        model.coef_, model.intercept_ = weight, float(tensors["head.bias"][0])
        return model


def make_text_model(config: HybridConfig, *, embedder: SharedEmbedder | None = None) -> TextModel:
    """A fresh, unfitted text model for ``config.text_mode`` (``"none"`` has none: ``ValueError``)."""
    mode = config.text_mode
    if mode == "tfidf":
        from ml.text_baseline import TfidfChurnClassifier

        return TfidfChurnClassifier(config.tfidf)
    if mode == "frozen":
        if embedder is None:
            embedder = SharedEmbedder.for_config(config)
        return FrozenEmbeddingHead(embedder, c=config.frozen_head_c, c_grid=config.frozen_head_c_grid, seed=config.seed)
    if mode in ("top-k", "lora", "full"):
        from ml.finetune import TransformerChurnClassifier

        finetune = replace(config.finetune, mode=mode, device=config.device)
        return TransformerChurnClassifier(finetune, encoder=config.encoder, cache_dir=config.cache_dir)
    raise ValueError(f"text_mode {mode!r} has no text model")


# --- the hybrid ----------------------------------------------------------------------------------------------


def _binary_labels(y: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(y).ravel()
    if not np.isin(labels, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise ValueError(f"label of row {bad} is {labels[bad]!r}; labels must be 0 (stayed) or 1 (churned)")
    labels = labels.astype(int)
    if len(labels) and labels.min() == labels.max():
        raise ValueError("training labels hold a single class; a churn model needs both churners and non-churners")
    return labels


class HybridChurnModel:
    """LightGBM on features + a text model's out-of-fold score, calibrated (see the module docstring).

    Args:
        config: options (:class:`HybridConfig`).
        embedder: a :class:`SharedEmbedder` to reuse (``frozen`` mode); one is made from ``config`` otherwise.
        text_model_factory: makes a fresh text model (anything with ``fit``/``predict_proba``/``save``) instead of
            the one ``config.text_mode`` names; models made this way cannot be reloaded by :meth:`load`.

    Attributes (after :meth:`fit`):
        oof_text_score_: the out-of-fold text score of each training row (NaN without text).
        oof_fold_: the fold whose held-out part held each training row.
        text_fold_train_rows_: the training rows of the text model of each fold.
        oof_metrics_: metrics of the calibrated out-of-fold LightGBM scores (held out, training data only).
        calibrator_, lightgbm_, text_model_, pca_mean_, pca_components_: the fitted parts.
    """

    kind = ARTIFACT_KIND

    def __init__(
        self,
        config: HybridConfig | None = None,
        *,
        embedder: SharedEmbedder | None = None,
        text_model_factory: Callable[[], TextModel] | None = None,
    ) -> None:
        self.config = config or HybridConfig()
        self.embedder = embedder
        self.text_model_factory = text_model_factory
        self.lightgbm_: LightGBMChurn | None = None
        self.text_model_: TextModel | None = None
        self.calibrator_: Calibrator | None = None
        self.pca_mean_: np.ndarray | None = None
        self.pca_components_: np.ndarray | None = None

    @property
    def uses_text(self) -> bool:
        return self.config.text_mode != "none"

    def _embedder(self) -> SharedEmbedder:
        if self.embedder is None:
            self.embedder = SharedEmbedder.for_config(self.config)
        return self.embedder

    def _new_text_model(self) -> TextModel:
        if self.text_model_factory is not None:
            return self.text_model_factory()
        return make_text_model(self.config, embedder=self._embedder() if self.config.text_mode == "frozen" else None)

    def fit(
        self,
        frame: pd.DataFrame,
        texts: Sequence[str] | None,
        y: Sequence[int] | np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        groups: Sequence[object] | None = None,
    ) -> HybridChurnModel:
        """Fit on a feature frame, one text per row (``None`` when ``text_mode="none"``) and 0/1 labels.

        ``groups`` (one customer id per row, for rows of the same customers at several cutoffs) keeps each
        customer's rows in one fold, so no out-of-fold score comes from a model that saw the same customer.
        """
        labels = _binary_labels(y)
        n = len(labels)
        frame = with_string_columns(frame)
        if len(frame) != n:
            raise ValueError(f"{len(frame)} feature rows but {n} labels")
        clashing = [c for c in frame.columns if str(c) == TEXT_SCORE_COLUMN or str(c).startswith(TEXT_DIM_PREFIX)]
        if clashing:
            raise ValueError(f"feature column {clashing[0]!r} clashes with the hybrid's own text columns")
        texts = self._check_texts(texts, n)
        config = self.config
        if np.bincount(labels, minlength=2).min() < config.inner_folds:
            raise ValueError(
                f"each class needs at least inner_folds={config.inner_folds} rows for the out-of-fold stacking, "
                f"got {np.bincount(labels, minlength=2).tolist()}"
            )
        report = progress or (lambda fraction, message: None)
        frame = frame.reset_index(drop=True)
        splits = stratified_folds(labels, config.inner_folds, seed=config.seed, groups=groups)
        for fold, (train_rows, _) in enumerate(splits):
            if np.bincount(labels[train_rows], minlength=2).min() < 2:
                raise ValueError(
                    f"the out-of-fold stacking needs at least 2 churners and 2 non-churners outside each of its "
                    f"{config.inner_folds} folds; outside fold {fold + 1} there are "
                    f"{np.bincount(labels[train_rows], minlength=2).tolist()}: train on more customers"
                )
        nested = self.uses_text and config.nests_stacking
        pairs = [(k, m) for k in range(len(splits)) for m in range(k + 1, len(splits))] if nested else []
        for k, m in pairs:
            outside = np.setdiff1d(splits[k][0], splits[m][1])
            if np.bincount(labels[outside], minlength=2).min() < 2:
                raise ValueError(
                    f"the nested stacking needs at least 2 churners and 2 non-churners outside each pair of its "
                    f"{config.inner_folds} folds; outside folds {k + 1} and {m + 1} there are "
                    f"{np.bincount(labels[outside], minlength=2).tolist()}: train on more customers"
                )
        self.columns_ = [str(c) for c in frame.columns]
        self.unk_rate_: float | None = None
        if self.uses_text and config.text_mode == "frozen" and self.text_model_factory is None:
            from ml.encoder import unknown_token_rate
            from ml.finetune import warn_unknown_tokens

            assert texts is not None
            encoder = self._embedder().text_encoder
            self.unk_rate_ = unknown_token_rate(encoder.tokenizer, texts)
            warn_unknown_tokens(self.unk_rate_, encoder.encoder_id)
        self.oof_text_score_ = np.full(n, np.nan)
        self.oof_fold_ = np.full(n, -1, dtype=int)
        self.text_fold_train_rows_: list[np.ndarray] = []
        # Per fold k: the folds left out of each text model whose scores the fold's second-level LightGBM learns
        # from (its training rows' text scores); with nested stacking every one of them left fold k out.
        self.second_level_left_out_: list[list[tuple[int, ...]]] = []
        self.leaves_cv_roc_auc_: dict[str, float] = {}
        competing = (1 + (config.embedding_dims > 0) + 1) if self.uses_text and config.select_text_by_cv else 1
        variants = len(config.lightgbm.num_leaves_grid) * competing
        steps = (len(splits) + 1 + len(pairs) if self.uses_text else 0) + variants + 1
        done = 0
        if self.uses_text and config.text_mode == "frozen" and self.text_model_factory is None:
            # Encoding every text once is most of a frozen fit: report it, then the folds in the rest.
            assert texts is not None
            whole = report
            self._embedder().embed(texts, progress=lambda fraction, message: whole(0.5 * fraction, message))
            report = lambda fraction, message: whole(0.5 + 0.5 * fraction, message)  # noqa: E731
        if self.uses_text:
            assert texts is not None
            for fold, (train_rows, held_out) in enumerate(splits):
                model = self._new_text_model().fit(
                    [texts[i] for i in train_rows], labels[train_rows], groups=_take(groups, train_rows)
                )
                self.oof_text_score_[held_out] = model.predict_proba([texts[i] for i in held_out])[:, 1]
                self.oof_fold_[held_out] = fold
                self.text_fold_train_rows_.append(np.sort(train_rows))
                done += 1
                report(done / steps, f"text model: fold {fold + 1} of {len(splits)}")
            # Row k: the text scores fold k's second-level LightGBM reads. Fold k's own rows keep their out-of-fold
            # score; nested, every other row gets the score of a text model that left out fold k as well.
            second_level = np.tile(self.oof_text_score_, (len(splits), 1))
            for k, m in pairs:
                outside = np.setdiff1d(splits[k][0], splits[m][1])
                model = self._new_text_model().fit(
                    [texts[i] for i in outside], labels[outside], groups=_take(groups, outside)
                )
                both = np.concatenate([splits[k][1], splits[m][1]])
                scores = model.predict_proba([texts[i] for i in both])[:, 1]
                second_level[m, splits[k][1]] = scores[: len(splits[k][1])]
                second_level[k, splits[m][1]] = scores[len(splits[k][1]) :]
                done += 1
                report(done / steps, f"text model: folds {k + 1} and {m + 1} left out (nested stacking)")
            # Without nesting: the first-level models, each of which left out only its own fold and saw fold k.
            self.second_level_left_out_ = [
                [tuple(sorted((k, m))) if nested else (m,) for m in range(len(splits)) if m != k]
                for k in range(len(splits))
            ]
            self.text_model_ = self._new_text_model().fit(texts, labels, groups=groups)
            if self.unk_rate_ is None and getattr(self.text_model_, "unk_rate_", None) is not None:
                self.unk_rate_ = float(self.text_model_.unk_rate_)  # a fine-tuned encoder measured (and warned)
            done += 1
            report(done / steps, "text model: refitted on all training rows")
            if config.embedding_dims:
                self._fit_pca(self._embedder().embed(texts))
        else:
            for fold, (_, held_out) in enumerate(splits):
                self.oof_fold_[held_out] = fold
        stacked = self._stack(frame, self.oof_text_score_, texts)
        fold_inputs = [stacked] * len(splits)
        if nested:
            fold_inputs = [stacked.assign(**{TEXT_SCORE_COLUMN: second_level[k]}) for k in range(len(splits))]
        # Leaf counts are compared by out-of-fold ROC AUC over the K folds (steadier than one inner split);
        # the winner's out-of-fold scores are the held-out data the calibration is chosen and fitted on.
        grid = config.lightgbm.num_leaves_grid if config.select_leaves_by_cv else (None,)
        # With select_text_by_cv the features-only variant (and, with embedding dimensions, the text score without
        # them) competes too: text columns stay only where they help. The variants with fewer columns are tried
        # first and a later one must score higher, so a tie (a text score LightGBM cannot use) keeps fewer columns.
        text_columns = [c for c in stacked.columns if c == TEXT_SCORE_COLUMN or str(c).startswith(TEXT_DIM_PREFIX)]
        dim_columns = [c for c in text_columns if c != TEXT_SCORE_COLUMN]
        candidates: list[tuple[str, list[str]]] = [("", [])]  # (label, columns dropped)
        if self.uses_text and config.select_text_by_cv:
            if dim_columns:
                candidates.insert(0, (", text score without embedding dims", dim_columns))
            candidates.insert(0, (", no text", text_columns))
        best: tuple[float, LightGBMOptions, list[str], np.ndarray] | None = None
        for label, dropped in candidates:
            per_fold = [fold_frame.drop(columns=dropped) for fold_frame in fold_inputs]
            for leaves in grid:
                options = replace(config.lightgbm, num_leaves_grid=(leaves,)) if leaves else config.lightgbm
                raw_oof = np.zeros(n)
                for (train_rows, held_out), inputs in zip(splits, per_fold, strict=True):
                    booster = LightGBMChurn(options).fit(
                        inputs.iloc[train_rows], labels[train_rows], groups=_take(groups, train_rows)
                    )
                    raw_oof[held_out] = booster.predict_proba(inputs.iloc[held_out])[:, 1]
                score = roc_auc(labels, raw_oof)
                self.leaves_cv_roc_auc_[f"{leaves or 'inner split'} leaves{label}"] = score
                if best is None or score > best[0]:
                    best = (score, options, dropped, raw_oof)
                done += 1
                report(done / steps, f"LightGBM: out-of-fold scores with {leaves or 'chosen'} leaves")
        assert best is not None
        _, self.lightgbm_options_, dropped, raw_oof = best
        self.oof_raw_score_ = raw_oof
        self.text_selected_ = self.uses_text and TEXT_SCORE_COLUMN not in dropped
        self.calibrator_ = Calibrator(config.calibration).fit(raw_oof, labels, groups=groups)
        # Measured on calibrated scores that are themselves held out (each from a calibration fitted on the
        # other folds); only with too few rows to fold is the calibration measured on what it was fitted on.
        held_out = self.calibrator_.held_out_
        self.oof_metrics_ = churn_metrics(
            labels, held_out if held_out is not None else self.calibrator_.transform(raw_oof)
        )
        # LightGBM reads only the columns it was trained on, so a stacked frame with text columns still fits it.
        inputs = stacked.drop(columns=dropped)
        self.lightgbm_ = LightGBMChurn(self.lightgbm_options_).fit(inputs, labels, groups=groups)
        self.stacked_columns_ = [str(c) for c in stacked.columns]
        self.training_data_sha256_ = _data_hash(frame, texts, labels)
        self.n_train_ = n
        report(1.0, "hybrid fitted")
        return self

    def _check_texts(self, texts: Sequence[str] | None, n: int) -> list[str] | None:
        if not self.uses_text:
            return None
        if texts is None:
            raise ValueError(f"text_mode={self.config.text_mode!r} needs one text per row, got none")
        texts = list(texts)
        if len(texts) != n:
            raise ValueError(f"{len(texts)} texts but {n} rows")
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text of row {row} is {type(text).__name__}, not str")
        return texts

    def _fit_pca(self, vectors: np.ndarray) -> None:
        k = min(self.config.embedding_dims, vectors.shape[1], max(1, vectors.shape[0] - 1))
        mean = vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(vectors.astype(np.float64) - mean, full_matrices=False)
        # Fix each component's sign (largest absolute loading positive) so refits give the same features.
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        self.pca_mean_, self.pca_components_ = mean.astype(np.float64), (vt * signs[:, None])[:k]

    def _stack(self, frame: pd.DataFrame, text_score: np.ndarray, texts: Sequence[str] | None) -> pd.DataFrame:
        # No copy of the features: reset_index gives a new frame, which pandas copies before any change to it
        # (copy-on-write; before pandas 3, reset_index copied the data itself). A .copy() here held a second copy of
        # the training frame through every LightGBM fit.
        stacked = frame.reset_index(drop=True)
        if not self.uses_text:
            return stacked
        stacked[TEXT_SCORE_COLUMN] = np.asarray(text_score, dtype=float)
        if self.pca_components_ is not None:
            assert texts is not None
            dims = (self._embedder().embed(texts) - self.pca_mean_) @ self.pca_components_.T
            for i in range(dims.shape[1]):
                stacked[f"{TEXT_DIM_PREFIX}{i + 1}"] = dims[:, i]
        return stacked

    def _check_fitted(self) -> None:
        if self.lightgbm_ is None or self.calibrator_ is None:
            raise RuntimeError("this HybridChurnModel is not fitted yet; call fit() or load() first")

    def text_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The final text model's churn score of each text (``(n,)``)."""
        self._check_fitted()
        if self.text_model_ is None:
            raise RuntimeError("this hybrid has no text model (text_mode='none')")
        texts = list(texts)
        return self.text_model_.predict_proba(texts)[:, 1] if texts else np.zeros(0)

    def stacked_frame(self, frame: pd.DataFrame, texts: Sequence[str] | None) -> pd.DataFrame:
        """The LightGBM input for new rows: the features (in training order) plus the text columns."""
        self._check_fitted()
        frame = with_string_columns(frame)
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise ValueError(f"columns missing from the data: {', '.join(missing)}")
        texts = self._check_texts(texts, len(frame))
        score = self.text_scores(texts) if texts is not None else np.full(len(frame), np.nan)
        return self._stack(frame[self.columns_], score, texts)

    def raw_scores_from_stacked(self, stacked: pd.DataFrame) -> np.ndarray:
        """Uncalibrated LightGBM churn scores of a stacked frame."""
        self._check_fitted()
        return self.lightgbm_.predict_proba(stacked)[:, 1]  # type: ignore[union-attr]

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities ``(n,)`` of raw LightGBM scores (:meth:`raw_scores_from_stacked`)."""
        self._check_fitted()
        return np.clip(self.calibrator_.transform(raw), 0.0, 1.0)  # type: ignore[union-attr]

    def predict_proba(self, frame: pd.DataFrame, texts: Sequence[str] | None = None) -> np.ndarray:
        """Calibrated probabilities ``(n, 2)``; column 1 is the churn probability."""
        churn = self.calibrated(self.raw_scores_from_stacked(self.stacked_frame(frame, texts)))
        return np.column_stack([1.0 - churn, churn])

    # ------------------------------------------------------------------ save / load
    def encoder_info(self) -> dict[str, object] | None:
        """Encoder id and fingerprint of the text model (``None`` when it uses no encoder)."""
        if self.config.text_mode == "frozen":
            return self._embedder().identity()
        if self.config.text_mode in ("top-k", "lora", "full") and self.text_model_ is not None:
            model = self.text_model_
            return {
                "spec": model.encoder,  # type: ignore[attr-defined]
                "id": model.encoder_id_,  # type: ignore[attr-defined]
                "fingerprint": model.encoder_fingerprint_,  # type: ignore[attr-defined]
                "tokenizer_fingerprint": model.tokenizer_fingerprint_,  # type: ignore[attr-defined]
            }
        return None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, object], dict[str, bytes]]:
        """``(tensors, metadata, extra_files)`` of the whole model, for :func:`ml.artifacts.save_artifact`."""
        self._check_fitted()
        tensors, lightgbm_meta, files = _pack("lightgbm", self.lightgbm_)
        metadata: dict[str, object] = {
            "kind": self.kind,
            "config": self.config.to_json(),
            "columns": self.columns_,
            "stacked_columns": self.stacked_columns_,
            "calibration": self.calibrator_.to_json(),  # type: ignore[union-attr]
            "oof_metrics": self.oof_metrics_,
            "leaves_cv_roc_auc": self.leaves_cv_roc_auc_,
            "text_selected": self.text_selected_,
            "n_train": self.n_train_,
            "training_data_sha256": self.training_data_sha256_,
            "encoder": self.encoder_info(),
            "unk_rate": self.unk_rate_,
            "lightgbm": lightgbm_meta,
            "text_model": None,
        }
        if self.text_model_ is not None:
            text_tensors, text_meta, text_files = _pack("text", self.text_model_)
            tensors.update(text_tensors)
            files.update(text_files)
            metadata["text_model"] = text_meta
        if self.pca_components_ is not None:
            tensors["pca.mean"], tensors["pca.components"] = self.pca_mean_, self.pca_components_  # type: ignore[assignment]
        return tensors, metadata, files

    def save(self, path: str | Path) -> Path:
        tensors, metadata, files = self.state()
        return save_artifact(path, tensors=tensors, metadata=metadata, extra_files=files)

    @classmethod
    def from_state(
        cls,
        tensors: Mapping[str, np.ndarray],
        metadata: Mapping[str, object],
        files: Mapping[str, bytes],
        *,
        where: str = "artifact",
        encoder: str | None = None,
        device: str = "auto",
        cache_dir: str | None = None,
        embedder: SharedEmbedder | None = None,
    ) -> HybridChurnModel:
        """Rebuild a fitted hybrid from :meth:`state` (already verified by :func:`ml.artifacts.load_artifact`).

        Args:
            encoder: where the base encoder is on this machine when not at the recorded spec (fingerprint checked).
            device: where the encoder runs.
            cache_dir: encoding cache folder on this machine.
        """
        if metadata.get("kind") != cls.kind:
            raise ArtifactError(f"model {where} holds a {metadata.get('kind')!r} model, not {cls.kind!r}")
        try:
            config = HybridConfig.from_json(dict(metadata["config"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model {where}: the hybrid configuration cannot be read ({exc})") from exc
        overrides: dict[str, object] = {"device": device, "cache_dir": cache_dir}
        if encoder is not None:
            overrides["encoder"] = encoder
        config = replace(config, **overrides)  # type: ignore[arg-type]
        model = cls(config, embedder=embedder)
        model.columns_ = list(metadata["columns"])  # type: ignore[arg-type]
        model.stacked_columns_ = list(metadata["stacked_columns"])  # type: ignore[arg-type]
        model.oof_metrics_ = dict(metadata["oof_metrics"])  # type: ignore[arg-type]
        model.leaves_cv_roc_auc_ = dict(metadata.get("leaves_cv_roc_auc") or {})  # type: ignore[arg-type]
        model.text_selected_ = bool(metadata.get("text_selected", config.text_mode != "none"))
        model.n_train_ = int(metadata["n_train"])  # type: ignore[arg-type]
        model.training_data_sha256_ = str(metadata["training_data_sha256"])
        unk_rate = metadata.get("unk_rate")  # absent from models saved before it was recorded
        model.unk_rate_ = float(unk_rate) if isinstance(unk_rate, int | float) else None
        try:
            model.calibrator_ = Calibrator.from_json(dict(metadata["calibration"]))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ArtifactError(f"model {where}: {exc}") from exc
        model.lightgbm_ = _unpack("lightgbm", tensors, metadata["lightgbm"], files, LightGBMChurn.load, where=where)  # type: ignore[arg-type]
        if config.text_mode != "none":
            if not metadata.get("text_model"):
                raise ArtifactError(f"model {where} has text_mode {config.text_mode!r} but no text model")
            text_metadata = metadata["text_model"]
            model.text_model_ = _unpack("text", tensors, text_metadata, files, model._text_loader(), where=where)  # type: ignore[arg-type]
        if "pca.components" in tensors:
            model.pca_mean_ = np.asarray(tensors["pca.mean"], dtype=np.float64)
            model.pca_components_ = np.asarray(tensors["pca.components"], dtype=np.float64)
        return model

    def _text_loader(self) -> Callable[[Path], TextModel]:
        mode = self.config.text_mode
        if mode == "tfidf":
            from ml.text_baseline import TfidfChurnClassifier

            return TfidfChurnClassifier.load
        if mode == "frozen":
            embedder = self._embedder()
            return lambda path: FrozenEmbeddingHead.load(path, embedder=embedder)
        from ml.finetune import TransformerChurnClassifier

        config = self.config
        return lambda path: TransformerChurnClassifier.load(
            path, encoder=config.encoder, device=config.device, cache_dir=config.cache_dir
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path, *, encoder: str | None = None, device: str = "auto") -> HybridChurnModel:
        tensors, metadata, files = load_artifact(path)
        return cls.from_state(tensors, metadata, files, where=f"artifact {path}", encoder=encoder, device=device)


def _pack(prefix: str, model: object) -> tuple[dict[str, np.ndarray], dict[str, object], dict[str, bytes]]:
    """A sub-model's artifact contents, prefixed so they fit inside the enclosing artifact."""
    with tempfile.TemporaryDirectory(prefix="churn-pack-") as tmp:
        model.save(Path(tmp) / "model")  # type: ignore[attr-defined]
        tensors, metadata, files = load_artifact(Path(tmp) / "model")
    return (
        {f"{prefix}.{name}": value for name, value in tensors.items()},
        metadata,
        {f"{prefix}-{name}": data for name, data in files.items()},
    )


def _unpack(
    prefix: str,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, object],
    files: Mapping[str, bytes],
    loader: Callable[[Path], object],
    *,
    where: str,
) -> object:
    """Rebuild a sub-model with its own ``load`` from the (already verified) contents of the enclosing artifact;
    its errors name the enclosing artifact (``where``), not the temporary directory it is rebuilt in."""
    own_tensors = {name[len(prefix) + 1 :]: value for name, value in tensors.items() if name.startswith(f"{prefix}.")}
    own_files = {name[len(prefix) + 1 :]: data for name, data in files.items() if name.startswith(f"{prefix}-")}
    with tempfile.TemporaryDirectory(prefix="churn-unpack-") as tmp:
        rebuilt = Path(tmp) / "model"
        save_artifact(rebuilt, tensors=own_tensors, metadata=metadata, extra_files=own_files)
        try:
            return loader(rebuilt)
        except ArtifactError as exc:
            raise ArtifactError(
                str(exc).replace(f"model artifact {rebuilt}", f"the {prefix} model of {where}")
            ) from exc


def _take(groups: Sequence[object] | None, rows: np.ndarray) -> list[object] | None:
    return None if groups is None else [groups[i] for i in rows]


def _data_hash(frame: pd.DataFrame, texts: Sequence[str] | None, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(_row_hashes(frame).tobytes())
    digest.update(",".join(map(str, frame.columns)).encode("utf-8"))
    for text in texts or ():
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    digest.update(labels.astype(np.int8).tobytes())
    return digest.hexdigest()


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """``pd.util.hash_pandas_object(frame.astype(object), index=False)`` as an array, one column at a time.

    The same row hashes (each column's ``pd.util.hash_array``, combined as pandas combines them, after CPython's
    tuple hash), without a boxed copy of the whole frame: a Python float per cell, 270 MiB for 150,000 training rows.
    """
    columns = frame.shape[1]
    out = np.full(len(frame), 0x345678, dtype=np.uint64)
    mult = np.uint64(1000003)
    for i in range(columns):
        out ^= pd.util.hash_array(frame.iloc[:, i].astype(object).to_numpy())
        out *= mult
        mult += np.uint64(82520 + 2 * (columns - i))
    out += np.uint64(97531)
    return out
