"""Profile data (a churn flag, no orders) through the database path: import with the label, train on the flag,
score the customers still here, explain with their attributes, and alert on an attribute filter."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from alerts.models import ActionKind, Alert, AlertRule, TriggerKind
from alerts.services import alerts_apply_rules
from customers.models import Customer
from predictions.models import ChurnScore, ModelVersion, ScoringRun, TrainingRun
from tests.customers.test_import_command import run_import

pytestmark = pytest.mark.django_db(transaction=True)


def telco_like(n: int = 400, seed: int = 0) -> str:
    """Month-to-month customers with short tenure and high charges churn far more, as in the telco file."""
    rng = np.random.default_rng(seed)
    lines = ["customerID,Contract,tenure,MonthlyCharges,SeniorCitizen,Churn"]
    for i in range(n):
        contract = rng.choice(["Month-to-month", "One year", "Two year"], p=[0.55, 0.25, 0.2])
        tenure, charges, senior = int(rng.integers(1, 72)), float(rng.uniform(20, 110)), int(rng.random() < 0.16)
        risk = (0.45 if contract == "Month-to-month" else 0.08) + (0.2 if tenure < 12 else 0) + 0.1 * senior
        lines.append(f"T{i:04d},{contract},{tenure},{charges:.2f},{senior},{'Yes' if rng.random() < risk else 'No'}")
    return "\n".join(lines) + "\n"


def _flag_model(**request: object) -> ModelVersion:
    """A LightGBM model trained on the churn flags through a training run (``request``: more of its arguments)."""
    from predictions.services.training import training_run_request

    options = {"labels_from": "flag", "inner_folds": 2}
    run = training_run_request(mode="lightgbm", horizon_days=30, actor="test", options=options, **request)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return ModelVersion.objects.get(training_run=run)


def _promotion_decision(version: ModelVersion) -> dict:
    """What the training run recorded about promoting ``version``: promote, reason, the figures compared."""
    from predictions.models import ModelAuditEntry

    actions = [ModelAuditEntry.Action.PROMOTED, ModelAuditEntry.Action.NOT_PROMOTED]
    return ModelAuditEntry.objects.get(model_version=version, action__in=actions).details


def test_a_profile_file_trains_on_its_flag_scores_the_customers_still_here_and_alerts_by_attribute(
    settings,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_AFTER_SCORING_TASKS = []
    result = run_import("customers", telco_like(), label_column="Churn", positive_label="Yes")
    assert result.rows_imported == 400 and not Customer.objects.filter(churned__isnull=True).exists()

    with pytest.raises(CommandError, match="no customer has any qualifying activity.*train with --labels-from flag"):
        call_command("churn_train", "--mode=lightgbm", "--horizon-days=60", stdout=io.StringIO())
    call_command("churn_train", "--mode=lightgbm", "--labels-from=flag", stdout=io.StringIO())

    run = TrainingRun.objects.latest("created_at")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version = ModelVersion.objects.get(training_run=run)
    assert version.config["labels_from"] == "flag" and version.metrics["roc_auc"] > 0.65, version.metrics
    assert str(version.metrics["cutoff"]).endswith("(customers)"), "a stratified sample of customers is held out"
    from predictions.services.scoring import churn_model_load

    assert any(name.startswith("attr_Contract") for name in churn_model_load(version).metadata["features"])

    output = io.StringIO()
    call_command("churn_score", stdout=output)
    churned = Customer.objects.filter(churned=True).count()
    assert f"{churned} customer(s) signed up by then were not scored" in output.getvalue(), output.getvalue()
    scoring = ScoringRun.objects.latest("created_at")
    still_here = Customer.objects.filter(churned=False).count()
    assert (scoring.status, scoring.customers_total) == (ScoringRun.Status.SUCCEEDED, still_here)
    assert ChurnScore.objects.count() == still_here and not ChurnScore.objects.filter(customer__churned=True).exists()
    factors = [f["factor"] for score in ChurnScore.objects.all()[:50] for f in score.top_factors]
    assert any("Contract" in factor for factor in factors), factors[:10]

    AlertRule.objects.create(
        name="month-to-month at risk", trigger=TriggerKind.PROBABILITY, threshold=0.0, action=ActionKind.NONE,
        attribute_filters={"Contract": "Month-to-month"},
    )  # fmt: skip
    alerts_apply_rules(actor="test", scoring_run_id=scoring.pk)
    expected = Customer.objects.filter(churned=False, attributes__Contract="Month-to-month").count()
    assert Alert.objects.count() == expected > 0


def test_the_api_requests_a_training_on_the_flag(settings, tmp_path) -> None:  # noqa: ANN001
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    run_import("customers", telco_like(200, seed=1), label_column="Churn", positive_label="Yes")
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-12345"))

    response = client.post(
        "/api/v1/training-runs/", {"mode": "lightgbm", "horizon_days": 30, "labels_from": "flag"}, format="json"
    )
    refused = client.post(
        "/api/v1/training-runs/", {"mode": "lightgbm", "horizon_days": 30, "labels_from": "x"}, format="json"
    )

    assert response.status_code == 202 and response.json()["status"] == "succeeded", response.json()
    assert TrainingRun.objects.get().config == {"labels_from": "flag"}
    assert response.json()["labels_from"] == "flag", response.json()
    listed = client.get("/api/v1/training-runs/").json()["results"]
    assert [run["labels_from"] for run in listed] == ["flag"], listed
    assert refused.status_code == 400 and "labels_from" in refused.json()["error"]["fields"]


def test_flag_models_are_compared_on_stored_metrics_only_when_they_held_out_the_same_customers(
    settings,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    """A profile model holds out a sample of the customers present when it trains, named by its as_of: retrained at
    that as_of on the same customers it holds out the same ones, but after an import of new customers it holds out
    others, and the champion's stored metrics measured on its own sample must not decide the promotion: the champion
    is measured again on the challenger's holdout (it never trained on those customers: a hash of the id holds a
    customer out, whichever other customers there are)."""
    from datetime import timedelta

    from django.utils import timezone

    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    as_of = timezone.now() + timedelta(hours=1)
    decision = _promotion_decision

    run_import("customers", telco_like(200, seed=1), label_column="Churn", positive_label="Yes")
    champion = _flag_model(as_of=as_of)
    same_customers = _flag_model(as_of=as_of)
    new_policy_holders = telco_like(300, seed=2).replace("\nT", "\nN")
    run_import("customers", new_policy_holders, label_column="Churn", positive_label="Yes")
    other_customers = _flag_model(as_of=as_of)

    assert same_customers.holdout_key == champion.holdout_key
    assert decision(same_customers).get("champion_roc_auc") == champion.metrics["roc_auc"], decision(same_customers)
    assert other_customers.holdout_key != champion.holdout_key
    assert "different holdout" not in str(decision(other_customers)["reason"]), decision(other_customers)
    assert decision(other_customers)["champion_roc_auc"] != champion.metrics["roc_auc"], "re-measured, not the stored"


def test_the_weekly_retraining_of_a_profile_champion_trains_on_the_flag_again(settings, tmp_path) -> None:  # noqa: ANN001
    """A store of profile data has no orders: the scheduled retraining (and the drift check's) must label by the
    churn flag as its champion was, not by activity, which fails every week with "no qualifying activity"."""
    from predictions.services.training import training_run_request
    from predictions.tasks import retrain_task

    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_DEFAULT_MODE = "lightgbm"
    run_import("customers", telco_like(200, seed=1), label_column="Churn", positive_label="Yes")
    first = training_run_request(
        mode="lightgbm", horizon_days=30, actor="test", options={"labels_from": "flag", "inner_folds": 2}
    )
    first.refresh_from_db()
    assert ModelVersion.objects.get(training_run=first).status == "champion"

    retrain_task(actor="weekly retraining")

    run = TrainingRun.objects.exclude(pk=first.pk).get()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.config.get("labels_from") == "flag", run.config


def test_a_profile_model_retrained_later_on_the_same_customers_is_compared_with_the_champion(
    settings,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    """Retraining runs at its own as_of (now, by default: the weekly schedule, churn_train without --as-of), so two
    profile models never share their holdout's cutoff; holding out the same customers, the champion is measured on
    the challenger's holdout and the better one promoted, instead of "different holdout; promote by hand" forever."""
    from datetime import timedelta

    from django.utils import timezone

    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_PROMOTION_MIN_ROC_AUC_GAIN = -1.0  # a model as good as the champion wins: the test is the comparison
    run_import("customers", telco_like(200, seed=1), label_column="Churn", positive_label="Yes")
    champion, challenger = (_flag_model(as_of=as_of) for as_of in (timezone.now() - timedelta(days=1), timezone.now()))

    decision = _promotion_decision(challenger)
    assert "different holdout" not in str(decision["reason"]), decision
    # Nothing changed in the profiles: the champion scores the same customers as when it was measured.
    assert decision["champion_roc_auc"] == pytest.approx(champion.metrics["roc_auc"]), decision
    challenger.refresh_from_db()
    assert challenger.status == "champion", decision


def test_training_progress_never_goes_back(settings, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The admin's progress bar read 100% "trained" while the artifact, the drift profile and the model card were
    still to come (96%, 97%, 98% after it): the fit's own progress ends below the steps that follow it."""
    import re

    from predictions.services.training import training_run_request

    monkeypatch.setattr("predictions.services.training.PROGRESS_WRITE_SECONDS", 0)  # every step written
    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    run_import("customers", telco_like(200, seed=1), label_column="Churn", positive_label="Yes")
    run = training_run_request(
        mode="lightgbm", horizon_days=30, actor="test", options={"labels_from": "flag", "inner_folds": 2}
    )
    run.refresh_from_db()

    percents = [int(p) for p in re.findall(r"^\S+ (\d+)% ", run.log_tail, flags=re.MULTILINE)]
    assert percents and percents == sorted(percents), run.log_tail
    assert run.progress_percent == 100


def test_a_profile_model_retrained_after_new_customers_were_imported_is_compared_with_the_champion(
    settings,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    """New customers change the rows but not which old customers are held out (a hash of the id picks them): the
    champion never trained on the challenger's held-out customers, so it is measured on them and the better model
    promoted, where a sample drawn again gave "different holdout; promote by hand" after every import."""

    settings.CHURN_ARTIFACT_DIR = tmp_path / "models"
    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_PROMOTION_MIN_ROC_AUC_GAIN = -1.0  # any challenger wins: the test is the comparison
    settings.CHURN_PROMOTION_MAX_PR_AUC_LOSS = 1.0
    versions = []
    for customers in (200, 260):  # the same first 200 customers, then 60 new ones
        run_import("customers", telco_like(customers, seed=1), label_column="Churn", positive_label="Yes")
        versions.append(_flag_model())
    champion, challenger = versions

    decision = _promotion_decision(challenger)
    assert champion.holdout_key != challenger.holdout_key, "other customers held out: the keys differ"
    assert "different holdout" not in str(decision["reason"]), decision
    assert decision["champion_roc_auc"] != pytest.approx(champion.metrics["roc_auc"]), "re-measured, not the stored"
    challenger.refresh_from_db()
    assert challenger.status == "champion", decision
