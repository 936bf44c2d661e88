"""Tabular features from snapshots and from profile files."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ml.data import CustomerHistory, CustomerRecord, EventRecord, MessageRecord, OrderRecord
from ml.features import FeatureBuilder, FeatureConfig, ProfileError, describe_feature, prepare_profile
from ml.snapshot import snapshot_at

AS_OF = datetime(2025, 6, 30, tzinfo=UTC)


def ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


def test_features_count_windows_trends_returns_and_support() -> None:
    history = CustomerHistory(
        customer=CustomerRecord(
            id="c1", signed_up_at=ago(400), segment="gold", attributes={"tier": "silver", "age": 41, "score": None}
        ),
        orders=(
            OrderRecord(placed_at=ago(3), amount=100.0, discount_amount=5.0),
            OrderRecord(placed_at=ago(20), amount=50.0, status="returned"),
            OrderRecord(placed_at=ago(45), amount=30.0),
            OrderRecord(placed_at=ago(200), amount=20.0, item_count=3),
            OrderRecord(placed_at=ago(10), amount=999.0, status="cancelled"),
        ),
        events=(EventRecord(kind="search", occurred_at=ago(1)), EventRecord(kind="page_view", occurred_at=ago(40))),
        messages=(
            MessageRecord(sent_at=ago(12), text="where is my parcel", conversation_id="k1"),
            MessageRecord(sent_at=ago(11), text="hello?", conversation_id="k1"),
            MessageRecord(sent_at=ago(11), text="we are on it", author_role="agent", conversation_id="k1"),
            MessageRecord(sent_at=ago(100), text="refund please", conversation_id="k2"),
        ),
    )
    row = FeatureBuilder().build([snapshot_at(history, AS_OF)]).iloc[0]
    expected = {
        "tenure_days": 400.0,
        "days_since_last_order": 3.0,
        "days_since_last_activity": 1.0,
        "orders_total": 4.0,  # the cancelled order does not count
        "spend_total": 150.0,  # completed orders only
        "orders_7d": 1.0,
        "orders_30d": 2.0,
        "orders_90d": 3.0,
        "returns_30d": 1.0,
        "spend_30d": 100.0,
        "orders_trend_30d": 3.0 / 2.0,  # (2 + 1) / (1 + 1)
        "return_rate": 0.25,
        "discounted_orders_share": 0.25,
        "events_30d": 1.0,
        "event_search_30d": 1.0,
        "event_page_view_30d": 0.0,
        "support_contacts_30d": 1.0,
        "support_contacts_365d": 2.0,
        "days_since_last_support_contact": 11.0,
        "customer_messages_total": 3.0,
        "attr_age": 41.0,
    }
    actual = {name: float(row[name]) for name in expected}
    assert actual == pytest.approx(expected)
    assert row["segment"] == "gold" and row["attr_tier"] == "silver"
    assert math.isnan(row["attr_score"])


def test_customer_without_history_gets_missing_values_not_zeros() -> None:
    frame = FeatureBuilder().build([snapshot_at(CustomerHistory(customer=CustomerRecord(id="new")), AS_OF)])
    assert math.isnan(frame.loc["new", "days_since_last_order"]) and frame.loc["new", "orders_total"] == 0
    assert frame.loc["new", "segment"] is None


def test_every_feature_has_a_readable_description() -> None:
    names = FeatureBuilder().numeric_names()
    undescribed = [n for n in names if describe_feature(n) == n.replace("_", " ")]
    assert not undescribed, undescribed
    assert describe_feature("orders_30d") == "orders in the last 30 days"


def test_profile_cleaning_blanks_numbers_labels_and_duplicates() -> None:
    raw = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "charges": ["10.5", " ", "7", "10.5"],
            "plan": ["x", "y", None, "x"],
            "leak": ["1", "2", "3", "4"],
            "Churn": ["Yes", "No", "No", "Yes"],
        }
    )
    data = prepare_profile(raw, label_col="Churn", positive="Yes", id_col="id", drop_cols=["leak"], dedupe=True)
    assert data.ids == ["a", "b", "c"], "d duplicates a apart from the id"
    assert list(data.frame.columns) == ["charges", "plan"]
    assert data.frame["charges"].dtype == float and np.isnan(data.frame["charges"][1])
    assert data.y.tolist() == [1, 0, 0]
    assert any("charges: 1 blank" in note for note in data.notes)


def test_profile_numeric_positive_label_and_clear_errors() -> None:
    raw = pd.DataFrame({"x": [1, 2, 3], "Churn": [1, 0, 1]})
    assert prepare_profile(raw, label_col="Churn", positive="1").y.tolist() == [1, 0, 1]
    with pytest.raises(ProfileError, match="column 'Target' is not in the file"):
        prepare_profile(raw, label_col="Target", positive="1")
    with pytest.raises(ProfileError, match="no row has Churn = 'Yes'"):
        prepare_profile(raw, label_col="Churn", positive="Yes")
    with pytest.raises(ProfileError, match="row 3: label column 'Churn' is empty"):
        prepare_profile(pd.DataFrame({"x": [1, 2], "Churn": ["1", ""]}), label_col="Churn", positive="1")


def test_profile_labels_match_whatever_their_case_and_a_third_value_or_a_dropped_label_is_refused() -> None:
    raw = pd.DataFrame({"x": [1, 2, 3, 4, 5], "Churn": ["Yes", "yes", " YES ", "No", "no"]})
    assert prepare_profile(raw, label_col="Churn", positive="Yes").y.tolist() == [1, 1, 1, 0, 0]
    flags = pd.DataFrame({"x": [1, 2, 3], "Churn": [True, False, True]})  # a spreadsheet's booleans
    assert prepare_profile(flags, label_col="Churn", positive="True").y.tolist() == [1, 0, 1]
    assert prepare_profile(flags, label_col="Churn", positive="1").y.tolist() == [1, 0, 1]
    numbers = pd.DataFrame({"x": [1, 2, 3], "Churn": ["1", "1.0", "0"]})
    assert prepare_profile(numbers, label_col="Churn", positive="1").y.tolist() == [1, 1, 0]
    with pytest.raises(ProfileError, match=r"row 4: label column 'Churn' holds a third value \('Yes', 'No', 'Maybe'\)"):
        prepare_profile(pd.DataFrame({"Churn": ["Yes", "No", "Maybe"]}), label_col="Churn", positive="Yes")
    with pytest.raises(ProfileError, match="'Churn' is the label column; it cannot be dropped too"):
        prepare_profile(raw, label_col="Churn", positive="Yes", drop_cols=["Churn"])


def _with_attributes(*attributes: dict[str, object]) -> list:
    return [
        snapshot_at(CustomerHistory(customer=CustomerRecord(id=f"c{i}", attributes=a)), AS_OF)
        for i, a in enumerate(attributes)
    ]


def test_attribute_kinds_recorded_at_training_make_each_row_independent_of_its_batch() -> None:
    training = FeatureBuilder().build(_with_attributes({"plan": 1}, {"plan": "premium"}, {"plan": 2.0}))
    assert training["attr_plan"].tolist() == ["1", "premium", "2"]  # 1, 1.0 and "1" are one category
    kinds = {"attr_plan": "categorical", "attr_vip": "numeric"}
    alone = FeatureBuilder().build(_with_attributes({"plan": 1.0, "vip": True}), attribute_kinds=kinds)
    mixed = FeatureBuilder().build(
        _with_attributes({"plan": 1.0, "vip": True}, {"plan": "premium", "vip": "yes", "new": 3}), attribute_kinds=kinds
    )
    assert alone["attr_plan"].tolist() == ["1"] and mixed["attr_plan"].tolist() == ["1", "premium"]
    # A value of another kind spoils only its own row; columns unknown at training are dropped.
    assert alone["attr_vip"].tolist() == [1.0] and mixed["attr_vip"].iloc[0] == 1.0
    assert math.isnan(mixed["attr_vip"].iloc[1]) and "attr_new" not in mixed.columns
    # Missing columns come out missing, in the recorded order.
    empty = FeatureBuilder().build(_with_attributes({}), attribute_kinds=kinds)
    assert list(empty.columns[-2:]) == ["attr_plan", "attr_vip"]
    assert empty["attr_plan"].iloc[0] is None and math.isnan(empty["attr_vip"].iloc[0])
    assert FeatureBuilder().build(_with_attributes({"vip": " 2.5 "}), attribute_kinds=kinds)["attr_vip"].iloc[0] == 2.5


def test_attribute_columns_keep_the_attribute_names_so_that_none_share_a_column() -> None:
    as_of = datetime(2025, 6, 30, tzinfo=UTC)
    history = CustomerHistory(
        customer=CustomerRecord(
            id="c1",
            signed_up_at=as_of - timedelta(days=100),
            attributes={"契約": "annual", "プラン": "gold", "plan type": "x", "plan-type": "y"},
        ),
        orders=(OrderRecord(placed_at=as_of - timedelta(days=3), amount=10.0),),
    )
    snapshot = snapshot_at(history, as_of)
    frame = FeatureBuilder().build([snapshot])
    attributes = {c: frame.loc["c1", c] for c in frame.columns if c.startswith("attr_")}
    assert attributes == {"attr_plan type": "x", "attr_plan-type": "y", "attr_プラン": "gold", "attr_契約": "annual"}
    assert describe_feature("attr_契約") == "customer attribute '契約'"
    # Models trained before keep their naming (two of the four values then share a column, as they did).
    old = FeatureBuilder(FeatureConfig(attribute_names="ascii")).build([snapshot])
    assert sorted(c for c in old.columns if c.startswith("attr_")) == ["attr_plan_type", "attr_unnamed"]
    with pytest.raises(ValueError, match="attribute_names"):
        FeatureConfig(attribute_names="latin")


def test_rows_of_earlier_snapshots_are_not_held_while_later_ones_are_built() -> None:
    """The numeric features go into one float array row by row: the per-row dict of boxed floats is dropped as soon
    as its values are copied, instead of every snapshot's dict being held until the frame is made."""
    import weakref

    class Row(dict):
        pass

    built: list[weakref.ref] = []
    held: list[int] = []

    class CountingBuilder(FeatureBuilder):
        def _row(self, snapshot):  # noqa: ANN001, ANN202
            held.append(sum(ref() is not None for ref in built))
            row = Row(super()._row(snapshot))
            built.append(weakref.ref(row))
            return row

    snapshots = _with_attributes(*({"plan": i % 3, "vip": i % 2 == 0} for i in range(20)))
    frame = CountingBuilder().build(snapshots)
    assert max(held) <= 1  # at most the row just finished, not one per snapshot before it
    assert frame["orders_total"].dtype == np.float64 and frame["attr_vip"].dtype == np.float64
    assert len(frame) == 20 and frame.index.name == "customer_id"


def test_a_numeric_attribute_with_placeholders_for_missing_values_stays_numeric() -> None:
    # CRM exports write a missing balance as "N/A", "-" or "unknown": one such cell made the whole column a category
    # of every distinct amount (ordering lost, thousands of categories). Placeholders read as missing instead.
    frame = FeatureBuilder().build(
        _with_attributes(
            {"balance": 1250.5, "plan": "gold"},
            {"balance": "N/A", "plan": "N/A"},
            {"balance": 30, "plan": "silver"},
            {"balance": " - ", "plan": "gold"},
            {"balance": "Unknown", "plan": "gold"},
            {"balance": "#N/A", "plan": "gold"},
        )
    )

    assert frame["attr_balance"].dtype == np.float64, frame["attr_balance"].tolist()
    assert (frame["attr_balance"].iloc[0], frame["attr_balance"].iloc[2]) == (1250.5, 30.0)
    assert frame["attr_balance"].isna().tolist() == [False, True, False, True, True, True]
    assert frame["attr_plan"].tolist() == ["gold", "N/A", "silver", "gold", "gold", "gold"]  # text stays text
