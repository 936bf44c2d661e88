"""Point-in-time snapshots, churn labels, eligibility and rolling training cutoffs.

The rules, in one place:

* A :class:`Snapshot` of a customer at ``as_of`` holds only rows at or before ``as_of``. It checks
  this itself when built, and feature builders check again before reading it, so a row from the
  future raises :class:`LookAheadError` instead of leaking into a feature.
  Its profile (segment, country, language, attributes) is the one of ``as_of``: changes recorded after it
  are undone (:func:`ml.data.profile_at`); an order returned later still reads as completed.
* Labels (:func:`churn_label`), with ``start = as_of + lead`` and ``end = start + horizon``:

  - explicit, when the customer carries ``churned_at``: 1 when ``start < churned_at <= end``,
    0 when ``churned_at > end``, no label (``None``) when the churn falls in ``(as_of, start]``
    (it happened inside the lead time, too early to act on);
  - derived from inactivity otherwise: 1 when there is no qualifying activity in ``(start, end]``,
    else 0. Qualifying activity is ``"orders"`` or ``"orders_and_events"`` (:class:`LabelConfig`). A churn
    flag without a time says only that the customer has left by now, not when: at a cutoff they are labelled
    by their activity like anyone else (leaving them out would choose the training customers by their outcome).

  Profile data whose churn flag has no time is labelled directly by the flag (:func:`flagged_snapshots`).
* Eligibility at a cutoff (:class:`EligibilityRule`, default): signed up (when known) and first
  qualifying activity on or before ``as_of``, and the customer is not already marked churned
  (``churned_at <= as_of``). Optionally, customers with no qualifying activity in the last
  ``max_days_inactive`` days are left out as already lapsed. (Scoring now leaves out every customer flagged
  churned: ``predictions.selectors.customers_to_score``.)
* Training cutoffs (:func:`rolling_cutoffs`): ``as_of - lead - horizon``, then one ``horizon`` further
  back each, while history allows; each label window then ends at or before the evaluation cutoff, and
  :func:`churn_label` refuses (``LookAheadError``) a window that ends after ``label_until``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Literal

from ml.data import NO_EVENTS, CustomerHistory, CustomerRecord, EventLog, MessageRecord, OrderRecord, profile_at

__all__ = [
    "ACTIVITY_KINDS",
    "EligibilityRule",
    "LabelConfig",
    "LabelledSnapshot",
    "LookAheadError",
    "flagged_snapshots",
    "scored_by_flag_model",
    "Snapshot",
    "churn_label",
    "is_eligible",
    "labelled_snapshots",
    "qualifying_activity_times",
    "rolling_cutoffs",
    "snapshot_at",
]

Activity = Literal["orders", "orders_and_events"]
ACTIVITY_KINDS: tuple[str, ...] = ("orders", "orders_and_events")


class LookAheadError(ValueError):
    """Data from after a snapshot's cutoff (or a label window past the allowed end) reached the model."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A customer as they looked at ``as_of``: only rows at or before ``as_of``, oldest first."""

    customer: CustomerRecord
    as_of: datetime
    orders: tuple[OrderRecord, ...] = ()
    events: EventLog = NO_EVENTS  # any sequence of EventRecord given is stored as an EventLog (sorted)
    messages: tuple[MessageRecord, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.events, EventLog):
            object.__setattr__(self, "events", EventLog(self.events))
        self.assert_point_in_time()

    def assert_point_in_time(self) -> None:
        """Raise :class:`LookAheadError` naming the first row dated after ``as_of``."""
        cid, as_of = self.customer.id, self.as_of
        if self.customer.signed_up_at is not None and self.customer.signed_up_at > as_of:
            raise LookAheadError(
                f"look-ahead: customer {cid} signed up at {self.customer.signed_up_at.isoformat()}, "
                f"after the snapshot cutoff {as_of.isoformat()}"
            )
        # The events are sorted: those after the cutoff are the log's tail (no record read per event).
        late_events = self.events[self.events.count_at_or_before(as_of) :] if self.events.columnar else self.events
        checks: list[tuple[str, Sequence[object], str, int]] = [
            ("order", self.orders, "placed_at", 0),
            ("event", late_events, "occurred_at", len(self.events) - len(late_events)),
            ("message", self.messages, "sent_at", 0),
        ]
        for kind, rows, time_field, first_index in checks:
            for index, row in enumerate(rows, start=first_index):
                when: datetime = getattr(row, time_field)
                if when > as_of:
                    raise LookAheadError(
                        f"look-ahead: customer {cid}, {kind} #{index} has {time_field}={when.isoformat()}, "
                        f"after the snapshot cutoff {as_of.isoformat()}; a snapshot may only hold data at or "
                        "before its cutoff"
                    )
        for index, order in enumerate(self.orders):
            if order.status_changed_at is not None and order.status_changed_at > as_of:
                raise LookAheadError(
                    f"look-ahead: customer {cid}, order #{index} is {order.status} from "
                    f"{order.status_changed_at.isoformat()}, after the snapshot cutoff {as_of.isoformat()}; at the "
                    "cutoff it was completed"
                )


def _order_at(order: OrderRecord, as_of: datetime) -> OrderRecord:
    """The order as it stood at ``as_of``: one returned, refunded or cancelled later was still completed."""
    if order.status_changed_at is not None and order.status_changed_at > as_of:
        return replace(order, status="completed", status_changed_at=None)
    return order


_PLACED_AT, _SENT_AT = attrgetter("placed_at"), attrgetter("sent_at")


def snapshot_at(history: CustomerHistory, as_of: datetime) -> Snapshot:
    """The customer's snapshot at ``as_of``: every row at or before it, nothing later, each order with the
    status it had then, and the profile (segment, country, language, attributes) as it stood then.

    The history's rows are sorted by time, so those at or before ``as_of`` are a slice of them: a history with
    nothing later shares its tuples with the snapshot instead of copying them (a training holds a snapshot per
    customer at each of its cutoffs)."""
    orders = history.orders[: bisect_right(history.orders, as_of, key=_PLACED_AT)]
    if any(o.status_changed_at is not None and o.status_changed_at > as_of for o in orders):
        orders = tuple(_order_at(o, as_of) for o in orders)
    return Snapshot(
        customer=profile_at(history.customer, history.profile_changes, as_of),
        as_of=as_of,
        orders=orders,
        events=history.events[: history.events.count_at_or_before(as_of)],
        messages=history.messages[: bisect_right(history.messages, as_of, key=_SENT_AT)],
    )


@dataclass(frozen=True)
class LabelConfig:
    """How churn is defined at a cutoff.

    Attributes:
        horizon_days: length of the label window, in days.
        lead_days: days between the cutoff and the start of the window (time to act).
        activity: what counts as activity for inactivity labels: ``"orders"`` or ``"orders_and_events"``.
    """

    horizon_days: int = 90
    lead_days: int = 0
    activity: Activity = "orders"

    def __post_init__(self) -> None:
        if self.horizon_days <= 0:
            raise ValueError(f"horizon_days must be positive, got {self.horizon_days}")
        if self.lead_days < 0:
            raise ValueError(f"lead_days must not be negative, got {self.lead_days}")
        if self.activity not in ACTIVITY_KINDS:
            raise ValueError(f"activity must be one of {', '.join(ACTIVITY_KINDS)}, got {self.activity!r}")

    def window(self, as_of: datetime) -> tuple[datetime, datetime]:
        """The label window ``(start, end]`` for a cutoff: start excluded, end included; days of 24 hours, so the
        same instant gives the same window in any zone."""
        start = _in_utc(as_of) + timedelta(days=self.lead_days)
        return start, start + timedelta(days=self.horizon_days)


def _in_utc(moment: datetime) -> datetime:
    """An aware time in UTC (a naive one as it is). Python adds days to a time of a zone with daylight saving on the
    wall clock: 60 days after a New York cutoff in February would be 59 days and 23 hours later."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


def qualifying_activity_times(history: CustomerHistory | Snapshot, activity: str) -> list[datetime]:
    """Times of the rows that count as activity, oldest first."""
    times = [o.placed_at for o in history.orders]
    if activity == "orders_and_events":
        times += history.events.times()
    elif activity != "orders":
        raise ValueError(f"activity must be one of {', '.join(ACTIVITY_KINDS)}, got {activity!r}")
    return sorted(times)


def churn_label(
    history: CustomerHistory, as_of: datetime, config: LabelConfig, *, label_until: datetime | None = None
) -> int | None:
    """1 when the customer churns in the label window after ``as_of``, 0 when not, None when undefined.

    Args:
        history: the whole history (the label looks after ``as_of`` by design).
        as_of: the cutoff.
        config: horizon, lead and what counts as activity.
        label_until: the latest time a label may look at (the evaluation cutoff for training labels).

    Raises:
        LookAheadError: when the window ends after ``label_until``.
    """
    start, end = config.window(as_of)
    if label_until is not None and end > label_until:
        raise LookAheadError(
            f"label window for cutoff {as_of.isoformat()} ends at {end.isoformat()}, after {label_until.isoformat()}: "
            "a training label may not look past the evaluation cutoff"
        )
    customer = history.customer
    if customer.churned_at is not None:
        if customer.churned_at <= start:
            return None
        return 1 if customer.churned_at <= end else 0
    events = history.events
    if config.activity == "orders_and_events" and events.columnar:  # the events in the window from the columns
        active = events.count_at_or_before(end) > events.count_at_or_before(start)
        active = active or any(start < o.placed_at <= end for o in history.orders)
    else:
        active = any(start < t <= end for t in qualifying_activity_times(history, config.activity))
    return 0 if active else 1


@dataclass(frozen=True)
class EligibilityRule:
    """Who is scored and labelled at a cutoff.

    Attributes:
        require_prior_activity: the first qualifying activity must be on or before the cutoff.
        exclude_marked_churned: leave out customers already marked churned at the cutoff (``churned_at <= as_of``;
            a flag without a time cannot be placed before or after a cutoff, and does not leave a customer out).
        max_days_inactive: when set, leave out customers with no qualifying activity in the last
            ``max_days_inactive`` days before the cutoff (they lapsed already); None keeps them.
    """

    require_prior_activity: bool = True
    exclude_marked_churned: bool = True
    max_days_inactive: int | None = None


def is_eligible(history: CustomerHistory, as_of: datetime, *, rule: EligibilityRule, activity: str) -> bool:
    """Whether the customer is scored and labelled at ``as_of`` (see :class:`EligibilityRule`)."""
    customer = history.customer
    if customer.signed_up_at is not None and customer.signed_up_at > as_of:
        return False
    if rule.exclude_marked_churned:
        if customer.churned_at is not None and customer.churned_at <= as_of:
            return False
    last = _last_activity_at_or_before(history, as_of, activity)
    if rule.require_prior_activity and last is None:
        return False
    idle_since = _in_utc(as_of) - timedelta(days=rule.max_days_inactive or 0)
    if rule.max_days_inactive is not None and (last is None or last <= idle_since):
        return False
    return True


def _last_activity_at_or_before(history: CustomerHistory, as_of: datetime, activity: str) -> datetime | None:
    """The time of the latest qualifying activity at or before ``as_of`` (None when there is none)."""
    events = history.events
    if activity == "orders_and_events" and events.columnar:  # the events' last one from the columns
        seen = events.count_at_or_before(as_of)
        times = [o.placed_at for o in history.orders if o.placed_at <= as_of]
        times += [events[seen - 1].occurred_at] if seen else []
        return max(times) if times else None
    past = [t for t in qualifying_activity_times(history, activity) if t <= as_of]
    return past[-1] if past else None


def rolling_cutoffs(
    *,
    as_of: datetime,
    horizon_days: int,
    lead_days: int = 0,
    earliest: datetime,
    min_history_days: int = 0,
    max_cutoffs: int | None = None,
) -> list[datetime]:
    """Training cutoffs before the evaluation cutoff ``as_of``, newest first.

    The first is ``as_of - lead - horizon`` so its label window ends exactly at ``as_of``; each next one
    is ``horizon`` days earlier, as long as it leaves ``min_history_days`` of history after ``earliest``
    (the first activity in the data).
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    cutoffs: list[datetime] = []
    cutoff = _in_utc(as_of) - timedelta(days=lead_days + horizon_days)
    while cutoff > _in_utc(earliest) + timedelta(days=min_history_days):
        cutoffs.append(cutoff)
        if max_cutoffs is not None and len(cutoffs) >= max_cutoffs:
            break
        cutoff -= timedelta(days=horizon_days)
    return cutoffs


@dataclass(frozen=True, slots=True)
class LabelledSnapshot:
    snapshot: Snapshot
    label: int
    cutoff: datetime


def flagged_snapshots(histories: Iterable[CustomerHistory], as_of: datetime) -> list[LabelledSnapshot]:
    """Profile data (a churn flag, no activity to define churn by): one snapshot per customer at ``as_of``,
    labelled by the customer's explicit ``churned`` flag. Customers without a flag, or signed up after ``as_of``,
    are left out. The flag is the label only: no feature reads it. A churner whose churn has a time at or before
    ``as_of`` is taken as they were just before they left, so that no feature reads their silence after it
    (scoring only ever sees customers still here)."""
    return [
        LabelledSnapshot(
            snapshot=snapshot_at(history, _before_churn(history, as_of)),
            label=int(bool(history.customer.churned)),
            cutoff=as_of,
        )
        for history in histories
        if history.customer.churned is not None
        and (history.customer.signed_up_at is None or history.customer.signed_up_at <= as_of)
    ]


def _before_churn(history: CustomerHistory, as_of: datetime) -> datetime:
    """``as_of``, or for a churner whose churn has a time before it, the moment just before the churn (the churn
    itself, such as a cancellation at that time, is not a feature of it)."""
    customer = history.customer
    if not customer.churned or customer.churned_at is None or customer.churned_at > as_of:
        return as_of
    just_before = customer.churned_at - timedelta(microseconds=1)
    if customer.signed_up_at is not None and just_before < customer.signed_up_at:
        return customer.churned_at
    return just_before


def scored_by_flag_model(history: CustomerHistory, as_of: datetime) -> bool:
    """Whether a model trained on churn flags scores this customer at ``as_of``: signed up by then (when known) and
    not flagged churned (a customer still here, whose risk matters)."""
    customer = history.customer
    return customer.churned is not True and (customer.signed_up_at is None or customer.signed_up_at <= as_of)


def labelled_snapshots(
    histories: Iterable[CustomerHistory],
    cutoffs: Iterable[datetime],
    *,
    config: LabelConfig,
    rule: EligibilityRule | None = None,
    label_until: datetime | None = None,
) -> list[LabelledSnapshot]:
    """Snapshots of every eligible customer at every cutoff with a defined label (cutoff order, then input order)."""
    rule = rule or EligibilityRule()
    histories = list(histories)
    rows: list[LabelledSnapshot] = []
    for cutoff in cutoffs:
        for history in histories:
            if not is_eligible(history, cutoff, rule=rule, activity=config.activity):
                continue
            label = churn_label(history, cutoff, config, label_until=label_until)
            if label is None:
                continue
            rows.append(LabelledSnapshot(snapshot=snapshot_at(history, cutoff), label=label, cutoff=cutoff))
    return rows
