from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.baselines import LightGBMOptions
from ml.explain import (
    _add_text_factors,
    explain_hybrid,
    feature_contributions,
    sentence_spans,
    split_sentences,
    text_parts,
    without_sentence,
)
from ml.hybrid import HybridChurnModel, HybridConfig

FAST_LIGHTGBM = LightGBMOptions(
    num_leaves_grid=(7,), max_rounds=80, early_stopping_rounds=20, min_child_samples=5, n_jobs=1
)
FILLER = ("The box arrived today.", "I have a question about sizes.", "Where is my package?")


def _serialised(segment: str, churns: bool, rng: random.Random) -> str:
    complaint = "I want a refund and I will cancel my account."
    praise = "Thanks, I love it."
    first, second = rng.sample(FILLER, 2)
    body = f"{first} {complaint if churns else praise} {second}"
    return "\n".join(
        [
            f"segment: {segment}",
            "orders: 3 (spend 120, average 40)",
            "messages, newest first:",
            f"[2024-05-0{rng.randint(1, 9)} chat] {body}",
            f"[2024-04-1{rng.randint(0, 9)} email] {rng.choice(FILLER)}",
        ]
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[HybridChurnModel, pd.DataFrame, list[str], np.ndarray]:
    """A hybrid where the complaint sentence and few recent orders both signal churn."""
    rng = random.Random(0)
    n = 160
    y = np.array([i % 2 for i in range(n)])
    frame = pd.DataFrame(
        {
            "orders_30d": [float(rng.randint(0, 3) if label else rng.randint(1, 4)) for label in y],
            "segment": [rng.choice(["gold", "basic"]) for _ in y],
        }
    )
    churns = [bool(label) if rng.random() < 0.85 else not label for label in y]
    texts = [_serialised(segment, c, rng) for segment, c in zip(frame["segment"], churns, strict=True)]
    config = HybridConfig(text_mode="tfidf", inner_folds=3, lightgbm=FAST_LIGHTGBM)
    return HybridChurnModel(config).fit(frame, texts, y), frame, texts, y


def test_factors_have_the_documented_shape_and_come_largest_first(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted

    explanations = explain_hybrid(model, frame.iloc[:5], texts[:5], top_n=3)

    assert len(explanations) == 5
    for factors in explanations:
        assert 1 <= len(factors) <= 3
        assert all(set(f) == {"factor", "direction", "weight", "evidence"} for f in factors)
        assert all(f["direction"] in {"raises", "lowers"} and f["weight"] > 0 for f in factors)
        assert [f["weight"] for f in factors] == sorted((f["weight"] for f in factors), reverse=True)


def test_the_complaint_sentence_is_quoted_as_the_message_that_raised_the_risk(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted
    complaining = [i for i, t in enumerate(texts) if "refund" in t][:3]

    explanations = explain_hybrid(model, frame.iloc[complaining], [texts[i] for i in complaining], top_n=10)

    for factors in explanations:
        messages = [f for f in factors if str(f["factor"]).startswith("message of")]
        top_message = max(messages, key=lambda f: f["weight"])
        assert top_message["direction"] == "raises"
        assert top_message["evidence"] == "I want a refund and I will cancel my account."


def test_feature_factors_use_readable_names_and_the_customers_value(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted
    loyal = int(np.argmax(frame["orders_30d"].to_numpy()))

    factors = explain_hybrid(model, frame.iloc[[loyal]], [texts[loyal]], top_n=20)[0]

    orders = next(f for f in factors if f["factor"] == "orders in the last 30 days")
    assert orders["direction"] == "lowers" and orders["evidence"] == f"orders_30d = {frame['orders_30d'][loyal]:.0f}"


def test_contributions_add_up_to_the_models_log_odds(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted
    stacked = model.stacked_frame(frame.iloc[:8], texts[:8])

    contributions = feature_contributions(model, stacked)
    raw = model.raw_scores_from_stacked(stacked)

    np.testing.assert_allclose(contributions.sum(axis=1), np.log(raw / (1 - raw)), atol=1e-6)


def test_features_only_model_explains_without_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40)
    frame = pd.DataFrame({"days_since_last_order": rng.normal(10 + 30 * y, 5)})
    model = HybridChurnModel(HybridConfig(text_mode="none", inner_folds=3, lightgbm=FAST_LIGHTGBM)).fit(frame, None, y)

    factors = explain_hybrid(model, frame.iloc[[1]], None, top_n=5)[0]

    assert factors[0]["factor"] == "days since the last order" and factors[0]["direction"] == "raises"


def test_sentences_and_parts_are_split_in_english_and_chinese() -> None:
    assert split_sentences("Late again! I want a refund. Thanks") == ["Late again!", "I want a refund.", "Thanks"]
    assert split_sentences("快递又晚了。我要退款！谢谢") == ["快递又晚了。", "我要退款！", "谢谢"]
    parts = text_parts("segment: gold\nmessages, newest first:\n[2024-05-01 chat] hi")
    assert parts == [(0, "segment: gold"), (2, "[2024-05-01 chat] hi")]


def test_a_sentence_is_left_out_by_its_position_not_by_its_first_occurrence() -> None:
    line = "[2024-05-01 chat] I will not cancel. cancel. chat"
    body = line.split("] ", 1)[1]
    spans = sentence_spans(body)
    assert [body[a:b] for a, b in spans] == ["I will not cancel.", "cancel.", "chat"]
    assert without_sentence(line, spans[1]) == "[2024-05-01 chat] I will not cancel.  chat"
    assert without_sentence(line, spans[2]) == "[2024-05-01 chat] I will not cancel. cancel. "
    assert sentence_spans("  ") == [(0, 2)] and split_sentences("no end") == ["no end"]


def test_explaining_no_rows_gives_no_explanations(fitted) -> None:  # noqa: ANN001
    model, frame, _, _ = fitted
    assert explain_hybrid(model, frame.iloc[:0], [], top_n=3) == []
    assert explain_hybrid(model, frame.iloc[:0], [], top_n=3, text_factors=False) == []


def test_text_factors_can_be_left_out_for_cheap_explanations(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted
    complaining = [i for i, t in enumerate(texts) if "refund" in t][:2]

    factors = explain_hybrid(
        model, frame.iloc[complaining], [texts[i] for i in complaining], top_n=10, text_factors=False
    )

    assert all(not str(f["factor"]).startswith(("message of", "record:")) for row in factors for f in row)


def _all_feature_factors_ranked(model: HybridChurnModel, frame: pd.DataFrame, texts: list[str], top_n: int) -> list:
    """The feature factors the plain way: every non-zero contribution, ranked by (weight, name), top_n kept."""
    from ml.features import describe_feature

    contributions = feature_contributions(model, model.stacked_frame(frame, texts))
    out = []
    for row in range(len(frame)):
        factors = [
            {
                "factor": describe_feature(column),
                "direction": "raises" if contributions.iloc[row][column] > 0 else "lowers",
                "weight": round(abs(float(contributions.iloc[row][column])), 4),
                "evidence": f"{column} = {frame.iloc[row][column]:.0f}"
                if column == "orders_30d"
                else f"{column} = {frame.iloc[row][column]}",
            }
            for column in frame.columns
            if abs(float(contributions.iloc[row][column])) >= 1e-9
        ]
        out.append(sorted(factors, key=lambda f: (-f["weight"], f["factor"]))[:top_n])
    return out


def test_feature_factors_are_each_rows_strongest_contributions(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted

    for top_n in (1, 2, 5):
        explained = explain_hybrid(model, frame.iloc[:12], texts[:12], top_n=top_n, text_factors=False)

        assert explained == _all_feature_factors_ranked(
            model, frame.iloc[:12].reset_index(drop=True), texts[:12], top_n
        )


def test_text_factors_for_some_rows_equal_explaining_those_rows_alone(fitted) -> None:  # noqa: ANN001
    model, frame, texts, _ = fitted
    rows = [1, 4, 7]
    stacked = model.stacked_frame(frame.iloc[:9], texts[:9])

    mixed = explain_hybrid(model, frame.iloc[:9], texts[:9], top_n=6, text_rows=rows, stacked=stacked)
    alone = explain_hybrid(model, frame.iloc[rows], [texts[i] for i in rows], top_n=6)
    features_only = explain_hybrid(model, frame.iloc[:9], texts[:9], top_n=6, text_factors=False)

    assert [mixed[i] for i in rows] == alone
    assert [mixed[i] for i in range(9) if i not in rows] == [features_only[i] for i in range(9) if i not in rows]
    assert any(str(f["factor"]).startswith("message of") for i in rows for f in mixed[i])


class _LeavingStub:
    """Log-odds 3 while the 2025-01-01 email still says "I am leaving.", else 0 (only what explain() calls)."""

    def stacked_frame(self, frame: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"text": texts})

    def raw_scores_from_stacked(self, stacked: pd.DataFrame) -> np.ndarray:
        def risky(text: str) -> bool:
            return any(line.startswith("[2025-01-01 email]") and "I am leaving." in line for line in text.split("\n"))

        return 1 / (1 + np.exp(-np.array([3.0 if risky(t) else 0.0 for t in stacked["text"]])))


def test_the_quoted_sentence_comes_from_the_message_of_the_factor_when_a_newer_one_repeats_it() -> None:
    text = "\n".join(
        [
            "segment: gold",
            "messages, newest first:",
            "[2025-01-05 chat] Hello. Order late. I am leaving.",  # a reply that quotes the older message
            "[2025-01-01 email] Order late. I am leaving.",
        ]
    )
    explanations: list[list] = [[]]

    _add_text_factors(_LeavingStub(), pd.DataFrame({"a": [0]}), [text], explanations, np.array([3.0]))  # type: ignore[arg-type]

    (factor,) = explanations[0]
    assert factor["factor"] == "message of 2025-01-01 (email)" and factor["weight"] == pytest.approx(3.0)
    assert factor["evidence"] == "I am leaving."


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (26734.12, "26734.12"),  # an amount, not 2.67e+04
        (-5123.456, "-5123.46"),
        (250000.0, "250000"),
        (12.3456, "12.35"),  # at most two decimals from 1 up: 159.93 a month is not "160"
        (159.93, "159.93"),
        (29.85, "29.85"),
        (84.6, "84.6"),
        (0.0613, "0.0613"),  # a ratio keeps three significant digits
        (0.25, "0.25"),
        (None, "unknown"),
        (float("nan"), "unknown"),
        ("gold", "gold"),
    ],
)
def test_factor_evidence_shows_amounts_as_staff_write_them(value: object, shown: str) -> None:
    from ml.explain import _format_value

    assert _format_value(value) == shown


def test_evidence_of_a_customer_attribute_names_the_attribute_as_imported() -> None:
    # Profile data (a telco's or a bank's columns): staff read "Contract = Month-to-month", as in the customer's
    # attributes, not the model's column name "attr_Contract".
    rng = random.Random(1)
    n = 120
    y = np.array([i % 2 for i in range(n)])
    frame = pd.DataFrame(
        {
            "attr_Contract": [rng.choice(["Month-to-month", "Two year"]) if label else "Two year" for label in y],
            "attr_MonthlyCharges": [round(rng.uniform(70, 110) if label else rng.uniform(18, 60), 2) for label in y],
        }
    )
    frame["attr_Contract"] = frame["attr_Contract"].astype("category")
    texts = [""] * n
    model = HybridChurnModel(HybridConfig(text_mode="none", inner_folds=3, lightgbm=FAST_LIGHTGBM)).fit(frame, texts, y)

    factors = explain_hybrid(model, frame.iloc[:20], texts[:20], top_n=5)

    shown = {f["factor"]: f["evidence"] for row in factors for f in row}
    assert shown, factors
    for row, row_factors in enumerate(factors):
        for factor in row_factors:
            name = str(factor["factor"]).removeprefix("customer attribute '").removesuffix("'")
            value = frame.iloc[row][f"attr_{name}"]
            assert factor["evidence"] == f"{name} = {value}", factor
