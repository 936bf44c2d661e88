"""A pure-Python simulator of an online store: customers, orders, browsing events and support conversations.

Deterministic for a seed: customers are simulated in fixed blocks of ``BLOCK_SIZE``, each with its own
random generator spawned from the seed, so the first N customers are the same whatever the total.

The generating mechanism (documented in the README, "Demo data"):

* Each customer has hidden traits: a segment, a tenure, a price sensitivity ``s`` in [0, 1], an engagement
  ``e`` and a *service frustration* ``f`` (both standard normal). The churn logit is
  ``segment base + 2.0 (s - 0.5) + 1.3 f - 0.5 e - 0.3 log(1 + tenure years) + 0.4 [joined recently] + noise``
  and the hidden propensity is ``p = sigmoid(logit)``.
* A churner (drawn with probability ``p``) leaves on a day drawn uniformly from 3 weeks after sign-up up
  to ``future_days`` after the end of the history, so some churn is only visible in a later window. Its
  order rate decays linearly to zero over 30 to 120 days before that day; browsing decays earlier and
  slower and a trickle of visits remains.
* With ``incident_churn`` (off by default), some churners leave abruptly after a *service incident* instead
  (probability ``sigmoid(-0.4 + 0.8 f)`` per churner; 53% of the churners of the 2,000-customer seed-7 store):
  they order as usual until a few days before they leave (their decay lasts 3 to 14
  days), and 7 to 90 days before leaving they have a bad experience (a late delivery, a refund that goes
  wrong, a defect) that they complain about angrily and that is not resolved. Until they stop ordering,
  only the message shows it: frustrated customers who stay write angry complaints too, so the message
  raises the risk without deciding it.
* Orders: a Poisson process per day with a weekly cycle, a December peak, a Black Friday spike and a
  summer dip; amounts lognormal by segment; discounts more often for price-sensitive customers and in
  the sales; returns more frequent for high-``p`` customers. Some loyal customers pause for a while.
* Browsing: sessions of page views, searches, add-to-cart, logins and wishlist adds at a rate set by
  engagement; price-sensitive customers look at the deals pages.
* Conversations: their number grows with ``f``; topics (late delivery, refund trouble, price complaint,
  product defect, praise, question) are drawn from probabilities that depend on ``f``, ``s``, past returns
  and per-customer noise. Churners write more in the months before leaving and are more likely to
  threaten to leave. ``f`` raises churn but not the order rate, so messages carry signal that behaviour
  alone lacks, and that signal is partial: many complainers stay and many churners never write.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from customers.generator import names, text

BLOCK_SIZE = 250
ID_PREFIX = "demo-"
SUPPORTED_LANGUAGES = ("en", "zh")
INCIDENT_TOPICS = ("late_delivery", "refund_trouble", "product_defect")


@dataclass(frozen=True)
class SegmentProfile:
    share: float
    orders_per_month: float
    amount_median: float
    amount_sigma: float
    price_sensitivity_beta: tuple[float, float]
    churn_logit: float
    sessions_per_month: float


SEGMENTS: dict[str, SegmentProfile] = {
    "premium": SegmentProfile(0.15, 1.6, 110.0, 0.5, (2.0, 6.0), -1.7, 1.6),
    "regular": SegmentProfile(0.45, 0.8, 55.0, 0.55, (3.0, 3.0), -1.1, 1.2),
    "bargain_hunter": SegmentProfile(0.25, 0.6, 30.0, 0.5, (5.0, 2.0), -0.7, 1.6),
    "occasional": SegmentProfile(0.15, 0.25, 45.0, 0.6, (3.0, 3.0), -0.5, 0.6),
}


@dataclass(frozen=True)
class StoreOptions:
    """Options of the demo-store simulation.

    Attributes:
        customers: number of customers.
        days: length of the history in days; the history covers ``[end - days, end)``.
        seed: seed of every random draw: the same options give the same store.
        end: end of the history (exclusive), timezone-aware.
        languages: languages customers write in; with ``en`` and ``zh`` a quarter write Chinese.
        future_days: churners may leave up to this many days after ``end``, so that a backtest with a
            cutoff before ``end`` and a churn window after it finds both early and late churners.
        incident_churn: also simulate churners who leave abruptly over a service incident (module docstring).
            Off by default, so the default store (and every figure measured on it) stays the same.
    """

    customers: int
    days: int
    seed: int
    end: datetime
    languages: tuple[str, ...] = ("en",)
    future_days: int = 180
    incident_churn: bool = False

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError(f"customers must be zero or more, got {self.customers}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware")
        unknown = [language for language in self.languages if language not in SUPPORTED_LANGUAGES]
        if unknown or not self.languages:
            raise ValueError(f"languages must be a non-empty subset of {SUPPORTED_LANGUAGES}, got {self.languages}")

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    external_id: str
    email: str
    name: str
    segment: str
    country: str
    language: str
    signed_up_at: datetime
    attributes: dict[str, object]
    marketing_consent: bool
    opted_out_at: datetime | None


# Days after placement within which a non-completed order got its status (uniform between the bounds).
_STATUS_DELAY_DAYS = {"cancelled": (0.01, 2.0), "returned": (3.0, 30.0), "refunded": (2.0, 20.0)}


@dataclass(frozen=True, slots=True)
class OrderRecord:
    external_id: str
    customer_external_id: str
    placed_at: datetime
    amount: Decimal
    item_count: int
    status: str
    discount_amount: Decimal
    currency: str = "USD"
    status_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    external_id: str
    customer_external_id: str
    kind: str
    occurred_at: datetime
    properties: dict[str, object]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    external_id: str
    customer_external_id: str
    conversation_id: str
    channel: str
    author_role: str
    sent_at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class CustomerTruth:
    """What the simulator knows and the data must not say: for debugging and evaluation only."""

    external_id: str
    propensity: float
    service_frustration: float
    price_sensitivity: float
    engagement: float
    churn_at: datetime | None  # None: does not churn within the history plus future_days
    conversation_topics: tuple[tuple[datetime, str], ...]
    churn_cause: str = ""  # "fade", "incident", or "" for a customer who does not churn


@dataclass
class StoreBlock:
    customers: list[CustomerRecord] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    truths: list[CustomerTruth] = field(default_factory=list)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def _circular_bump(day_of_year: np.ndarray, centre: float, width: float) -> np.ndarray:
    distance = np.abs(day_of_year - centre)
    distance = np.minimum(distance, 365.25 - distance)
    return np.exp(-((distance / width) ** 2))


def seasonality(start: datetime, days: int) -> np.ndarray:
    """Multiplier of the order rate for each day: weekly cycle, December peak, Black Friday, summer dip."""
    dates = [start + timedelta(days=offset) for offset in range(days)]
    weekday = np.array([date.weekday() for date in dates])
    day_of_year = np.array([date.timetuple().tm_yday for date in dates], dtype=float)
    weekly = np.array([0.95, 0.9, 0.9, 0.95, 1.0, 1.05, 1.25])[weekday]
    yearly = (
        1.0
        + 0.7 * _circular_bump(day_of_year, 352.0, 14.0)
        + 0.9 * _circular_bump(day_of_year, 331.0, 3.0)
        - 0.15 * _circular_bump(day_of_year, 205.0, 30.0)
    )
    return weekly * yearly


# Evening-heavy hour-of-day profile for shopping and browsing.
_HOUR_WEIGHTS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2, 2.2, 2.3, 2.5, 2.8, 2.6, 2.4, 2.4, 2.5, 2.8, 3.2,
                          3.8, 4.2, 4.0, 3.0, 1.8])  # fmt: skip
_HOUR_CDF = np.cumsum(_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())


def _weighted_choice(rng: np.random.Generator, options: tuple | list, weights: tuple | list | np.ndarray) -> object:
    weights = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _pick(rng: np.random.Generator, options: list | tuple) -> object:
    return options[int(rng.integers(0, len(options)))]


class _BlockSimulator:
    """Simulates one block of customers with its own random generator."""

    def __init__(self, options: StoreOptions, first_index: int, count: int, season: np.ndarray) -> None:
        self.options = options
        self.first_index = first_index
        self.count = count
        self.season = season
        self.rng = np.random.default_rng(np.random.SeedSequence([options.seed, first_index // BLOCK_SIZE]))
        self.block = StoreBlock()
        self._start = options.start

    def at(self, day: float) -> datetime:
        """The moment ``day`` days after the start of the history, to the second."""
        return self._start + timedelta(seconds=round(day * 86400))

    def time_in_day(self, day: int) -> float:
        hour = int(np.searchsorted(_HOUR_CDF, self.rng.random(), side="right"))
        return day + (min(hour, 23) + self.rng.random()) / 24.0

    def run(self) -> StoreBlock:
        # Traits are drawn for a whole block even when fewer customers are wanted, so that the
        # first customers of a store do not change with its size.
        options, rng, n, days = self.options, self.rng, BLOCK_SIZE, self.options.days
        segment_names = list(SEGMENTS)
        profiles = [SEGMENTS[name] for name in segment_names]
        segment = rng.choice(len(profiles), size=n, p=[profile.share for profile in profiles])
        language_weights = np.array([names.LANGUAGE_WEIGHTS[language] for language in options.languages])
        language = rng.choice(len(options.languages), size=n, p=language_weights / language_weights.sum())

        joined_recently = rng.random(n) < 0.25
        signup_day = np.where(joined_recently, rng.uniform(0, days, n), -rng.exponential(700.0, n) - 1.0)
        tenure_years = (days - signup_day) / 365.25

        beta_a = np.array([profiles[s].price_sensitivity_beta[0] for s in segment])
        beta_b = np.array([profiles[s].price_sensitivity_beta[1] for s in segment])
        price_sensitivity = rng.beta(beta_a, beta_b)
        frustration = rng.standard_normal(n)
        engagement = rng.standard_normal(n)
        logit = (
            np.array([profiles[s].churn_logit for s in segment])
            + 2.0 * (price_sensitivity - 0.5)
            + 1.3 * frustration
            - 0.5 * engagement
            - 0.3 * np.log1p(tenure_years)
            + 0.4 * joined_recently
            + rng.normal(0.0, 0.6, n)
        )
        propensity = _sigmoid(logit)

        earliest_churn = np.maximum(signup_day, 0.0) + 21.0
        latest_churn = float(days + options.future_days)
        churns = (rng.random(n) < propensity) & (earliest_churn < latest_churn)
        churn_day = np.where(churns, rng.uniform(np.minimum(earliest_churn, latest_churn), latest_churn), np.inf)
        decay_days = rng.uniform(30.0, 120.0, n)
        incident_day = np.full(n, np.inf)
        if options.incident_churn:
            # Incident churners stop within days of leaving; their incident comes 7 to 90 days before they leave.
            incident = churns & (rng.random(n) < _sigmoid(-0.4 + 0.8 * frustration))
            decay_days = np.where(incident, rng.uniform(3.0, 14.0, n), decay_days)
            incident_day = np.where(incident, churn_day - rng.uniform(7.0, 90.0, n), np.inf)

        grid = np.arange(days, dtype=float)[None, :] + 0.5
        signed_up = grid >= np.ceil(signup_day)[:, None]
        order_activity = np.clip((churn_day[:, None] - grid) / decay_days[:, None], 0.0, 1.0)
        browse_activity = 0.03 + 0.97 * np.clip((churn_day[:, None] - grid) / (1.6 * decay_days[:, None]), 0.0, 1.0)
        pauses = rng.random(n) < 0.2
        pause_start = rng.uniform(-60.0, days, n)
        pause_length = rng.uniform(30.0, 90.0, n)
        in_pause = pauses[:, None] & (grid >= pause_start[:, None]) & (grid < (pause_start + pause_length)[:, None])
        pause_factor = np.where(in_pause, 0.15, 1.0)

        order_base = (
            np.array([profiles[s].orders_per_month for s in segment])
            / 30.0
            * np.exp(0.35 * engagement)
            * rng.lognormal(0.0, 0.4, n)
        )
        order_rate = order_base[:, None] * self.season[None, :] * order_activity * signed_up * pause_factor
        order_counts = rng.poisson(order_rate)
        session_base = np.array([profiles[s].sessions_per_month for s in segment]) / 30.0 * np.exp(0.5 * engagement)
        session_rate = (
            session_base[:, None] * (0.5 + 0.5 * self.season[None, :]) * browse_activity * signed_up * pause_factor
        )
        session_counts = rng.poisson(session_rate)

        for row in range(self.count):
            self.simulate_customer(
                row=row,
                segment=segment_names[segment[row]],
                language=options.languages[language[row]],
                signup_day=float(signup_day[row]),
                joined_recently=bool(joined_recently[row]),
                price_sensitivity=float(price_sensitivity[row]),
                frustration=float(frustration[row]),
                engagement=float(engagement[row]),
                propensity=float(propensity[row]),
                churn_day=float(churn_day[row]),
                incident_day=float(incident_day[row]),
                order_days=np.repeat(np.arange(days), order_counts[row]),
                session_days=np.repeat(np.arange(days), session_counts[row]),
            )
        return self.block

    def simulate_customer(
        self,
        *,
        row: int,
        segment: str,
        language: str,
        signup_day: float,
        joined_recently: bool,
        price_sensitivity: float,
        frustration: float,
        engagement: float,
        propensity: float,
        churn_day: float,
        incident_day: float,
        order_days: np.ndarray,
        session_days: np.ndarray,
    ) -> None:
        rng, options = self.rng, self.options
        index = self.first_index + row
        customer_id = f"{ID_PREFIX}c{index:07d}"
        profile = SEGMENTS[segment]

        # Identity and attributes.
        if language == "zh":
            surname, surname_pinyin = _pick(rng, names.SURNAMES_ZH)
            given, given_pinyin = _pick(rng, names.GIVEN_NAMES_ZH)
            name = first_name = f"{surname}{given}"
            handle = f"{given_pinyin}.{surname_pinyin}"
        else:
            first_name, last = _pick(rng, names.FIRST_NAMES_EN), _pick(rng, names.LAST_NAMES_EN)
            name = f"{first_name} {last}"
            handle = f"{first_name}.{last}".lower().replace(" ", "").replace("'", "").replace("ü", "ue")
        email = f"{handle}{index}@{_pick(rng, names.EMAIL_DOMAINS)}"
        countries = names.COUNTRIES[language]
        country = _weighted_choice(rng, [code for code, _ in countries], [weight for _, weight in countries])
        category = _weighted_choice(rng, names.CATEGORIES, names.CATEGORY_WEIGHTS)
        device = _weighted_choice(rng, names.DEVICES, names.DEVICE_WEIGHTS[language])
        tenure_years = max(0.0, -signup_day / 365.25)
        tier_score = list(SEGMENTS).index(segment) * -0.6 + min(tenure_years, 4.0) * 0.5 + rng.normal(0.0, 0.5)
        tier = names.LOYALTY_TIERS[int(np.clip(np.floor(tier_score + 1.6), 0, 3))]
        marketing_consent = bool(rng.random() < 0.85)
        first_day = max(signup_day, 0.0)
        last_day = min(churn_day, float(options.days))
        opted_out_at = None
        if rng.random() < 0.04 + 0.1 * propensity and last_day > first_day:
            opted_out_at = self.at(rng.uniform(first_day, last_day))
        attributes: dict[str, object] = {
            "loyalty_tier": tier,
            "preferred_category": category,
            "device": device,
            "newsletter": bool(marketing_consent and rng.random() < 0.7),
            "acquisition_channel": _weighted_choice(rng, names.ACQUISITION_CHANNELS, names.ACQUISITION_WEIGHTS),
        }
        signed_up_at = self.at(signup_day)
        self.block.customers.append(
            CustomerRecord(
                external_id=customer_id,
                email=email,
                name=name,
                segment=segment,
                country=country,
                language=language,
                signed_up_at=signed_up_at,
                attributes=attributes,
                marketing_consent=marketing_consent,
                opted_out_at=opted_out_at,
            )
        )

        # Orders (a welcome order for most recent sign-ups).
        order_times = [self.time_in_day(int(day)) for day in order_days]
        if joined_recently and rng.random() < 0.6:
            order_times.append(signup_day + rng.uniform(0.02, 0.08))
        order_times = sorted(time for time in order_times if time < options.days)
        return_probability = 0.03 + 0.18 * propensity
        discount_probability = 0.08 + 0.45 * price_sensitivity
        order_numbers: list[str] = []
        returned_orders = 0
        for number, day in enumerate(order_times):
            placed_at = self.at(day)
            in_sale = placed_at.month in (11, 12)
            amount = rng.lognormal(math.log(profile.amount_median), profile.amount_sigma) * (1.15 if in_sale else 1.0)
            roll = rng.random()
            if roll < 0.02:
                status = "cancelled"
            elif roll < 0.02 + return_probability:
                status = "returned"
                returned_orders += 1
            elif roll < 0.025 + return_probability:
                status = "refunded"
            else:
                status = "completed"
            discount = 0.0
            if rng.random() < discount_probability + (0.2 if in_sale else 0.0):
                discount = amount * rng.uniform(0.05, 0.3)
            order_id = f"{ID_PREFIX}o{index:07d}-{number:04d}"
            order_numbers.append(f"#{index:05d}{number:03d}")
            changed_at = None
            if status != "completed":
                # A cancellation comes within two days, a return or refund days to weeks later (never after the
                # end of the history). From the order's id, not the generator's stream: the data stays the same.
                low, high = _STATUS_DELAY_DAYS[status]
                fraction = (zlib.crc32(order_id.encode()) % 10_000) / 10_000
                changed_at = min(
                    self.at(day + low + (high - low) * fraction), self.at(options.days) - timedelta(seconds=1)
                )
                changed_at = max(changed_at, placed_at)
            self.block.orders.append(
                OrderRecord(
                    external_id=order_id,
                    customer_external_id=customer_id,
                    placed_at=placed_at,
                    amount=Decimal(f"{amount:.2f}"),
                    item_count=1 + int(rng.poisson(0.3 + amount / 80.0)),
                    status=status,
                    discount_amount=Decimal(f"{discount:.2f}"),
                    status_changed_at=changed_at,
                )
            )
            self.session(customer_id, f"{index:07d}-p{number:04d}", max(day - rng.uniform(0.002, 0.015), signup_day), device,
                         category, price_sensitivity, purchase=True)  # fmt: skip

        for number, day in enumerate(session_days):
            self.session(customer_id, f"{index:07d}-b{number:05d}", self.time_in_day(int(day)), device, category,
                         price_sensitivity, purchase=False)  # fmt: skip

        topics = self.conversations(
            customer_id=customer_id,
            index=index,
            language=language,
            first_name=first_name,
            category=category,
            first_day=first_day,
            last_day=last_day,
            churn_day=churn_day,
            incident_day=incident_day,
            frustration=frustration,
            price_sensitivity=price_sensitivity,
            returned_orders=returned_orders,
            order_numbers=order_numbers,
        )
        self.block.truths.append(
            CustomerTruth(
                external_id=customer_id,
                propensity=propensity,
                service_frustration=frustration,
                price_sensitivity=price_sensitivity,
                engagement=engagement,
                churn_at=self.at(churn_day) if math.isfinite(churn_day) else None,
                conversation_topics=tuple(topics),
                churn_cause=("incident" if math.isfinite(incident_day) else "fade") if math.isfinite(churn_day) else "",
            )
        )

    def session(
        self,
        customer_id: str,
        session_id: str,
        day: float,
        device: str,
        category: str,
        price_sensitivity: float,
        *,
        purchase: bool,
    ) -> None:
        rng = self.rng
        if day < 0 or day >= self.options.days:
            return
        if rng.random() < 0.15:
            device = _pick(rng, names.DEVICES)
        kinds: list[str] = []
        if rng.random() < (0.6 if device in ("ios", "android") else 0.3):
            kinds.append("login")
        kinds.extend(["page_view"] * (1 + int(rng.poisson(1.2))))
        if rng.random() < 0.45:
            kinds.insert(len(kinds) // 2 + 1, "search")
        if rng.random() < 0.05 + 0.15 * price_sensitivity:
            kinds.append("wishlist")
        if purchase or rng.random() < 0.15:
            kinds.append("add_to_cart")
        moment = day
        deals_probability = 0.05 + 0.45 * price_sensitivity
        for position, kind in enumerate(kinds):
            browsed = category if rng.random() < 0.6 else _pick(rng, names.CATEGORIES)
            properties: dict[str, object] = {"session": session_id, "device": device}
            if kind == "page_view":
                properties["page"] = (
                    "deals"
                    if rng.random() < deals_probability
                    else _pick(rng, ("home", "product", "product", "category"))
                )
                properties["category"] = browsed
            elif kind == "search":
                properties["query"] = _pick(rng, text.PRODUCTS[browsed])[0]
            elif kind in ("add_to_cart", "wishlist"):
                properties["category"] = browsed
            self.block.events.append(
                EventRecord(
                    external_id=f"{ID_PREFIX}e{session_id}-{position:02d}",
                    customer_external_id=customer_id,
                    kind=kind,
                    occurred_at=self.at(moment),
                    properties=properties,
                )
            )
            moment += rng.uniform(10.0, 240.0) / 86400.0
            if moment >= self.options.days:
                break

    def conversations(
        self,
        *,
        customer_id: str,
        index: int,
        language: str,
        first_name: str,
        category: str,
        first_day: float,
        last_day: float,
        churn_day: float,
        incident_day: float,
        frustration: float,
        price_sensitivity: float,
        returned_orders: int,
        order_numbers: list[str],
    ) -> list[tuple[datetime, str]]:
        rng = self.rng
        if last_day <= first_day:
            return []
        active_years = (last_day - first_day) / 365.25
        count = int(rng.poisson(active_years * 0.6 * math.exp(0.75 * frustration + 0.4 * price_sensitivity)))
        days: list[tuple[float, str]] = []
        for _ in range(count):
            # Churners' ordinary conversations also lean towards the months before they leave.
            if math.isfinite(churn_day) and rng.random() < 0.55 and churn_day - 120.0 < last_day:
                days.append((rng.uniform(max(first_day, churn_day - 120.0), last_day), "ordinary"))
            else:
                days.append((rng.uniform(first_day, last_day), "ordinary"))
        # And frustrated churners complain once more on their way out.
        if math.isfinite(churn_day) and max(first_day, churn_day - 90.0) < last_day:
            for _ in range(int(rng.poisson(0.4 + 0.6 * max(frustration, 0.0)))):
                days.append((rng.uniform(max(first_day, churn_day - 90.0), last_day), "leaving"))
        # The incident an incident churner leaves over (unless it falls outside the history).
        if first_day <= incident_day < last_day:
            days.append((incident_day, "incident"))
        if not days:
            return []
        days.sort()
        topic_logits = np.array(
            [
                0.0 + 0.9 * frustration,  # late_delivery
                -0.7 + 0.8 * frustration + 0.7 * min(returned_orders, 2),  # refund_trouble
                -0.6 + 2.5 * (price_sensitivity - 0.5) + 0.3 * frustration,  # price_complaint
                -0.6 + 0.5 * frustration + 0.3 * min(returned_orders, 2),  # product_defect
                0.2 - 1.0 * frustration,  # praise
                0.4,  # question
            ]
        ) + rng.normal(0.0, 0.7, len(text.TOPICS))
        leaving_shift = np.array([0.3, 0.3, 0.3, 0.3, -2.0, -0.8])
        agent = _pick(rng, names.AGENT_NAMES[language])
        topics: list[tuple[datetime, str]] = []
        for number, (day, kind) in enumerate(days):
            logits = topic_logits + leaving_shift if kind == "leaving" else topic_logits
            topic_p = np.exp(logits - logits.max())
            topic_p /= topic_p.sum()
            near_churn = math.isfinite(churn_day) and 0.0 <= churn_day - day <= 60.0
            if kind == "incident":
                topic = _pick(rng, INCIDENT_TOPICS)
                strong = True
            else:
                topic = text.TOPICS[int(rng.choice(len(text.TOPICS), p=topic_p))]
                strong = rng.random() < _sigmoid(-1.8 + 1.2 * frustration + 1.3 * near_churn)
            conversation_id = f"{ID_PREFIX}v{index:07d}-{number:03d}"
            values = {
                "order": _pick(rng, order_numbers) if order_numbers else f"#{index:05d}",
                "days": int(rng.integers(3, 21)),
                "product": _pick(rng, text.PRODUCTS[category])[0 if language == "en" else 1],
                "amount": int(rng.integers(5, 60)),
                "name": first_name,
            }
            start = self.time_in_day(int(day))
            if start < first_day:  # on the day of sign-up, but before it
                start = first_day + rng.uniform(0.01, 0.05)
            self.write_conversation(
                customer_id,
                conversation_id,
                language,
                topic,
                strong,
                frustration,
                values,
                start,
                agent,
                incident=kind == "incident",
            )
            topics.append((self.at(start), topic))
        return topics

    def write_conversation(
        self,
        customer_id: str,
        conversation_id: str,
        language: str,
        topic: str,
        strong: bool,
        frustration: float,
        values: dict[str, object],
        start: float,
        agent: str,
        *,
        incident: bool = False,
    ) -> None:
        """One conversation; an ``incident`` is a written complaint (chat or email) that stays unresolved."""
        rng = self.rng
        complaint = topic in text.COMPLAINT_TOPICS
        mood = "complaint" if complaint else ("praise" if topic == "praise" else "question")
        if incident:
            channel = _weighted_choice(rng, ("chat", "email"), (0.6, 0.4))
        else:
            channel = _weighted_choice(rng, ("chat", "email", "phone", "review"), (0.45, 0.3, 0.1, 0.15))
        messages: list[tuple[float, str, str]] = []
        choice = int(rng.integers(0, len(text.OPENERS[language][topic])))
        opener = text.fill(text.OPENERS[language][topic][choice], **values)
        if complaint:
            closer = _pick(rng, text.CLOSERS[language]["strong" if strong else "mild"])
        elif topic == "praise":
            closer = _pick(rng, text.CLOSERS[language]["praise"])
        else:
            closer = ""
        separator = "" if language == "zh" else " "
        customer_text = text.add_noise(f"{opener}{separator}{closer}".strip(), language=language, mood=mood, rng=rng)
        if channel == "review":
            if complaint:
                rating = 1 if strong else int(rng.integers(1, 4))
            elif topic == "praise":
                rating = int(rng.integers(4, 6))
            else:
                rating = int(rng.integers(3, 6))
            messages.append((start, "customer", f"{text.stars(rating, language)} {customer_text}"))
        elif channel == "phone":
            note = text.PHONE_TEMPLATE[language].format(
                topic=text.fill(text.PHONE_TOPIC[language][topic], **values),
                mood=_pick(rng, text.PHONE_MOOD[language]["strong" if strong and complaint else "mild"]),
                action=_pick(rng, text.PHONE_ACTION[language]),
            )
            messages.append((start + rng.uniform(0.005, 0.03), "agent", f"{note} ({agent})"))
        else:
            reply_delay = rng.uniform(0.001, 0.01) if channel == "chat" else rng.uniform(0.08, 1.2)
            messages.append((start, "customer", customer_text))
            replies = text.AGENT_REPLIES[language][topic]
            # A question gets its own answer; other topics any fitting reply.
            reply = text.fill(replies[choice] if topic == "question" else _pick(rng, replies), **values)
            messages.append((start + reply_delay, "agent", reply))
            if incident or (complaint and rng.random() < 0.6):
                resolved = not incident and rng.random() < _sigmoid(0.8 - 0.9 * frustration - (1.0 if strong else 0.0))
                follow_up = _pick(rng, text.FOLLOW_UPS[language]["resolved" if resolved else "unresolved"])
                messages.append(
                    (
                        start + 2 * reply_delay + rng.uniform(0.0005, 0.005),
                        "customer",
                        text.add_noise(follow_up, language=language, mood="complaint", rng=rng),
                    )
                )
        for position, (moment, role, body) in enumerate(messages):
            if moment >= self.options.days:
                break
            self.block.messages.append(
                MessageRecord(
                    external_id=f"{conversation_id}-{position}".replace(f"{ID_PREFIX}v", f"{ID_PREFIX}m", 1),
                    customer_external_id=customer_id,
                    conversation_id=conversation_id,
                    channel=channel,
                    author_role=role,
                    sent_at=self.at(moment),
                    text=body,
                )
            )


def simulate_store(options: StoreOptions) -> Iterator[StoreBlock]:
    """Yield the store block by block (``BLOCK_SIZE`` customers each), with everything those customers did.

    Timestamps are timezone-aware, inside ``[options.start, options.end)``; records of one customer
    come in time order.
    """
    season = seasonality(options.start, options.days)
    for first_index in range(0, options.customers, BLOCK_SIZE):
        count = min(BLOCK_SIZE, options.customers - first_index)
        yield _BlockSimulator(options, first_index + 1, count, season).run()


def default_end() -> datetime:
    """Midnight UTC at the start of today: the history ends where today begins."""
    now = datetime.now(tz=UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
