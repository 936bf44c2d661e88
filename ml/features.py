"""Tabular features with readable names, from snapshots or from a profile file.

Staff see these names in explanations, so each one says what it measures (``orders_30d``: orders in
the 30 days up to the cutoff); :data:`FEATURE_DESCRIPTIONS` has a sentence for each. Numeric features
are floats with NaN where a value does not exist (no order yet: no ``days_since_last_order``);
categorical ones are strings with None when missing. Models handle both (``ml.baselines``).
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from ml.snapshot import Snapshot

__all__ = [
    "FEATURE_DESCRIPTIONS",
    "FeatureBuilder",
    "FeatureConfig",
    "ProfileData",
    "ProfileError",
    "column_kinds",
    "describe_feature",
    "load_profile_file",
    "prepare_profile",
]

RETURN_STATUSES = frozenset({"returned", "refunded"})
CANCELLED_STATUSES = frozenset({"cancelled"})
SECONDS_PER_DAY = 86400.0

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "tenure_days": "days since the customer signed up (or first ordered)",
    "days_since_last_order": "days since the last order",
    "days_since_last_activity": "days since the last order or browsing event",
    "days_since_first_order": "days since the first order",
    "orders_total": "orders placed, all time",
    "spend_total": "money spent on completed orders, all time",
    "avg_order_value": "average value of a completed order",
    "items_per_order": "average number of items per order",
    "returns_total": "orders returned or refunded, all time",
    "return_rate": "share of orders returned or refunded",
    "discounted_orders_share": "share of orders that used a discount",
    "discount_total": "total discount received",
    "orders_trend_30d": "orders in the last 30 days against the 30 days before (ratio, +1 smoothed)",
    "spend_trend_30d": "spend in the last 30 days against the 30 days before (ratio, +1 smoothed)",
    "events_trend_30d": "browsing events in the last 30 days against the 30 days before (ratio, +1 smoothed)",
    "days_since_last_event": "days since the last browsing or app event",
    "support_contacts_total": "support conversations the customer wrote in, all time",
    "days_since_last_support_contact": "days since the customer last wrote to support",
    "customer_messages_total": "messages the customer wrote to support, all time",
    "segment": "customer segment",
    "country": "country",
}


def describe_feature(name: str) -> str:
    """A plain-words description of a feature name, for explanations shown to staff."""
    if name in FEATURE_DESCRIPTIONS:
        return FEATURE_DESCRIPTIONS[name]
    match = re.fullmatch(r"(orders|spend|returns|events|support_contacts)_(\d+)d", name)
    if match:
        what = {
            "orders": "orders",
            "spend": "money spent",
            "returns": "returns and refunds",
            "events": "browsing events",
            "support_contacts": "support conversations",
        }[match.group(1)]
        return f"{what} in the last {match.group(2)} days"
    match = re.fullmatch(r"event_(.+)_(\d+)d", name)
    if match:
        return f"'{match.group(1)}' events in the last {match.group(2)} days"
    if name.startswith("attr_"):
        return f"customer attribute '{name[5:]}'"
    return name.replace("_", " ")


@dataclass(frozen=True)
class FeatureConfig:
    """Options of :class:`FeatureBuilder`.

    Attributes:
        windows_days: the look-back windows for counts and amounts.
        event_kinds: event kinds counted on their own (over 30 days); others count only in totals.
        support_windows_days: windows for support contacts.
        include_attributes: add ``attr_<name>`` columns from ``Customer.attributes``.
        attribute_names: ``"verbatim"``: a column is ``attr_`` and the attribute's name as it is, so two attributes
            never share a column and staff read ``契約`` or ``plan type`` in explanations. ``"ascii"``: every run
            of characters other than ASCII letters, digits and ``_`` became one ``_`` (``plan type`` and
            ``plan-type`` shared ``attr_plan_type``, and names in other scripts ``attr_unnamed``): the naming of
            models trained before the option existed, which their saved configuration keeps.
    """

    windows_days: tuple[int, ...] = (7, 30, 90, 365)
    event_kinds: tuple[str, ...] = ("page_view", "search", "add_to_cart", "login", "wishlist")
    support_windows_days: tuple[int, ...] = (30, 90, 365)
    include_attributes: bool = True
    attribute_names: str = "verbatim"

    def __post_init__(self) -> None:
        if self.attribute_names not in ("verbatim", "ascii"):
            raise ValueError(f"attribute_names must be 'verbatim' or 'ascii', not {self.attribute_names!r}")


@dataclass
class FeatureBuilder:
    """Turns snapshots into a feature frame (one row per snapshot, index = customer id)."""

    config: FeatureConfig = field(default_factory=FeatureConfig)

    def build(
        self,
        snapshots: Sequence[Snapshot],
        *,
        progress: str | None = None,
        attribute_kinds: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """Features of each snapshot. Raises ``LookAheadError`` if a snapshot holds a row after its cutoff.

        Args:
            snapshots: the customers at their cutoffs.
            progress: when given, a tqdm bar with this description.
            attribute_kinds: the ``attr_*`` columns and their kinds (``"numeric"`` or ``"categorical"``, as
                :func:`column_kinds` gives them) recorded when a model was trained. Each value is then converted
                to its column's kind on its own, so a customer's features never depend on the other customers of
                the batch; columns absent from the mapping are dropped and missing ones added as missing. Without
                it (training) each column's kind is inferred from the batch: numeric when every value is a number.
        """
        from tqdm.auto import tqdm

        # The numeric features go into one float array as each row is built; only the few other values (segment,
        # country, attributes) are kept per row. A dict of ~50 boxed floats per snapshot, all held until the frame
        # was made, was most of a training's peak memory (75,000 snapshots: 430 MiB for a 52 MiB frame).
        numeric = self.numeric_names()
        numbers = np.empty((len(snapshots), len(numeric)), dtype=float)
        rows: list[dict[str, object]] = []
        for i, snapshot in enumerate(tqdm(snapshots, desc=progress, disable=progress is None, leave=False)):
            row = self._row(snapshot)
            numbers[i] = [row.pop(name) for name in numeric]
            rows.append(dict(row))  # a fresh dict: popping keys leaves a dict its full size
        frame = pd.DataFrame.from_records(rows, index=[s.customer.id for s in snapshots])
        if not rows and attribute_kinds is None:
            return frame
        if rows:
            frame = pd.concat([pd.DataFrame(numbers, index=frame.index, columns=numeric), frame], axis=1)
        frame.index.name = "customer_id"
        ordered = numeric + ["segment", "country"]
        if attribute_kinds is None:
            found = sorted(c for c in frame.columns if c.startswith("attr_"))
            kinds = {c: "numeric" if frame[c].map(_is_number_or_missing).all() else "categorical" for c in found}
        else:
            kinds = {c: k for c, k in attribute_kinds.items() if c.startswith("attr_")}
        for column, kind in kinds.items():
            values = frame[column] if column in frame.columns else pd.Series([None] * len(frame), index=frame.index)
            if kind == "numeric":
                frame[column] = values.map(_as_number).astype(float)
            else:
                frame[column] = values.map(_as_category).astype(object)
        return frame.reindex(columns=ordered + list(kinds))

    def numeric_names(self) -> list[str]:
        c = self.config
        names = [
            "tenure_days",
            "days_since_last_order",
            "days_since_last_activity",
            "days_since_first_order",
            "orders_total",
            "spend_total",
            "avg_order_value",
            "items_per_order",
            "returns_total",
            "return_rate",
            "discounted_orders_share",
            "discount_total",
        ]
        for w in c.windows_days:
            names += [f"orders_{w}d", f"spend_{w}d", f"returns_{w}d", f"events_{w}d"]
        names += ["orders_trend_30d", "spend_trend_30d", "events_trend_30d", "days_since_last_event"]
        names += [f"event_{kind}_30d" for kind in c.event_kinds]
        names += [f"support_contacts_{w}d" for w in c.support_windows_days]
        names += ["support_contacts_total", "days_since_last_support_contact", "customer_messages_total"]
        return names

    def _row(self, snapshot: Snapshot) -> dict[str, object]:
        snapshot.assert_point_in_time()
        c = self.config
        as_of = snapshot.as_of

        def age(times: Iterable[datetime]) -> np.ndarray:
            return np.array([(as_of - t).total_seconds() / SECONDS_PER_DAY for t in times], dtype=float)

        orders = [o for o in snapshot.orders if o.status not in CANCELLED_STATUSES]
        order_age = age(o.placed_at for o in orders)
        amounts = np.array([o.amount for o in orders], dtype=float)
        completed = np.array([o.status not in RETURN_STATUSES for o in orders], dtype=bool)
        returned = ~completed
        spent = np.where(completed, amounts, 0.0)
        discounted = np.array([o.discount_amount > 0 for o in orders], dtype=bool)
        items = np.array([o.item_count for o in orders], dtype=float)
        event_age = snapshot.events.seconds_before(as_of) / SECONDS_PER_DAY  # the values ``age`` gives, from columns
        customer_messages = [m for m in snapshot.messages if m.author_role == "customer"]
        contact_first_age: dict[str, float] = {}
        for m in customer_messages:
            key = m.conversation_id or f"{m.channel}:{m.sent_at.isoformat()}"
            contact_first_age[key] = max(contact_first_age.get(key, -math.inf), (as_of - m.sent_at).total_seconds())
        contact_age = np.array(sorted(contact_first_age.values()), dtype=float) / SECONDS_PER_DAY

        n_orders = float(len(orders))
        signed_up = snapshot.customer.signed_up_at
        first_order_age = float(order_age.max()) if len(order_age) else math.nan
        tenure = (as_of - signed_up).total_seconds() / SECONDS_PER_DAY if signed_up is not None else first_order_age
        row: dict[str, object] = {
            "tenure_days": tenure,
            "days_since_last_order": float(order_age.min()) if len(order_age) else math.nan,
            "days_since_first_order": first_order_age,
            "orders_total": n_orders,
            "spend_total": float(spent.sum()),
            "avg_order_value": float(spent[completed].mean()) if completed.any() else math.nan,
            "items_per_order": float(items.mean()) if len(items) else math.nan,
            "returns_total": float(returned.sum()),
            "return_rate": float(returned.mean()) if len(orders) else math.nan,
            "discounted_orders_share": float(discounted.mean()) if len(orders) else math.nan,
            "discount_total": float(sum(o.discount_amount for o in orders)),
        }
        for w in c.windows_days:
            in_window = order_age <= w
            row[f"orders_{w}d"] = float(in_window.sum())
            row[f"spend_{w}d"] = float(spent[in_window].sum())
            row[f"returns_{w}d"] = float((returned & in_window).sum())
            row[f"events_{w}d"] = float((event_age <= w).sum())
        last_orders, prior_orders = _two_windows(order_age, 30)
        row["orders_trend_30d"] = (last_orders.sum() + 1.0) / (prior_orders.sum() + 1.0)
        row["spend_trend_30d"] = (float(spent[order_age <= 30].sum()) + 1.0) / (
            float(spent[(order_age > 30) & (order_age <= 60)].sum()) + 1.0
        )
        last_events, prior_events = _two_windows(event_age, 30)
        row["events_trend_30d"] = (last_events.sum() + 1.0) / (prior_events.sum() + 1.0)
        row["days_since_last_event"] = float(event_age.min()) if len(event_age) else math.nan
        activity_age = np.concatenate([order_age, event_age])
        row["days_since_last_activity"] = float(activity_age.min()) if len(activity_age) else math.nan
        for kind in c.event_kinds:
            row[f"event_{kind}_30d"] = (
                float((snapshot.events.kind_mask(kind) & (event_age <= 30)).sum()) if len(event_age) else 0.0
            )
        for w in c.support_windows_days:
            row[f"support_contacts_{w}d"] = float((contact_age <= w).sum())
        row["support_contacts_total"] = float(len(contact_age))
        written_age = age(m.sent_at for m in customer_messages)
        row["days_since_last_support_contact"] = float(written_age.min()) if len(written_age) else math.nan
        row["customer_messages_total"] = float(len(customer_messages))
        row["segment"] = snapshot.customer.segment or None
        row["country"] = snapshot.customer.country or None
        if c.include_attributes:
            for name, value in sorted(snapshot.customer.attributes.items()):
                row[f"attr_{name if c.attribute_names == 'verbatim' else _ascii_name(name)}"] = value
        return row


def _two_windows(ages: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
    return (ages <= days).astype(float), ((ages > days) & (ages <= 2 * days)).astype(float)


def _ascii_name(name: str) -> str:
    """The attribute naming of models trained before ``FeatureConfig.attribute_names`` (kept for them)."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or "unnamed"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


# What exports write for a missing number ("N/A", "-", "unknown", Excel's "#N/A"), compared in lower case without
# spaces: a column of numbers with some of these is numeric, they read as missing (a category of every amount, else).
_MISSING_NUMBER_TEXT = frozenset({"n/a", "na", "#n/a", "nan", "null", "none", "-", "--", "?", "unknown", "missing"})


def _is_number_or_missing(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_NUMBER_TEXT or _missing(value)
    return _missing(value) or isinstance(value, int | float)


def _as_number(value: object) -> float:
    """A raw attribute value as a float: numbers and booleans as they are, numeric text parsed, anything else NaN."""
    if _missing(value):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    return math.nan


def _as_category(value: object) -> str | None:
    """A raw attribute value as a category: one spelling per value, so ``1``, ``1.0`` and ``"1"`` are one category."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def column_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """``{column: "numeric" | "categorical"}`` of a feature frame, as a model records them when it is trained."""
    return {str(c): "numeric" if pd.api.types.is_numeric_dtype(frame[c]) else "categorical" for c in frame.columns}


# --- profile files (one row per customer, a label column, no timestamps) ---------------------------------


class ProfileError(ValueError):
    """A profile file cannot be used as asked (missing column, label value absent, ...)."""


@dataclass(frozen=True)
class ProfileData:
    """A cleaned profile table: features, binary labels, ids and what cleaning did."""

    name: str
    frame: pd.DataFrame
    y: np.ndarray
    ids: list[str]
    notes: tuple[str, ...] = ()


def load_profile_file(path: str | Path, *, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a CSV or XLSX file with every column as text first, so cleaning decides the types."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in {".xlsx", ".xlsm", ".xls"}:
        sheet_name = sheet if sheet is not None else 0
        try:
            header = pd.read_excel(path, sheet_name=sheet_name, header=None, nrows=1, dtype=object)
            frame = pd.read_excel(path, sheet_name=sheet_name, dtype=object)
        except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, EOFError, OSError) as exc:
            raise ProfileError(f"profile file {path} is not a readable workbook: {type(exc).__name__}: {exc}") from exc
    elif suffix in {".csv", ".txt", ".tsv"}:
        separator = "\t" if suffix == ".tsv" else ","
        try:
            header = pd.read_csv(path, dtype=str, keep_default_na=False, sep=separator, header=None, nrows=1)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=separator)
        except UnicodeDecodeError as exc:
            raise ProfileError(
                f"profile file {path} is not UTF-8 text (byte {exc.start} cannot be decoded): save it as UTF-8"
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise ProfileError(f"profile file {path} is empty") from exc
    else:
        raise ProfileError(f"profile file {path}: unsupported type {suffix!r} (use .csv or .xlsx)")
    # pandas renames a repeated column ("Churn" -> "Churn.1"), which would slip a copy of the label (or of any
    # column) in as a feature under another name: a repeated header is refused instead.
    names = [str(value).strip() for value in (header.iloc[0].tolist() if len(header) else []) if not _missing(value)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ProfileError(
            f"profile file {path}: header column(s) {', '.join(map(repr, repeated))} appear more than once"
        )
    return frame


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def prepare_profile(
    raw: pd.DataFrame,
    *,
    label_col: str,
    positive: str,
    id_col: str | None = None,
    drop_cols: Sequence[str] = (),
    dedupe: bool = False,
    name: str = "profile",
) -> ProfileData:
    """Clean a profile table into features and labels.

    Cleaning: surrounding blanks are stripped and blank cells become missing; a text column whose
    non-missing values all parse as numbers becomes numeric (Telco's ``TotalCharges`` with 11 blanks);
    with ``dedupe``, rows equal to an earlier row in every column apart from the id are dropped
    before any split (they would leak across folds).

    Args:
        raw: the table as read (all text, or mixed from a spreadsheet).
        label_col: the label column; ``positive`` is the value that means churned.
        id_col: customer id column, kept out of the features.
        drop_cols: further columns to leave out (leaky ones).
        dedupe: drop duplicate rows (apart from the id).
        name: dataset name for reports.
    """
    columns = list(raw.columns)
    for column in [label_col, *([id_col] if id_col else []), *drop_cols]:
        if column not in columns:
            raise ProfileError(f"column {column!r} is not in the file (columns: {', '.join(map(str, columns))})")
    for column, role in ((label_col, "label"), (id_col, "id")):
        if column is not None and column in drop_cols:
            raise ProfileError(f"column {column!r} is the {role} column; it cannot be dropped too")
    notes: list[str] = []
    frame = raw.copy()
    for column in frame.columns:
        frame[column] = frame[column].map(_clean_cell)
    if drop_cols:
        frame = frame.drop(columns=list(drop_cols))
        notes.append(f"dropped columns {', '.join(drop_cols)}")
    if dedupe:
        key = [c for c in frame.columns if c != id_col]
        duplicated = frame.duplicated(subset=key, keep="first")
        if duplicated.any():
            notes.append(f"dropped {int(duplicated.sum())} rows duplicating another row apart from the id")
        frame = frame.loc[~duplicated]
    labels = frame[label_col]
    if labels.isna().any():
        first = labels.index[labels.isna()][0]
        raise ProfileError(f"row {int(first) + 2}: label column {label_col!r} is empty")
    kinds = {_label_key(v): v for v in labels}
    if len(kinds) > 2:
        first_third = next(i for i, v in labels.items() if _label_key(v) not in list(kinds)[:2])
        raise ProfileError(
            f"row {int(first_third) + 2}: label column {label_col!r} holds a third value "
            f"({', '.join(repr(str(v)) for v in list(kinds.values())[:10])}); a churn label has two: "
            "fix those rows or leave them out"
        )
    y = np.array([_label_matches(v, positive) for v in labels], dtype=int)
    if y.sum() == 0:
        values = ", ".join(sorted({str(v) for v in labels})[:10])
        raise ProfileError(f"no row has {label_col} = {positive!r} (values seen: {values})")
    if y.sum() == len(y):
        raise ProfileError(f"every row has {label_col} = {positive!r}: nothing to separate")
    ids = frame[id_col].astype(str).tolist() if id_col else [str(i) for i in frame.index]
    features = frame.drop(columns=[label_col, *([id_col] if id_col else [])]).reset_index(drop=True)
    for column in features.columns:
        converted = _numeric_or_none(features[column])
        if converted is not None:
            blanks = int(features[column].isna().sum())
            features[column] = converted
            if blanks:
                notes.append(f"{column}: {blanks} blank values treated as missing")
        else:
            features[column] = features[column].map(lambda v: None if v is None else str(v)).astype(object)
    return ProfileData(name=name, frame=features, y=y, ids=ids, notes=tuple(notes))


def _clean_cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _numeric_or_none(values: pd.Series) -> pd.Series | None:
    present = values.dropna()
    if present.empty:
        return None
    converted = pd.to_numeric(present, errors="coerce")
    if converted.isna().any():
        return None
    return pd.to_numeric(values, errors="coerce").astype(float)


def _label_key(value: object) -> str:
    """One spelling per label value: numbers by value (``1`` = ``1.0``), text without case (``Yes`` = ``yes``)."""
    try:
        return repr(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).strip().casefold()


def _label_matches(value: object, positive: str) -> bool:
    if str(value).strip().casefold() == str(positive).strip().casefold():
        return True
    try:
        return float(value) == float(positive)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
