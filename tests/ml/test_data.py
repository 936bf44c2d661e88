"""The columnar event log: a read-only sequence of EventRecord that histories and snapshots hold."""

from __future__ import annotations

import copy
import gc
import pickle
import tracemalloc
from bisect import bisect_right
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.data import NO_PROPERTIES, CustomerHistory, CustomerRecord, EventLog, EventLogBuilder, EventRecord
from ml.snapshot import Snapshot, snapshot_at

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def records() -> tuple[EventRecord, ...]:
    """Sorted by time; two events at one time, in the order they were given."""
    return (
        EventRecord("login", at(0)),
        EventRecord("search", at(1), {"q": "shoes"}),
        EventRecord("page_view", at(1)),
        EventRecord("login", at(30.5)),
    )


def test_an_event_log_is_a_read_only_sequence_of_the_records_it_was_given() -> None:
    given_records = records()
    log = EventLog(given_records)

    assert len(log) == 4 and bool(log) and not EventLog()
    assert log == given_records and tuple(log) == given_records and list(log) == list(given_records)
    assert log[0] == given_records[0] and log[-1] == given_records[-1] and log[-4] == given_records[0]
    assert log[1:3] == given_records[1:3] and isinstance(log[1:3], EventLog) and log[1:3][1] == given_records[2]
    assert log[5:2] == () and log[:] is log and log[::-1] == given_records[::-1]
    assert log.count(given_records[0]) == 1 and log.index(given_records[2]) == 2 and given_records[3] in log
    assert hash(log) == hash(given_records) and log != list(given_records) and log != given_records[:3]
    with pytest.raises(IndexError):
        log[4]
    with pytest.raises(ValueError, match="read-only"):
        log.times_us[0] = 0


def test_an_event_log_sorts_by_time_and_keeps_the_given_order_at_one_time() -> None:
    given_records = records()
    shuffled = (given_records[3], given_records[1], given_records[0], given_records[2])

    assert EventLog(shuffled) == given_records
    assert CustomerHistory(CustomerRecord("c"), events=shuffled).events == given_records


@pytest.mark.parametrize(
    "zone", [UTC, timezone(timedelta(hours=2)), NEW_YORK, None], ids=["utc", "plus-2", "new-york", "naive"]
)
def test_times_come_back_exactly_with_their_zone(zone: object) -> None:
    # 2026-11-01 01:30 happens twice in New York: once in daylight saving (fold 0), once after it (fold 1).
    if zone is None:
        times = [datetime(2026, 11, 1, 1, 30), datetime(2026, 11, 1, 1, 30, 0, 1)]
    elif zone is NEW_YORK:
        times = [datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)]
    else:
        times = [datetime(2026, 11, 1, 1, 30, tzinfo=zone), datetime(2026, 11, 1, 1, 30, 0, 1, tzinfo=zone)]
    log = EventLog(EventRecord("login", t) for t in times)

    def exactly(moments: list[datetime]) -> list[tuple[datetime, object, int]]:
        return [(moment, moment.tzinfo, moment.fold) for moment in moments]

    assert exactly([e.occurred_at for e in log]) == exactly(times) == exactly(log.times())
    assert exactly([e.occurred_at for e in pickle.loads(pickle.dumps(log))]) == exactly(times)
    assert all(a.occurred_at.tzinfo is t.tzinfo for a, t in zip(log, times, strict=True))
    assert log.columnar == (zone is not NEW_YORK), "a zone with daylight saving keeps its datetimes as given"


def test_naive_and_aware_times_do_not_mix_as_python_times_do_not() -> None:
    with pytest.raises(TypeError):
        EventLog([EventRecord("login", datetime(2026, 1, 1)), EventRecord("login", T0)])
    with pytest.raises(TypeError):
        EventLog([EventRecord("login", T0)]).count_at_or_before(datetime(2026, 1, 1))
    assert EventLog().count_at_or_before(datetime(2026, 1, 1)) == 0
    assert EventLog([EventRecord("a", T0)]) != EventLog([EventRecord("a", T0.replace(tzinfo=None))])


def test_pickling_and_copies_give_an_equal_log_with_its_properties_and_the_shared_empty_mapping() -> None:
    log = EventLog(records())
    window = log[1:3]

    for copied in (pickle.loads(pickle.dumps(log)), copy.deepcopy(log), copy.copy(log)):
        assert copied == log and [e.properties for e in copied] == [NO_PROPERTIES, {"q": "shoes"}, NO_PROPERTIES, {}]
        assert copied[0].properties is NO_PROPERTIES and copied[0].occurred_at.tzinfo is UTC
    assert pickle.loads(pickle.dumps(window)) == window == records()[1:3]
    assert copy.deepcopy(log)[1].properties is not log[1].properties, "a deep copy copies the properties too"


def test_a_pickled_window_carries_its_own_events_only() -> None:
    builder = EventLogBuilder()
    for i in range(20_000):
        builder.add(i % 2, "page_view", at(i))
    logs = builder.build()

    assert len(pickle.dumps(logs[0])) < len(pickle.dumps(EventLog(logs[0]))) + 200 < 2 * 10_000 * 9


def test_equal_logs_with_different_kind_vocabularies_are_equal() -> None:
    builder = EventLogBuilder()
    builder.add(1, "search", at(0))
    builder.add(2, "login", at(0))
    builder.add(2, "search", at(1))
    logs = builder.build()

    assert logs[2][1:] == EventLog([EventRecord("search", at(1))]) == logs[2][1:]
    assert logs[1] != EventLog([EventRecord("login", at(0))])
    assert logs[1] != EventLog([EventRecord("search", at(0), {"q": "x"})])


def test_the_builder_gives_each_owner_the_log_its_records_would_make() -> None:
    builder = EventLogBuilder(with_properties=True)
    rows = [(7, "b", at(5), {"n": 1}), (3, "a", at(1), NO_PROPERTIES), (7, "a", at(5), {}), (7, "c", at(2), {})]
    for row in rows:
        builder.add(*row)
    logs = builder.build()

    assert sorted(logs) == [3, 7]
    for owner, log in logs.items():
        assert log == EventLog(EventRecord(kind, t, p) for o, kind, t, p in rows if o == owner)
    assert [e.kind for e in logs[7]] == ["c", "b", "a"], "events at one time keep the order they were added in"
    assert logs[3].kinds is logs[7].kinds, "one vocabulary of kinds for every log"
    assert logs[3][0].properties is NO_PROPERTIES and logs[7][1].properties == {"n": 1}


def test_the_builder_keeps_a_time_of_another_zone_as_given() -> None:
    builder = EventLogBuilder()
    builder.add(1, "a", at(2))
    builder.add(2, "a", at(2))
    builder.add(2, "b", at(1).astimezone(NEW_YORK))
    builder.add(2, "c", datetime(2026, 3, 1, 1, 30, tzinfo=UTC))
    logs = builder.build()

    assert logs[1].columnar and not logs[2].columnar
    assert [(e.kind, e.occurred_at, e.occurred_at.tzinfo) for e in logs[2]] == [
        ("b", at(1), NEW_YORK),
        ("c", at(1.5), UTC),
        ("a", at(2), UTC),
    ]


@settings(max_examples=200, deadline=None)
@given(
    hours=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.000001, 24.0, 24.5, 1000.25]), max_size=12),
    kinds=st.lists(st.sampled_from(["login", "search", "page_view"]), min_size=12, max_size=12),
    cutoff=st.sampled_from([-1.0, 0.0, 1.0, 1.0000005, 24.5, 2000.0]),
    cutoff_zone=st.sampled_from([UTC, NEW_YORK, timezone(timedelta(hours=-3))]),
)
def test_the_columns_give_what_the_records_give(
    hours: list[float], kinds: list[str], cutoff: float, cutoff_zone: object
) -> None:
    as_of = at(cutoff).astimezone(cutoff_zone)  # type: ignore[arg-type]
    given_records = tuple(sorted((EventRecord(k, at(h)) for h, k in zip(hours, kinds)), key=lambda e: e.occurred_at))
    log = EventLog(given_records)
    history = CustomerHistory(CustomerRecord("c"), events=given_records)

    cut = bisect_right(given_records, as_of, key=lambda e: e.occurred_at)
    assert log.count_at_or_before(as_of) == cut and snapshot_at(history, as_of).events == given_records[:cut]
    ages = np.array([(as_of - e.occurred_at).total_seconds() for e in given_records], dtype=float)
    assert np.array_equal(log.seconds_before(as_of), ages), "the same floats, bit for bit"
    for kind in ("login", "search", "absent"):
        assert np.array_equal(log.kind_mask(kind), np.array([e.kind == kind for e in given_records], dtype=bool))
    assert log.kind_counts() == {k: n for k in log.kinds if (n := sum(e.kind == k for e in given_records))}
    assert log.times() == [e.occurred_at for e in given_records]


def test_a_snapshot_names_the_first_event_after_its_cutoff() -> None:
    from ml.snapshot import LookAheadError

    with pytest.raises(LookAheadError, match=r"event #3 has occurred_at=2026-03-01T02:00:00\+00:00"):
        Snapshot(
            CustomerRecord("c"), as_of=at(1), events=(EventRecord("a", at(0)), *records()[1:3], EventRecord("b", at(2)))
        )


def test_an_event_takes_a_few_bytes_not_a_record_and_a_datetime() -> None:
    customers, per_customer = 2_000, 100
    gc.collect()
    tracemalloc.start()
    builder = EventLogBuilder()
    for i in range(customers * per_customer):
        builder.add(i % customers, ("login", "search", "page_view")[i % 3], at(i / 7))
    logs = builder.build()
    del builder
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    per_event = held / (customers * per_customer)
    assert per_event < 20, f"{per_event:.1f} bytes per event held (a record with its datetime took about 112)"
    assert sum(map(len, logs.values())) == customers * per_customer
