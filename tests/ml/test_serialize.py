"""Deterministic customer text: layout, budget, stability across days, Chinese, emoji, HTML, empty histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ml.data import CustomerHistory, CustomerRecord, EventRecord, MessageRecord, OrderRecord
from ml.serialize import (
    SerializeConfig,
    approx_wordpiece_count,
    html_to_text,
    serialize_profile,
    serialize_snapshot,
)
from ml.snapshot import snapshot_at

AS_OF = datetime(2025, 6, 30, 12, tzinfo=UTC)


def ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


def customer_history(messages: list[str], *, attributes: dict[str, object] | None = None) -> CustomerHistory:
    return CustomerHistory(
        customer=CustomerRecord(
            id="c1",
            signed_up_at=ago(500),
            segment="gold",
            country="CN",
            attributes=attributes if attributes is not None else {"loyalty_tier": "silver", "newsletter": True},
        ),
        orders=(OrderRecord(placed_at=ago(40), amount=1234.5), OrderRecord(placed_at=ago(70), amount=20.0)),
        events=(EventRecord(kind="search", occurred_at=ago(10)),),
        messages=tuple(
            MessageRecord(sent_at=ago(60 - i), text=text, channel="chat", conversation_id=f"k{i}")
            for i, text in enumerate(messages)
        )
        + (MessageRecord(sent_at=ago(1), text="agent reply", author_role="agent", conversation_id="k0"),),
    )


def test_layout_attributes_behaviour_then_messages_newest_first() -> None:
    text = serialize_snapshot(snapshot_at(customer_history(["first", "second"]), AS_OF))
    lines = text.splitlines()
    assert lines[:5] == [
        "segment: gold",
        "country: CN",
        "loyalty_tier: silver",
        "newsletter: yes",
        "customer since: 2024-02",
    ]
    assert "orders: 2 (spend 1.3k, average 627)" in lines
    assert "last order: 1-3 months ago" in lines
    assert lines[-3:] == ["messages, newest first:", "[2025-05-02 chat] second", "[2025-05-01 chat] first"]
    assert "agent reply" not in text


def test_same_input_gives_identical_text_and_attribute_order_does_not_matter() -> None:
    a = serialize_snapshot(snapshot_at(customer_history(["hi"], attributes={"b": 1, "a": 2.5}), AS_OF))
    b = serialize_snapshot(snapshot_at(customer_history(["hi"], attributes={"a": 2.5, "b": 1}), AS_OF))
    assert a == b and "a: 2.5\nb: 1" in a


def test_text_stays_the_same_from_day_to_day_while_the_data_is_unchanged() -> None:
    history = customer_history(["my parcel is late"])
    # Last event 10 days ago, last order 40 days ago: no recency bucket boundary in the next 15 days.
    texts = {serialize_snapshot(snapshot_at(history, AS_OF + timedelta(days=d))) for d in range(0, 15)}
    assert len(texts) == 1, texts
    over_a_year = {serialize_snapshot(snapshot_at(history, AS_OF + timedelta(days=d))) for d in range(0, 365)}
    assert 1 < len(over_a_year) <= 10, "only coarse recency buckets move, a handful of times"


def test_chinese_emoji_and_html_messages() -> None:
    messages = [
        "快递太慢了，我要退款！",
        "love it 😍👍",
        '<p>Order <b>late</b> &amp; broken</p><script>alert("x")</script>',
    ]
    text = serialize_snapshot(snapshot_at(customer_history(messages), AS_OF))
    assert "[2025-05-03 chat] Order late & broken" in text
    assert "<" not in text and "alert" not in text
    assert "love it 😍👍" in text and "快递太慢了，我要退款！" in text


def test_empty_history_has_a_short_clear_text() -> None:
    snapshot = snapshot_at(CustomerHistory(customer=CustomerRecord(id="new")), AS_OF)
    assert serialize_snapshot(snapshot) == "orders: none\nbrowsing: none\nsupport: none"


@pytest.mark.parametrize("budget", [40, 64, 256])
def test_messages_are_cut_to_the_token_budget_newest_kept_first(budget: int) -> None:
    messages = [f"message number {i} " + "很长的投诉 " * 30 for i in range(10)]
    text = serialize_snapshot(
        snapshot_at(customer_history(messages), AS_OF), config=SerializeConfig(token_budget=budget)
    )
    assert approx_wordpiece_count(text) <= budget
    if "messages, newest first:" in text:
        assert "message number 9" in text.split("messages, newest first:")[1].splitlines()[1]


def test_custom_token_counter_is_respected() -> None:
    def count_characters(text: str) -> int:
        return len(text)

    text = serialize_snapshot(
        snapshot_at(customer_history(["a" * 500]), AS_OF),
        config=SerializeConfig(token_budget=300),
        count_tokens=count_characters,
    )
    assert len(text) <= 300 and text.endswith("…")


def test_profile_rows_serialise_in_column_order_with_missing_values() -> None:
    text = serialize_profile({"Contract": "Month-to-month", "tenure": 1.0, "TotalCharges": float("nan"), "Senior": 0})
    assert text == "Contract: Month-to-month\ntenure: 1\nTotalCharges: unknown\nSenior: 0"


def test_html_to_text_keeps_words_apart() -> None:
    assert html_to_text("line<br>two&nbsp;three<div>four</div>") == "line two three four"


def test_approximate_token_count_on_mixed_text() -> None:
    # [CLS] + 2 words + 4 CJK characters + emoji + "!" + [SEP]
    assert approx_wordpiece_count("hello world 你好世界 😍!") == 2 + 2 + 4 + 1 + 1


def test_a_real_tokenizer_keeps_the_text_within_its_budget(tiny_bert_dir) -> None:  # noqa: ANN001 - fixture path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))  # a tiny vocabulary: words split into letters
    messages = ["the parcel is late again and nobody answers " * 5, "快递太慢了 😍 <b>refund</b>"] * 6
    text = serialize_snapshot(
        snapshot_at(customer_history(messages), AS_OF), config=SerializeConfig(token_budget=500), count_tokens=tokenizer
    )
    assert 450 < len(tokenizer(text)["input_ids"]) <= 500
    assert "messages, newest first:" in text


def test_a_text_fitted_with_the_approximate_count_is_checked_with_the_encoders_tokenizer(tiny_bert_dir) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    from ml.churn_model import ChurnModel, ChurnModelConfig
    from ml.hybrid import HybridConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))  # words split into letters: the estimate falls short
    snapshot = snapshot_at(customer_history(["the parcel is late again and nobody answers"] * 12), AS_OF)
    config = SerializeConfig(token_budget=400)
    approximate = serialize_snapshot(snapshot, config=config)
    assert len(tokenizer(approximate)["input_ids"]) > 400  # the encoder would cut the oldest messages off
    checked = serialize_snapshot(snapshot, config=config, check_tokens=tokenizer)
    assert len(tokenizer(checked)["input_ids"]) <= 400 and "messages, newest first:" in checked
    assert checked == serialize_snapshot(snapshot, config=config, count_tokens=tokenizer)
    short = SerializeConfig(token_budget=5000)  # within the budget either way: the check changes nothing
    assert serialize_snapshot(snapshot, config=short, check_tokens=tokenizer) == serialize_snapshot(
        snapshot, config=short
    )
    # The churn model checks its texts with its encoder's tokenizer (TF-IDF reads them whole).
    model_config = ChurnModelConfig(
        serialize=config, hybrid=HybridConfig(text_mode="frozen", encoder=str(tiny_bert_dir))
    )
    assert ChurnModel(model_config)._texts([snapshot]) == [checked]
    tfidf_config = ChurnModelConfig(serialize=config, hybrid=HybridConfig(text_mode="tfidf"))
    assert ChurnModel(tfidf_config)._texts([snapshot]) == [approximate]


@pytest.mark.parametrize("budget", range(60, 140))
def test_a_message_is_cut_only_with_its_date_channel_and_some_text(budget: int) -> None:
    from ml.explain import _MESSAGE_LINE

    history = CustomerHistory(
        customer=CustomerRecord(id="c", segment="gold", country="DE"),
        orders=(OrderRecord(placed_at=ago(40), amount=100.0),),
        messages=tuple(
            MessageRecord(sent_at=ago(30 - i), text="The parcel is late again and nobody answers my emails. " * 3)
            for i in range(10)
        ),
    )
    text = serialize_snapshot(snapshot_at(history, AS_OF), config=SerializeConfig(token_budget=budget))
    lines = text.split("\n")
    for line in lines[lines.index("messages, newest first:") + 1 :] if "messages, newest first:" in lines else []:
        match = _MESSAGE_LINE.match(line)  # a line "[2025-06-09 …" was left at some budgets
        assert match is not None and match.group("body").strip(" …"), line


def test_html_to_text_keeps_angle_brackets_that_are_not_markup() -> None:
    assert html_to_text("I love it <3 but delivery took > 2 weeks") == "I love it <3 but delivery took > 2 weeks"
    assert html_to_text("<p>a</p><!-- a > b --><!DOCTYPE html>b <i>c</i>") == "a b c"


def test_messages_without_text_once_the_html_is_gone_take_no_place() -> None:
    texts = [f"real message number {i}" for i in range(20)] + ["<img src='cid:photo.jpg'>", "&nbsp;"] * 3
    history = CustomerHistory(
        customer=CustomerRecord(id="c"),
        messages=tuple(
            MessageRecord(sent_at=ago(100 - i), text=t, conversation_id=str(i)) for i, t in enumerate(texts)
        ),
    )
    text = serialize_snapshot(snapshot_at(history, AS_OF), config=SerializeConfig(token_budget=5000, max_messages=20))
    assert len(text.split("messages, newest first:\n")[1].split("\n")) == 20  # it was 14 of the 20


def test_messages_sent_at_the_same_time_give_the_same_text_in_any_input_order() -> None:
    day = datetime(2025, 6, 20, tzinfo=UTC)  # a date-only import: the whole day at midnight
    rows = [
        MessageRecord(sent_at=day, text="I want to cancel my account.", conversation_id="a"),
        MessageRecord(sent_at=day, text="Thanks, all sorted now!", conversation_id="b"),
    ]
    customer = CustomerRecord(id="c")
    texts = {
        serialize_snapshot(snapshot_at(CustomerHistory(customer=customer, messages=tuple(order)), AS_OF))
        for order in (rows, rows[::-1])
    }
    assert len(texts) == 1
