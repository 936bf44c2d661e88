from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from predictions.models import ModelAuditEntry, ModelStatus, TrainingRun
from predictions.selectors import champion_model_version
from predictions.services import model_version_promote, model_version_register
from tests.model_versions import artifact_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):  # noqa: ANN001, ANN201
    user = get_user_model().objects.create_superuser("alice", "alice@example.com", "pw-alice-123")
    client.force_login(user)
    return client


def _model(name: str) -> object:
    return model_version_register(
        name=name,
        model_type="hybrid",
        metrics={"roc_auc": 0.8, "pr_auc": 0.5, "n": 10},
        holdout_key="h",
        actor="t",
        artifact_path=artifact_dir(),
    )


def test_staff_promote_and_roll_back_from_the_admin_and_it_is_audited(staff_client) -> None:  # noqa: ANN001
    first, second = _model("m1"), _model("m2")
    model_version_promote(model_version=first, actor="setup")
    url = "/admin/predictions/modelversion/"
    staff_client.post(url, {"action": "promote_selected", "_selected_action": [second.pk]})
    assert champion_model_version() == second
    assert ModelAuditEntry.objects.filter(model_version=second, action="promoted", actor="alice").exists()
    staff_client.post(url, {"action": "roll_back_champion", "_selected_action": [second.pk]})
    assert champion_model_version() == first
    second.refresh_from_db()
    assert second.status == ModelStatus.RETIRED


def test_model_training_and_scoring_pages_render(staff_client) -> None:  # noqa: ANN001
    _model("m1")
    TrainingRun.objects.create(
        mode="frozen", as_of="2026-01-01T00:00Z", horizon_days=30, progress_percent=42, current_step="epoch 2"
    )
    for page in ("modelversion", "trainingrun", "scoringrun", "churnscore", "taskdelivery", "workerheartbeat"):
        response = staff_client.get(f"/admin/predictions/{page}/")
        assert response.status_code == 200, page
    assert b"42%" in staff_client.get("/admin/predictions/trainingrun/").content
