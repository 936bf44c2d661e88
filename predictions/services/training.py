"""Training: a TrainingRun is requested, a gpu-queue task trains under a database lease, registers the
model version and lets the registry decide on promotion."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from predictions.models import ModelVersion, TrainingRun
from predictions.selectors import (
    champion_model_version,
    customer_histories,
    latest_activity_at,
    model_artifact_problem,
    model_artifact_sha256,
    training_in_progress,
)
from predictions.services.locks import TRAINING_REQUEST_LOCK, transaction_lock
from predictions.services.registry import model_version_consider_promotion, model_version_register
from predictions.services.scoring import refuse_future_as_of

if TYPE_CHECKING:
    from ml.churn_model import ChurnModel, ChurnModelConfig

logger = logging.getLogger(__name__)

# Text modes a training run may ask for; "lightgbm" trains the features-only model.
TRAINING_MODES = ("lightgbm", "tfidf", "frozen", "top-k", "lora", "full")
PROGRESS_WRITE_SECONDS = 2.0
LOG_TAIL_LINES = 40


class TrainingError(RuntimeError):
    """Training could not produce a model; the message says why in plain words, ``training_run_id`` which run."""

    def __init__(self, message: str, *, training_run_id: int | None = None) -> None:
        super().__init__(message)
        self.training_run_id = training_run_id


def churn_model_config(*, mode: str, horizon_days: int, lead_days: int, options: dict[str, object]) -> ChurnModelConfig:
    """The ml configuration of a training run (mode names as in ``churn_train --mode``)."""
    from ml.churn_model import ChurnModelConfig
    from ml.hybrid import HybridConfig

    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(TRAINING_MODES)}")
    hybrid = HybridConfig(
        text_mode="none" if mode == "lightgbm" else mode,
        encoder=settings.CHURN_ENCODER or None,
        quantize=settings.CHURN_ENCODER_QUANTIZE if mode == "frozen" else "none",
        cache_dir=str(settings.CHURN_CACHE_DIR),
    )
    if "inner_folds" in options:
        hybrid = replace(hybrid, inner_folds=int(options["inner_folds"]))  # type: ignore[arg-type]
    if options.get("keep_text"):
        hybrid = replace(hybrid, select_text_by_cv=False)
    if options.get("nested_stacking") is not None:
        hybrid = replace(hybrid, nested_stacking=bool(options["nested_stacking"]))
    config = ChurnModelConfig(horizon_days=horizon_days, lead_days=lead_days, hybrid=hybrid)
    if "max_training_cutoffs" in options:
        config = replace(config, max_training_cutoffs=options["max_training_cutoffs"])  # type: ignore[arg-type]
    if "labels_from" in options:
        config = replace(config, labels_from=str(options["labels_from"]))
    return config


# Longest label horizon or lead time in days (ten years; the API's serializers allow the same).
MAX_WINDOW_DAYS = 3650
# The years an as_of may fall in (the API and the commands refuse others; the database stores times in UTC).
EARLIEST_AS_OF, LATEST_AS_OF = 1971, 2999


def training_run_request(
    *,
    mode: str,
    horizon_days: int,
    actor: str,
    as_of: datetime | None = None,
    lead_days: int = 0,
    options: dict[str, object] | None = None,
) -> TrainingRun:
    """Record a training request and enqueue its task once the request is committed."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(TRAINING_MODES)}")
    if not 0 < horizon_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"horizon_days must be from 1 to {MAX_WINDOW_DAYS}, not {horizon_days}")
    if not 0 <= lead_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"lead_days must be from 0 to {MAX_WINDOW_DAYS}, not {lead_days}")
    if as_of is not None:
        refuse_future_as_of(as_of)
    labels_from = (options or {}).get("labels_from", "activity")
    if labels_from not in ("activity", "flag"):
        raise ValueError(f"labels_from must be activity or flag, not {labels_from!r}")
    for name, why in (("max_training_cutoffs", "the newest cutoff is the holdout"), ("inner_folds", "stacking")):
        value = (options or {}).get(name)
        if value is not None and int(value) < 2:  # type: ignore[call-overload]
            raise ValueError(f"{name} must be at least 2 ({why}), not {value}")
    # Built now so that options the model refuses (nested stacking with 2 folds, say) are refused before the request.
    config = churn_model_config(mode=mode, horizon_days=horizon_days, lead_days=lead_days, options=options or {})
    if as_of is None:
        as_of = _default_as_of(config)
    with transaction.atomic():
        # Under the lock of ``training_run_request_unless_running``, so that one of those waits for this run.
        transaction_lock(name=TRAINING_REQUEST_LOCK)
        run = TrainingRun.objects.create(
            mode=mode,
            config=options or {},
            as_of=as_of,
            horizon_days=horizon_days,
            lead_days=lead_days,
            started_by=actor,
        )
        from predictions.tasks import train_model_task

        transaction.on_commit(lambda: train_model_task.delay(run.pk))
    return run


def _default_as_of(config: ChurnModelConfig) -> datetime:
    """Now, or where the data ends when that is earlier (an import that has not arrived yet): the label windows of a
    training end at its as_of, and days never recorded would count as inactivity."""
    now = timezone.now()
    if config.labels_from == "flag":
        return now
    latest = latest_activity_at(activity=config.activity)
    return min(now, latest) if latest is not None else now


def training_run_request_unless_running(
    *,
    mode: str,
    horizon_days: int,
    actor: str,
    as_of: datetime | None = None,
    lead_days: int = 0,
    options: dict[str, object] | None = None,
) -> TrainingRun | None:
    """A training requested like any other (``training_run_request``), unless one is already under way (a weekly
    schedule and a drift check may fire on the same night; the demo pipeline, run again, queues its challenger
    once); then nothing is requested and None returned.

    The check and the request are made under one lock, in one transaction: two callers at the same moment would
    otherwise both find nothing under way and both request."""
    with transaction.atomic():
        transaction_lock(name=TRAINING_REQUEST_LOCK)
        if training_in_progress():
            logger.info("training not requested by %s: a training run is already under way", actor)
            return None
        return training_run_request(
            mode=mode, horizon_days=horizon_days, actor=actor, as_of=as_of, lead_days=lead_days, options=options
        )


def training_run_acquire_lease(*, training_run_id: int, owner: str) -> bool:
    """Take the run for ``owner`` if nobody works on it: pending, or running with an expired lease."""
    now = timezone.now()
    return bool(
        TrainingRun.objects.filter(pk=training_run_id)
        .filter(Q(status=TrainingRun.Status.PENDING) | Q(status=TrainingRun.Status.RUNNING, lease_expires_at__lt=now))
        .update(
            status=TrainingRun.Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=settings.CHURN_TRAIN_LEASE_SECONDS),
            started_at=now,
        )
    )


def training_run_lease_seconds_left(*, training_run_id: int) -> float | None:
    """Seconds until the lease of a run that another worker holds expires (None: the run is not held)."""
    run = TrainingRun.objects.filter(pk=training_run_id, status=TrainingRun.Status.RUNNING).first()
    if run is None or run.lease_expires_at is None:
        return None
    return max(0.0, (run.lease_expires_at - timezone.now()).total_seconds())


class _ProgressRecorder:
    """Writes progress to the TrainingRun row (throttled) so the admin can show it while training runs."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._last_write = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        self.lines.append(f"{timezone.now():%H:%M:%S} {round(100 * fraction)}% {message}")
        now = time.monotonic()
        if now - self._last_write < PROGRESS_WRITE_SECONDS and fraction < 1.0:
            return
        self._last_write = now
        TrainingRun.objects.filter(pk=self.run.pk, lease_owner=self.run.lease_owner).update(
            progress_percent=max(0.0, min(100.0, 100 * fraction)),
            current_step=message[:255],
            log_tail="\n".join(self.lines),
            lease_expires_at=timezone.now() + timedelta(seconds=settings.CHURN_TRAIN_LEASE_SECONDS),  # still alive
        )


def _champion_metrics_on(
    model: ChurnModel, champion: ModelVersion | None, histories: list, as_of: datetime
) -> dict | None:
    """The champion re-measured on the challenger's holdout snapshots, so both are compared on the same rows."""
    if champion is None:
        return None
    from ml.churn_model import CUSTOMER_SAMPLE_SUFFIX, ChurnModel
    from ml.metrics import churn_metrics
    from ml.snapshot import labelled_snapshots

    metadata = model.metadata
    holdout_cutoff = str(metadata.get("holdout_cutoff", ""))
    if not holdout_cutoff or model_artifact_problem(champion):
        return None
    customer_sample = holdout_cutoff.endswith(CUSTOMER_SAMPLE_SUFFIX)
    if customer_sample:
        if (champion.config or {}).get("labels_from") != "flag":
            return None
        rows = None  # which of the challenger's held-out customers the champion can be measured on needs the champion
    elif "(" in holdout_cutoff:
        return None
    else:
        cutoff = datetime.fromisoformat(holdout_cutoff)
        rows = labelled_snapshots(
            histories, [cutoff], config=model.config.labels, rule=model.config.eligibility, label_until=as_of
        )
        if len({r.label for r in rows}) < 2:
            return None
    from ml.artifacts import ArtifactError

    try:
        champion_model = ChurnModel.load(
            champion.artifact_path, cache_dir=settings.CHURN_CACHE_DIR, expected_sha256=model_artifact_sha256(champion)
        )
    except (ArtifactError, OSError) as exc:  # a damaged champion must not stop its successor from registering
        logger.warning("champion %s cannot be re-measured, comparing stored metrics: %s", champion.name, exc)
        return None
    if customer_sample:
        rows = _flag_holdout_rows(
            model, champion, champion_model, histories, holdout_cutoff.removesuffix(CUSTOMER_SAMPLE_SUFFIX)
        )
        if rows is None or len({r.label for r in rows}) < 2:
            return None  # the champion may have trained on some of these customers: compare stored metrics
    labels = [r.label for r in rows]
    if not customer_sample and champion_model.training_labels_end() > cutoff:
        # The champion learned labels that read the time after this holdout cutoff (a challenger trained at an
        # earlier as_of): measured here it would be graded on what it was taught. Compare stored metrics instead.
        logger.info(
            "champion %s learned labels up to %s, after the challenger's holdout cutoff %s: comparing stored metrics",
            champion.name,
            champion_model.training_labels_end().isoformat(),
            cutoff.isoformat(),
        )
        return None
    metrics = churn_metrics(labels, champion_model.predict_proba([r.snapshot for r in rows]))
    return {**metrics, "model_version_id": champion.pk}


def _flag_holdout_rows(
    model: ChurnModel, champion: ModelVersion, champion_model: ChurnModel, histories: list, cutoff: str
) -> list | None:
    """The challenger's held-out customers as it measured them (profile data: each customer's snapshot at its as_of,
    labelled by the flag), for the champion to be measured on; None unless the champion never trained on any of
    them: it held out exactly these customers, or both models chose their holdouts by the same hash of customer ids
    (``ml.churn_model.customer_held_out``: same seed and fraction), which holds out a customer whenever and with
    whichever other customers a model is trained, so the champion's training customers and the challenger's
    held-out ones never meet, new customers imported in between included. Retrained later (the weekly schedule,
    churn_train without --as-of) a profile model has another as_of, so its holdout key never equals the
    champion's even with the same customers, and without this it would never be promoted."""
    from ml.churn_model import HOLDOUT_BY_CUSTOMER_HASH
    from ml.snapshot import flagged_snapshots

    customers = str(model.metadata.get("holdout_customers_sha256") or "")
    champion_customers = champion.holdout_key.rpartition("|c")[2] if "|c" in champion.holdout_key else ""
    same_customers = bool(customers and champion_customers and customers.startswith(champion_customers))
    same_rule = (
        model.metadata.get("holdout_split") == HOLDOUT_BY_CUSTOMER_HASH
        and champion_model.metadata.get("holdout_split") == HOLDOUT_BY_CUSTOMER_HASH
        and model.config.seed == champion_model.config.seed
        and model.config.holdout_fraction == champion_model.config.holdout_fraction
    )
    if (
        (champion.config or {}).get("labels_from") != "flag"
        or not (same_customers or same_rule)
        or not model.holdout_customer_ids_
    ):
        return None
    held = model.holdout_customer_ids_
    return [
        r for r in flagged_snapshots(histories, datetime.fromisoformat(cutoff)) if str(r.snapshot.customer.id) in held
    ]


def training_run_execute(*, training_run_id: int) -> ModelVersion | None:
    """Train the model of a run; idempotent: a run that is done, or leased by a live worker, is left alone.

    Returns the model version (None when another worker holds the run).
    """
    owner = f"{socket.gethostname()}:{timezone.now().timestamp()}"
    existing = ModelVersion.objects.filter(training_run_id=training_run_id).first()
    if existing is not None:
        return existing
    if not training_run_acquire_lease(training_run_id=training_run_id, owner=owner):
        logger.info("training run %s is done or held by another worker; nothing to do", training_run_id)
        return ModelVersion.objects.filter(training_run_id=training_run_id).first()
    run = TrainingRun.objects.get(pk=training_run_id)
    progress = _ProgressRecorder(run)
    artifact: Path | None = None  # this attempt's directory, once saved
    try:
        from ml.churn_model import ChurnModel

        config = churn_model_config(
            mode=run.mode, horizon_days=run.horizon_days, lead_days=run.lead_days, options=run.config
        )
        progress(0.0, "reading customer histories")
        histories = customer_histories(until=run.as_of, exclude_customer_ids=_excluded_from_training(until=run.as_of))
        # The fit reports up to 100% ("trained"); saving, the drift profile and the model card follow at 96-98%.
        model = ChurnModel(config).fit(
            histories, as_of=run.as_of, progress=lambda fraction, message: progress(0.95 * fraction, message)
        )
        name = f"{run.mode}-{run.as_of:%Y%m%d}-run{run.pk}"
        # A directory of this attempt's own: a delivery that took the run over after this one's lease ran out may
        # be training too, and whichever registers second must not replace the files of the registered version.
        own_artifact = Path(settings.CHURN_ARTIFACT_DIR) / f"{name}-{uuid.uuid4().hex[:12]}"
        progress(0.96, f"saving the artifact to {own_artifact}")
        model.save(own_artifact)
        artifact = own_artifact
        progress(0.97, "profiling scores and top features for drift checks")
        reference = _reference_profile(model, histories)
        progress(0.98, "model card: baselines and curves on the holdout")
        model_card = _model_card(model)
        champion = champion_model_version()
        champion_metrics = _champion_metrics_on(model, champion, histories, run.as_of)
    except Exception as exc:
        # A run another delivery took over and finished stays succeeded; this attempt's own files go.
        TrainingRun.objects.filter(pk=run.pk).exclude(status=TrainingRun.Status.SUCCEEDED).update(
            status=TrainingRun.Status.FAILED, error=str(exc)[:5000], finished_at=timezone.now(), lease_expires_at=None
        )
        if artifact is not None:
            shutil.rmtree(artifact, ignore_errors=True)
        if isinstance(exc, ValueError):  # the data cannot make a model (the message says why): no traceback
            logger.warning("training run %s failed: %s", run.pk, exc)
        else:
            logger.exception("training run %s failed", run.pk)
        hint = ""
        if "no customer has any qualifying activity" in str(exc):
            hint = " (customers imported from a profile file with a churn label: train with --labels-from flag)"
        raise TrainingError(f"training run {run.pk} failed: {exc}{hint}", training_run_id=run.pk) from exc
    metadata = model.metadata
    manifest = _manifest(artifact)
    try:
        with transaction.atomic():
            version = model_version_register(
                name=name,
                training_run=run,
                model_type=str(metadata["model_type"]),
                mode=run.mode,
                encoder=str((metadata.get("encoder") or {}).get("id", "")) if metadata.get("encoder") else "",
                encoder_fingerprint=str((metadata.get("encoder") or {}).get("fingerprint", ""))
                if metadata.get("encoder")
                else "",
                config=config.to_json(),
                artifact_path=str(artifact),
                artifact_checksums=manifest,
                training_cutoffs=list(metadata.get("cutoffs", [])),
                horizon_days=run.horizon_days,
                lead_days=run.lead_days,
                holdout_key=_holdout_key(metadata, horizon_days=run.horizon_days, lead_days=run.lead_days),
                metrics=dict(model.holdout_metrics),
                reference_profile=reference,
                actor=run.started_by or "training task",
            )
            ModelVersion.objects.filter(pk=version.pk).update(model_card=model_card)
            TrainingRun.objects.filter(pk=run.pk).update(
                status=TrainingRun.Status.SUCCEEDED, progress_percent=100, finished_at=timezone.now()
            )
    except IntegrityError:
        # Another delivery of this run registered its model first: keep that one, and drop this attempt's files
        # (its own directory; the registered version's files are elsewhere).
        shutil.rmtree(artifact, ignore_errors=True)
        logger.warning("training run %s: another delivery registered its model first; this one's is discarded", run.pk)
        return ModelVersion.objects.get(training_run_id=run.pk)
    promoted = model_version_consider_promotion(
        model_version=version, actor=f"training run {run.pk}", champion_metrics=champion_metrics
    )
    if promoted and settings.CHURN_RESCORE_ON_PROMOTION:
        # Scores should come from the champion: a new one rescores everybody now, not at the next schedule.
        from predictions.tasks import rescore_all_task

        transaction.on_commit(lambda: rescore_all_task.delay(trigger=f"new champion {version.name}"))
    version.refresh_from_db()
    return version


def _holdout_key(metadata: Mapping[str, object], *, horizon_days: int, lead_days: int) -> str:
    """What identifies the holdout a model was measured on: its cutoff, label window and held-out customers.

    The registry compares stored metrics only of models with equal keys. The customers count: a profile (flag)
    model holds out a sample of the customers present when it trained, named by its as_of alone, so two trained at
    one as_of with customers imported between them hold out different customers. Keys recorded before the
    customers were part of them (no ``|c``) stay as they are and equal no new key.
    """
    key = f"{metadata.get('holdout_cutoff')}|h{horizon_days}|l{lead_days}"
    customers = str(metadata.get("holdout_customers_sha256") or "")
    return f"{key}|c{customers[:16]}" if customers else key


def _excluded_from_training(*, until: datetime) -> object | None:
    """Customers who received a retention action by ``until`` (the training's as_of): their staying says nothing
    about their churn risk, so the model must not learn from them. An action after the as_of touches no label
    window of that training, and leaving its customer out would choose the training customers by what happened
    later (CHURN_TRAINING_EXCLUDED_CUSTOMERS names the selector; it is called with ``until``)."""
    if not settings.CHURN_TRAINING_EXCLUDED_CUSTOMERS:
        return None
    return import_string(settings.CHURN_TRAINING_EXCLUDED_CUSTOMERS)(until=until)


def _model_card(model: ChurnModel) -> dict[str, object]:
    """The model's holdout curves and lift beside baselines fitted on its training rows (ml.model_card).

    The card describes a model; it never decides whether one is usable, so a failure here is logged and
    recorded in the card instead of failing the training run.
    """
    from ml.model_card import churn_model_card

    try:
        return churn_model_card(model)
    except Exception as exc:  # noqa: BLE001 - any failure leaves a model without a card, not without a version
        logger.exception("the model card of %s could not be computed", model.metadata.get("as_of"))
        return {"error": f"the model card could not be computed: {exc}"[:2000]}


def _reference_profile(model: ChurnModel, histories: list) -> dict[str, object]:
    """Distributions of the model's scores and top features over the customers eligible at its newest cutoff."""
    from ml.drift import reference_profile
    from ml.snapshot import is_eligible, scored_by_flag_model, snapshot_at

    cutoff = datetime.fromisoformat(str(model.metadata["cutoffs"][0]))
    config = model.config
    snapshots = [
        snapshot_at(history, cutoff)
        for history in histories
        if (
            scored_by_flag_model(history, cutoff)
            if config.labels_from == "flag"
            else is_eligible(history, cutoff, rule=config.eligibility, activity=config.activity)
        )
    ]
    return reference_profile(model, snapshots)


def _manifest(artifact: Path) -> dict[str, object]:
    import json

    manifest = json.loads((artifact / "manifest.json").read_text())
    files = dict(manifest.get("files", {}))
    data = (artifact / "manifest.json").read_bytes()
    files["manifest.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return files


def training_runs_resume_lost(*, waiting_seconds: int) -> dict[str, list[int]]:
    """Send again the training task of runs whose message looks lost, and fail runs that nobody can finish.

    - A run still pending after ``waiting_seconds`` (and not sent again within them) while no training holds a
      live lease: the gpu queue is idle, so its message was lost (the broker was down when the request
      committed). Sending it again is safe: the lease makes a second delivery a no-op.
    - A run left running by a worker that died, its lease expired longer ago than the broker's visibility timeout
      (twice ``CHURN_TRAIN_TIME_LIMIT``): neither a polling delivery nor the broker took it over (the task ran
      out of its hard time limit, or its message is gone). It is failed, with the reason, so that it stops
      counting as under way and a new request can be made.

    Returns:
        ``{"resent": [...], "failed": [...]}``, the ids of the runs concerned.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=waiting_seconds)
    live = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, lease_expires_at__gt=now).exists()
    resent: list[int] = []
    if not live:
        lost = TrainingRun.objects.filter(status=TrainingRun.Status.PENDING, created_at__lt=cutoff).exclude(
            resent_at__gte=cutoff
        )
        resent = list(lost.order_by("pk").values_list("pk", flat=True))
        if resent:
            from predictions.tasks import train_model_task

            TrainingRun.objects.filter(pk__in=resent).update(resent_at=now)
            for pk in resent:
                transaction.on_commit(lambda pk=pk: train_model_task.delay(pk), robust=True)
            logger.warning("training runs %s were still pending with the gpu queue idle: sent again", resent)
    abandoned_before = now - timedelta(seconds=2 * settings.CHURN_TRAIN_TIME_LIMIT)
    abandoned = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, lease_expires_at__lt=abandoned_before)
    failed: list[int] = []
    for run in abandoned.order_by("pk"):
        failed.append(run.pk)
        training_run_mark_failed(
            training_run_id=run.pk,
            reason=(
                f"its worker stopped (lease expired at {run.lease_expires_at:%Y-%m-%d %H:%M} UTC) and no delivery "
                "took the run over; request a new training run"
            ),
        )
    if failed:
        logger.error("training runs %s were abandoned by their workers: marked failed", failed)
    return {"resent": resent, "failed": failed}


def training_run_mark_failed(*, training_run_id: int, reason: str) -> None:
    """Record that a run will not finish (its task was parked after repeated worker crashes, or the command that
    trained it in-process was interrupted); its lease is released. A run that succeeded is left alone."""
    TrainingRun.objects.filter(pk=training_run_id).exclude(status=TrainingRun.Status.SUCCEEDED).update(
        status=TrainingRun.Status.FAILED, error=reason, finished_at=timezone.now(), lease_expires_at=None
    )


__all__ = [
    "TRAINING_MODES",
    "TrainingError",
    "churn_model_config",
    "training_run_acquire_lease",
    "training_run_execute",
    "training_run_mark_failed",
    "training_run_request",
    "training_runs_resume_lost",
]
