"""Scoring: a ScoringRun fans out into chunk tasks; each chunk stores at most one score per customer for the
run's (model version, as_of), so a redelivered or rerun chunk writes nothing twice."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from customers.models import Customer
from predictions.models import ChurnScore, ModelStatus, ModelVersion, ScoringRun
from predictions.selectors import (
    champion_model_version,
    customer_histories,
    customers_to_score,
    latest_activity_at,
    model_artifact_problem,
    model_artifact_sha256,
)

if TYPE_CHECKING:
    from ml.churn_model import ChurnModel
    from ml.snapshot import Snapshot

logger = logging.getLogger(__name__)

# One model in memory per process: loading verifies every file's sha256, so it is done once.
_loaded_models: dict[tuple[int, str, bool], ChurnModel] = {}


class ChampionUnavailable(RuntimeError):
    """There is no champion, or its artifact is missing or corrupt: nothing is scored, nothing is alerted."""


def risk_tier(probability: float) -> str:
    """``low``, ``medium`` or ``high`` by the configured probability cut points (CHURN_RISK_TIER_CUTS)."""
    medium_from, high_from = settings.CHURN_RISK_TIER_CUTS
    if probability >= high_from:
        return "high"
    return "medium" if probability >= medium_from else "low"


def churn_model_load(model_version: ModelVersion, *, use_cache: bool = True) -> ChurnModel:
    """The model of ``model_version``, loaded once per process; ChampionUnavailable when its artifact is bad.

    Args:
        use_cache: reuse encodings of unchanged texts from the on-disk encoding cache (False re-encodes all).
    """
    key = (model_version.pk, model_version.artifact_path, use_cache)
    model = _loaded_models.get(key)
    if model is not None:
        return model
    from ml.artifacts import ArtifactError
    from ml.churn_model import ChurnModel

    try:
        model = ChurnModel.load(
            model_version.artifact_path,
            cache_dir=settings.CHURN_CACHE_DIR if use_cache else None,
            expected_sha256=model_artifact_sha256(model_version),
        )
    except (ArtifactError, OSError) as exc:  # EncoderNotFoundError is an OSError
        raise ChampionUnavailable(f"model {model_version.name} cannot be loaded: {exc}") from exc
    # The model, torch and the other libraries stay for the life of the process: frozen out of the garbage
    # collector, its full collections stop walking their half a million objects again and again while a chunk
    # allocates its customers' records (up to half a scoring chunk's time otherwise). The previous model is
    # unfrozen first, so it can be collected once dropped.
    gc.unfreeze()
    _loaded_models.clear()
    _loaded_models[key] = model
    gc.collect()
    gc.freeze()
    return model


# A time "as of" may be this far ahead of the clock (a date given as the end of today, clocks a little apart).
AS_OF_TOLERANCE = timedelta(days=1)


def refuse_future_as_of(as_of: datetime) -> None:
    """Scores and models are point-in-time reads of data up to ``as_of``: a later ``as_of`` would score today's
    data as if time had passed (every "days since" inflated), and such scores would stay everyone's newest.

    Raises:
        ValueError: ``as_of`` is later than now plus a day.
    """
    if as_of > timezone.now() + AS_OF_TOLERANCE:
        raise ValueError(f"as_of {as_of:%Y-%m-%d %H:%M} is in the future: scores and models read data up to as_of")


def scoring_run_start(
    *, trigger: str, as_of: datetime | None = None, full: bool = False, chunk_size: int | None = None
) -> ScoringRun:
    """Score every eligible customer with the champion at ``as_of`` in chunk tasks. Without ``as_of``: now, or
    where the data ends when that is more than a day earlier (an import that stopped, a demo store generated long
    ago): days never recorded would read as inactivity and raise every score.

    Raises:
        ChampionUnavailable: no champion, or its artifact is missing or damaged (a failed run is recorded).
    """
    champion = champion_model_version()
    if as_of is None:
        as_of = _default_as_of(champion)
    refuse_future_as_of(as_of)
    if champion is None:
        raise ChampionUnavailable("there is no champion model yet: train one with `manage.py churn_train`")
    problem = model_artifact_problem(champion)
    if problem:
        ScoringRun.objects.create(
            model_version=champion,
            as_of=as_of,
            trigger=trigger,
            status=ScoringRun.Status.FAILED,
            error=problem,
            finished_at=timezone.now(),
        )
        raise ChampionUnavailable(f"the champion {champion.name} cannot score: {problem}")
    customer_ids = list(_scored_by(champion, as_of=as_of).values_list("id", flat=True))
    size = chunk_size or settings.CHURN_SCORING_CHUNK_SIZE
    chunks = [customer_ids[i : i + size] for i in range(0, len(customer_ids), size)]
    # A rerun at the same as_of (after a failed run, or by hand): the scores of the champion at that as_of are
    # unique per customer, so the run's customers scored already count as scored; its chunks add those they store.
    scored_before = ChurnScore.objects.filter(model_version=champion, as_of=as_of).values_list("customer_id", flat=True)
    already_scored = len(set(customer_ids).intersection(scored_before.iterator()))
    with transaction.atomic():
        run = ScoringRun.objects.create(
            model_version=champion,
            as_of=as_of,
            trigger=trigger,
            status=ScoringRun.Status.RUNNING,
            customers_total=len(customer_ids),
            customers_scored=already_scored,
            full=full,
        )
        transaction.on_commit(lambda: _enqueue_chunks(run.pk, chunks))
    run.refresh_from_db()
    return run


def _default_as_of(champion: ModelVersion | None) -> datetime:
    from ml.churn_model import DATA_END_TOLERANCE

    now = timezone.now()
    if champion is None or str(champion.config.get("labels_from", "activity")) == "flag":
        return now
    latest = latest_activity_at(activity=str(champion.config.get("activity", "orders")))
    return latest if latest is not None and now - latest > DATA_END_TOLERANCE else now


def _enqueue_chunks(scoring_run_id: int, chunks: list[list[int]]) -> None:
    from predictions.tasks import score_chunk_task

    if not chunks:
        scoring_run_finish(scoring_run_id=scoring_run_id)
    for chunk in chunks:
        score_chunk_task.delay(scoring_run_id, chunk)


def scoring_run_score_chunk(*, scoring_run_id: int, customer_ids: Sequence[int]) -> int:
    """Score the customers of one chunk that have no score yet for this run; returns how many were stored."""
    from ml.snapshot import snapshot_at

    run = ScoringRun.objects.select_related("model_version").get(pk=scoring_run_id)
    if run.status == ScoringRun.Status.FAILED or _stopped_as_replaced(run):
        return 0
    already = set(
        ChurnScore.objects.filter(
            customer_id__in=customer_ids, model_version=run.model_version, as_of=run.as_of
        ).values_list("customer_id", flat=True)
    )
    todo = sorted(set(customer_ids) - already)
    # Customers of the chunk scored by another run at this as_of (before this one started, when they were counted
    # at its start, or since, when they were not): a sign to check below whether the run is done.
    scored_elsewhere = (
        bool(already)
        and ChurnScore.objects.filter(customer_id__in=already, model_version=run.model_version, as_of=run.as_of)
        .exclude(scoring_run=run)
        .exists()
    )
    stored = vanished = 0
    if todo:
        try:
            model = churn_model_load(run.model_version, use_cache=not run.full)
        except ChampionUnavailable as exc:
            ScoringRun.objects.filter(pk=run.pk).update(
                status=ScoringRun.Status.FAILED, error=str(exc), finished_at=timezone.now()
            )
            raise
        histories = customer_histories(customer_ids=todo, until=run.as_of)
        # Matched by id, not by position: a customer deleted since the run started (or no longer signed up at
        # as_of) has no history, and the others are still scored.
        id_of = dict(Customer.objects.filter(id__in=todo).values_list("external_id", "id"))
        histories = [history for history in histories if history.customer.id in id_of]
        vanished = len(todo) - len(histories)
        if vanished:
            logger.warning("scoring run %s: %d customer(s) of a chunk are gone or not signed up", run.pk, vanished)
        todo = [id_of[history.customer.id] for history in histories]
        snapshots = [snapshot_at(history, run.as_of) for history in histories]
        # One pass: features, texts (their vectors from the encoding cache when unchanged) and the LightGBM
        # input are built once for the probabilities and the factors.
        batch = model.score(snapshots, top_n=settings.CHURN_TOP_FACTORS, text_factor_rows=_text_factor_rows)
        probabilities, factors = batch.probabilities, batch.factors
        encoded = batch.texts_encoded or 0
        reused = 0 if batch.texts_encoded is None else len(todo) - encoded
        scores = [
            ChurnScore(
                customer_id=customer_id,
                model_version=run.model_version,
                scoring_run=run,
                as_of=run.as_of,
                probability=float(probability),
                risk_tier=risk_tier(float(probability)),
                top_factors=customer_factors,
            )
            for customer_id, probability, customer_factors in zip(todo, probabilities, factors, strict=True)
        ]
        with transaction.atomic():
            # The run's row is locked while its count moves, so two deliveries of one chunk count its scores once.
            ScoringRun.objects.select_for_update().values_list("pk", flat=True).get(pk=run.pk)
            # The customers still here, held until the commit (in id order, as dispatches lock them): one erased
            # since they were read would fail the whole chunk on the scores' foreign key at the commit.
            here = set(
                Customer.objects.select_for_update(no_key=True)
                .filter(id__in=todo)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if len(here) < len(todo):
                logger.warning("scoring run %s: %d customer(s) erased while scored", run.pk, len(todo) - len(here))
                scores = [score for score in scores if score.customer_id in here]
            mine = ChurnScore.objects.filter(scoring_run=run, customer_id__in=todo)
            before = mine.count()
            ChurnScore.objects.bulk_create(scores, ignore_conflicts=True)
            stored = mine.count() - before
            ScoringRun.objects.filter(pk=run.pk).update(
                customers_scored=F("customers_scored") + stored,
                texts_encoded=F("texts_encoded") + encoded,
                texts_reused=F("texts_reused") + reused,
            )
    # Only this run's customers count (its total, those scored already when it started, those its chunks store),
    # never other scores of the model at that as_of, so the run is done when its own chunks are.
    scored = ScoringRun.objects.values_list("customers_scored", flat=True).get(pk=run.pk)
    left_to_others = len(todo) - stored  # gone, or scored meanwhile by another run at the same as_of
    if scored >= run.customers_total:
        scoring_run_finish(scoring_run_id=run.pk)
    elif (vanished or left_to_others or scored_elsewhere) and not _unscored_remain(run):
        # Every customer eligible at the run's as_of has a score, some from another run at the same as_of (or
        # gone): the run is done, and its count says how many of its customers have a score.
        eligible_scored = _eligible_scored(run)
        ScoringRun.objects.filter(pk=run.pk).update(customers_scored=min(run.customers_total, eligible_scored))
        scoring_run_finish(scoring_run_id=run.pk)
    return stored


def _scored_by(model_version: ModelVersion, *, as_of: datetime) -> QuerySet[Customer]:
    """The customers ``model_version`` scores at ``as_of``: eligible by the activity and labels it was trained on."""
    activity = str(model_version.config.get("activity", "orders"))
    labels_from = str(model_version.config.get("labels_from", "activity"))
    return customers_to_score(as_of=as_of, activity=activity, labels_from=labels_from)


def _eligible_scored(run: ScoringRun) -> int:
    """How many customers eligible at the run's as_of have a score of its model there."""
    scored = ChurnScore.objects.filter(model_version=run.model_version, as_of=run.as_of).values("customer_id")
    return _scored_by(run.model_version, as_of=run.as_of).filter(id__in=scored).count()


def _unscored_remain(run: ScoringRun) -> bool:
    """Whether a customer eligible at the run's as_of still lacks its score (the total counted at the start
    includes customers deleted since, who will never get one)."""
    scored = ChurnScore.objects.filter(model_version=run.model_version, as_of=run.as_of).values("customer_id")
    return _scored_by(run.model_version, as_of=run.as_of).exclude(id__in=scored).exists()


def _stopped_as_replaced(run: ScoringRun) -> bool:
    """Fail a running run whose model is no longer the champion (staff promoted another or rolled back since it
    started) and say so; True when its model is not the champion.

    Promotion and rollback take effect at the next scoring: the scores stored before stay, but a replaced model
    writes no new ones, which would become its customers' newest and reach the alert rules (a chunk delivered
    late, or sent again by the stall sweep). The customers it did not score get theirs from the champion at the
    next scoring.
    """
    if run.model_version.status == ModelStatus.CHAMPION:
        return False
    reason = (
        f"its model {run.model_version.name} is no longer the champion (promoted over or rolled back since the run "
        "started): customers not scored yet are left to the next scoring, by the champion"
    )
    if ScoringRun.objects.filter(pk=run.pk, status=ScoringRun.Status.RUNNING).update(
        status=ScoringRun.Status.FAILED, error=reason, finished_at=timezone.now()
    ):
        logger.warning("scoring run %s stopped: %s", run.pk, reason)
    return True


def scoring_run_mark_failed(*, scoring_run_id: int, reason: str) -> None:
    """Record that a run will not finish (a chunk was parked): it is not resumed, and nothing is alerted from it."""
    ScoringRun.objects.filter(pk=scoring_run_id, status=ScoringRun.Status.RUNNING).update(
        status=ScoringRun.Status.FAILED, error=reason, finished_at=timezone.now()
    )
    logger.error("scoring run %s failed: %s", scoring_run_id, reason)


def scoring_runs_resume_stalled(*, idle_seconds: int) -> list[int]:
    """Send again the customers of running scoring runs that have made no progress for ``idle_seconds``.

    A worker killed between taking a chunk off the Redis queue and recording it as unacknowledged loses that
    chunk for good (kombu's receive is not atomic), and its run would stay running forever. The chunks are
    idempotent, so sending the unscored customers again is safe even when the original chunk is only slow.

    It also sends again the follow-up tasks (the alert rules) of runs finished at least ``idle_seconds`` and at
    most a day ago whose tasks never reached the broker.

    A stalled run whose model is no longer the champion is failed instead, with the reason: a replaced model
    scores no more.

    Returns:
        The ids of the runs resumed (a run with nothing left to score is finished instead) and of the runs whose
        follow-up tasks were sent again.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=idle_seconds)
    resumed = []
    stalled = ScoringRun.objects.filter(status=ScoringRun.Status.RUNNING, created_at__lt=cutoff).exclude(
        resumed_at__gte=cutoff  # sent again recently: the chunks may just be queued behind other work
    )
    for run in stalled.select_related("model_version"):
        if _stopped_as_replaced(run):
            continue
        scores = ChurnScore.objects.filter(model_version=run.model_version, as_of=run.as_of)
        last = scores.order_by("-created_at").values_list("created_at", flat=True).first()
        if last is not None and last >= cutoff:
            continue
        eligible = _scored_by(run.model_version, as_of=run.as_of).values_list("id", flat=True)
        missing = sorted(set(eligible) - set(scores.values_list("customer_id", flat=True)))
        if not missing:
            scoring_run_finish(scoring_run_id=run.pk)
            continue
        size = settings.CHURN_SCORING_CHUNK_SIZE
        chunks = [missing[i : i + size] for i in range(0, len(missing), size)]
        logger.warning(
            "scoring run %s made no progress for %ss: %d customers sent again", run.pk, idle_seconds, len(missing)
        )
        ScoringRun.objects.filter(pk=run.pk).update(resumed_at=now)
        transaction.on_commit(lambda run_id=run.pk, chunks=chunks: _enqueue_chunks(run_id, chunks))
        resumed.append(run.pk)
    # Finished runs whose follow-up tasks never reached the broker (it was down when the run finished). Only
    # recent ones: alerts from scores a day old would act on a stale picture.
    unsent = ScoringRun.objects.filter(
        status=ScoringRun.Status.SUCCEEDED,
        followups_sent_at__isnull=True,
        finished_at__lt=cutoff,
        finished_at__gte=now - timedelta(days=1),
    )
    for run_id in unsent.order_by("pk").values_list("pk", flat=True):
        logger.warning("scoring run %s: its follow-up tasks never reached the broker; sending them again", run_id)
        try:
            _send_followups(run_id)
        except Exception:  # the broker is still down: next time
            logger.exception("scoring run %s: the follow-up tasks could not be sent", run_id)
            break
        resumed.append(run_id)
    return resumed


def _text_factor_rows(probabilities: np.ndarray) -> list[int]:
    """Which scores of a chunk get text factors (the quoted message sentence). They cost one re-scoring of the
    text per part, so only the riskiest customers of a chunk get them: at most CHURN_TEXT_FACTORS_PER_CHUNK, at
    or above CHURN_TEXT_FACTORS_FROM; the real-time score gives them for any one customer on demand."""
    ranked = sorted(range(len(probabilities)), key=lambda i: -float(probabilities[i]))
    shown = [i for i in ranked if probabilities[i] >= settings.CHURN_TEXT_FACTORS_FROM]
    return shown[: settings.CHURN_TEXT_FACTORS_PER_CHUNK]


def scoring_run_finish(*, scoring_run_id: int) -> bool:
    """Mark a run done exactly once (a conditional update), then hand its scores to the alert rules."""
    finished = ScoringRun.objects.filter(pk=scoring_run_id, status=ScoringRun.Status.RUNNING).update(
        status=ScoringRun.Status.SUCCEEDED, finished_at=timezone.now()
    )
    if finished:
        logger.info("scoring run %s finished", scoring_run_id)
        transaction.on_commit(lambda: _send_followups(scoring_run_id), robust=True)
    return bool(finished)


def _send_followups(scoring_run_id: int) -> None:
    """Enqueue the tasks that act on a finished run's scores, then record that the broker has them. Apps that act
    on new scores (alerts) are named in settings (CHURN_AFTER_SCORING_TASKS), so predictions does not depend on
    them. When the broker is unreachable the record stays empty and ``scoring_runs_resume_stalled`` sends them
    again (the tasks are idempotent)."""
    for task_path in settings.CHURN_AFTER_SCORING_TASKS:
        import_string(task_path).delay(scoring_run_id)
    ScoringRun.objects.filter(pk=scoring_run_id).update(followups_sent_at=timezone.now())


def customer_score_now(*, customer: Customer) -> dict[str, object]:
    """Score one customer on their data up to now with the champion, without storing anything.

    Raises:
        ChampionUnavailable: no champion, or it cannot be loaded.
        ValueError: the customer has not signed up yet, or is not one the champion scores (:func:`_snapshot_now`).
    """
    champion = champion_model_version()
    if champion is None:
        raise ChampionUnavailable("there is no champion model yet: train one with `manage.py churn_train`")
    model = churn_model_load(champion)
    now = timezone.now()
    snapshot = _snapshot_now(customer, champion, now)
    probability = float(model.predict_proba([snapshot])[0])
    return {
        "customer": customer.external_id,
        "customer_external_id": customer.external_id,
        "as_of": now,
        "probability": probability,
        "risk_tier": risk_tier(probability),
        "model_version": champion.name,
        "top_factors": model.explain([snapshot], top_n=settings.CHURN_TOP_FACTORS)[0],
    }


def _snapshot_now(customer: Customer, champion: ModelVersion, now: datetime) -> Snapshot:
    """The customer at ``now``, if the champion scores them: the customers a scoring run would score (signed up,
    not marked churned, and, for a model trained on activity, a qualifying order or event by now), so that a
    score on demand never comes from a customer the model never saw the like of."""
    from ml.snapshot import snapshot_at

    histories = customer_histories(customer_ids=[customer.pk], until=now)
    if not histories:
        raise ValueError(f"customer {customer.external_id} has not signed up yet: there is nothing to score")
    if not _scored_by(champion, as_of=now).filter(pk=customer.pk).exists():
        raise ValueError(
            f"customer {customer.external_id} is not one the champion {champion.name} scores: marked churned, or "
            "(a model trained on activity) without a qualifying order by now; scoring runs leave them out too"
        )
    return snapshot_at(histories[0], now)


def customer_rescore_now(*, customer: Customer) -> ChurnScore:
    """Score one customer on their data up to now with the champion and store the score at ``as_of`` = now.

    The stored score has no scoring run; it becomes the customer's newest score (list, page, alert rules).
    Its factors include the text factors (the quoted message sentence), as the real-time score's do.

    Raises:
        ChampionUnavailable: no champion, or its artifact is missing or damaged; nothing is stored.
        ValueError: the customer has not signed up yet, or is not one the champion scores (:func:`_snapshot_now`).
    """
    champion = champion_model_version()
    if champion is None:
        raise ChampionUnavailable("there is no champion model yet: train one with `manage.py churn_train`")
    problem = model_artifact_problem(champion)
    if problem:
        raise ChampionUnavailable(f"the champion {champion.name} cannot score: {problem}")
    model = churn_model_load(champion)
    now = timezone.now()
    snapshot = _snapshot_now(customer, champion, now)
    probability = float(model.predict_proba([snapshot])[0])
    factors = model.explain([snapshot], top_n=settings.CHURN_TOP_FACTORS)[0]
    return ChurnScore.objects.create(
        customer=customer,
        model_version=champion,
        as_of=now,
        probability=probability,
        risk_tier=risk_tier(probability),
        top_factors=factors,
    )
