"""Training and scoring through the Celery tasks (eager here), on a small generated store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from predictions.models import ChurnScore, ModelAuditEntry, ModelStatus, ModelVersion, ScoringRun, TrainingRun
from predictions.selectors import champion_model_state, customers_to_score
from predictions.services import model_version_promote, model_version_rollback
from predictions.services.scoring import (
    ChampionUnavailable,
    risk_tier,
    scoring_run_score_chunk,
    scoring_run_start,
    scoring_runs_resume_stalled,
)
from predictions.services.training import TrainingError, training_run_execute
from tests.model_versions import artifact_dir
from tests.predictions.conftest import STORE_END, train
from tests.staff import grant_app_permissions
from tests.tiny_bert import LETTERS, write_tiny_bert

pytestmark = pytest.mark.django_db(transaction=True)
END = STORE_END


def _train(**overrides: object) -> TrainingRun:
    return train(**overrides)


def test_training_registers_one_model_and_promotes_the_first(store: None) -> None:
    run = _train()
    run.refresh_from_db()
    version = ModelVersion.objects.get(training_run=run)
    assert run.status == TrainingRun.Status.SUCCEEDED and run.progress_percent == 100
    assert version.status == ModelStatus.CHAMPION and 0.5 < version.metrics["roc_auc"] <= 1
    assert (
        Path(version.artifact_path, "model.safetensors").is_file() and "model.safetensors" in version.artifact_checksums
    )
    assert champion_model_state() == "ok"


def test_a_training_task_delivered_twice_yields_one_model_version(store: None) -> None:
    run = _train()
    again = training_run_execute(training_run_id=run.pk)
    assert ModelVersion.objects.filter(training_run=run).count() == 1 and again.training_run_id == run.pk


def test_an_equal_challenger_on_the_same_holdout_is_not_promoted(store: None) -> None:
    first = ModelVersion.objects.get(training_run=_train())
    second = ModelVersion.objects.get(training_run=_train())
    entry = ModelAuditEntry.objects.get(model_version=second, action="not_promoted")
    assert second.status == ModelStatus.READY and ModelVersion.objects.get(pk=first.pk).status == ModelStatus.CHAMPION
    assert entry.details["roc_auc_gain"] == pytest.approx(0.0, abs=1e-9)


def test_scoring_stores_exactly_one_score_per_eligible_customer_and_reruns_add_none(store: None) -> None:
    _train()
    run = scoring_run_start(trigger="test", as_of=END, chunk_size=50)
    run.refresh_from_db()
    eligible = set(customers_to_score(as_of=END).values_list("id", flat=True))
    scored = list(ChurnScore.objects.filter(scoring_run=run).values_list("customer_id", flat=True))
    assert run.status == ScoringRun.Status.SUCCEEDED and run.customers_scored == len(eligible) == len(scored)
    assert set(scored) == eligible
    assert scoring_run_score_chunk(scoring_run_id=run.pk, customer_ids=sorted(eligible)) == 0
    assert ChurnScore.objects.filter(scoring_run=run).count() == len(eligible)
    score = ChurnScore.objects.filter(scoring_run=run).first()
    assert score.risk_tier == risk_tier(score.probability) and score.top_factors[0]["factor"]


def test_a_stalled_run_gets_its_lost_customers_scored_once_and_a_progressing_run_is_left_alone(store: None) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from predictions.services.scoring import scoring_runs_resume_stalled

    _train()
    run = scoring_run_start(trigger="test", as_of=END, chunk_size=50)
    # A chunk lost with a killed worker: its customers have no score, the run still runs, nothing moves.
    lost = list(ChurnScore.objects.filter(scoring_run=run).values_list("customer_id", flat=True)[:7])
    ChurnScore.objects.filter(scoring_run=run, customer_id__in=lost).delete()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    ScoringRun.objects.filter(pk=run.pk).update(status=ScoringRun.Status.RUNNING, finished_at=None)
    assert scoring_runs_resume_stalled(idle_seconds=600) == [], "scores came in a moment ago: not stalled"
    ScoringRun.objects.filter(pk=run.pk).update(created_at=an_hour_ago)
    ChurnScore.objects.filter(scoring_run=run).update(created_at=an_hour_ago)

    assert scoring_runs_resume_stalled(idle_seconds=600) == [run.pk]

    run.refresh_from_db()
    per_customer = list(
        ChurnScore.objects.filter(model_version=run.model_version, as_of=END).values_list("customer_id")
    )
    eligible = set(customers_to_score(as_of=END).values_list("id", flat=True))
    assert run.status == ScoringRun.Status.SUCCEEDED and run.resumed_at is not None
    assert sorted(c for (c,) in per_customer) == sorted(eligible), "every customer exactly once"
    assert scoring_runs_resume_stalled(idle_seconds=600) == []


def test_a_stalled_run_of_a_model_replaced_meanwhile_is_failed_not_resumed_by_the_retired_model(store: None) -> None:
    """Staff promote another model (or roll back) while a run has lost a chunk: the stall sweep must not have the
    retired model score those customers, nor may a late delivery of the chunk; their next scores come from the
    champion at the next scoring."""
    from datetime import timedelta

    from django.utils import timezone

    first = ModelVersion.objects.get(training_run=_train())
    second = ModelVersion.objects.get(training_run=_train(horizon_days=45))
    model_version_promote(model_version=second, actor="alice")
    run = scoring_run_start(trigger="test", as_of=END, chunk_size=50)
    lost = list(ChurnScore.objects.filter(scoring_run=run).values_list("customer_id", flat=True)[:7])
    ChurnScore.objects.filter(scoring_run=run, customer_id__in=lost).delete()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    ScoringRun.objects.filter(pk=run.pk).update(
        status=ScoringRun.Status.RUNNING, finished_at=None, created_at=an_hour_ago
    )
    ChurnScore.objects.filter(scoring_run=run).update(created_at=an_hour_ago)
    model_version_rollback(actor="bob")
    assert ModelVersion.objects.get(pk=first.pk).status == ModelStatus.CHAMPION

    resumed = scoring_runs_resume_stalled(idle_seconds=600)
    late_delivery = scoring_run_score_chunk(scoring_run_id=run.pk, customer_ids=lost)

    run.refresh_from_db()
    rescored = ChurnScore.objects.filter(model_version=second, customer_id__in=lost).count()
    assert (resumed, late_delivery, rescored) == ([], 0, 0), "the retired model scored again"
    assert run.status == ScoringRun.Status.FAILED and "no longer the champion" in run.error, run.error
    assert scoring_run_start(trigger="test", as_of=END).model_version == first


class FlakyBroker:
    """An after-scoring task whose broker is down until told otherwise."""

    down = True
    sent: list[int] = []

    @classmethod
    def delay(cls, scoring_run_id: int) -> None:
        if cls.down:
            raise ConnectionRefusedError("the broker is down")
        cls.sent.append(scoring_run_id)


def test_follow_ups_lost_with_the_broker_down_are_sent_again_once_and_only_for_recent_runs(
    store: None,
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from predictions.services.scoring import scoring_runs_resume_stalled

    settings.CHURN_AFTER_SCORING_TASKS = [f"{__name__}.FlakyBroker"]
    FlakyBroker.down, FlakyBroker.sent = True, []
    _train()
    with django_capture_on_commit_callbacks(execute=True):
        run = scoring_run_start(trigger="test", as_of=END, chunk_size=10_000)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED and run.followups_sent_at is None and FlakyBroker.sent == []
    assert scoring_runs_resume_stalled(idle_seconds=600) == [], "finished a moment ago: its tasks may be on the way"

    FlakyBroker.down = False
    an_hour_ago = timezone.now() - timedelta(hours=1)
    ScoringRun.objects.filter(pk=run.pk).update(finished_at=an_hour_ago)
    old = ScoringRun.objects.create(model_version=run.model_version, as_of=END, status=ScoringRun.Status.SUCCEEDED)
    ScoringRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=2))

    assert scoring_runs_resume_stalled(idle_seconds=600) == [run.pk]
    assert scoring_runs_resume_stalled(idle_seconds=600) == []
    run.refresh_from_db()
    assert FlakyBroker.sent == [run.pk] and run.followups_sent_at is not None


def test_a_corrupt_champion_stops_scoring_with_a_clear_error(store: None) -> None:
    version = ModelVersion.objects.get(training_run=_train())
    Path(version.artifact_path, "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ChampionUnavailable, match="cannot score"):
        scoring_run_start(trigger="test", as_of=END)
    assert not ChurnScore.objects.exists() and champion_model_state() == "error"
    assert ScoringRun.objects.get().status == ScoringRun.Status.FAILED


def test_a_champion_whose_files_and_manifest_were_replaced_together_is_refused(store: None) -> None:
    from predictions.services.scoring import churn_model_load
    from tests.artifact_forgery import edit_metadata_and_resign

    version = ModelVersion.objects.get(training_run=_train())
    assert "sha256" in version.artifact_checksums["manifest.json"]
    # A better ROC AUC, as the model card would then show it, and a manifest that matches it again.
    edit_metadata_and_resign(Path(version.artifact_path), lambda metadata: metadata["metrics"].update(roc_auc=0.999))

    with pytest.raises(ChampionUnavailable, match="manifest.json is not the manifest recorded"):
        churn_model_load(version)


def test_a_champion_whose_encoder_is_gone_is_unavailable_not_a_crash(store: None, tiny_encoder: Path) -> None:
    import shutil

    from predictions.services.scoring import churn_model_load

    version = ModelVersion.objects.get(training_run=_train(mode="frozen"))
    shutil.rmtree(tiny_encoder)

    with pytest.raises(ChampionUnavailable, match="does not exist"):
        churn_model_load(version)


def test_rollback_changes_the_model_used_by_the_next_scoring(store: None) -> None:
    first = ModelVersion.objects.get(training_run=_train())
    second = ModelVersion.objects.get(training_run=_train(horizon_days=45))
    model_version_promote(model_version=second, actor="alice")
    assert scoring_run_start(trigger="test", as_of=END).model_version == second
    model_version_rollback(actor="bob")
    later = datetime(2026, 6, 2, tzinfo=UTC)
    assert scoring_run_start(trigger="test", as_of=later).model_version == first


def test_a_newly_promoted_champion_rescores_everybody_at_once(store: None, settings) -> None:  # noqa: ANN001
    settings.CHURN_RESCORE_ON_PROMOTION = True
    version = ModelVersion.objects.get(training_run=_train())
    run = ScoringRun.objects.get(trigger=f"new champion {version.name}")
    assert run.model_version == version and run.status == ScoringRun.Status.SUCCEEDED and run.customers_scored > 0


def first_forty_customers(*, until: object = None) -> list[int]:
    """Stands in for the treated customers (CHURN_TRAINING_EXCLUDED_CUSTOMERS in the test below)."""
    from customers.models import Customer

    return list(Customer.objects.order_by("id").values_list("id", flat=True)[:40])


def test_training_leaves_out_customers_who_received_a_retention_action(store: None, settings) -> None:  # noqa: ANN001
    from ml.snapshot import EligibilityRule, LabelConfig, labelled_snapshots
    from predictions.selectors import customer_histories

    assert settings.CHURN_TRAINING_EXCLUDED_CUSTOMERS == "alerts.selectors.treated_customer_ids"
    settings.CHURN_TRAINING_EXCLUDED_CUSTOMERS = f"{__name__}.first_forty_customers"
    version = ModelVersion.objects.get(training_run=_train())
    holdout_cutoff = datetime.fromisoformat(version.metrics["cutoff"])
    histories = customer_histories(until=END, exclude_customer_ids=first_forty_customers())
    rows = labelled_snapshots(
        histories, [holdout_cutoff], config=LabelConfig(horizon_days=30), rule=EligibilityRule(), label_until=END
    )
    everyone = labelled_snapshots(
        customer_histories(until=END), [holdout_cutoff], config=LabelConfig(horizon_days=30), label_until=END
    )
    assert version.metrics["n"] == len(rows) < len(everyone)


def test_training_stores_the_model_card_measured_on_the_holdout_of_the_metrics(store: None) -> None:
    version = ModelVersion.objects.get(training_run=_train())
    card = version.model_card
    by_key = {entry["key"]: entry for entry in card["models"]}
    assert list(by_key) == ["model", "recency", "logreg", "lightgbm"], card.get("skipped")
    assert by_key["model"]["metrics"]["roc_auc"] == pytest.approx(version.metrics["roc_auc"], abs=1e-5)
    assert card["holdout"]["n"] == version.metrics["n"] and card["holdout"]["cutoff"] == version.metrics["cutoff"]
    assert card["training"]["cutoffs"] == version.training_cutoffs[1:]
    assert all(sum(b["count"] for b in entry["calibration"]) == version.metrics["n"] for entry in card["models"])
    assert all(len(entry["roc"]["fpr"]) <= 100 for entry in card["models"])


def test_a_model_card_that_cannot_be_computed_leaves_a_note_not_a_failed_run(store: None, monkeypatch) -> None:  # noqa: ANN001
    import ml.model_card

    def broken(model: object) -> dict:
        raise RuntimeError("no baselines today")

    monkeypatch.setattr(ml.model_card, "churn_model_card", broken)
    run = _train()
    run.refresh_from_db()
    version = ModelVersion.objects.get(training_run=run)
    assert run.status == TrainingRun.Status.SUCCEEDED and version.status == ModelStatus.CHAMPION
    assert "no baselines today" in version.model_card["error"]


def _demo_words() -> list[str]:
    """The English words of the demo store's messages and profiles, so the tiny encoder below sees words, not
    letters."""
    import re

    from customers.generator import names, text

    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.update(re.findall(r"[a-z]+", value.lower()))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    for module in (text, names):
        for name in dir(module):
            if name.isupper():
                walk(getattr(module, name))
    return sorted(found)


@pytest.fixture
def tiny_encoder(settings, tmp_path: Path) -> Iterator[Path]:  # noqa: ANN001
    """A 2-layer random BERT (no download) as CHURN_ENCODER, long enough for the 256-token customer texts, on one
    torch thread (tiny models thrash on two threads of a shared 2-core machine)."""
    import torch

    digits = [str(d) for d in range(10)]
    # Numbers and the serialiser's own words as whole tokens, as a real vocabulary has them: with letters and digits
    # alone a customer's profile and behaviour lines took more than the 256 tokens (and their messages no room).
    numbers = [str(n) for n in [*range(1000), *range(1990, 2040)]] + [f"{n:02d}" for n in range(10)]
    layout = (
        "acquisition channel device loyalty tier newsletter preferred category yes no "
        "segment country language customer since orders spend average returned with discount by month last order "
        "ago weeks week months month days year over none browsing events page view add cart search login wishlist "
        "support conversations messages from newest first chat email phone k unknown"
    ).split()
    directory = write_tiny_bert(
        tmp_path / "tiny-bert",
        tokens=[*".,!?:;()-$_[]#'", *LETTERS, *digits, *numbers, *layout, *_demo_words()],
        word_pieces=[*LETTERS, *digits],
        max_position_embeddings=512,
    )
    settings.CHURN_ENCODER = str(directory)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield directory
    torch.set_num_threads(threads)


def _scores(run: ScoringRun) -> dict[int, tuple[float, list]]:
    return {
        customer_id: (probability, factors)
        for customer_id, probability, factors in ChurnScore.objects.filter(scoring_run=run).values_list(
            "customer_id", "probability", "top_factors"
        )
    }


def test_incremental_rescoring_reuses_only_what_is_unchanged_and_equals_a_full_rescoring(
    talkative_store: None,
    tiny_encoder: Path,
    settings,  # noqa: ANN001
) -> None:
    from datetime import timedelta

    from customers.models import Message
    from predictions.services import scoring

    settings.CHURN_TEXT_FACTORS_FROM = 0.0  # text factors for the riskiest half of each chunk, changed or not
    settings.CHURN_TEXT_FACTORS_PER_CHUNK = 15
    _train(mode="frozen", options={"max_training_cutoffs": 3, "keep_text": True})  # text factors need a text score
    first = scoring_run_start(trigger="first", as_of=END, chunk_size=30)
    first.refresh_from_db()
    before = _scores(first)
    changed = sorted(before)[::10]
    Message.objects.bulk_create(
        Message(
            external_id=f"new-{customer_id}",
            customer_id=customer_id,
            conversation_id=f"new-{customer_id}",
            sent_at=END + timedelta(minutes=30),
            text="My parcel is two weeks late. I want a refund and I will cancel my account!",
        )
        for customer_id in changed
    )
    later = END + timedelta(hours=1)

    scoring._loaded_models.clear()  # a fresh worker: only the encoding cache on disk remembers texts
    incremental = scoring_run_start(trigger="incremental", as_of=later, chunk_size=30)
    incremental.refresh_from_db()
    reused = _scores(incremental)
    ChurnScore.objects.filter(scoring_run=incremental).delete()  # the same (model, as_of) scored from scratch:
    scoring._loaded_models.clear()
    full = scoring_run_start(trigger="full", as_of=later, full=True, chunk_size=30)
    full.refresh_from_db()
    recomputed = _scores(full)

    assert incremental.texts_encoded == len(changed) and incremental.texts_reused == len(before) - len(changed)
    assert full.texts_encoded == len(before) and full.texts_reused == 0
    assert set(reused) == set(recomputed) == set(before)
    for customer_id, (probability, factors) in recomputed.items():
        assert reused[customer_id][0] == pytest.approx(probability, abs=1e-6)
        assert reused[customer_id][1] == factors
    with_text_factors = [
        c
        for c, (_, factors) in reused.items()
        if any(f["factor"].startswith(("message of", "record:")) for f in factors)
    ]
    # The text factors of the riskiest were compared too, changed customers' among them (their new texts' parts).
    assert set(with_text_factors) - set(changed) and set(with_text_factors) & set(changed)
    assert any(reused[c] != before[c] for c in changed)


def test_histories_hold_each_events_properties_as_stored() -> None:
    from customers.models import Customer, Event
    from predictions.selectors import StoredJSONObject, customer_histories

    customer = Customer.objects.create(external_id="c-1")
    stored = [{"q": "shoes", "page": {"n": 2, "tags": ["a", "ü"]}}, {}]
    for i, properties in enumerate(stored):
        Event.objects.create(
            external_id=f"e-{i}", customer=customer, kind="search", occurred_at=END, properties=properties
        )

    (history,) = customer_histories(customer_ids=[customer.pk], event_properties=True)

    full, empty = sorted((e.properties for e in history.events), key=len, reverse=True)
    assert isinstance(full, StoredJSONObject) and isinstance(empty, StoredJSONObject)
    assert full == stored[0] and dict(full) == stored[0] and full["page"]["tags"] == ["a", "ü"]
    assert empty == {} and len(empty) == 0
    with pytest.raises(TypeError, match="not a JSON object"):
        dict(StoredJSONObject("[1, 2]"))


def test_histories_share_repeated_strings_and_leave_event_properties_out_by_default() -> None:
    from customers.models import Customer, Event, Message, Order
    from ml.data import NO_PROPERTIES
    from predictions.selectors import customer_histories

    for c in range(2):
        customer = Customer.objects.create(external_id=f"c-{c}")
        for i in range(2):
            Event.objects.create(
                external_id=f"e-{c}-{i}", customer=customer, kind="page_view", occurred_at=END, properties={"n": i}
            )
            Order.objects.create(
                external_id=f"o-{c}-{i}", customer=customer, placed_at=END, amount="5.00", status="returned"
            )
            Message.objects.create(
                external_id=f"m-{c}-{i}", customer=customer, sent_at=END, text=f"hi {i}", channel="email"
            )

    histories = customer_histories()

    events = [event for history in histories for event in history.events]
    orders = [order for history in histories for order in history.orders]
    messages = [message for history in histories for message in history.messages]
    assert len(events) == len(orders) == len(messages) == 4
    assert all(event.properties is NO_PROPERTIES for event in events), "one shared empty mapping, not one per event"
    assert len({id(event.kind) for event in events}) == 1, "one string object for every event of a kind"
    assert len({id(order.status) for order in orders}) == 1
    assert len({id(message.channel) for message in messages}) == len({id(m.author_role) for m in messages}) == 1
    with_properties = customer_histories(event_properties=True)
    assert sorted(event.properties["n"] for history in with_properties for event in history.events) == [0, 0, 1, 1]


def test_a_loaded_model_is_frozen_out_of_the_garbage_collector_until_the_next_one(store: None) -> None:
    import gc

    from predictions.services import scoring

    version = ModelVersion.objects.get(training_run=_train())
    scoring._loaded_models.clear()
    gc.unfreeze()

    model = scoring.churn_model_load(version)

    frozen = gc.get_freeze_count()
    # Tracked containers: a second freeze would move them into the permanent generation too.
    fresh = [[i] for i in range(1000)]
    # Frozen objects may still be freed by reference counting, so the count may fall; it must not grow.
    assert frozen > 0 and scoring.churn_model_load(version) is model and gc.get_freeze_count() <= frozen, len(fresh)
    gc.unfreeze()


def test_the_commands_take_a_date_as_midnight_utc(store: None, tmp_path: Path) -> None:
    from django.core.management import call_command

    with open(tmp_path / "out.txt", "w") as out:
        call_command(
            "churn_train", "--mode=lightgbm", "--horizon-days=30", "--as-of=2026-06-01", "--max-cutoffs=3",
            "--inner-folds=2", stdout=out,
        )  # fmt: skip
        call_command("churn_score", "--as-of=2026-05-20", stdout=out)

    assert TrainingRun.objects.get().as_of == datetime(2026, 6, 1, tzinfo=UTC)
    assert ScoringRun.objects.get().as_of == datetime(2026, 5, 20, tzinfo=UTC)


def test_a_champion_damaged_in_place_does_not_stop_a_successor_from_registering(store: None) -> None:
    champion = ModelVersion.objects.get(training_run=_train())
    weights = Path(champion.artifact_path, "model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-16:] = b"\x00" * 16  # same size (the cheap check passes), other bytes
    weights.write_bytes(bytes(data))

    run = _train()

    run.refresh_from_db()
    successor = ModelVersion.objects.get(training_run=run)
    assert run.status == TrainingRun.Status.SUCCEEDED and successor.status in (ModelStatus.READY, ModelStatus.CHAMPION)
    entry = ModelAuditEntry.objects.filter(model_version=successor).exclude(action="registered").get()
    assert "champion_roc_auc" not in entry.details or entry.details["champion_roc_auc"] == champion.metrics["roc_auc"]


def test_a_challenger_is_not_judged_by_the_numbers_of_a_champion_replaced_meanwhile(
    store: None,
    monkeypatch,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    from predictions.services import training as training_service

    ModelVersion.objects.get(training_run=_train())
    better = ModelVersion.objects.create(
        name="x",
        model_type="hybrid",
        status=ModelStatus.READY,
        holdout_key="other",
        metrics={"roc_auc": 0.99},
        artifact_path=artifact_dir(),
    )
    measure = training_service._champion_metrics_on

    def measured_then_replaced(*args: object) -> object:
        metrics = measure(*args)
        model_version_promote(model_version=better, actor="staff")  # while the challenger was being registered
        return metrics

    monkeypatch.setattr(training_service, "_champion_metrics_on", measured_then_replaced)
    settings.CHURN_PROMOTION_MIN_ROC_AUC_GAIN = 0.0

    challenger = ModelVersion.objects.get(training_run=_train())

    entry = ModelAuditEntry.objects.filter(model_version=challenger).exclude(action="registered").get()
    assert entry.action == "not_promoted" and "different holdout" in entry.details["reason"]
    assert ModelVersion.objects.get(pk=better.pk).status == ModelStatus.CHAMPION


def test_transient_errors_retried_by_a_chunk_are_not_counted_as_worker_crashes(store: None, monkeypatch) -> None:  # noqa: ANN001
    from django.db import OperationalError

    import predictions.tasks as tasks

    _train()
    eligible = sorted(customers_to_score(as_of=END).values_list("id", flat=True))
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.score_chunk_task, "delay", lambda *args: sent.append(args))
    run = scoring_run_start(trigger="test", as_of=END, chunk_size=len(eligible))
    ((run_id, chunk),) = sent
    real, calls = tasks.scoring_run_score_chunk, []

    def flaky(**kwargs: object) -> int:
        calls.append(1)
        if len(calls) <= 4:  # more transient failures than the crashes a chunk may survive
            raise OperationalError("database is locked")
        return real(**kwargs)

    monkeypatch.setattr(tasks, "scoring_run_score_chunk", flaky)
    outcomes: list[object] = []

    for retries in range(5):  # the first delivery, then Celery's autoretries (its request counts them)
        tasks.score_chunk_task.push_request(retries=retries)
        try:
            outcomes.append(tasks.score_chunk_task.run(run_id, chunk))
        except OperationalError:
            outcomes.append("retried")
        finally:
            tasks.score_chunk_task.pop_request()

    assert outcomes == ["retried"] * 4 + [len(eligible)]
    assert ChurnScore.objects.filter(scoring_run=run).count() == len(eligible)


def test_a_parked_chunk_fails_its_run_instead_of_leaving_it_running(store: None, monkeypatch) -> None:  # noqa: ANN001
    import predictions.tasks as tasks
    from predictions.models import TaskDelivery

    _train()
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.score_chunk_task, "delay", lambda *args: sent.append(args))
    run = scoring_run_start(trigger="test", as_of=END, chunk_size=10_000)
    ((run_id, chunk),) = sent
    key = f"scoring-run-{run_id}-{min(chunk)}-{len(chunk)}"
    TaskDelivery.objects.create(task_name="predictions.score_chunk", key=key, attempts=3)  # three workers died on it

    tasks.score_chunk_task.push_request(retries=0)  # a fourth delivery, not a retry
    try:
        assert tasks.score_chunk_task.run(run_id, chunk) == 0
    finally:
        tasks.score_chunk_task.pop_request()

    run.refresh_from_db()
    assert run.status == ScoringRun.Status.FAILED and "parked" in run.error
    assert scoring_runs_resume_stalled(idle_seconds=0) == []


def test_a_delivery_that_finds_a_dead_workers_lease_comes_back_when_it_ends(store: None, monkeypatch) -> None:  # noqa: ANN001
    from datetime import timedelta

    from celery.exceptions import Retry
    from django.conf import settings
    from django.utils import timezone

    import predictions.tasks as tasks
    from predictions.services.training import _ProgressRecorder, training_run_acquire_lease

    monkeypatch.setattr(tasks.train_model_task, "delay", lambda *args: None)  # the request's own delivery: not here
    run = _train()
    assert training_run_acquire_lease(training_run_id=run.pk, owner="gpu-1:dead")  # then its worker was killed
    countdowns: list[float] = []

    def retry(*, countdown: float) -> Retry:
        countdowns.append(countdown)
        return Retry()

    monkeypatch.setattr(tasks.train_model_task, "retry", retry)
    tasks.train_model_task.push_request(retries=0, is_eager=False)  # the broker's redelivery, at once
    try:
        with pytest.raises(Retry):
            tasks.train_model_task.run(run.pk)
    finally:
        tasks.train_model_task.pop_request()

    run.refresh_from_db()
    left = (run.lease_expires_at - timezone.now()).total_seconds()
    poll = settings.CHURN_TRAIN_LEASE_POLL_SECONDS
    assert countdowns == [poll] and left > poll and poll == 60  # looks again in a minute
    assert left <= 1800 and ModelVersion.objects.filter(training_run=run).count() == 0
    # Progress renews the lease of the live owner only.
    run.lease_expires_at = timezone.now() + timedelta(seconds=10)
    run.save(update_fields=["lease_expires_at"])
    _ProgressRecorder(run)(0.5, "fold 2 of 5")
    run.refresh_from_db()
    assert (run.lease_expires_at - timezone.now()).total_seconds() > 1700 and run.current_step == "fold 2 of 5"


def test_polls_of_a_run_held_by_a_live_worker_never_park_it(store: None, monkeypatch) -> None:  # noqa: ANN001
    from datetime import timedelta

    from celery.exceptions import Retry
    from django.utils import timezone

    import predictions.tasks as tasks
    from predictions.models import TaskDelivery
    from predictions.services.training import training_run_acquire_lease

    monkeypatch.setattr(tasks.train_model_task, "delay", lambda *args: None)
    monkeypatch.setattr(tasks.train_model_task, "retry", lambda *, countdown: Retry())
    run = _train()
    key = f"training-run-{run.pk}"
    # A live worker's delivery started the work and holds the lease.
    TaskDelivery.objects.create(task_name="predictions.train_model", key=key, attempts=1)
    assert training_run_acquire_lease(training_run_id=run.pk, owner="gpu-1:alive")

    def deliver(retries: int) -> int | None:
        tasks.train_model_task.push_request(retries=retries, is_eager=False)
        try:
            return tasks.train_model_task.run(run.pk)
        finally:
            tasks.train_model_task.pop_request()

    for retries in range(6):  # a duplicate delivery looks again every minute for six minutes
        with pytest.raises(Retry):
            deliver(retries)
    assert TaskDelivery.objects.get(key=key).attempts == 1
    # Between the duplicate's check and its lease attempt, another delivery takes the run: its start is taken back.
    lease_checks = iter([None, 120.0])
    with monkeypatch.context() as patch, pytest.raises(Retry):
        patch.setattr(tasks, "training_run_lease_seconds_left", lambda **_: next(lease_checks))
        deliver(6)
    assert TaskDelivery.objects.get(key=key).attempts == 1

    # Now the live worker is killed: its lease runs out and the broker delivers its task again, which trains.
    TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    version_id = deliver(0)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert ModelVersion.objects.get(training_run=run).pk == version_id
    assert TaskDelivery.objects.get(key=key).attempts == 2


def test_a_training_run_whose_message_was_lost_is_sent_again_and_an_abandoned_one_failed(
    store: None,
    monkeypatch,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    import importlib
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    import predictions.tasks as tasks
    from predictions.services.training import training_run_acquire_lease

    sent: list[int] = []
    monkeypatch.setattr(tasks.train_model_task, "delay", sent.append)  # the broker "loses" these messages
    lost, queued = _train(), _train()
    sent.clear()
    hour_ago = timezone.now() - timedelta(hours=1)
    TrainingRun.objects.filter(pk=lost.pk).update(created_at=hour_ago)

    # Another training holds a live lease: the pending runs may just wait behind it in the gpu queue.
    assert training_run_acquire_lease(training_run_id=queued.pk, owner="gpu-1:alive")
    assert tasks.resume_lost_training_task.apply().get() == {"resent": [], "failed": []}
    # That worker died long ago: its run is failed with the reason, and the idle queue gets the lost run again.
    long_ago = timezone.now() - timedelta(seconds=2 * settings.CHURN_TRAIN_TIME_LIMIT + 60)
    TrainingRun.objects.filter(pk=queued.pk).update(lease_expires_at=long_ago)
    assert tasks.resume_lost_training_task.apply().get() == {"resent": [lost.pk], "failed": [queued.pk]}
    assert sent == [lost.pk]
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.FAILED and "no delivery took the run over" in queued.error
    # Sent again at most once per CHURN_TRAIN_RESEND_SECONDS.
    assert tasks.resume_lost_training_task.apply().get() == {"resent": [], "failed": []}

    tasks.train_model_task.apply(args=[lost.pk])  # the resent message arrives
    lost.refresh_from_db()
    assert lost.status == TrainingRun.Status.SUCCEEDED and lost.resent_at is not None
    # The migration's schedule (created again here: tests that truncate tables remove migration data).
    from django.apps import apps

    importlib.import_module("predictions.migrations.0010_training_run_resent_at").create_schedule(apps, None)
    schedule = PeriodicTask.objects.get(name="resume lost training runs")
    assert (schedule.task, schedule.interval.every, schedule.interval.period) == (
        "predictions.resume_lost_training",
        10,
        "minutes",
    )


def test_real_time_scoring_of_a_customer_not_signed_up_yet_is_a_409_naming_why(store: None) -> None:
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.test import APIClient

    from customers.models import Customer

    _train()
    later = Customer.objects.create(external_id="signs-up-later", signed_up_at=timezone.now() + timedelta(days=3))
    client = APIClient()
    client.force_login(
        grant_app_permissions(get_user_model().objects.create_user("ops", password="pw-ops-for-tests", is_staff=True))
    )

    response = client.post(f"/api/v1/customers/{later.pk}/score")

    assert response.status_code == 409
    assert "signs-up-later has not signed up yet" in response.json()["error"]["message"]


def test_a_score_on_demand_refuses_customers_a_scoring_run_leaves_out(store: None) -> None:
    # A customer without an order (the model, trained on order activity, never saw the like of them) and one marked
    # churned: the scoring runs leave them out, and the real-time score and "Rescore now" scored them anyway.
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.test import APIClient

    from customers.models import Customer
    from predictions.services.scoring import customer_rescore_now

    _train()
    signed_up = timezone.now() - timedelta(days=30)
    quiet = Customer.objects.create(external_id="no-orders-yet", signed_up_at=signed_up)
    gone = Customer.objects.filter(orders__isnull=False).exclude(churned=True).order_by("pk").first()
    Customer.objects.filter(pk=gone.pk).update(churned=True)
    client = APIClient()
    client.force_login(
        grant_app_permissions(get_user_model().objects.create_user("ops", password="pw-ops-for-tests", is_staff=True))
    )
    for customer in (quiet, gone):
        response = client.post(f"/api/v1/customers/{customer.pk}/score")
        assert response.status_code == 409, response.content
        assert "is not one the champion" in response.json()["error"]["message"]
        customer.refresh_from_db()
        with pytest.raises(ValueError, match="scoring runs leave them out too"):
            customer_rescore_now(customer=customer)
    assert not ChurnScore.objects.filter(customer__in=[quiet, gone], scoring_run__isnull=True).exists()
    from predictions.selectors import customers_to_score

    scorable = customers_to_score(as_of=timezone.now()).first()
    assert client.post(f"/api/v1/customers/{scorable.pk}/score").status_code == 200


@pytest.mark.django_db(transaction=True)  # commits for real: the training task runs inside the command
def test_churn_train_refuses_bad_options_and_a_failed_training_in_plain_words() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    base = ["churn_train", "--mode=lightgbm", "--horizon-days=30", "--as-of=2026-06-01"]
    for extra, message in (
        ("--lead-days=-5", "lead_days must be from 0 to 3650, not -5"),
        ("--horizon-days=10000000", "horizon_days must be from 1 to 3650, not 10000000"),
        ("--max-cutoffs=1", "max_training_cutoffs must be at least 2"),
        ("--inner-folds=1", "inner_folds must be at least 2"),
        ("--nested-stacking --inner-folds=2", "nested_stacking needs inner_folds of at least 3"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command(*base, *extra.split())
    assert not TrainingRun.objects.exists()
    # An empty store: the training runs in-process (no broker configured) and fails; the command says why.
    with pytest.raises(CommandError, match="failed: no customer has any qualifying activity"):
        call_command(*base)


def test_ctrl_c_during_churn_train_fails_the_run_it_was_training(store: None, monkeypatch) -> None:  # noqa: ANN001
    from django.core.management import call_command

    from ml.churn_model import ChurnModel
    from predictions.selectors import training_in_progress

    def interrupted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise KeyboardInterrupt  # the operator presses Ctrl-C while the model trains in the command

    monkeypatch.setattr(ChurnModel, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        call_command("churn_train", "--mode=lightgbm", "--horizon-days=30", "--as-of=2026-06-01", stdout=io.StringIO())

    run = TrainingRun.objects.get()
    assert (run.status, run.lease_expires_at) == (TrainingRun.Status.FAILED, None) and "interrupted" in run.error
    assert not training_in_progress(), "scheduled and drift retraining would be skipped while it looks under way"


def test_churn_train_if_idle_requests_nothing_while_a_training_is_pending(monkeypatch) -> None:  # noqa: ANN001
    from django.core.management import call_command

    from churnsite.celery import app as celery_app
    from predictions import tasks

    celery_app.conf.task_always_eager = False  # CELERY_TASK_ALWAYS_EAGER=false, as bin/demo-pipeline's last step
    monkeypatch.setattr(tasks.train_model_task, "delay", lambda *args, **kwargs: None)  # no worker yet (make serve)
    outputs = []
    for _pipeline_run in range(2):
        out = io.StringIO()
        call_command(
            "churn_train", "--mode=frozen", "--horizon-days=60", "--max-cutoffs=3", "--inner-folds=3", "--if-idle",
            stdout=out,
        )  # fmt: skip
        outputs.append(out.getvalue())

    assert TrainingRun.objects.filter(status="pending", mode="frozen").count() == 1
    assert "already pending or running: nothing requested (--if-idle)" in outputs[1], outputs


@pytest.mark.django_db  # refused before anything is stored
@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        # 01:00 at +05:00 on the first day of year 1 is before year 1 in UTC: storing it overflowed.
        ("0001-01-01T01:00:00+05:00", "is outside the calendar once in UTC"),
        ("9999-12-31T23:00:00-05:00", "is outside the calendar once in UTC"),
        ("1970-12-31T23:00:00+05:00", "is before 1971"),
    ],
)
def test_train_and_score_refuse_an_as_of_outside_the_calendar_in_utc(as_of: str, message: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    for command in ("churn_train", "churn_score"):
        with pytest.raises(CommandError, match=f"--as-of .*{message}"):
            call_command(command, f"--as-of={as_of}")
    assert not TrainingRun.objects.exists() and not ScoringRun.objects.exists()


def test_a_taken_over_training_that_registers_second_leaves_the_registered_artifact_intact(
    store: None,
    monkeypatch,  # noqa: ANN001
) -> None:
    """A worker still training when its lease runs out (a long step that reports no progress) and the delivery
    that took the run over both finish: the one that registers second must not replace the registered files."""
    from datetime import timedelta

    from django.utils import timezone

    import predictions.tasks as tasks
    from ml.churn_model import ChurnModel
    from predictions.selectors import model_artifact_problem

    monkeypatch.setattr(tasks.train_model_task, "delay", lambda *args: None)  # delivered by hand below
    run = _train()
    real_fit = ChurnModel.fit
    takeovers: list[ModelVersion | None] = []
    fits: list[int] = []

    def fit(self, histories, **kwargs):  # noqa: ANN001, ANN202
        fits.append(len(histories))
        if len(fits) == 1:
            # The first delivery's lease runs out here; another delivery takes the run over, trains and registers.
            TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            takeovers.append(training_run_execute(training_run_id=run.pk))
            # The first one then trains on what it read, which differs (as two GPU trainings differ anyway).
            histories = histories[1:]
        return real_fit(self, histories, **kwargs)

    monkeypatch.setattr(ChurnModel, "fit", fit)

    returned = training_run_execute(training_run_id=run.pk)

    version = ModelVersion.objects.get(training_run=run)
    assert takeovers == [version] and returned == version
    assert model_artifact_problem(version) is None, model_artifact_problem(version)
    saved = sorted(path.name for path in Path(version.artifact_path).parent.iterdir())
    assert saved == [Path(version.artifact_path).name], f"the losing attempt's files are left: {saved}"


def test_a_taken_over_training_that_fails_after_the_other_registered_leaves_the_run_succeeded(
    store: None,
    monkeypatch,  # noqa: ANN001
) -> None:
    # The attempt whose lease ran out failed after the one that took the run over had registered: it marked the
    # whole run failed, and left its own saved files behind.
    from datetime import timedelta

    from django.utils import timezone

    import predictions.services.training as training
    import predictions.tasks as tasks
    from ml.churn_model import ChurnModel

    monkeypatch.setattr(tasks.train_model_task, "delay", lambda *args: None)  # delivered by hand below
    run = _train()
    real_fit, real_profile = ChurnModel.fit, training._reference_profile
    fits: list[int] = []
    profiles: list[int] = []

    def fit(self, histories, **kwargs):  # noqa: ANN001, ANN202
        fits.append(1)
        if len(fits) == 1:
            TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            training_run_execute(training_run_id=run.pk)
        return real_fit(self, histories, **kwargs)

    def profile(model, histories):  # noqa: ANN001, ANN202
        profiles.append(1)
        if len(profiles) == 2:  # the first attempt, after it saved its artifact
            raise RuntimeError("worker ran out of memory")
        return real_profile(model, histories)

    monkeypatch.setattr(ChurnModel, "fit", fit)
    monkeypatch.setattr(training, "_reference_profile", profile)

    with pytest.raises(TrainingError, match="out of memory"):
        training_run_execute(training_run_id=run.pk)

    run.refresh_from_db()
    version = ModelVersion.objects.get(training_run=run)
    assert run.status == TrainingRun.Status.SUCCEEDED and run.error == ""
    saved = sorted(path.name for path in Path(version.artifact_path).parent.iterdir())
    assert saved == [Path(version.artifact_path).name], f"the failed attempt's files are left: {saved}"
