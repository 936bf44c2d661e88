"""Retention of churn scores: the daily pruning of scores no reader needs any more."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from predictions.models import ChurnScore, ModelStatus, ScoringRun

logger = logging.getLogger(__name__)

# Scores deleted per transaction: each batch is one short DELETE by primary key, so pruning a year of daily runs
# never holds its locks (or a long snapshot) for longer than a batch takes.
SCORE_PRUNE_BATCH = 5_000

# How many of each customer's newest scores stay whatever their age: the newest (the score list, the customer list,
# the dashboard, the exports, the CRM's real-time view) and the one before it (the trend arrow of the customer list
# and the customer's admin page compare the two).
SCORES_KEPT_PER_CUSTOMER = 2


def churn_scores_prune(
    *, older_than: timedelta, batch_size: int = SCORE_PRUNE_BATCH, max_seconds: float | None = None
) -> int:
    """Delete the scores stored, and about a time (``as_of``), longer ago than ``older_than`` that no reader needs;
    returns how many. Idempotent: a second call finds nothing more to delete.

    Kept whatever their age: each customer's two newest scores; any score another row refers to (an alert's
    ``score``: the alert copies what it shows, but the link stays for as long as the alert does); and the scores of
    the champion's newest finished scoring run, which the drift check compares with the model's reference profile.
    Nothing else reads old scores: model cards, backtests, promotion comparisons and the uplift report compute from
    the data and the alerts and interventions, not from stored scores. The customer's admin chart shows the scores
    kept.

    The candidates are read in (created_at, id) order through the score_created_at_id index, ``batch_size`` at a
    time after the last one seen, and each batch is deleted in its own short transaction that applies the rules
    above to it when it deletes: a score that became needed since its batch was read stays. With ``max_seconds``, no
    batch starts after that long: the rest is left to the next run (the first runs after an upgrade may have
    years of daily scores to delete), and the task ends well inside its time limit instead of being stopped.
    """
    cutoff = timezone.now() - older_than
    started = time.monotonic()
    deleted = 0
    after: tuple | None = None
    while True:
        candidates = ChurnScore.objects.filter(created_at__lt=cutoff, as_of__lt=cutoff)
        if after is not None:
            # (created_at, id) after the cursor, with the bound on created_at on its own: that is where the index
            # range starts. The OR alone (created_at > x OR created_at = x AND id > y) made each batch read and sort
            # every candidate after the cursor (or walk the index past every one before it): quadratic in the backlog.
            candidates = candidates.filter(Q(created_at__gte=after[0]), Q(created_at__gt=after[0]) | Q(id__gt=after[1]))
        batch = list(candidates.order_by("created_at", "id").values_list("created_at", "id")[:batch_size])
        if not batch:
            break
        after = batch[-1]
        with transaction.atomic():
            count, _ = _prunable(ChurnScore.objects.filter(pk__in=[pk for _, pk in batch])).delete()
        deleted += count
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            logger.info("score pruning stopped after %.0f s; the next run goes on", time.monotonic() - started)
            break
    if deleted:
        logger.info("pruned %d churn scores stored before %s", deleted, cutoff.isoformat())
    return deleted


def _prunable(scores: QuerySet[ChurnScore]) -> QuerySet[ChurnScore]:
    """``scores`` without those kept whatever their age (see :func:`churn_scores_prune`)."""
    newest = (
        ChurnScore.objects.filter(customer=OuterRef("customer"))
        .order_by("-as_of", "-created_at", "-id")
        .values("pk")[:SCORES_KEPT_PER_CUSTOMER]
    )
    scores = scores.exclude(pk__in=newest)
    for relation in ChurnScore._meta.related_objects:  # alerts.Alert.score (predictions does not import alerts)
        referring = relation.related_model._default_manager.filter(**{relation.field.name: OuterRef("pk")})
        scores = scores.exclude(Exists(referring))
    champion_run = (
        ScoringRun.objects.filter(model_version__status=ModelStatus.CHAMPION, status=ScoringRun.Status.SUCCEEDED)
        .order_by("-as_of")
        .values_list("model_version_id", "as_of")
        .first()
    )
    if champion_run is not None:
        scores = scores.exclude(model_version_id=champion_run[0], as_of=champion_run[1])
    return scores
