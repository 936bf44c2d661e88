"""The ORM -> ml mapper and the churn_backtest / churn_evaluate commands on small data built in the test."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from customers.models import Customer, Event, Message, Order
from predictions.selectors import customer_histories

pytestmark = pytest.mark.django_db
START = datetime(2025, 1, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return START + timedelta(days=days)


def build_store(n: int = 80, seed: int = 0) -> None:
    """Customers ordering every 5-15 days; 40% stop ordering at a random day and churn."""
    rng = np.random.default_rng(seed)
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"c{i}", segment=str(rng.choice(["a", "b"])), signed_up_at=at(0)) for i in range(n)
    )
    orders, events = [], []
    for customer in customers:
        stop = rng.uniform(60, 360) if rng.random() < 0.4 else 10_000
        for k, day in enumerate(np.arange(rng.uniform(0, 10), min(stop, 365), rng.uniform(5, 15))):
            orders.append(
                Order(external_id=f"{customer.external_id}-o{k}", customer=customer, placed_at=at(day), amount="25.00")
            )
            events.append(
                Event(external_id=f"{customer.external_id}-e{k}", customer=customer, kind="login", occurred_at=at(day))
            )
    Order.objects.bulk_create(orders)
    Event.objects.bulk_create(events)


def test_histories_map_rows_into_ml_records_in_a_handful_of_queries(django_assert_num_queries) -> None:  # noqa: ANN001
    ann = Customer.objects.create(external_id="ann", segment="gold", attributes={"tier": "silver"}, signed_up_at=at(0))
    Customer.objects.create(external_id="bob", signed_up_at=at(50))
    for k, day in enumerate((30, 10, 20)):
        Order.objects.create(
            external_id=f"o{k}", customer=ann, placed_at=at(day), amount=Decimal("19.90"), discount_amount="1.50"
        )
    Event.objects.create(external_id="e1", customer=ann, kind="search", occurred_at=at(5), properties={"q": "shoes"})
    Message.objects.create(external_id="m1", customer=ann, conversation_id="k", sent_at=at(25), text="<b>late</b> 😍")
    with django_assert_num_queries(5):
        histories = customer_histories()
    ann_history = histories[0]
    assert [h.customer.id for h in histories] == ["ann", "bob"]
    assert [o.placed_at for o in ann_history.orders] == [at(10), at(20), at(30)], "oldest first"
    assert ann_history.orders[0].amount == pytest.approx(19.9) and isinstance(ann_history.orders[0].amount, float)
    assert ann_history.orders[0].discount_amount == pytest.approx(1.5)
    assert ann_history.events[0].properties == {}, "no model reads event properties: left out unless asked for"
    assert ann_history.messages[0].text == "<b>late</b> 😍", "stored text is passed on exactly"
    assert ann_history.customer.attributes == {"tier": "silver"} and ann_history.customer.segment == "gold"

    until = customer_histories(until=at(20))
    assert [h.customer.id for h in until] == ["ann"], "bob signed up later"
    assert [o.placed_at for o in until[0].orders] == [at(10), at(20)] and not until[0].messages
    assert [h.customer.id for h in customer_histories(customer_ids=[ann.id])] == ["ann"]


def test_later_churn_time_is_hidden_from_a_point_in_time_read() -> None:
    Customer.objects.create(external_id="x", churned=True, churned_at=at(100))
    assert customer_histories(until=at(50))[0].customer.churned_at is None
    assert customer_histories(until=at(50))[0].customer.churned is None
    assert customer_histories()[0].customer.churned_at == at(100)


def test_churn_backtest_command_writes_the_report(tmp_path: Path) -> None:
    build_store()
    out = tmp_path / "backtest.json"
    call_command(
        "churn_backtest",
        "--as-of=2025-10-01",
        "--horizon-days=60",
        "--lead-days=7",
        "--models=recency,logreg",
        f"--json={out}",
        "--no-progress",
        stdout=open(tmp_path / "stdout.txt", "w"),  # noqa: SIM115
    )
    report = json.loads(out.read_text())
    assert report["n"] > 30 and 0 < report["positive_rate"] < 1
    assert report["cutoffs"][0] == "2025-07-26", "as_of - lead - horizon"
    assert set(report["models"]) == {"recency", "logreg"}
    assert report["models"]["recency"]["roc_auc"] > 0.7
    assert "ROC AUC" in (tmp_path / "stdout.txt").read_text()


def test_churn_backtest_refuses_an_as_of_too_close_to_the_end_of_the_data() -> None:
    build_store(n=20)
    with pytest.raises(CommandError, match="before the test label window ends"):
        call_command("churn_backtest", "--as-of=2025-12-20", "--horizon-days=60", "--no-progress")
    with pytest.raises(CommandError, match="--max-cutoffs must be at least 1"):
        call_command("churn_backtest", "--as-of=2025-10-01", "--horizon-days=60", "--max-cutoffs=0", "--no-progress")


def test_churn_backtest_refuses_a_max_days_inactive_below_one_naming_it() -> None:
    build_store()
    # Not "0 customers of a single class" after reading every history.
    for days in ("-1", "0"):
        with pytest.raises(CommandError, match=f"--max-days-inactive must be at least 1, got {days}"):
            call_command(
                "churn_backtest", "--as-of=2025-10-01", "--horizon-days=30", f"--max-days-inactive={days}",
                "--models=logreg", "--no-progress",
            )  # fmt: skip


def test_churn_evaluate_command_on_a_small_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["id,plan,tenure,Churn"]
    for i in range(120):
        plan = rng.choice(["monthly", "yearly"])
        churn = rng.random() < (0.6 if plan == "monthly" else 0.1)
        rows.append(f"c{i},{plan},{rng.integers(1, 60)},{'Yes' if churn else 'No'}")
    path = tmp_path / "profile.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval.json"
    call_command(
        "churn_evaluate", str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--folds=3",
        "--models=recency,logreg", f"--json={out}", "--no-progress", stdout=open(tmp_path / "o.txt", "w"),  # noqa: SIM115
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["n"] == 120 and "recency" in report["skipped"] and report["models"]["logreg"]["roc_auc"] > 0.6
    with pytest.raises(CommandError, match="column 'Target' is not in the file"):
        call_command("churn_evaluate", str(path), "--label-col=Target", "--positive=Yes", "--no-progress")


def test_churn_evaluate_refuses_what_would_give_a_wrong_or_partial_report(tmp_path: Path, settings) -> None:  # noqa: ANN001
    path = _profile_csv(tmp_path)
    common = [str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--no-progress"]
    with pytest.raises(CommandError, match="'Churn' is the label column; it cannot be dropped too"):
        call_command("churn_evaluate", *common, "--drop-col=Churn")
    with pytest.raises(CommandError, match="recency column 'tenur' is not a feature column"):
        call_command("churn_evaluate", *common, "--models=recency", "--recency-col=tenur")
    few = tmp_path / "few.csv"
    few.write_text("id,x,Churn\n" + "".join(f"c{i},{i},{'Yes' if i < 3 else 'No'}\n" for i in range(40)))
    with pytest.raises(CommandError, match="the smaller class has 3 rows, fewer than the 5 folds"):
        call_command("churn_evaluate", str(few), "--label-col=Churn", "--positive=Yes", "--models=logreg")
    settings.CHURN_ENCODER = str(tmp_path / "no-such-encoder")
    with pytest.raises(CommandError, match="no-such-encoder does not exist.*need it"):
        call_command("churn_evaluate", *common, "--models=logreg,hybrid")
    out = tmp_path / "tfidf.json"  # tfidf needs no encoder: it runs, and the report names none
    call_command("churn_evaluate", *common, "--models=tfidf", f"--json={out}", stdout=open(tmp_path / "o", "w"))  # noqa: SIM115
    assert not any("encoder" in note for note in json.loads(out.read_text())["notes"])


def test_churn_evaluate_reports_altered_copies_and_keeps_them_in_one_fold_when_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = ["id,tenure,spend,visits,age,coupons,Churn"]
    for i in range(80):
        cells = [str(v) for v in rng.integers(0, 5000, 4)]
        churn = "Yes" if rng.random() < 0.3 else "No"
        rows.append(",".join([f"c{i}", *cells, "1", churn]))
        rows.append(",".join([f"copy{i}", *cells, "4", churn]))  # the same customer with one cell changed
    path = tmp_path / "copies.csv"
    path.write_text("\n".join(rows) + "\n")
    common = [str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--models=logreg", "--no-progress"]
    plain, grouped = tmp_path / "plain.json", tmp_path / "grouped.json"
    call_command("churn_evaluate", *common, f"--json={plain}", stdout=open(tmp_path / "o", "w"))  # noqa: SIM115
    call_command(
        "churn_evaluate", *common, "--group-near-duplicates", f"--json={grouped}", stdout=open(tmp_path / "o", "w")  # noqa: SIM115
    )  # fmt: skip
    plain_report, grouped_report = json.loads(plain.read_text()), json.loads(grouped.read_text())
    assert plain_report["near_duplicates"]["rows_in_groups"] == 160 and plain_report["near_duplicates"]["suspicious"]
    assert any("--group-near-duplicates" in note for note in plain_report["notes"])
    assert plain_report["protocol"].startswith("stratified 5-fold") and "group" in grouped_report["protocol"]
    call_command(
        "churn_evaluate", *common, "--no-near-duplicate-check", f"--json={plain}", stdout=open(tmp_path / "o", "w")
    )  # noqa: SIM115
    assert "near_duplicates" not in json.loads(plain.read_text())
    with pytest.raises(CommandError, match="--group-near-duplicates needs the near-duplicate check"):
        call_command("churn_evaluate", *common, "--group-near-duplicates", "--no-near-duplicate-check")
    with pytest.raises(CommandError, match="--near-duplicate-columns must be 0 or more"):
        call_command("churn_evaluate", *common, "--near-duplicate-columns=-1")
    with pytest.raises(CommandError, match="fewer than 2 to compare"):
        call_command("churn_evaluate", *common, "--near-duplicate-columns=4", "--group-near-duplicates")


def _profile_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    rows = ["id,plan,tenure,Churn"]
    for i in range(60):
        plan = rng.choice(["monthly", "yearly"])
        rows.append(
            f"c{i},{plan},{rng.integers(1, 60)},{'Yes' if rng.random() < (0.6 if plan == 'monthly' else 0.1) else 'No'}"
        )
    path = tmp_path / "profile.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_churn_evaluate_runs_the_frozen_encoder_in_int8_when_asked_and_refuses_it_for_fine_tuning(
    tmp_path: Path,
    settings,  # noqa: ANN001
) -> None:
    from tests.tiny_bert import LETTERS, write_tiny_bert

    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    encoder = write_tiny_bert(
        tmp_path / "bert",
        tokens=[*":,-", *LETTERS, *map(str, range(10))],
        word_pieces=LETTERS,
        max_position_embeddings=128,
    )
    path, out = _profile_csv(tmp_path), tmp_path / "eval.json"
    common = [str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--folds=3", f"--encoder={encoder}"]

    call_command(
        "churn_evaluate", *common, "--models=transformer", "--encoder-quantize=int8", f"--json={out}", "--no-progress",
        stdout=open(tmp_path / "o.txt", "w"),  # noqa: SIM115
    )  # fmt: skip

    report = json.loads(out.read_text())
    assert any("mode frozen (int8 linear layers)" in note for note in report["notes"]), report["notes"]
    assert 0 <= report["models"]["transformer"]["roc_auc"] <= 1
    with pytest.raises(CommandError, match="needs the frozen encoder"):
        call_command(
            "churn_evaluate", *common, "--models=transformer", "--encoder-mode=lora", "--encoder-quantize=int8"
        )


def test_churn_evaluate_nests_the_hybrids_stacking_unless_told_not_to(tmp_path: Path, settings) -> None:  # noqa: ANN001
    from tests.tiny_bert import LETTERS, write_tiny_bert

    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    encoder = write_tiny_bert(
        tmp_path / "bert", tokens=[*":,-", *LETTERS, *map(str, range(10))], word_pieces=LETTERS,
        max_position_embeddings=128,
    )  # fmt: skip
    path, out = _profile_csv(tmp_path), tmp_path / "eval.json"
    common = [str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--folds=3", f"--encoder={encoder}"]

    notes = {}
    for flag in ("", "--no-nested-stacking"):
        call_command(
            "churn_evaluate", *common, "--models=hybrid", "--inner-folds=3", *([flag] if flag else []),
            f"--json={out}", "--no-progress", stdout=open(tmp_path / "o.txt", "w"),  # noqa: SIM115
        )  # fmt: skip
        report = json.loads(out.read_text())
        assert 0 <= report["models"]["hybrid"]["roc_auc"] <= 1
        notes[flag] = " ".join(report["notes"])

    assert "out-of-fold text score (second level cross-fitted too)" in notes[""]
    assert "out-of-fold text score (second level not nested)" in notes["--no-nested-stacking"]
    with pytest.raises(CommandError, match="--nested-stacking needs --inner-folds of at least 3"):
        call_command("churn_evaluate", *common, "--models=hybrid", "--inner-folds=2", "--nested-stacking")


def test_the_quantisation_setting_reaches_frozen_training_only(settings) -> None:  # noqa: ANN001
    from predictions.services.training import churn_model_config

    settings.CHURN_ENCODER_QUANTIZE = "int8"
    frozen = churn_model_config(mode="frozen", horizon_days=60, lead_days=0, options={})
    lora = churn_model_config(mode="lora", horizon_days=60, lead_days=0, options={})

    assert frozen.hybrid.quantize == "int8" and lora.hybrid.quantize == "none"
    assert frozen.hybrid.nested_stacking is None and frozen.hybrid.nests_stacking  # on by default with 5 folds
    plain = churn_model_config(mode="frozen", horizon_days=60, lead_days=0, options={"nested_stacking": False})
    assert not plain.hybrid.nests_stacking


def test_churn_evaluate_refuses_a_repeated_header_an_unreadable_workbook_and_a_json_folder_up_front(
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    import ml.evaluation

    path = _profile_csv(tmp_path)
    lines = path.read_text().splitlines()
    repeated = tmp_path / "repeated.csv"  # the label twice: pandas would read the copy as feature "Churn.1"
    repeated.write_text("\n".join(f"{line},{line.rsplit(',', 1)[1]}" for line in lines) + "\n")
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(b"PK\x03\x04 not really a workbook")
    common = ["--label-col=Churn", "--positive=Yes", "--id-col=id", "--models=logreg", "--no-progress"]

    with pytest.raises(CommandError, match="header column\\(s\\) 'Churn' appear more than once"):
        call_command("churn_evaluate", str(repeated), *common)
    with pytest.raises(CommandError, match="damaged.xlsx is not a readable workbook"):
        call_command("churn_evaluate", str(damaged), *common)
    monkeypatch.setattr(ml.evaluation, "cross_validate_profile", lambda *a, **k: pytest.fail("ran before the check"))
    with pytest.raises(CommandError, match="--json .* is a directory"):
        call_command("churn_evaluate", str(path), *common, f"--json={tmp_path}")


def test_churn_backtest_dates_past_the_calendar_are_a_command_error() -> None:
    build_store(n=20)
    with pytest.raises(CommandError, match="out of range|year"):
        call_command("churn_backtest", "--as-of=9999-12-31", "--horizon-days=60", "--no-progress")


def test_the_evaluation_checks_texts_with_the_tokenizer_of_the_encoder_its_models_read(
    tmp_path: Path,
    settings,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ml.evaluation
    from predictions.management.commands._text_models import encoder_tokenizer_from_options
    from tests.tiny_bert import LETTERS, write_tiny_bert

    settings.CHURN_CACHE_DIR = tmp_path / "cache"
    encoder = write_tiny_bert(
        tmp_path / "bert", tokens=[*":,-", *LETTERS, *map(str, range(10))], word_pieces=LETTERS,
        max_position_embeddings=128,
    )  # fmt: skip
    assert encoder_tokenizer_from_options({"encoder": str(encoder)}, ["logreg", "tfidf"]) is None  # no encoder read
    checks = []
    serialize = ml.evaluation.serialize_profile

    def spy(record: object, **options: object) -> str:
        checks.append(options.get("check_tokens"))
        return serialize(record, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(ml.evaluation, "serialize_profile", spy)
    path = _profile_csv(tmp_path)
    call_command(
        "churn_evaluate", str(path), "--label-col=Churn", "--positive=Yes", "--id-col=id", "--folds=3",
        f"--encoder={encoder}", "--models=tfidf,transformer", "--no-progress", stdout=open(tmp_path / "o.txt", "w"),  # noqa: SIM115
    )  # fmt: skip
    # Each text serialised twice: checked with the encoder's tokenizer for the transformer, unchecked for TF-IDF.
    checked = [check for check in checks if check is not None]
    assert checked and len(checked) * 2 == len(checks)
    assert all(check.name_or_path == str(encoder) for check in checked)
