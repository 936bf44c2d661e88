"""Drift: the champion's scores and top features now, against its reference population at training."""

from __future__ import annotations

import random

from django.conf import settings

from predictions.models import ChurnScore, DriftEvent, ScoringRun
from predictions.selectors import champion_model_version, customer_histories, retraining_options
from predictions.services.scoring import churn_model_load
from predictions.services.training import training_run_request_unless_running


def drift_check(*, actor: str = "drift check") -> DriftEvent | None:
    """Measure drift on the champion's latest finished scoring run; above the threshold, request retraining.

    Returns None when there is nothing to compare (no champion, no reference profile or no finished run).
    """
    from ml.drift import drift_report, feature_frame
    from ml.snapshot import snapshot_at

    champion = champion_model_version()
    if champion is None or not champion.reference_profile:
        return None
    run = (
        ScoringRun.objects.filter(model_version=champion, status=ScoringRun.Status.SUCCEEDED).order_by("-as_of").first()
    )
    if run is None:
        return None
    scored = list(
        ChurnScore.objects.filter(model_version=champion, as_of=run.as_of).values_list("customer_id", "probability")
    )
    if not scored:
        return None
    sample = sorted(random.Random(run.pk).sample(scored, min(len(scored), settings.CHURN_DRIFT_SAMPLE_SIZE)))
    model = churn_model_load(champion)
    histories = customer_histories(customer_ids=[customer_id for customer_id, _ in sample], until=run.as_of)
    frame = feature_frame(model, [snapshot_at(history, run.as_of) for history in histories])
    report = drift_report(
        champion.reference_profile,
        [probability for _, probability in scored],
        frame,
        threshold=settings.CHURN_DRIFT_PSI_THRESHOLD,
    )
    event = DriftEvent.objects.create(
        model_version=champion,
        scoring_run=run,
        score_psi=report["score_psi"],
        feature_psi=report["feature_psi"],
        max_psi=report["max_psi"],
        threshold=report["threshold"],
        drifted=report["drifted"],
    )
    if event.drifted:
        event.training_run = training_run_request_unless_running(
            mode=champion.mode or settings.CHURN_DEFAULT_MODE,
            horizon_days=champion.horizon_days or settings.CHURN_HORIZON_DAYS,
            lead_days=champion.lead_days,
            actor=f"{actor} (drift event {event.pk}: PSI {event.max_psi:.3f})",
            options=retraining_options(),
        )
        if event.training_run is not None:
            event.save(update_fields=["training_run"])
    return event
