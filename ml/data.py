"""What the models know about a customer: plain frozen records, free of any framework.

The Django side converts database rows into these records in one place
(``predictions.selectors.customer_histories``); everything in ``ml`` reads only these.
Times are timezone-aware ``datetime`` values (UTC in this project); amounts are floats.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from operator import attrgetter

import numpy as np

__all__ = [
    "PROFILE_FIELDS",
    "CustomerHistory",
    "CustomerRecord",
    "EventLog",
    "EventLogBuilder",
    "EventRecord",
    "NO_PROPERTIES",
    "MessageRecord",
    "OrderRecord",
    "ProfileChange",
    "profile_at",
]

# The customer's profile fields that are features and can change over time (an import or an edit that changes one
# records a :class:`ProfileChange`). ``signed_up_at`` is a fact, not a state, and the churn flag is a label.
PROFILE_FIELDS: tuple[str, ...] = ("segment", "country", "language", "attributes")


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A customer's profile.

    ``churned`` / ``churned_at`` are an explicit label carried by the data (null when unknown);
    they are labels, never features.
    """

    id: str
    signed_up_at: datetime | None = None
    segment: str = ""
    country: str = ""
    language: str = ""
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False, compare=True)
    churned: bool | None = None
    churned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order. ``status_changed_at``: when a returned, refunded or cancelled order got that status (None:
    unknown, the status holds from placement); before it the order was completed."""

    placed_at: datetime
    amount: float
    status: str = "completed"
    item_count: int = 1
    discount_amount: float = 0.0
    status_changed_at: datetime | None = None


class _NoProperties(Mapping[str, object]):
    """An empty, read-only mapping that pickles and copies as the one :data:`NO_PROPERTIES`."""

    __slots__ = ()

    def __getitem__(self, key: str) -> object:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __reduce__(self) -> str:
        return "NO_PROPERTIES"  # the module's own: pickling, copy and deepcopy give it back, not a new object

    def __repr__(self) -> str:
        return "{}"


# The properties of an event that has none: one shared, read-only empty mapping, not a dict per event (a store
# holds millions of events, and no model reads their properties).
NO_PROPERTIES: Mapping[str, object] = _NoProperties()


@dataclass(frozen=True, slots=True)
class EventRecord:
    kind: str
    occurred_at: datetime
    properties: Mapping[str, object] = field(default_factory=lambda: NO_PROPERTIES, hash=False, compare=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_OCCURRED_AT = attrgetter("occurred_at")


def epoch_microseconds(moment: datetime) -> int:
    """Whole microseconds since 1970-01-01: in UTC for an aware time, on its own wall clock for a naive one. Exact,
    unlike ``timestamp()`` (a float)."""
    return (moment - (_EPOCH if moment.tzinfo is not None else _NAIVE_EPOCH)) // _MICROSECOND


def _is_fixed(zone: tzinfo | None) -> bool:
    """A zone whose times compare and subtract as their instants do (or none: naive times on one wall clock).

    Python compares and subtracts two times of the same ``tzinfo`` on the wall clock; only for a fixed offset is that
    the order and difference of their instants (in a zone with daylight saving an hour repeats)."""
    return zone is None or isinstance(zone, timezone)


def _code_dtype(kinds: int) -> type[np.unsignedinteger]:
    return np.uint8 if kinds <= 2**8 else np.uint16 if kinds <= 2**16 else np.uint32


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


class EventLog(Sequence[EventRecord]):
    """A customer's events, oldest first, stored as columns: a read-only sequence of :class:`EventRecord`.

    A whole store holds millions of events, and a record per event (with its ``datetime``) took about 112 bytes each.
    Here an event is its time in whole microseconds since 1970 (UTC; a numpy ``int64``) and a one-byte code of its
    kind among a vocabulary of kinds (shared by every log read at once); properties are kept only when some event
    has any (:data:`NO_PROPERTIES` otherwise). Indexing and iterating give :class:`EventRecord` values equal to the
    ones stored, times in their zone; a slice with step 1 is a log too, a window of the same columns, not a copy.

    The columns serve the hot readers without a record per event: :meth:`count_at_or_before` (a snapshot's cut),
    :meth:`seconds_before` (ages), :meth:`kind_mask` and :meth:`kind_counts`.

    Equal to another log or a tuple holding equal records in the same order, as the tuple it replaces was. Logs whose
    events are not all of one fixed-offset zone (or all naive) keep each ``datetime`` as given and sort and compare
    as Python does (two times of one zone with daylight saving compare on the wall clock), without the columns'
    shortcuts; the database's times are all UTC.
    """

    __slots__ = ("_micros", "_times", "_codes", "_kinds", "_zone", "_properties", "_start", "_stop")

    _micros: np.ndarray | None  # int64 epoch microseconds of every event of the columns (None: see ``_times``)
    _times: tuple[datetime, ...] | None  # the times as given, where they are not all of one fixed zone
    _codes: np.ndarray  # each event's index in ``_kinds``
    _kinds: tuple[str, ...]
    _zone: tzinfo | None  # the zone of every time in ``_micros`` (None: naive times)
    _properties: tuple[Mapping[str, object], ...] | None  # None: every event has NO_PROPERTIES
    _start: int  # this log is rows [_start, _stop) of the columns
    _stop: int

    def __init__(self, records: Iterable[EventRecord] = ()) -> None:
        """A log of ``records``, sorted by time (stable: events at one time keep their order)."""
        records = list(records)
        kinds: dict[str, int] = {}
        codes = np.fromiter((kinds.setdefault(r.kind, len(kinds)) for r in records), np.int64, len(records))
        zone = records[0].occurred_at.tzinfo if records else UTC
        if _is_fixed(zone) and all(r.occurred_at.tzinfo is zone for r in records):
            micros = np.fromiter((epoch_microseconds(r.occurred_at) for r in records), np.int64, len(records))
            order = np.argsort(micros, kind="stable")
            micros, times = micros[order], None
        else:  # Python's own order: sorting naive and aware times together raises TypeError, as it did
            order = np.array(sorted(range(len(records)), key=lambda i: records[i].occurred_at), dtype=np.int64)
            micros, times = None, tuple(records[i].occurred_at for i in order.tolist())
        properties = None
        if any(r.properties is not NO_PROPERTIES for r in records):
            properties = tuple(records[i].properties for i in order.tolist())
        self._set(
            micros=micros,
            times=times,
            codes=codes[order].astype(_code_dtype(len(kinds))),
            kinds=tuple(kinds),
            zone=zone,
            properties=properties,
            start=0,
            stop=len(records),
        )

    def _set(
        self,
        micros: np.ndarray | None,
        times: tuple[datetime, ...] | None,
        codes: np.ndarray,
        kinds: tuple[str, ...],
        zone: tzinfo | None,
        properties: tuple[Mapping[str, object], ...] | None,
        *,
        start: int,
        stop: int,
    ) -> None:
        self._micros = None if micros is None else _read_only(micros)
        self._times = times
        self._codes = _read_only(codes)
        self._kinds = kinds
        self._zone = zone
        self._properties = properties
        self._start = start
        self._stop = stop

    @classmethod
    def _window(cls, log: EventLog, start: int, stop: int) -> EventLog:
        window = cls.__new__(cls)
        window._micros, window._times, window._codes = log._micros, log._times, log._codes
        window._kinds, window._zone, window._properties = log._kinds, log._zone, log._properties
        window._start, window._stop = start, stop
        return window

    # -- the sequence ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, index: int | slice) -> EventRecord | EventLog | tuple[EventRecord, ...]:  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:  # not a time-ordered window: records, as the tuple's slice gave
                return tuple(self)[index]
            if start == 0 and stop == len(self):
                return self
            return EventLog._window(self, self._start + start, self._start + max(start, stop))
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError("event index out of range")
        row = self._start + position
        return EventRecord(
            self._kinds[self._codes[row]],
            self._times[row] if self._times is not None else self._time(int(self._micros[row])),  # type: ignore[index]
            self._properties[row] if self._properties is not None else NO_PROPERTIES,
        )

    def __iter__(self) -> Iterator[EventRecord]:
        kinds, rows = self._kinds, slice(self._start, self._stop)
        times: Iterable[datetime] = (
            self._times[rows] if self._times is not None else map(self._time, self._micros[rows].tolist())  # type: ignore[index]
        )
        properties = self._properties[rows] if self._properties is not None else (NO_PROPERTIES,) * len(self)
        for code, occurred_at, props in zip(self._codes[rows].tolist(), times, properties, strict=True):
            yield EventRecord(kinds[code], occurred_at, props)

    def _time(self, micros: int) -> datetime:
        if self._zone is None:
            return _NAIVE_EPOCH + timedelta(microseconds=micros)
        moment = _EPOCH + timedelta(microseconds=micros)
        return moment if self._zone is UTC else moment.astimezone(self._zone)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventLog) and self._micros is not None and other._micros is not None:
            if len(self) != len(other):
                return False
            if len(self) and (self._zone is None) != (other._zone is None):
                return False  # a naive time never equals an aware one
            return (
                np.array_equal(self.times_us, other.times_us)
                and np.array_equal(self.kind_codes, other._codes_in(self._kinds))
                and self._same_properties(other)
            )
        if not isinstance(other, EventLog | tuple):
            return NotImplemented
        return len(self) == len(other) and all(mine == theirs for mine, theirs in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def _codes_in(self, kinds: tuple[str, ...]) -> np.ndarray:
        """This log's kind codes translated into the vocabulary ``kinds`` (-1 for a kind it lacks)."""
        if kinds is self._kinds or kinds == self._kinds:
            return self.kind_codes
        position = {kind: code for code, kind in enumerate(kinds)}
        table = np.array([position.get(kind, -1) for kind in self._kinds], dtype=np.int64)
        return table[self.kind_codes] if len(table) else np.zeros(0, dtype=np.int64)

    def _same_properties(self, other: EventLog) -> bool:
        if self._properties is None and other._properties is None:
            return True
        return all(mine.properties == theirs.properties for mine, theirs in zip(self, other, strict=True))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        rows = slice(self._start, self._stop)
        return (
            _event_log,
            (
                None if self._micros is None else self._micros[rows],
                None if self._times is None else self._times[rows],
                self._codes[rows],
                self._kinds,
                self._zone,
                None if self._properties is None else self._properties[rows],
            ),
        )

    def __copy__(self) -> EventLog:
        return self  # immutable, as a tuple's copy is the tuple

    def __repr__(self) -> str:
        shown = ", ".join(repr(record) for record in self[:3])
        more = f", ... {len(self) - 3} more" if len(self) > 3 else ""
        return f"EventLog([{shown}{more}])"

    # -- the columns -------------------------------------------------------------------------------------------------

    @property
    def columnar(self) -> bool:
        """Whether the times are columns (one fixed-offset zone or all naive): :attr:`times_us` is then sorted."""
        return self._micros is not None

    @property
    def times_us(self) -> np.ndarray:
        """Read-only int64 microseconds since 1970 of each event (UTC; wall clock for naive times), oldest first."""
        if self._micros is None:
            return np.array([epoch_microseconds(t) for t in self._times[self._start : self._stop]], dtype=np.int64)  # type: ignore[index]
        return self._micros[self._start : self._stop]

    @property
    def kind_codes(self) -> np.ndarray:
        """Read-only small-integer code of each event's kind, an index into :attr:`kinds`."""
        return self._codes[self._start : self._stop]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The vocabulary of kinds :attr:`kind_codes` index (it may hold kinds no event of this log has)."""
        return self._kinds

    def times(self) -> list[datetime]:
        """Each event's time, oldest first."""
        if self._times is not None:
            return list(self._times[self._start : self._stop])
        return list(map(self._time, self.times_us.tolist()))

    def _key(self, moment: datetime) -> int:
        """``moment`` on the scale of :attr:`times_us`; TypeError for a naive time against aware ones or the other
        way round, as comparing them raises."""
        if (moment.tzinfo is None) != (self._zone is None):
            raise TypeError("can't compare offset-naive and offset-aware datetimes")
        return epoch_microseconds(moment)

    def count_at_or_before(self, moment: datetime) -> int:
        """How many events happened at or before ``moment``: ``self[:n]`` are those events."""
        if not len(self):
            return 0
        if self._micros is None:
            return bisect_right(self, moment, key=_OCCURRED_AT)
        return int(np.searchsorted(self.times_us, self._key(moment), side="right"))

    def seconds_before(self, moment: datetime) -> np.ndarray:
        """``(moment - occurred_at).total_seconds()`` of each event, as floats (the same values)."""
        if self._micros is None:
            return np.array([(moment - t).total_seconds() for t in self.times()], dtype=float)
        if not len(self):
            return np.zeros(0, dtype=float)
        # int64 differences of whole microseconds, then one division each, as ``total_seconds`` divides them
        return (self._key(moment) - self.times_us) / 1_000_000

    def kind_mask(self, kind: str) -> np.ndarray:
        """Whether each event is of ``kind``."""
        if kind not in self._kinds:
            return np.zeros(len(self), dtype=bool)
        return self.kind_codes == self._kinds.index(kind)

    def kind_counts(self) -> dict[str, int]:
        """The number of events of each kind this log has."""
        counts = np.bincount(self.kind_codes, minlength=len(self._kinds)) if len(self) else ()
        return {kind: int(n) for kind, n in zip(self._kinds, counts, strict=False) if n}


def _event_log(*columns: object) -> EventLog:
    """An :class:`EventLog` of whole columns (``micros, times, codes, kinds, zone, properties``, as ``_set`` takes
    them): a pickled log, and the shared columns of :class:`EventLogBuilder`."""
    log = EventLog.__new__(EventLog)
    log._set(*columns, start=0, stop=len(columns[2]))  # type: ignore[arg-type]
    return log


NO_EVENTS = EventLog()

_UNSET = object()


class EventLogBuilder:
    """The event logs of many customers, from rows in any order: one set of columns for all of them, each customer's
    log a window of it, with no record or ``datetime`` kept per event.

    Rows of one customer at the same time keep the order they were added in (as sorting a tuple of records did).
    A customer with a time of another zone than the first row's (the database's are all UTC) gets a log built from
    records instead.
    """

    def __init__(self, *, with_properties: bool = False) -> None:
        self._owners = array("q")
        self._micros = array("q")
        self._codes = array("I")
        self._code_of: dict[str, int] = {}
        self._properties: list[Mapping[str, object]] | None = [] if with_properties else None
        self._zone: object = _UNSET
        self._epoch = _EPOCH
        self._odd_times: dict[int, datetime] = {}  # row -> its time, for rows not of the first row's zone

    def add(
        self, owner: int, kind: str, occurred_at: datetime, properties: Mapping[str, object] = NO_PROPERTIES
    ) -> None:
        """One event of the customer ``owner``."""
        if occurred_at.tzinfo is self._zone:
            micros = (occurred_at - self._epoch) // _MICROSECOND
        else:
            micros = self._odd(occurred_at)
        code = self._code_of.get(kind)
        if code is None:
            code = self._code_of.setdefault(kind, len(self._code_of))
        self._owners.append(owner)
        self._micros.append(micros)
        self._codes.append(code)
        if self._properties is not None:
            self._properties.append(properties)

    def _odd(self, occurred_at: datetime) -> int:
        zone = occurred_at.tzinfo
        if self._zone is _UNSET and _is_fixed(zone):
            self._zone, self._epoch = zone, _EPOCH if zone is not None else _NAIVE_EPOCH
            return (occurred_at - self._epoch) // _MICROSECOND
        self._odd_times[len(self._micros)] = occurred_at
        return 0

    def build(self) -> dict[int, EventLog]:
        """Each customer's log, by owner."""
        if not self._owners:
            return {}
        owners = np.frombuffer(self._owners, dtype=np.int64)
        order = np.lexsort((np.frombuffer(self._micros, dtype=np.int64), owners))  # by owner, then time; stable
        owners = owners[order]
        micros = np.frombuffer(self._micros, dtype=np.int64)[order]
        kinds = tuple(self._code_of)
        codes = np.frombuffer(self._codes, dtype=f"u{self._codes.itemsize}")[order].astype(_code_dtype(len(kinds)))
        properties = None
        if self._properties is not None and any(p is not NO_PROPERTIES for p in self._properties):
            properties = tuple(self._properties[row] for row in order.tolist())
        zone = self._zone if self._zone is not _UNSET else UTC
        shared = _event_log(micros, None, codes, kinds, zone, properties)  # each customer's log is a window of it
        bounds = np.flatnonzero(owners[1:] != owners[:-1]) + 1
        starts, stops = [0, *bounds.tolist()], [*bounds.tolist(), len(owners)]
        odd_owners = set()
        if self._odd_times:
            odd_owners = {int(owners[i]) for i in np.flatnonzero(np.isin(order, list(self._odd_times)))}
        logs: dict[int, EventLog] = {}
        for owner, start, stop in zip(owners[starts].tolist(), starts, stops, strict=True):
            if owner in odd_owners:
                logs[owner] = self._from_records(np.sort(order[start:stop]).tolist(), shared)
            else:
                logs[owner] = EventLog._window(shared, start, stop)
        return logs

    def _from_records(self, rows: list[int], shared: EventLog) -> EventLog:
        """The log of one customer with a time of another zone, from its rows in the order they were added."""
        kinds = tuple(self._code_of)
        return EventLog(
            EventRecord(
                kinds[self._codes[row]],
                self._odd_times[row] if row in self._odd_times else shared._time(self._micros[row]),
                self._properties[row] if self._properties is not None else NO_PROPERTIES,
            )
            for row in rows
        )


@dataclass(frozen=True, slots=True)
class MessageRecord:
    sent_at: datetime
    text: str
    channel: str = "chat"
    author_role: str = "customer"
    conversation_id: str = ""


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """A change of the customer's profile: until ``changed_at`` the fields named in ``previous`` held the values
    given there (the other profile fields did not change). ``previous["attributes"]`` is the whole attribute
    mapping as it was."""

    changed_at: datetime
    previous: Mapping[str, object] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.previous) - set(PROFILE_FIELDS))
        if unknown:
            raise ValueError(f"a profile change can only name {', '.join(PROFILE_FIELDS)}; got {', '.join(unknown)}")


def profile_at(customer: CustomerRecord, changes: tuple[ProfileChange, ...], as_of: datetime) -> CustomerRecord:
    """The profile as it stood at ``as_of``: ``customer`` holds the newest values, and every change made after
    ``as_of`` is undone, newest first. A change at exactly ``as_of`` counts as known then."""
    later = [change for change in changes if change.changed_at > as_of]
    if not later:
        return customer
    values: dict[str, object] = {}
    # Newest first, the older ones overwriting: each field ends with the value before its first later change (two
    # changes at one time are undone in the reverse of their order in ``changes``).
    for change in reversed(sorted(later, key=lambda change: change.changed_at)):
        values.update(change.previous)
    if "attributes" in values:
        values["attributes"] = dict(values["attributes"] or {})  # type: ignore[call-overload]
    return replace(customer, **values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """A customer with everything they did, each tuple sorted oldest first.

    ``customer`` holds the newest profile; ``profile_changes`` say what it was before each change, so that a
    snapshot at an earlier cutoff sees the profile of then (:func:`profile_at`)."""

    customer: CustomerRecord
    orders: tuple[OrderRecord, ...] = ()
    events: EventLog = NO_EVENTS  # any sequence of EventRecord given is stored as an EventLog
    messages: tuple[MessageRecord, ...] = ()
    profile_changes: tuple[ProfileChange, ...] = ()

    def __post_init__(self) -> None:
        # Sorting here means every consumer can rely on time order without re-sorting (an EventLog is sorted).
        object.__setattr__(self, "orders", tuple(sorted(self.orders, key=lambda o: o.placed_at)))
        if not isinstance(self.events, EventLog):
            object.__setattr__(self, "events", EventLog(self.events))
        # Messages sent at the same time (a date-only import puts a whole day at midnight) in an order of their own,
        # not the database's: the text, its cache key and which of them the token budget keeps depend on it.
        object.__setattr__(
            self,
            "messages",
            tuple(
                sorted(self.messages, key=lambda m: (m.sent_at, m.conversation_id, m.channel, m.author_role, m.text))
            ),
        )
        object.__setattr__(
            self, "profile_changes", tuple(sorted(self.profile_changes, key=lambda change: change.changed_at))
        )

    @property
    def last_timestamp(self) -> datetime | None:
        """The latest time of any order, event or message (None for an empty history)."""
        times = [self.orders[-1].placed_at] if self.orders else []
        if self.events:
            times.append(self.events[-1].occurred_at)
        if self.messages:
            times.append(self.messages[-1].sent_at)
        return max(times) if times else None
