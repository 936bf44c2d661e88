"""Reads of the predictions app."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Exists, F, FloatField, OuterRef, Q, QuerySet, Subquery, TextField, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from customers.models import Customer, CustomerProfileChange, Event, Message, Order
from predictions.models import ChurnScore, ModelStatus, ModelVersion, ScoringRun, TrainingRun, WorkerHeartbeat

if TYPE_CHECKING:
    from ml.data import CustomerHistory


def worker_heartbeats() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.order_by("queue", "-seen_at")


def champion_model_version() -> ModelVersion | None:
    """The model that scoring uses now, or None."""
    return ModelVersion.objects.filter(status=ModelStatus.CHAMPION).select_related("training_run").first()


def retraining_options() -> dict[str, object] | None:
    """The training options a retraining requested by the system (the weekly schedule, the drift check) keeps from
    the champion: its label source. A champion trained on the churn flag of profile data is retrained on the flag;
    labelled by activity, such a store has no qualifying activity and every scheduled run would fail."""
    champion = champion_model_version()
    if champion is not None and (champion.config or {}).get("labels_from") == "flag":
        return {"labels_from": "flag"}
    return None


def model_artifact_problem(model_version: ModelVersion) -> str | None:
    """A cheap check of the artifact on disk (every recorded file present with its recorded size);
    the full sha256 verification happens when the model is loaded. None when nothing is wrong."""
    if not model_version.artifact_path:
        return "no artifact path recorded"
    root = Path(model_version.artifact_path)
    if not root.is_dir():
        return f"artifact directory {root} is missing"
    for name, recorded in (model_version.artifact_checksums or {}).items():
        file = root / name
        if not file.is_file():
            return f"artifact file {name} is missing"
        size = recorded.get("size") if isinstance(recorded, dict) else None
        if size is not None and file.stat().st_size != size:
            return f"artifact file {name} has {file.stat().st_size} bytes, {size} recorded"
    return None


def model_artifact_sha256(model_version: ModelVersion) -> dict[str, str]:
    """The sha256 of each artifact file recorded when the version was registered (what its load is checked
    against; versions registered before the manifest's own sha256 was recorded give the other files only)."""
    return {
        name: str(recorded["sha256"])
        for name, recorded in (model_version.artifact_checksums or {}).items()
        if isinstance(recorded, dict) and recorded.get("sha256")
    }


def champion_model_state() -> str:
    """``ok``, ``missing`` (no champion) or ``error`` (its artifact is missing or damaged)."""
    champion = champion_model_version()
    if champion is None:
        return "missing"
    return "error" if model_artifact_problem(champion) else "ok"


def model_versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("training_run").order_by("-created_at")


class StoredJSONObject(Mapping[str, object]):
    """A JSON object read from the database as text, decoded on first use; equal to the dict it holds.

    Decodes as ``JSONField`` does (``json.loads``); null or an empty value is an empty mapping, like the
    ``properties or {}`` it replaces. Stored properties are JSON objects (every writer stores a dict).
    """

    __slots__ = ("_text", "_value")

    def __init__(self, text: str | None) -> None:
        self._text = text
        self._value: dict[str, object] | None = None

    def _decoded(self) -> dict[str, object]:
        if self._value is None:
            value = json.loads(self._text) if self._text else None
            if value and not isinstance(value, dict):
                raise TypeError(f"stored properties are not a JSON object: {self._text[:80]!r}")
            self._value = value or {}
        return self._value

    def __getitem__(self, key: str) -> object:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


# Rows fetched at a time by the history reads: a server-side cursor on PostgreSQL, so a read of millions of events
# holds a chunk of rows at a time next to the records it builds, not every row at once.
HISTORY_CHUNK_ROWS = 20_000


def customer_histories(
    *,
    customer_ids: Iterable[int] | None = None,
    until: datetime | None = None,
    exclude_customer_ids: Iterable[int] | QuerySet | None = None,
    event_properties: bool = False,
) -> list[CustomerHistory]:
    """Customers with their orders, events and messages as ``ml`` records: the one ORM -> ``ml`` mapper.

    Five queries whatever the number of customers (customers, then orders, events, messages and profile changes
    of those customers through a subquery), reading plain values rather than model instances, a chunk of rows at a
    time. No model reads event properties, so they are left out unless asked for (``ml.data.NO_PROPERTIES``): on a
    10,000-customer demo store they were 30% of the histories' memory. Asked for, they are decoded from their
    stored JSON when first read (:class:`StoredJSONObject`). Repeated short strings (event kinds, order statuses,
    message channels and roles) are shared, not one copy per row. Events, most of a store's rows, are columns
    (``ml.data.EventLog``: a time in microseconds and a kind code each, about 9 bytes an event, all customers' logs
    windows of one set of columns) rather than a record and a ``datetime`` per event (about 112 bytes).

    Args:
        customer_ids: database ids to include (all customers when None).
        until: when given, rows after this time are left out and the profile is the one of then, changes made
            after it undone (a point-in-time read).
        exclude_customer_ids: database ids (or a values_list query) to leave out.
        event_properties: read each event's properties too.

    Returns:
        One history per customer, in id order; ``CustomerRecord.id`` is the customer's ``external_id``.
    """
    from ml.data import (
        NO_EVENTS,
        CustomerHistory,
        CustomerRecord,
        EventLogBuilder,
        MessageRecord,
        OrderRecord,
        ProfileChange,
        profile_at,
    )

    customers = Customer.objects.order_by("id")
    if customer_ids is not None:
        customers = customers.filter(id__in=list(customer_ids))
    if exclude_customer_ids is not None:
        customers = customers.exclude(id__in=exclude_customer_ids)
    selected = customers.values("id")
    orders: dict[int, list[OrderRecord]] = defaultdict(list)
    order_rows = Order.objects.filter(customer_id__in=selected).order_by()
    event_rows = Event.objects.filter(customer_id__in=selected).order_by()
    messages: dict[int, list[MessageRecord]] = defaultdict(list)
    message_rows = Message.objects.filter(customer_id__in=selected).order_by()
    if until is not None:
        order_rows = order_rows.filter(placed_at__lte=until)
        event_rows = event_rows.filter(occurred_at__lte=until)
        message_rows = message_rows.filter(sent_at__lte=until)
    shared: dict[str, str] = {}
    for cid, placed_at, amount, status, item_count, discount, changed in order_rows.values_list(
        "customer_id", "placed_at", "amount", "status", "item_count", "discount_amount", "status_changed_at"
    ).iterator(chunk_size=HISTORY_CHUNK_ROWS):
        orders[cid].append(
            OrderRecord(
                placed_at, float(amount), shared.setdefault(status, status), int(item_count), float(discount), changed
            )
        )
    event_logs = EventLogBuilder(with_properties=event_properties)
    if event_properties:
        event_rows = event_rows.annotate(properties_json=Cast("properties", TextField()))
        for cid, kind, occurred_at, properties in event_rows.values_list(
            "customer_id", "kind", "occurred_at", "properties_json"
        ).iterator(chunk_size=HISTORY_CHUNK_ROWS):
            event_logs.add(cid, kind, occurred_at, StoredJSONObject(properties))
    else:
        for cid, kind, occurred_at in event_rows.values_list("customer_id", "kind", "occurred_at").iterator(
            chunk_size=HISTORY_CHUNK_ROWS
        ):
            event_logs.add(cid, kind, occurred_at)
    events = event_logs.build()
    del event_logs  # its row buffers; the logs share columns of their own
    for cid, sent_at, text, channel, role, conversation in message_rows.values_list(
        "customer_id", "sent_at", "text", "channel", "author_role", "conversation_id"
    ).iterator(chunk_size=HISTORY_CHUNK_ROWS):
        messages[cid].append(
            MessageRecord(
                sent_at, text, shared.setdefault(channel, channel), shared.setdefault(role, role), conversation
            )
        )
    changes: dict[int, list[ProfileChange]] = defaultdict(list)
    change_rows = CustomerProfileChange.objects.filter(customer_id__in=selected).order_by("changed_at", "id")
    for cid, changed_at, previous in change_rows.values_list("customer_id", "changed_at", "previous"):
        changes[cid].append(ProfileChange(changed_at, previous))
    histories = []
    for row in customers.values(
        "id", "external_id", "signed_up_at", "segment", "country", "language", "attributes", "churned", "churned_at"
    ):
        signed_up_at, churned, churned_at = row["signed_up_at"], row["churned"], row["churned_at"]
        if until is not None:
            if signed_up_at is not None and signed_up_at > until:
                continue  # not a customer yet at ``until``
            if churned_at is not None and churned_at > until:
                churned, churned_at = None, None  # a later churn is not known at ``until``
        record = CustomerRecord(
            id=row["external_id"],
            signed_up_at=signed_up_at,
            segment=row["segment"],
            country=row["country"],
            language=row["language"],
            attributes=dict(row["attributes"] or {}),
            churned=churned,
            churned_at=churned_at,
        )
        profile_changes = tuple(changes[row["id"]])
        if until is not None:  # the profile of then; changes made later are not known at ``until``
            record = profile_at(record, profile_changes, until)
            profile_changes = tuple(change for change in profile_changes if change.changed_at <= until)
        histories.append(
            CustomerHistory(
                customer=record,
                orders=tuple(orders.pop(row["id"], ())),
                events=events.pop(row["id"], NO_EVENTS),
                messages=tuple(messages.pop(row["id"], ())),
                profile_changes=profile_changes,
            )
        )
    return histories


def customers_signed_up(*, as_of: datetime) -> QuerySet[Customer]:
    """Customers signed up by ``as_of`` (or whose sign-up time is unknown): everyone a scoring could consider."""
    return Customer.objects.filter(Q(signed_up_at__isnull=True) | Q(signed_up_at__lte=as_of))


def customers_to_score(
    *, as_of: datetime, activity: str = "orders", labels_from: str = "activity"
) -> QuerySet[Customer]:
    """Customers eligible for a score at ``as_of``, by the default rule of ``ml.snapshot.EligibilityRule``:
    signed up by then (when known), a qualifying activity (``orders`` or ``orders_and_events``, as the model
    was trained) on or before ``as_of``, and not already marked churned. A model trained on churn flags
    (``labels_from="flag"``, profile data) scores every customer signed up by then and not flagged churned, with
    or without activity (``ml.snapshot.scored_by_flag_model``)."""
    signed_up = customers_signed_up(as_of=as_of)
    if labels_from == "flag":
        return signed_up.exclude(churned=True).order_by("id")
    active = Exists(Order.objects.filter(customer=OuterRef("pk"), placed_at__lte=as_of))
    if activity == "orders_and_events":
        active |= Exists(Event.objects.filter(customer=OuterRef("pk"), occurred_at__lte=as_of))
    return (
        signed_up.exclude(churned_at__lte=as_of)
        .exclude(churned=True, churned_at__isnull=True)
        .filter(active)
        .order_by("id")
    )


def latest_scores() -> QuerySet[ChurnScore]:
    """The newest score of each customer (by as_of, then creation), with customer and model joined."""
    # From the customers, one index lookup each (score_customer_newest), not a correlated subquery for every score
    # ever stored: the cost follows the customers, not customers x scoring runs.
    newest = ChurnScore.objects.filter(customer=OuterRef("pk")).order_by("-as_of", "-created_at", "-id")
    # (A customer without scores gives NULL, which no score's id equals: no filter, which would compute it twice.)
    latest_ids = Customer.objects.annotate(latest_score_id=Subquery(newest.values("pk")[:1])).values("latest_score_id")
    return (
        ChurnScore.objects.filter(pk__in=latest_ids)
        .select_related("customer", "model_version")
        .order_by("-probability", "-id")
    )


# The orderings of the newest scores that a page reads through an index in that order (ties by id in the same
# direction), stopping after its rows: the default (highest risk first), the lowest risk first, by customer either
# way, and the freshest first.
LATEST_SCORE_ORDERINGS_WALKED = frozenset(
    {"-probability", "probability", "customer", "-customer", "-as_of", "-created_at"}
)


def latest_scores_for_pages(*, ordering: Sequence[str] = ("-probability",)) -> QuerySet[ChurnScore]:
    """The newest score of each customer, as :func:`latest_scores`, for reading a page at a time (the score API), in
    ``ordering`` (fields of the score, ``-`` for descending; ties broken by id in the first field's direction).

    A score is a customer's newest when no newer score of the customer exists (by as_of, then creation, then id).
    In one of :data:`LATEST_SCORE_ORDERINGS_WALKED`, the scores are read in that order through an index on it and
    its id (score_probability, score_as_of_id, score_created_at_id; by customer, the foreign key's index), a page
    stopping after its rows, each checked with one score_customer_newest probe: it never finds every customer's
    newest score to sort them. A page costs more as older scores lie between its rows in that order, since each is
    passed over (pruning, ``CHURN_SCORES_KEEP_DAYS``, bounds them).

    The oldest first (``as_of``, ``created_at``) would pass over every superseded score before its first row (each
    customer's older scores are older than the stale customers' newest ones), and several fields have no index; so
    those orderings are sorted from each customer's newest score, found with one probe per customer as
    :func:`latest_scores` does, then joined to the scores in one pass: on 47,165 scored customers, 260 ms with two
    scoring runs and 380-520 ms with five, where walking an index passed over the superseded scores at 1-3 µs each
    (54 ms with two runs, 590 ms with five, seconds with 90 kept).
    """
    ordering = [term for term in ordering if term.lstrip("-") not in ("pk", "id")] or ["-probability"]
    tie = "-id" if ordering[0].startswith("-") else "id"
    if len(ordering) > 1 or ordering[0] not in LATEST_SCORE_ORDERINGS_WALKED:
        # Customers and models fetched for the page's rows after it is cut, not joined to every newest score before
        # the sort: 264 ms instead of 414 ms at 47,165 scored customers.
        return (
            latest_scores().select_related(None).prefetch_related("customer", "model_version").order_by(*ordering, tie)
        )
    newer = ChurnScore.objects.filter(customer=OuterRef("customer"), as_of__gte=OuterRef("as_of")).filter(
        Q(as_of__gt=OuterRef("as_of"))
        | Q(created_at__gt=OuterRef("created_at"))
        | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
    )
    return (
        ChurnScore.objects.filter(~Exists(newer)).select_related("customer", "model_version").order_by(*ordering, tie)
    )


def customer_scores(*, customer_id: int | None = None, external_id: str | None = None) -> QuerySet[ChurnScore]:
    """Every score of one customer (by id or by external id), newest first: the customer's score history."""
    scores = ChurnScore.objects.select_related("customer", "model_version")
    scores = scores.filter(customer_id=customer_id) if customer_id is not None else scores
    scores = scores.filter(customer__external_id=external_id) if external_id is not None else scores
    return scores.order_by("-as_of", "-created_at", "-id")


def scoring_runs() -> QuerySet[ScoringRun]:
    return ScoringRun.objects.select_related("model_version").order_by("-created_at")


def training_runs() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("model_version").order_by("-created_at")


def _newest_scores_of_customer() -> QuerySet[ChurnScore]:
    """Scores of the outer customer, newest first: the order ``latest_scores`` uses."""
    return ChurnScore.objects.filter(customer=OuterRef("pk")).order_by("-as_of", "-created_at", "-id")


def customers_annotate_latest_score(*, customers: QuerySet[Customer]) -> QuerySet[Customer]:
    """``customers`` annotated with their newest score, in correlated subqueries (one query for a whole page).

    Adds ``latest_score_id``, ``latest_probability``, ``latest_risk_tier``, ``latest_scored_at`` (the score's
    ``as_of``), ``previous_probability`` (the score before it) and ``probability_sort`` (the probability, -1
    when never scored, so that sorting by it puts unscored customers last when descending on every database).
    All are None for a customer without scores.
    """
    newest = _newest_scores_of_customer()
    return customers.annotate(
        latest_score_id=Subquery(newest.values("pk")[:1]),
        latest_probability=Subquery(newest.values("probability")[:1], output_field=FloatField()),
        latest_risk_tier=Subquery(newest.values("risk_tier")[:1]),
        latest_scored_at=Subquery(newest.values("as_of")[:1]),
        previous_probability=Subquery(newest.values("probability")[1:2], output_field=FloatField()),
    ).annotate(probability_sort=Coalesce(F("latest_probability"), Value(-1.0), output_field=FloatField()))


def customer_score_history(*, customer_id: int, limit: int = 365) -> list[ChurnScore]:
    """The customer's newest ``limit`` scores, oldest first, with their model version joined."""
    newest = (
        ChurnScore.objects.filter(customer_id=customer_id)
        .select_related("model_version")
        .order_by("-as_of", "-created_at", "-id")[:limit]
    )
    return list(reversed(newest))


def training_in_progress() -> bool:
    """A training run that is really under way: running with a live lease, or waiting for a worker for less than
    the broker's visibility timeout (after that its message is lost, so it would block drift retraining forever)."""
    now = timezone.now()
    waiting_since = now - timedelta(seconds=2 * settings.CHURN_TRAIN_TIME_LIMIT)
    return TrainingRun.objects.filter(
        Q(status=TrainingRun.Status.RUNNING, lease_expires_at__gt=now)
        | Q(status=TrainingRun.Status.RUNNING, lease_expires_at__isnull=True, created_at__gt=waiting_since)
        | Q(status=TrainingRun.Status.PENDING, created_at__gt=waiting_since)
    ).exists()


def latest_activity_at(*, activity: str = "orders") -> datetime | None:
    """The time of the newest qualifying activity in the data (orders, or orders and events): where the data
    ends, as far as churn labels can tell. None when there is none."""
    from django.db.models import Max

    latest = Order.objects.aggregate(at=Max("placed_at"))["at"]
    if activity == "orders_and_events":
        event = Event.objects.aggregate(at=Max("occurred_at"))["at"]
        latest = max((t for t in (latest, event) if t is not None), default=None)
    return latest
