from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from predictions.models import ModelAuditEntry, ModelStatus, ModelVersion
from predictions.selectors import champion_model_state, champion_model_version
from predictions.services import (
    PromotionPolicy,
    model_version_consider_promotion,
    model_version_promote,
    model_version_register,
    model_version_rollback,
)
from tests.model_versions import artifact_dir

pytestmark = pytest.mark.django_db
POLICY = PromotionPolicy(min_roc_auc_gain=0.002, max_pr_auc_loss=0.0)


def _register(name: str, roc_auc: float, pr_auc: float, holdout: str = "holdout-a", **extra: object) -> ModelVersion:
    return model_version_register(
        name=name,
        model_type="hybrid",
        metrics={"roc_auc": roc_auc, "pr_auc": pr_auc},
        holdout_key=holdout,
        actor="test",
        **({"artifact_path": artifact_dir()} | extra),
    )


def test_first_model_becomes_champion_and_is_audited() -> None:
    first = _register("m1", 0.80, 0.50)
    assert model_version_consider_promotion(model_version=first, actor="test", policy=POLICY)
    assert champion_model_version() == first
    actions = list(ModelAuditEntry.objects.filter(model_version=first).values_list("action", flat=True))
    assert sorted(actions) == ["promoted", "registered"]


def test_worse_challenger_stays_ready_with_the_comparison_recorded() -> None:
    champion = _register("m1", 0.80, 0.50)
    model_version_consider_promotion(model_version=champion, actor="test", policy=POLICY)
    worse = _register("m2", 0.801, 0.55)  # ROC gain 0.001 < required 0.002
    assert not model_version_consider_promotion(model_version=worse, actor="beat", policy=POLICY)
    worse.refresh_from_db()
    entry = ModelAuditEntry.objects.get(model_version=worse, action="not_promoted")
    assert worse.status == ModelStatus.READY and champion_model_version() == champion
    assert entry.details["roc_auc_gain"] == pytest.approx(0.001) and entry.actor == "beat"


def test_better_roc_but_worse_pr_auc_is_not_promoted() -> None:
    champion = _register("m1", 0.80, 0.50)
    model_version_consider_promotion(model_version=champion, actor="test", policy=POLICY)
    challenger = _register("m2", 0.85, 0.49)
    assert not model_version_consider_promotion(model_version=challenger, actor="test", policy=POLICY)


def test_better_challenger_replaces_the_champion_which_retires() -> None:
    champion = _register("m1", 0.80, 0.50)
    model_version_consider_promotion(model_version=champion, actor="test", policy=POLICY)
    better = _register("m2", 0.803, 0.50)
    assert model_version_consider_promotion(model_version=better, actor="test", policy=POLICY)
    champion.refresh_from_db()
    assert champion.status == ModelStatus.RETIRED and champion_model_version() == better


def test_a_challenger_measured_on_another_holdout_is_never_promoted_automatically() -> None:
    champion = _register("m1", 0.80, 0.50, holdout="a")
    model_version_consider_promotion(model_version=champion, actor="test", policy=POLICY)
    other = _register("m2", 0.99, 0.99, holdout="b")
    assert not model_version_consider_promotion(model_version=other, actor="test", policy=POLICY)


def test_rollback_restores_the_previous_champion_and_is_audited() -> None:
    first = _register("m1", 0.80, 0.50)
    model_version_consider_promotion(model_version=first, actor="test", policy=POLICY)
    second = _register("m2", 0.70, 0.40)
    model_version_promote(model_version=second, actor="alice")
    restored = model_version_rollback(actor="bob")
    second.refresh_from_db()
    assert restored == first and champion_model_version() == first and second.status == ModelStatus.RETIRED
    assert ModelAuditEntry.objects.filter(model_version=first, action="rolled_back", actor="bob").exists()


def test_rollback_without_an_earlier_champion_is_refused() -> None:
    only = _register("m1", 0.80, 0.50)
    model_version_promote(model_version=only, actor="alice")
    with pytest.raises(ValueError, match="no earlier champion"):
        model_version_rollback(actor="bob")


def test_the_database_refuses_a_second_champion() -> None:
    _register("m1", 0.80, 0.50).__class__.objects.filter(name="m1").update(status=ModelStatus.CHAMPION)
    second = _register("m2", 0.80, 0.50)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=second.pk).update(status=ModelStatus.CHAMPION)


def test_champion_state_reports_a_missing_artifact_as_error(tmp_path) -> None:  # noqa: ANN001
    assert champion_model_state() == "missing"
    artifact = tmp_path / "m1"
    artifact.mkdir()
    (artifact / "model.safetensors").write_bytes(b"x" * 10)
    model = _register(
        "m1", 0.8, 0.5, artifact_path=str(artifact), artifact_checksums={"model.safetensors": {"size": 10}}
    )
    model_version_promote(model_version=model, actor="test")
    assert champion_model_state() == "ok"
    (artifact / "model.safetensors").write_bytes(b"x" * 5)
    assert champion_model_state() == "error"
