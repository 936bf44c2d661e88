"""Point-in-time snapshots, label windows at their edges, eligibility and rolling cutoffs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.data import CustomerHistory, CustomerRecord, EventRecord, MessageRecord, OrderRecord
from ml.features import FeatureBuilder
from ml.snapshot import (
    EligibilityRule,
    LabelConfig,
    LookAheadError,
    Snapshot,
    churn_label,
    is_eligible,
    labelled_snapshots,
    rolling_cutoffs,
    snapshot_at,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def history(order_days: list[float], *, event_days: list[float] = (), **customer: object) -> CustomerHistory:
    return CustomerHistory(
        customer=CustomerRecord(id=str(customer.pop("id", "c1")), **customer),
        orders=tuple(OrderRecord(placed_at=day(d), amount=10.0) for d in order_days),
        events=tuple(EventRecord(kind="page_view", occurred_at=day(d)) for d in event_days),
    )


def test_snapshot_keeps_rows_up_to_and_including_the_cutoff_only() -> None:
    snapshot = snapshot_at(history([0, 10, 10.5, 20]), day(10))
    assert [o.placed_at for o in snapshot.orders] == [day(0), day(10)]


@settings(max_examples=60, deadline=None)
@given(
    order_days=st.lists(st.sampled_from([0.0, 1.0, 2.5, 10.0, 10.0, 30.0]), max_size=8),
    event_days=st.lists(st.sampled_from([0.0, 2.5, 9.0, 10.0, 11.0]), max_size=8),
    message_days=st.lists(st.sampled_from([1.0, 10.0, 12.0]), max_size=4),
    cutoff=st.sampled_from([0.0, 2.5, 10.0, 40.0]),
)
def test_snapshot_rows_are_the_rows_at_or_before_the_cutoff_and_shared_when_nothing_is_later(
    order_days: list[float], event_days: list[float], message_days: list[float], cutoff: float
) -> None:
    full = CustomerHistory(
        customer=CustomerRecord(id="c1"),
        orders=tuple(OrderRecord(placed_at=day(d), amount=d) for d in order_days),
        events=tuple(EventRecord(kind=f"k{d}", occurred_at=day(d)) for d in event_days),
        messages=tuple(MessageRecord(sent_at=day(d), text=f"m{d}") for d in message_days),
    )
    snapshot = snapshot_at(full, day(cutoff))
    assert snapshot.orders == tuple(o for o in full.orders if o.placed_at <= day(cutoff))
    assert snapshot.events == tuple(e for e in full.events if e.occurred_at <= day(cutoff))
    assert snapshot.messages == tuple(m for m in full.messages if m.sent_at <= day(cutoff))
    # A history with nothing after the cutoff lends the snapshot its tuples rather than a copy of each.
    later = snapshot_at(full, day(50))
    assert later.orders is full.orders and later.events is full.events and later.messages is full.messages
    assert not hasattr(later, "__dict__")  # slotted, as the records are


def test_planted_future_order_fails_loudly() -> None:
    with pytest.raises(
        LookAheadError, match=r"customer c1, order #1 has placed_at=2025-01-21.*after the snapshot cutoff"
    ):
        Snapshot(
            customer=CustomerRecord(id="c1"),
            as_of=day(10),
            orders=(OrderRecord(placed_at=day(5), amount=1.0), OrderRecord(placed_at=day(20), amount=1.0)),
        )


def test_feature_builder_refuses_a_snapshot_tampered_after_construction() -> None:
    snapshot = snapshot_at(history([1, 2]), day(10))
    future = (*snapshot.messages, MessageRecord(sent_at=day(11), text="later"))
    object.__setattr__(snapshot, "messages", future)  # bypasses the frozen dataclass, as a bug might
    with pytest.raises(LookAheadError, match="message #0 has sent_at"):
        FeatureBuilder().build([snapshot])


def test_sign_up_after_the_cutoff_is_look_ahead() -> None:
    with pytest.raises(LookAheadError, match="signed up"):
        Snapshot(customer=CustomerRecord(id="c1", signed_up_at=day(30)), as_of=day(10))


@pytest.mark.parametrize(
    ("activity_day", "expected"),
    [
        (40, 1),  # exactly at as_of + lead: outside the window (start excluded) -> no activity -> churned
        (40.001, 0),  # just after the start: inside
        (70, 0),  # exactly at as_of + lead + horizon: inside (end included)
        (70.001, 1),  # just after the end: outside -> churned
    ],
)
def test_inactivity_label_window_edges(activity_day: float, expected: int) -> None:
    config = LabelConfig(horizon_days=30, lead_days=10)
    assert churn_label(history([0, activity_day]), day(30), config) == expected


def test_events_count_as_activity_only_when_configured() -> None:
    customer = history([0], event_days=[35])
    assert churn_label(customer, day(30), LabelConfig(horizon_days=30, activity="orders")) == 1
    assert churn_label(customer, day(30), LabelConfig(horizon_days=30, activity="orders_and_events")) == 0


def test_explicit_churn_time_edges() -> None:
    config = LabelConfig(horizon_days=30, lead_days=10)
    labels = {
        d: churn_label(history([0], churned=True, churned_at=day(d)), day(30), config) for d in (35, 40, 40.5, 70, 71)
    }
    assert labels == {35: None, 40: None, 40.5: 1, 70: 1, 71: 0}


def test_label_that_would_look_past_the_evaluation_cutoff_is_refused() -> None:
    with pytest.raises(LookAheadError, match="may not look past"):
        churn_label(history([0]), day(30), LabelConfig(horizon_days=30), label_until=day(59))
    assert churn_label(history([0]), day(30), LabelConfig(horizon_days=30), label_until=day(60)) == 1


def test_eligibility_defaults_and_options() -> None:
    rule = EligibilityRule()
    assert not is_eligible(history([20]), day(10), rule=rule, activity="orders"), "no activity yet"
    assert is_eligible(history([10]), day(10), rule=rule, activity="orders"), "first activity exactly at the cutoff"
    assert not is_eligible(history([0], churned=True, churned_at=day(5)), day(10), rule=rule, activity="orders")
    assert is_eligible(history([0], churned=True, churned_at=day(15)), day(10), rule=rule, activity="orders")
    # A flag without a time says they have left by now, not when: at a past cutoff it leaves no one out (that
    # would choose the training customers by their outcome); they are labelled by their activity.
    assert is_eligible(history([0], churned=True), day(10), rule=rule, activity="orders"), "flag without time"
    assert churn_label(history([0, 20], churned=True), day(10), LabelConfig(horizon_days=30)) == 0
    assert churn_label(history([0], churned=True), day(10), LabelConfig(horizon_days=30)) == 1
    lapsed = EligibilityRule(max_days_inactive=30)
    assert not is_eligible(history([0]), day(40), rule=lapsed, activity="orders")
    assert is_eligible(history([0, 20]), day(40), rule=lapsed, activity="orders")


def test_rolling_cutoffs_step_back_by_the_horizon_while_history_allows() -> None:
    cutoffs = rolling_cutoffs(as_of=day(365), horizon_days=90, lead_days=10, earliest=day(0), min_history_days=30)
    assert cutoffs == [day(265), day(175), day(85)]
    assert rolling_cutoffs(as_of=day(365), horizon_days=90, earliest=day(0), max_cutoffs=2) == [day(275), day(185)]


def test_rolling_cutoff_labels_never_look_past_the_evaluation_cutoff() -> None:
    as_of = day(300)
    config = LabelConfig(horizon_days=60, lead_days=7)
    customers = [history([0, 50, 120, 299], id="a"), history([0, 100], id="b"), history([200, 301], id="c")]
    cutoffs = rolling_cutoffs(as_of=as_of, horizon_days=60, lead_days=7, earliest=day(0))
    assert len(cutoffs) >= 3
    rows = labelled_snapshots(customers, cutoffs, config=config, label_until=as_of)
    assert rows, "some training rows"
    assert all(config.window(r.cutoff)[1] <= as_of for r in rows)
    # Customer c orders again right after as_of: that order must not make any training label 0.
    c_rows = [r for r in rows if r.snapshot.customer.id == "c"]
    assert c_rows and all(r.label == 1 for r in c_rows)
    # The same customers without any post-as_of data get identical training labels.
    trimmed = [replace(h, orders=tuple(o for o in h.orders if o.placed_at <= as_of)) for h in customers]
    again = labelled_snapshots(trimmed, cutoffs, config=config, label_until=as_of)
    assert [(r.snapshot.customer.id, r.cutoff, r.label) for r in again] == [
        (r.snapshot.customer.id, r.cutoff, r.label) for r in rows
    ]


@settings(max_examples=40, deadline=None)
@given(
    order_days=st.lists(st.floats(0, 400, allow_nan=False), max_size=12),
    event_days=st.lists(st.floats(0, 400, allow_nan=False), max_size=12),
    cutoff=st.floats(1, 400, allow_nan=False),
)
def test_features_at_a_cutoff_never_change_when_later_rows_are_added(
    order_days: list[float], event_days: list[float], cutoff: float
) -> None:
    full = history(order_days, event_days=event_days)
    past = history(
        [d for d in order_days if day(d) <= day(cutoff)], event_days=[d for d in event_days if day(d) <= day(cutoff)]
    )
    builder = FeatureBuilder()
    a = builder.build([snapshot_at(full, day(cutoff))])
    b = builder.build([snapshot_at(past, day(cutoff))])
    pd.testing.assert_frame_equal(a, b)


def test_an_order_returned_after_the_cutoff_was_completed_at_the_cutoff() -> None:
    returned = OrderRecord(placed_at=day(0), amount=50.0, status="returned", status_changed_at=day(20))
    unknown = OrderRecord(placed_at=day(1), amount=30.0, status="refunded")  # no date: the status holds throughout
    customer = CustomerHistory(customer=CustomerRecord(id="c1"), orders=(returned, unknown))

    before, after = snapshot_at(customer, day(10)), snapshot_at(customer, day(30))

    assert [o.status for o in before.orders] == ["completed", "refunded"]
    assert [o.status for o in after.orders] == ["returned", "refunded"]
    features = FeatureBuilder().build([before, after])
    assert list(features["returns_total"]) == [1.0, 2.0]
    with pytest.raises(LookAheadError, match="order #0 is returned from 2025-01-21.*at the cutoff it was completed"):
        Snapshot(customer=customer.customer, as_of=day(10), orders=(returned,))


def test_flagged_snapshots_label_profile_customers_by_their_flag_only() -> None:
    from ml.snapshot import flagged_snapshots, scored_by_flag_model

    def customer(cid: str, churned: bool | None, signed: float | None = None) -> CustomerHistory:
        signed_up = day(signed) if signed is not None else None
        record = CustomerRecord(id=cid, churned=churned, signed_up_at=signed_up, attributes={"plan": "monthly"})
        return CustomerHistory(customer=record)

    histories = [
        customer("gone", True),
        customer("here", False),
        customer("unknown", None),
        customer("late", False, 50),
    ]

    rows = flagged_snapshots(histories, day(10))

    assert [(r.snapshot.customer.id, r.label, r.cutoff) for r in rows] == [("gone", 1, day(10)), ("here", 0, day(10))]
    features = FeatureBuilder().build([r.snapshot for r in rows])
    assert not [c for c in features.columns if "churn" in c.lower()], "the flag is a label, never a feature"
    assert [h.customer.id for h in histories if scored_by_flag_model(h, day(10))] == ["here", "unknown"]


def test_the_same_cutoff_instant_gives_the_same_window_label_and_cutoffs_in_any_zone() -> None:
    # 2026-02-01 00:00 in New York (05:00Z); the 60-day window spans the change to daylight saving on 2026-03-08,
    # and Python adds days to a New York time on the wall clock: the window ended an hour early there.
    from zoneinfo import ZoneInfo

    as_of_utc = datetime(2026, 2, 1, 5, 0, tzinfo=UTC)
    as_of_local = as_of_utc.astimezone(ZoneInfo("America/New_York"))
    boundary = as_of_utc + timedelta(days=60)  # the window's end, included
    history = CustomerHistory(
        customer=CustomerRecord(id="c1", signed_up_at=datetime(2025, 1, 1, tzinfo=UTC)),
        orders=(OrderRecord(placed_at=datetime(2025, 12, 1, tzinfo=UTC), amount=1.0),
                OrderRecord(placed_at=boundary, amount=1.0)),
    )  # fmt: skip
    config = LabelConfig(horizon_days=60)

    assert config.window(as_of_local) == config.window(as_of_utc)
    assert churn_label(history, as_of_local, config) == churn_label(history, as_of_utc, config) == 0
    later = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)  # after the change: 00:00 in New York is 04:00Z
    earliest = datetime(2025, 6, 1, tzinfo=UTC)
    assert rolling_cutoffs(
        as_of=later.astimezone(ZoneInfo("America/New_York")), horizon_days=60, earliest=earliest
    ) == (rolling_cutoffs(as_of=later, horizon_days=60, earliest=earliest))


def test_an_event_without_properties_shares_one_empty_mapping_that_pickles_and_copies_as_itself() -> None:
    import copy
    import dataclasses
    import pickle

    from ml.data import NO_PROPERTIES, CustomerHistory, CustomerRecord, EventRecord

    event = EventRecord("login", datetime(2026, 1, 1, tzinfo=UTC))
    history = CustomerHistory(CustomerRecord("c"), events=(event,))
    assert event.properties is NO_PROPERTIES and NO_PROPERTIES == {} and not NO_PROPERTIES
    assert pickle.loads(pickle.dumps(history)).events[0].properties is NO_PROPERTIES
    assert copy.deepcopy(history).events[0].properties is NO_PROPERTIES
    assert dataclasses.asdict(history.events[0])["properties"] == {}  # (events are an EventLog, not a tuple)
    with pytest.raises(TypeError):
        NO_PROPERTIES["page"] = "x"  # type: ignore[index]


@settings(max_examples=100, deadline=None)
@given(
    order_days=st.lists(st.sampled_from([0.0, 5.0, 30.0, 100.0]), max_size=3),
    event_days=st.lists(st.sampled_from([0.0, 10.0, 40.0, 69.999, 70.0, 71.0, 130.0, 131.0]), max_size=6),
    cutoff=st.sampled_from([0.0, 10.0, 40.0, 70.0]),
    max_days_inactive=st.sampled_from([None, 30]),
)
def test_labels_and_eligibility_by_orders_and_events_follow_the_events_times(
    order_days: list[float], event_days: list[float], cutoff: float, max_days_inactive: int | None
) -> None:
    # The events' times are read from the event log's columns; what they decide is the rule on the times themselves.
    h = history(order_days, event_days=event_days)
    config = LabelConfig(horizon_days=60, activity="orders_and_events")
    times = sorted([day(d) for d in order_days] + [day(d) for d in event_days])
    start, end = config.window(day(cutoff))
    past = [t for t in times if t <= day(cutoff)]
    rule = EligibilityRule(max_days_inactive=max_days_inactive)
    idle = max_days_inactive is not None and (not past or past[-1] <= day(cutoff) - timedelta(days=30))

    assert churn_label(h, day(cutoff), config) == (0 if any(start < t <= end for t in times) else 1)
    assert is_eligible(h, day(cutoff), rule=rule, activity="orders_and_events") == (bool(past) and not idle)
