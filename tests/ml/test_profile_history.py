"""A customer's profile at a cutoff: changes recorded after it are undone, so no snapshot reads a later segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ml.data import CustomerHistory, CustomerRecord, OrderRecord, ProfileChange, profile_at
from ml.features import FeatureBuilder
from ml.serialize import serialize_snapshot
from ml.snapshot import LabelConfig, labelled_snapshots, snapshot_at

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


NOW = CustomerRecord(id="c1", segment="vip", country="DE", attributes={"plan": "premium", "seats": 9})
# Day 100: country FR -> DE and plan basic -> premium (seats 1 -> 9); day 200: segment regular -> vip.
CHANGES = (
    ProfileChange(day(200), {"segment": "regular"}),
    ProfileChange(day(100), {"country": "FR", "attributes": {"plan": "basic", "seats": 1}}),
)


@pytest.mark.parametrize(
    ("as_of", "segment", "country", "attributes"),
    [
        (day(50), "regular", "FR", {"plan": "basic", "seats": 1}),
        (day(100), "regular", "DE", {"plan": "premium", "seats": 9}),  # a change at the cutoff is known then
        (day(150), "regular", "DE", {"plan": "premium", "seats": 9}),
        (day(250), "vip", "DE", {"plan": "premium", "seats": 9}),
    ],
)
def test_the_profile_at_a_cutoff_undoes_every_later_change(
    as_of: datetime, segment: str, country: str, attributes: dict
) -> None:
    record = profile_at(NOW, CHANGES, as_of)
    assert (record.segment, record.country, dict(record.attributes)) == (segment, country, attributes)
    assert (record.id, record.language) == ("c1", "")


def test_two_later_changes_of_one_field_give_its_oldest_value() -> None:
    changes = (ProfileChange(day(10), {"segment": "a"}), ProfileChange(day(20), {"segment": "b"}))
    record = CustomerRecord(id="c", segment="c")
    assert [profile_at(record, changes, day(n)).segment for n in (5, 10, 15, 20, 25)] == ["a", "b", "b", "c", "c"]


def test_two_changes_at_one_time_are_undone_back_to_the_first_value() -> None:
    at = day(10)
    changes = (ProfileChange(at, {"segment": "a"}), ProfileChange(at, {"segment": "b"}))  # a -> b, then b -> c
    assert profile_at(CustomerRecord(id="c", segment="c"), changes, day(5)).segment == "a"


def test_a_change_of_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="churned"):
        ProfileChange(day(1), {"churned": True})


def test_snapshots_features_and_text_at_old_cutoffs_read_the_old_profile() -> None:
    history = CustomerHistory(
        customer=NOW,
        orders=tuple(OrderRecord(placed_at=day(d), amount=10.0) for d in range(0, 400, 10)),
        profile_changes=CHANGES,
    )
    assert history.profile_changes[0].changed_at == day(100)  # sorted oldest first
    early, late = snapshot_at(history, day(60)), snapshot_at(history, day(300))
    assert (early.customer.segment, late.customer.segment) == ("regular", "vip")
    assert "basic" in serialize_snapshot(early) and "premium" not in serialize_snapshot(early)
    assert "premium" in serialize_snapshot(late)

    cutoffs = [day(n) for n in (40, 90, 140, 190, 240, 290)]
    rows = labelled_snapshots([history], cutoffs, config=LabelConfig(horizon_days=60))
    assert [row.cutoff for row in rows] == cutoffs
    frame = FeatureBuilder().build([row.snapshot for row in rows])
    assert list(frame["attr_seats"]) == [1, 1, 9, 9, 9, 9]
    segments = dict(zip(cutoffs, frame["segment"], strict=True))
    assert {segments[cutoff] for cutoff in segments if cutoff < day(200)} == {"regular"}
    assert {segments[cutoff] for cutoff in segments if cutoff >= day(200)} == {"vip"}
