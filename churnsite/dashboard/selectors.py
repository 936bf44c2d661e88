"""Reads behind the staff dashboard: one function per panel, plain values out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from celery.exceptions import ImproperlyConfigured
from django.db.models import Count, F, IntegerField, Q, Sum, Value
from django.db.models.functions import Cast, Floor, Least, TruncDate
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_celery_beat.models import PeriodicTask

from alerts.models import Alert, AlertRule, Intervention, InterventionStatus, Outcome
from alerts.selectors import UpliftReport, alert_rules_uplift, uplift_note
from predictions.models import DriftEvent, ModelVersion
from predictions.selectors import champion_model_version, latest_scores

__all__ = [
    "CardModel",
    "ModelCard",
    "ScheduledRun",
    "SegmentRisk",
    "alerts_per_day",
    "intervention_funnel",
    "model_versions_metrics",
    "RiskOverview",
    "risk_overview",
    "rule_uplifts",
    "scheduled_runs",
    "champion_drift",
    "model_card",
]

RISK_BINS = 10


@dataclass(frozen=True)
class SegmentRisk:
    segment: str
    customers: int
    mean_probability: float
    high_risk: int


@dataclass(frozen=True)
class CardModel:
    """One model of a model card (the card's model first, then the baselines) as the charts draw it."""

    key: str
    label: str
    metrics: dict[str, float | None]
    roc: tuple[list[float], list[float]] | None
    calibration: list[tuple[float, float, int]]  # (mean predicted, observed rate, count) per non-empty bin


@dataclass(frozen=True)
class ModelCard:
    """A model version's card: the holdout figures always; curves and baselines where they were recorded."""

    version: ModelVersion
    figures: list[tuple[str, str]]
    models: list[CardModel]
    note: str  # why there are no curves ("" when there are)


@dataclass(frozen=True)
class ScheduledRun:
    name: str
    task: str
    schedule: str
    last_run_at: datetime | None
    next_run_at: datetime | None


@dataclass(frozen=True)
class RiskOverview:
    """The dashboard's two risk panels, read in one pass over the customers' newest scores."""

    distribution: list[int]  # customers per tenth of churn probability, lowest first
    segments: list[SegmentRisk]  # largest segments first


def risk_overview(*, limit: int = 12) -> RiskOverview:
    """Customers per tenth of churn probability and per segment (mean probability, high-risk count), by their
    newest score: one grouped query (segment x tenth; at most ``RISK_BINS`` rows per segment), not a row per
    customer, and not one pass per panel."""
    tenth = Cast(Least(Floor(F("probability") * RISK_BINS), Value(RISK_BINS - 1.0)), IntegerField())
    rows = (
        latest_scores()
        .order_by()
        .annotate(risk_bin=tenth)
        .values("customer__segment", "risk_bin")
        .annotate(customers=Count("id"), total=Sum("probability"), high=Count("id", filter=Q(risk_tier="high")))
    )
    distribution = [0] * RISK_BINS
    per_segment: dict[str, list[float]] = {}  # segment -> [customers, sum of probabilities, high risk]
    for row in rows:
        distribution[max(0, min(row["risk_bin"], RISK_BINS - 1))] += row["customers"]
        totals = per_segment.setdefault(row["customer__segment"] or "(none)", [0, 0.0, 0])
        totals[0] += row["customers"]
        totals[1] += row["total"] or 0.0
        totals[2] += row["high"]
    segments = [
        SegmentRisk(segment=name, customers=int(n), mean_probability=total / n if n else 0.0, high_risk=int(high))
        for name, (n, total, high) in per_segment.items()
    ]
    segments.sort(key=lambda row: (-row.customers, row.segment))
    return RiskOverview(distribution=distribution, segments=segments[:limit])


def alerts_per_day(*, days: int = 30, now: datetime | None = None) -> list[tuple[date, int]]:
    """New alerts per day over the last ``days`` days, every day listed (zero included)."""
    today = timezone.localdate(now or timezone.now())  # the days TruncDate counts in: local ones
    start = today - timedelta(days=days - 1)
    # From the local midnight that starts the first day: a bound on the column itself, which its index serves
    # (created_at__date would compute the date of every alert ever raised).
    since = timezone.make_aware(datetime.combine(start, time.min))
    counted = dict(
        Alert.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    return [(start + timedelta(days=offset), counted.get(start + timedelta(days=offset), 0)) for offset in range(days)]


def intervention_funnel() -> list[tuple[str, int]]:
    """Alerts, actions decided, actions sent, outcomes known, customers retained (treated group)."""
    counts = Intervention.objects.aggregate(
        decided=Count("id", filter=~Q(status=InterventionStatus.HOLDOUT)),
        sent=Count("id", filter=Q(status=InterventionStatus.SENT)),
        known=Count("id", filter=Q(status=InterventionStatus.SENT, outcome__in=(Outcome.RETAINED, Outcome.CHURNED))),
        retained=Count("id", filter=Q(status=InterventionStatus.SENT, outcome=Outcome.RETAINED)),
    )
    return [
        ("alerts", Alert.objects.count()),
        ("actions", counts["decided"]),
        ("sent", counts["sent"]),
        ("outcome known", counts["known"]),
        ("retained", counts["retained"]),
    ]


def rule_uplifts() -> list[tuple[AlertRule, UpliftReport, str]]:
    """Each rule that has sent anything, with its uplift against its holdout and what to know beside the figures
    (``alerts.selectors.uplift_note``: no control group, outcomes not known yet, not significant)."""
    rules = list(AlertRule.objects.filter(alerts__interventions__isnull=False).distinct().order_by("name"))
    uplifts = alert_rules_uplift(rules=rules)
    return [
        (rule, uplifts[rule.pk], uplift_note(uplifts[rule.pk], holdout_fraction=rule.holdout_fraction))
        for rule in rules
    ]


def model_versions_metrics(*, limit: int = 8) -> list[ModelVersion]:
    """The newest trained models with holdout metrics (the champion among them when it is recent)."""
    return list(ModelVersion.objects.exclude(metrics={}).order_by("-created_at")[:limit])


def champion_drift(*, limit: int = 60) -> tuple[ModelVersion | None, list[DriftEvent]]:
    champion = champion_model_version()
    if champion is None:
        return None, []
    events = list(DriftEvent.objects.filter(model_version=champion).order_by("-checked_at")[:limit])
    return champion, events[::-1]


# django-celery-beat's ModelEntry backdates a never-run task that has a start time by 30 years: due at once.
_BEAT_START_TIME_BACKDATE = timedelta(days=365 * 30)


def scheduled_runs(*, now: datetime | None = None) -> list[ScheduledRun]:
    """Enabled beat schedules (rescoring, retraining, ...) with the next run beat will make of each.

    As django-celery-beat's ModelEntry does: a task that never ran counts from when it was last saved
    (``date_changed``), and no task runs before its ``start_time``."""
    now = now or timezone.now()
    tasks = (
        PeriodicTask.objects.filter(enabled=True)
        .select_related("interval", "crontab", "solar", "clocked")
        .order_by("name")
    )
    runs = []
    for task in tasks:
        runs.append(
            ScheduledRun(
                name=task.name,
                task=task.task,
                schedule=str(task.scheduler or ""),
                last_run_at=task.last_run_at,
                next_run_at=_next_run_at(task, now=now),
            )
        )
    return runs


def _next_run_at(task: PeriodicTask, *, now: datetime) -> datetime | None:
    """When beat runs ``task`` next, or None where celery gives no estimate (solar schedules need ``ephem``)."""
    try:
        schedule = task.schedule
        schedule.nowfun = lambda: now  # celery's estimate is the time left from its "now": make that ours
        last_run_at = task.last_run_at
        if last_run_at is None:
            last_run_at = task.date_changed or now
            if task.start_time is not None:
                last_run_at -= _BEAT_START_TIME_BACKDATE
        remaining = schedule.remaining_estimate(last_run_at)
    except (AttributeError, TypeError, ValueError, ImproperlyConfigured):
        return None  # no schedule, or one without a simple estimate
    next_run_at = max(now, now + remaining)
    if task.start_time is not None:
        next_run_at = max(next_run_at, task.start_time)
    # celery estimates from its own clock reading: 02:59:59.98 means 03:00.
    return (next_run_at + timedelta(milliseconds=500)).replace(microsecond=0)


def _local_date(cutoff: object) -> str:
    """A stored cutoff (training writes UTC ISO timestamps) as its date in the current time zone, as the page shows
    every date; a value that is not a timestamp is shown as it is. A holdout of a sample of customers at one cutoff
    (profile data) is stored as the cutoff followed by ``ml.churn_model.CUSTOMER_SAMPLE_SUFFIX``, and shown as its date
    and what it holds."""
    from ml.churn_model import CUSTOMER_SAMPLE_SUFFIX  # ml is imported where it is used (it loads scikit-learn)

    if isinstance(cutoff, str) and cutoff.endswith(CUSTOMER_SAMPLE_SUFFIX):
        return f"{_local_date(cutoff.removesuffix(CUSTOMER_SAMPLE_SUFFIX))} (a sample of customers)"
    try:
        moment = cutoff if isinstance(cutoff, datetime) else parse_datetime(str(cutoff))
    except ValueError:  # well formed but no real time ("2026-02-30T00:00")
        moment = None
    if moment is None:
        return str(cutoff)[:40]
    return (timezone.localtime(moment) if timezone.is_aware(moment) else moment).date().isoformat()


def _cutoff_dates(cutoffs: list[object]) -> str:
    return ", ".join(_local_date(cutoff) for cutoff in cutoffs) or "-"


def _share(positives: object, n: object) -> str:
    if not isinstance(n, int) or not isinstance(positives, int) or n == 0:
        return "-"
    return f"{n:,} ({positives:,} churned, {positives / n:.1%})"


def model_card(version: ModelVersion) -> ModelCard:
    """The card of ``version`` from what training stored (``model_card``; older versions: metrics and cutoffs only)."""
    card = version.model_card or {}
    metrics = version.metrics or {}
    holdout = card.get("holdout") or {}
    training = card.get("training") or {}
    n = holdout.get("n", metrics.get("n"))
    rate = metrics.get("positive_rate")
    positives = holdout.get("positives")
    if positives is None and isinstance(n, int) and isinstance(rate, int | float):
        positives = round(n * rate)
    holdout_cutoff = str(holdout.get("cutoff") or metrics.get("cutoff") or "")
    training_cutoffs = training.get("cutoffs") or (
        [c for c in version.training_cutoffs if str(c) != holdout_cutoff] or version.training_cutoffs
    )
    config = version.config or {}
    activity = "order" if config.get("activity", "orders") == "orders" else "order or browsing event"
    if config.get("labels_from") == "flag":  # profile data: the imported flag is the label, no window after a cutoff
        definition = "the imported churn flag of each customer (trained with --labels-from flag)"
    else:
        definition = f"no {activity} within {version.horizon_days} days (lead {version.lead_days} days)"
    figures = [
        ("Churn definition", definition),
        ("Training cutoffs", _cutoff_dates(training_cutoffs)),
        ("Training snapshots", _share(training.get("positives"), training.get("n"))),
        ("Holdout cutoff (backtest)", _local_date(holdout_cutoff) if holdout_cutoff else "-"),
        ("Holdout snapshots", _share(positives, n)),
    ]
    models = [
        CardModel(
            key=str(entry.get("key", "")),
            label=str(entry.get("label", entry.get("key", ""))),
            metrics=dict(entry.get("metrics") or {}),
            roc=(list(entry["roc"]["fpr"]), list(entry["roc"]["tpr"])) if entry.get("roc") else None,
            calibration=[
                (float(b["mean_predicted"]), float(b["observed_rate"]), int(b["count"]))
                for b in entry.get("calibration") or []
            ],
        )
        for entry in card.get("models") or []
    ]
    if models:
        note = ""
    elif card.get("error"):
        note = f"Curves and baselines not recorded for this model: {card['error']}"
    else:
        note = "Curves and baselines not recorded for this model (it was trained before model cards were stored)."
    return ModelCard(version=version, figures=figures, models=models, note=note)
