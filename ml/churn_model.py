"""The deployable churn model: customer histories in, calibrated churn probabilities and explanations out.

This is the unit the Django side trains, stores, promotes and scores with. Public API::

    from ml.churn_model import ChurnModel, ChurnModelConfig

    model = ChurnModel(ChurnModelConfig(horizon_days=90)).fit(histories, as_of=as_of, progress=callback)
    model.holdout_metrics        # {"roc_auc", "pr_auc", "lift_at_10", "brier", "ece", "n", "positive_rate", ...}
    model.metadata               # JSON-ready dict (what metadata.json holds)
    model.holdout_               # HoldoutData: training/holdout features, labels, holdout probabilities (fit only)
    model.save(path)             # one artifact directory (ml.artifacts: safetensors + JSON + sha256 manifest)
    model = ChurnModel.load(path)                  # verifies every file first; ArtifactError otherwise
    model.predict_proba(snapshots)                 # np.ndarray (n,): calibrated churn probabilities
    model.explain(snapshots, top_n=5)              # per snapshot: [{factor, direction, weight, evidence}, ...]
    model.score(snapshots, top_n=5, text_factor_rows=pick)  # ScoredBatch: both at once (what scoring runs use)

* ``fit(histories, *, as_of, progress=None)``: training snapshots are taken at rolling cutoffs before ``as_of``
  (:func:`ml.snapshot.rolling_cutoffs`: the newest is ``as_of - lead - horizon``, so no label looks past
  ``as_of``). The newest cutoff's labelled snapshots are a frozen **holdout**: the model is trained on the
  older cutoffs only and :attr:`ChurnModel.holdout_metrics` is measured on that holdout, so two models trained
  at the same ``as_of`` are compared on the same customers. (With a single cutoff, ``holdout_fraction`` of its
  customers is held out instead, chosen by a hash of each customer's id and the seed: :func:`customer_held_out`.) ``progress(fraction, message)`` is called as
  training advances.
* ``predict_proba(snapshots)``: snapshots at any cutoff (:func:`ml.snapshot.snapshot_at`), the same
  features and text serialisation as in training; columns unseen in training are ignored and missing ones
  are treated as missing values.
* ``explain(snapshots, top_n=5, text_factors=True)``: see :mod:`ml.explain`. Text factors re-score the text
  once per line (about 10-20 encodings per customer with a frozen encoder), so explaining is slower than
  scoring: explain the customers you show, or pass ``text_factors=False`` for feature factors only.
* ``metadata`` keys: ``kind``, ``model_type`` (``hybrid`` or ``lightgbm``), ``mode`` (text mode), ``encoder``
  (id, fingerprint, spec or null), ``features``, ``calibration``, ``training_data_sha256``, ``as_of``,
  ``cutoffs``, ``holdout_cutoff``, ``holdout_customers_sha256`` (sha256 of the held-out customers' sorted ids),
  ``holdout_split`` (how the holdout was chosen: ``_split_holdout``), ``seed``, ``metrics`` (the holdout metrics), ``oof_metrics``, ``config``, ``n_train``, ``n_holdout`` and, once
  saved or loaded, ``libraries``.

The estimator inside is :class:`ml.hybrid.HybridChurnModel`; ``ChurnModelConfig.hybrid.text_mode`` picks
the text model (``"none"`` gives features-only LightGBM, the ``lightgbm`` model type).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ml.artifacts import ArtifactError, artifact_loader, library_versions, load_artifact, save_artifact
from ml.data import CustomerHistory
from ml.features import FeatureBuilder, FeatureConfig, column_kinds
from ml.hybrid import HybridChurnModel, HybridConfig, SharedEmbedder
from ml.metrics import churn_metrics
from ml.serialize import SerializeConfig, serialize_snapshot
from ml.snapshot import (
    EligibilityRule,
    LabelConfig,
    LabelledSnapshot,
    Snapshot,
    flagged_snapshots,
    labelled_snapshots,
    qualifying_activity_times,
    rolling_cutoffs,
)

__all__ = ["ARTIFACT_KIND", "ChurnModel", "ChurnModelConfig", "HoldoutData"]

ARTIFACT_KIND = "churn_model"
# How far an as_of may lie after the newest activity in the data: the label windows of a training end at its as_of,
# and days never recorded would read as inactivity (churn). A day covers the time an import takes to arrive.
DATA_END_TOLERANCE = timedelta(days=1)
LABEL_SOURCES = ("activity", "flag")
ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class ChurnModelConfig:
    """Options of :class:`ChurnModel`.

    Attributes:
        horizon_days, lead_days, activity: the churn definition (:class:`ml.snapshot.LabelConfig`).
        max_training_cutoffs: most rolling cutoffs used (the newest is the holdout); None: while history allows.
        min_history_days: a cutoff needs this much history after the first activity in the data.
        max_days_inactive: leave out customers idle this long at a cutoff (already lapsed); None keeps them.
        holdout_fraction: share of customers held out when there is a single cutoff.
        hybrid: the estimator's options (text mode, encoder, LightGBM, calibration).
        features: options of the tabular features.
        serialize: options of the text serialisation.
        seed: seed of the single-cutoff holdout split.
        labels_from: ``"activity"``: churn is no qualifying activity in the window after each rolling cutoff (event
            logs; an explicit ``churned_at`` wins); ``"flag"``: profile data, one snapshot per customer at
            ``as_of`` labelled by its ``churned`` flag, with a sample of customers held out (``_split_holdout``).
    """

    horizon_days: int = 90
    lead_days: int = 0
    activity: str = "orders"
    max_training_cutoffs: int | None = 6
    min_history_days: int = 30
    max_days_inactive: int | None = None
    holdout_fraction: float = 0.2
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    serialize: SerializeConfig = field(default_factory=SerializeConfig)
    seed: int = 0
    labels_from: str = "activity"

    def __post_init__(self) -> None:
        if self.labels_from not in LABEL_SOURCES:
            raise ValueError(f"labels_from must be one of {', '.join(LABEL_SOURCES)}, not {self.labels_from!r}")
        LabelConfig(horizon_days=self.horizon_days, lead_days=self.lead_days, activity=self.activity)  # type: ignore[arg-type]
        if self.max_training_cutoffs is not None and self.max_training_cutoffs < 2:
            raise ValueError("max_training_cutoffs must be at least 2 (the newest cutoff is the holdout)")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")

    @property
    def labels(self) -> LabelConfig:
        return LabelConfig(horizon_days=self.horizon_days, lead_days=self.lead_days, activity=self.activity)  # type: ignore[arg-type]

    @property
    def eligibility(self) -> EligibilityRule:
        return EligibilityRule(max_days_inactive=self.max_days_inactive)

    @property
    def model_type(self) -> str:
        return "lightgbm" if self.hybrid.text_mode == "none" else "hybrid"

    def to_json(self) -> dict[str, object]:
        state = asdict(self)
        state["hybrid"] = self.hybrid.to_json()
        return state

    @classmethod
    def from_json(cls, state: Mapping[str, object]) -> ChurnModelConfig:
        values = dict(state)
        features = dict(values.pop("features"))  # type: ignore[arg-type]
        features = {k: tuple(v) if isinstance(v, list) else v for k, v in features.items()}
        features.setdefault("attribute_names", "ascii")  # saved before attribute names were kept verbatim
        return cls(
            hybrid=HybridConfig.from_json(dict(values.pop("hybrid"))),  # type: ignore[arg-type]
            features=FeatureConfig(**features),  # type: ignore[arg-type]
            serialize=SerializeConfig(**dict(values.pop("serialize"))),  # type: ignore[arg-type]
            **values,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class HoldoutData:
    """What :meth:`ChurnModel.fit` trained and measured on, kept in memory (never saved) so that the model card
    (:mod:`ml.model_card`) scores baselines on the same rows without building snapshots or encoding texts again.

    Attributes:
        train_frame, y_train: tabular features and labels of the training snapshots.
        holdout_frame, y_holdout: the same for the holdout snapshots (columns aligned to the training ones).
        probability: the model's calibrated churn probability of each holdout row.
    """

    train_frame: pd.DataFrame
    y_train: np.ndarray
    holdout_frame: pd.DataFrame
    y_holdout: np.ndarray
    probability: np.ndarray


@dataclass(frozen=True)
class ScoredBatch:
    """What :meth:`ChurnModel.score` returns.

    Attributes:
        probabilities: calibrated churn probabilities ``(n,)``, in the order of the snapshots.
        factors: the top factors of each snapshot (see :meth:`ChurnModel.explain`).
        texts_encoded: distinct customer texts the frozen encoder encoded now (the rest came from its memo or
            the encoding cache); None for models without a frozen encoder.
        explanation_texts_encoded: texts encoded for the text factors (leave-one-part-out variants); None likewise.
    """

    probabilities: np.ndarray
    factors: list[list[dict[str, object]]]
    texts_encoded: int | None
    explanation_texts_encoded: int | None


def _encoded(hybrid: HybridChurnModel) -> int | None:
    """Texts the hybrid's frozen encoder has encoded so far in this process; None for models without one."""
    embedder = hybrid.embedder if hybrid.config.text_mode == "frozen" else None
    return None if embedder is None else int(embedder.n_encoded)


# A holdout that is a sample of customers at one cutoff is named by that cutoff followed by this (metadata
# ``holdout_cutoff``); the registry and the dashboard read it back.
CUSTOMER_SAMPLE_SUFFIX = " (customers)"
# ``holdout_split`` of a model whose held-out customers ``customer_held_out`` chose.
HOLDOUT_BY_CUSTOMER_HASH = "customer-hash"


def customer_held_out(customer_id: object, *, seed: int, fraction: float) -> bool:
    """Whether a single-cutoff training holds this customer out: a hash of (seed, id) below ``fraction``. The same
    for a customer whenever and with whichever other customers the model is trained (``ChurnModel._split_holdout``)."""
    digest = hashlib.sha256(f"churnsite-holdout:{seed}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _customers_sha256(snapshots: Sequence[Snapshot]) -> str:
    """The sha256 of the sorted, distinct customer ids of ``snapshots``, one per line."""
    ids = sorted({str(snapshot.customer.id) for snapshot in snapshots})
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class ChurnModel:
    """Features + text of customer snapshots -> the hybrid -> calibrated churn probability (module docstring)."""

    def __init__(self, config: ChurnModelConfig | None = None, *, embedder: SharedEmbedder | None = None) -> None:
        self.config = config or ChurnModelConfig()
        self._embedder = embedder
        self._tokenizer: object | None = None
        self.hybrid_: HybridChurnModel | None = None
        self.holdout_metrics: dict[str, object] = {}
        self.holdout_: HoldoutData | None = None  # set by fit() only; a loaded model has none
        # The held-out customers' ids (str), set by fit() only: a sample of customers can be rebuilt from them.
        self.holdout_customer_ids_: frozenset[str] = frozenset()
        self.holdout_split_ = ""  # how fit() chose the holdout (see _split_holdout)
        self._metadata: dict[str, object] = {}

    # ------------------------------------------------------------------ data
    def _builder(self) -> FeatureBuilder:
        return FeatureBuilder(self.config.features)

    def _texts(self, snapshots: Sequence[Snapshot]) -> list[str] | None:
        if self.config.hybrid.text_mode == "none":
            return None
        check = self._encoder_tokenizer()
        return [serialize_snapshot(s, config=self.config.serialize, check_tokens=check) for s in snapshots]

    def _encoder_tokenizer(self) -> object | None:
        """The tokenizer of the encoder that reads the texts (None for TF-IDF, which reads them whole): each text
        is fitted to the token budget with a fast approximate count and checked with it, because the encoder cuts
        whatever goes beyond its max_length, and the approximation falls short for some languages."""
        if self.config.hybrid.text_mode in ("none", "tfidf"):
            return None
        if self._tokenizer is None:
            from ml.encoder import load_tokenizer

            self._tokenizer = load_tokenizer(self.config.hybrid.encoder)
        return self._tokenizer

    def _frame(self, snapshots: Sequence[Snapshot]) -> pd.DataFrame:
        if not hasattr(self, "column_kinds_"):
            return self._builder().build(list(snapshots)).reset_index(drop=True)
        # Attributes are converted to the kinds recorded at training, value by value (never from the batch).
        frame = self._builder().build(list(snapshots), attribute_kinds=self.column_kinds_).reset_index(drop=True)
        aligned: dict[str, pd.Series] = {}
        for column, kind in self.column_kinds_.items():
            values = frame[column] if column in frame.columns else pd.Series([None] * len(frame), dtype=object)
            if kind == "numeric":
                aligned[column] = pd.to_numeric(values, errors="coerce").astype(float)
            else:
                aligned[column] = values.map(lambda v: None if _missing(v) else str(v)).astype(object)
        return pd.DataFrame(aligned, index=range(len(frame)))

    # ------------------------------------------------------------------ fit
    def fit(
        self, histories: Sequence[CustomerHistory], *, as_of: datetime, progress: ProgressCallback | None = None
    ) -> ChurnModel:
        """Train on snapshots at rolling cutoffs before ``as_of``; the newest cutoff is the holdout.

        Raises:
            ValueError: no activity, no cutoff that fits, or a side with a single class (the message says which).
        """
        report = progress or (lambda fraction, message: None)
        config = self.config
        histories = list(histories)
        if config.labels_from == "flag":
            rows = flagged_snapshots(histories, as_of)
            if not rows:
                raise ValueError("no customer carries a churn flag (churned true or false): nothing to train on")
            report(0.0, f"one snapshot per flagged customer at {as_of:%Y-%m-%d}")
            return self._fit_rows(rows, [as_of], as_of=as_of, report=report)
        activity_times = [t for h in histories if (t := qualifying_activity_times(h, config.activity))]
        if not activity_times:
            raise ValueError("no customer has any qualifying activity: nothing to train on")
        first_times = [times[0] for times in activity_times]
        data_end = max(times[-1] for times in activity_times)
        if as_of - data_end > DATA_END_TOLERANCE:
            raise ValueError(
                f"as_of {as_of:%Y-%m-%d %H:%M} is {(as_of - data_end).days} days after the data ends (the newest "
                f"{'order' if config.activity == 'orders' else 'order or event'}: {data_end:%Y-%m-%d %H:%M}): the "
                "days never recorded would count as inactivity and make churn up; train at an as_of up to the end "
                "of the data, or import what is missing"
            )
        cutoffs = self._cutoffs(as_of, earliest=min(first_times))
        if not cutoffs:
            raise ValueError(
                f"no training cutoff fits between the first activity ({min(first_times):%Y-%m-%d}) and "
                f"{as_of:%Y-%m-%d} with a {config.horizon_days}-day horizon and {config.lead_days}-day lead: "
                "train at a later as-of date or with a shorter horizon"
            )
        report(0.0, f"building snapshots at {len(cutoffs)} cutoffs")
        rows = labelled_snapshots(
            histories, cutoffs[:1], config=config.labels, rule=config.eligibility, label_until=as_of
        )
        rows += labelled_snapshots(
            histories, cutoffs[1:], config=config.labels, rule=config.eligibility, label_until=cutoffs[0]
        )
        return self._fit_rows(rows, cutoffs, as_of=as_of, report=report)

    def _cutoffs(self, as_of: datetime, *, earliest: datetime) -> list[datetime]:
        """The holdout cutoff (the newest, whose label window ends at ``as_of``), then the training cutoffs, whose
        label windows end by the holdout cutoff: they step back from it as from an as_of of their own, so with a
        lead time no training label reads the days after the holdout cutoff (the holdout is the training's future).
        """
        config = self.config
        window = {"horizon_days": config.horizon_days, "lead_days": config.lead_days, "earliest": earliest}
        holdout = rolling_cutoffs(as_of=as_of, min_history_days=config.min_history_days, max_cutoffs=1, **window)
        if not holdout:
            return []
        limit = None if config.max_training_cutoffs is None else config.max_training_cutoffs - 1
        training = rolling_cutoffs(
            as_of=holdout[0], min_history_days=config.min_history_days, max_cutoffs=limit, **window
        )
        return [*holdout, *training]

    def _fit_rows(
        self, rows: list[LabelledSnapshot], cutoffs: list[datetime], *, as_of: datetime, report: ProgressCallback
    ) -> ChurnModel:
        config = self.config
        train_rows, holdout_rows, holdout_cutoff = self._split_holdout(rows, cutoffs)
        for side, part in (("training", train_rows), ("holdout", holdout_rows)):
            labels = {r.label for r in part}
            if labels != {0, 1}:
                raise ValueError(
                    f"the {side} snapshots hold {len(part)} customers of {'no' if not labels else 'a single'} class: "
                    "a churn model needs churners and non-churners (more customers, an earlier as-of or another horizon)"
                )
        report(0.05, f"features and texts of {len(train_rows)} training and {len(holdout_rows)} holdout snapshots")
        train_snapshots = [r.snapshot for r in train_rows]
        train_frame = self._builder().build(train_snapshots).reset_index(drop=True)
        self.column_kinds_ = column_kinds(train_frame)
        y_train = np.array([r.label for r in train_rows], dtype=int)
        hybrid = HybridChurnModel(config.hybrid, embedder=self._embedder)
        hybrid.fit(
            train_frame,
            self._texts(train_snapshots),
            y_train,
            progress=lambda fraction, message: report(0.1 + 0.8 * fraction, message),
            groups=[s.customer.id for s in train_snapshots],
        )
        self.hybrid_ = hybrid
        holdout_snapshots = [r.snapshot for r in holdout_rows]
        self.holdout_customer_ids_ = frozenset(str(s.customer.id) for s in holdout_snapshots)
        y_holdout = np.array([r.label for r in holdout_rows], dtype=int)
        report(0.92, f"scoring the holdout ({len(holdout_rows)} snapshots)")
        holdout_frame = self._frame(holdout_snapshots)
        holdout_probability = hybrid.predict_proba(holdout_frame, self._texts(holdout_snapshots))[:, 1]
        self.holdout_ = HoldoutData(
            train_frame=train_frame,
            y_train=y_train,
            holdout_frame=holdout_frame,
            y_holdout=y_holdout,
            probability=holdout_probability,
        )
        self.holdout_metrics = {
            **churn_metrics(y_holdout, holdout_probability),
            "n": len(y_holdout),
            "positive_rate": float(y_holdout.mean()),
            "cutoff": holdout_cutoff,
        }
        self._metadata = {
            "kind": ARTIFACT_KIND,
            "model_type": config.model_type,
            "mode": config.hybrid.text_mode,
            "encoder": hybrid.encoder_info(),
            # Share of the training texts' tokens unknown to the encoder (None without one); above 5% training warns.
            "unk_rate": hybrid.unk_rate_,
            "features": list(self.column_kinds_),
            "column_kinds": self.column_kinds_,
            "stacked_features": hybrid.stacked_columns_,
            "calibration": hybrid.calibrator_.to_json(),  # type: ignore[union-attr]
            "training_data_sha256": hybrid.training_data_sha256_,
            "as_of": as_of.isoformat(),
            "cutoffs": [c.isoformat() for c in cutoffs],
            "holdout_cutoff": holdout_cutoff,
            # A sample of customers held out at one cutoff is named by its cutoff alone, yet holds other customers
            # once customers are added: this tells two holdouts apart.
            "holdout_customers_sha256": _customers_sha256(holdout_snapshots),
            # How the holdout was chosen: "cutoff" (the newest of rolling cutoffs), "customer-hash" (a single
            # cutoff: customer_held_out), "stratified" (a single cutoff too small for that) or "none".
            "holdout_split": self.holdout_split_,
            "seed": config.seed,
            "metrics": self.holdout_metrics,
            "oof_metrics": hybrid.oof_metrics_,
            "n_train": len(y_train),
            "n_holdout": len(y_holdout),
            "train_positive_rate": float(y_train.mean()),
            "config": config.to_json(),
            "libraries": library_versions(),
        }
        report(1.0, "trained")
        return self

    def _split_holdout(
        self, rows: list[LabelledSnapshot], cutoffs: list[datetime]
    ) -> tuple[list[LabelledSnapshot], list[LabelledSnapshot], str]:
        """The training rows, the holdout rows and the holdout's name; sets ``holdout_split_``.

        With rolling cutoffs the holdout is the newest cutoff (``"cutoff"``). With a single cutoff (profile data)
        it is a sample of customers: each customer is held out or not by a hash of its id and the seed
        (``"customer-hash"``, :func:`customer_held_out`), so a customer keeps its side when the model is trained
        again later, also after new customers were imported, and a model trained before never trained on the
        customers a later one holds out; where that leaves one side without churners or without non-churners (a
        few hundred customers or fewer), a stratified sample of the rows instead (``"stratified"``).
        """
        if len(cutoffs) >= 2:
            newest = cutoffs[0]
            self.holdout_split_ = "cutoff"
            return [r for r in rows if r.cutoff != newest], [r for r in rows if r.cutoff == newest], newest.isoformat()
        from sklearn.model_selection import train_test_split

        labels = np.array([r.label for r in rows], dtype=int)
        self.holdout_split_ = "none"
        if len(rows) < 10 or np.bincount(labels, minlength=2).min() < 2:
            return rows, [], cutoffs[0].isoformat()
        name = cutoffs[0].isoformat() + CUSTOMER_SAMPLE_SUFFIX
        config = self.config
        held_mask = np.array(
            [
                customer_held_out(r.snapshot.customer.id, seed=config.seed, fraction=config.holdout_fraction)
                for r in rows
            ]
        )
        if all(len(set(labels[side].tolist())) == 2 for side in (held_mask, ~held_mask)):
            self.holdout_split_ = HOLDOUT_BY_CUSTOMER_HASH
            return (
                [r for r, held in zip(rows, held_mask, strict=True) if not held],
                [r for r, held in zip(rows, held_mask, strict=True) if held],
                name,
            )
        train, held = train_test_split(
            np.arange(len(rows)), test_size=config.holdout_fraction, stratify=labels, random_state=config.seed
        )
        self.holdout_split_ = "stratified"
        return [rows[i] for i in sorted(train)], [rows[i] for i in sorted(held)], name

    # ------------------------------------------------------------------ use
    def _check_fitted(self) -> HybridChurnModel:
        if self.hybrid_ is None:
            raise RuntimeError("this ChurnModel is not fitted yet; call fit() or ChurnModel.load() first")
        return self.hybrid_

    def predict_proba(self, snapshots: Sequence[Snapshot]) -> np.ndarray:
        """Calibrated churn probabilities, shape ``(n,)``, in the order of ``snapshots``."""
        hybrid = self._check_fitted()
        snapshots = list(snapshots)
        if not snapshots:
            return np.zeros(0)
        return hybrid.predict_proba(self._frame(snapshots), self._texts(snapshots))[:, 1]

    def explain(
        self, snapshots: Sequence[Snapshot], top_n: int = 5, *, text_factors: bool = True
    ) -> list[list[dict[str, object]]]:
        """The ``top_n`` factors of each snapshot's score: ``{factor, direction, weight, evidence}`` dicts.

        ``text_factors=False`` leaves out the text parts (no re-scoring of the text: as cheap as scoring).
        """
        from ml.explain import explain_hybrid

        hybrid = self._check_fitted()
        snapshots = list(snapshots)
        if not snapshots:
            return []
        texts = self._texts(snapshots)
        return explain_hybrid(hybrid, self._frame(snapshots), texts, top_n=top_n, text_factors=text_factors)

    def score(
        self,
        snapshots: Sequence[Snapshot],
        *,
        top_n: int = 5,
        text_factor_rows: Callable[[np.ndarray], Sequence[int]] | None = None,
    ) -> ScoredBatch:
        """Probabilities and factors of a batch in one pass, as a scoring run needs them.

        The same results as :meth:`predict_proba` followed by :meth:`explain` (``text_factors=False`` for every
        row, ``True`` for the rows ``text_factor_rows(probabilities)`` picks), but the features, the texts and
        their vectors, and the LightGBM input are built once instead of two or three times.

        Args:
            top_n: factors kept per snapshot.
            text_factor_rows: given the probabilities, the positions of the snapshots whose factors include the
                text factors (leave-one-part-out re-scoring: about 10-20 texts to encode per customer unless
                the encoding cache holds them); None: no text factors.
        """
        from ml.explain import explain_hybrid

        hybrid = self._check_fitted()
        snapshots = list(snapshots)
        if not snapshots:
            nothing = None if _encoded(hybrid) is None else 0
            return ScoredBatch(np.zeros(0), [], nothing, nothing)
        frame, texts = self._frame(snapshots), self._texts(snapshots)
        before = _encoded(hybrid)
        stacked = hybrid.stacked_frame(frame, texts)
        scored = _encoded(hybrid)
        probabilities = hybrid.calibrated(hybrid.raw_scores_from_stacked(stacked))
        rows = list(text_factor_rows(probabilities)) if text_factor_rows is not None else []
        factors = explain_hybrid(
            hybrid, frame, texts, top_n=top_n, text_factors=bool(rows), text_rows=rows, stacked=stacked
        )
        explained = _encoded(hybrid)
        return ScoredBatch(
            probabilities=probabilities,
            factors=factors,
            texts_encoded=None if before is None or scored is None else scored - before,
            explanation_texts_encoded=None if scored is None or explained is None else explained - scored,
        )

    @property
    def metadata(self) -> dict[str, object]:
        """What ``metadata.json`` holds (see the module docstring)."""
        self._check_fitted()
        return dict(self._metadata)

    def training_labels_end(self) -> datetime:
        """The end of the latest label window the model learned from: no label it trained on read activity after
        this time. For a model trained on churn flags, its as_of."""
        metadata = self.metadata
        cutoffs = [datetime.fromisoformat(str(c)) for c in metadata["cutoffs"]]  # type: ignore[union-attr]
        if self.config.labels_from == "flag":
            return datetime.fromisoformat(str(metadata["as_of"]))
        holdout = str(metadata["holdout_cutoff"])
        # A whole cutoff held out is not learned from; a sample of customers held out leaves the others learned.
        learned = [c for c in cutoffs if c.isoformat() != holdout] or cutoffs
        window = timedelta(days=self.config.lead_days + self.config.horizon_days)
        return max(learned) + window

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write one artifact directory (atomic; sha256 of every file in the manifest); returns it."""
        hybrid = self._check_fitted()
        tensors, hybrid_metadata, files = hybrid.state()
        metadata = {**self._metadata, "hybrid": hybrid_metadata}
        metadata.pop("libraries", None)  # save_artifact records the versions installed now
        return save_artifact(path, tensors=tensors, metadata=metadata, extra_files=files)

    @classmethod
    @artifact_loader
    def load(
        cls,
        path: str | Path,
        *,
        encoder: str | None = None,
        device: str = "auto",
        cache_dir: str | Path | None = None,
        expected_sha256: Mapping[str, str] | None = None,
    ) -> ChurnModel:
        """Load a saved model; every file is verified (size, sha256, no pickle) before anything is parsed.

        Args:
            encoder: where the base encoder is on this machine, when not at the recorded spec (its
                fingerprint must match the recorded one).
            device: where the encoder runs (``"auto"``: CUDA when present).
            cache_dir: encoding cache folder on this machine.
            expected_sha256: each file's sha256 as recorded when the model was registered (see
                :func:`ml.artifacts.load_artifact`): files replaced together with their manifest are refused too.

        Raises:
            ArtifactError: missing, truncated, altered or unsafe files, or metadata that does not fit.
        """
        tensors, metadata, files = load_artifact(path, expected_sha256=expected_sha256)
        if metadata.get("kind") != ARTIFACT_KIND:
            raise ArtifactError(f"model artifact {path} holds a {metadata.get('kind')!r} model, not a churn model")
        try:
            config = ChurnModelConfig.from_json(dict(metadata["config"]))  # type: ignore[arg-type]
            column_kinds = {str(k): str(v) for k, v in dict(metadata["column_kinds"]).items()}  # type: ignore[arg-type]
            hybrid_metadata = dict(metadata["hybrid"])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"model artifact {path}: metadata.json does not describe a churn model ({exc})"
            ) from exc
        hybrid = HybridChurnModel.from_state(
            tensors,
            hybrid_metadata,
            files,
            where=f"artifact {path}",
            encoder=encoder,
            device=device,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )
        model = cls(replace(config, hybrid=hybrid.config))
        model.hybrid_ = hybrid
        model.column_kinds_ = column_kinds
        model.holdout_metrics = dict(metadata.get("metrics") or {})  # type: ignore[arg-type]
        metadata.pop("hybrid", None)
        model._metadata = metadata
        return model


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value == ""
