"""What the models know about a customer: plain frozen records, free of any framework.

The Django side converts database rows into these records in one place
(``predictions.selectors.customer_histories``); everything in ``ml`` reads only these.
Times are timezone-aware ``datetime`` values (UTC in this project); amounts are floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

__all__ = [
    "PROFILE_FIELDS",
    "CustomerHistory",
    "CustomerRecord",
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
    events: tuple[EventRecord, ...] = ()
    messages: tuple[MessageRecord, ...] = ()
    profile_changes: tuple[ProfileChange, ...] = ()

    def __post_init__(self) -> None:
        # Sorting here means every consumer can rely on time order without re-sorting.
        object.__setattr__(self, "orders", tuple(sorted(self.orders, key=lambda o: o.placed_at)))
        object.__setattr__(self, "events", tuple(sorted(self.events, key=lambda e: e.occurred_at)))
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
        times = [rows[-1] for rows in (self._order_times(), self._event_times(), self._message_times()) if rows]
        return max(times) if times else None

    def _order_times(self) -> list[datetime]:
        return [o.placed_at for o in self.orders]

    def _event_times(self) -> list[datetime]:
        return [e.occurred_at for e in self.events]

    def _message_times(self) -> list[datetime]:
        return [m.sent_at for m in self.messages]
