"""The model registry: registering trained models, promotion by margin, manual promotion and rollback."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from predictions.models import ModelAuditEntry, ModelStatus, ModelVersion, TrainingRun
from predictions.selectors import model_artifact_problem
from predictions.services.locks import MODEL_REGISTRY_LOCK, transaction_lock


@dataclass(frozen=True)
class PromotionPolicy:
    """A challenger replaces the champion only if, on the same frozen holdout, its ROC AUC is higher by at
    least ``min_roc_auc_gain`` and its PR AUC is not lower by more than ``max_pr_auc_loss``."""

    min_roc_auc_gain: float = 0.002
    max_pr_auc_loss: float = 0.0

    @classmethod
    def from_settings(cls) -> PromotionPolicy:
        return cls(
            min_roc_auc_gain=settings.CHURN_PROMOTION_MIN_ROC_AUC_GAIN,
            max_pr_auc_loss=settings.CHURN_PROMOTION_MAX_PR_AUC_LOSS,
        )


def promotion_comparison(
    *,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    policy: PromotionPolicy,
    champion_metrics: dict[str, object] | None = None,
) -> dict[str, object]:
    """Compare a challenger with the champion; ``promote`` says whether it wins, ``reason`` says why.

    Args:
        champion_metrics: the champion's metrics re-measured on the challenger's holdout (the training task
            scores the champion on it); without them the stored metrics count only when both models were
            measured on the same holdout (equal ``holdout_key``).
    """
    if champion is None:
        return {"promote": True, "reason": "no champion yet"}
    if champion_metrics is None:
        if challenger.holdout_key != champion.holdout_key or not challenger.holdout_key:
            return {
                "promote": False,
                "reason": "measured on a different holdout than the champion; promote by hand if intended",
                "challenger_holdout": challenger.holdout_key,
                "champion_holdout": champion.holdout_key,
            }
        champion_metrics = champion.metrics
    try:
        roc_gain = float(challenger.metrics["roc_auc"]) - float(champion_metrics["roc_auc"])
        pr_change = float(challenger.metrics["pr_auc"]) - float(champion_metrics["pr_auc"])
    except (KeyError, TypeError, ValueError):
        return {"promote": False, "reason": "roc_auc or pr_auc missing from the holdout metrics"}
    wins = roc_gain >= policy.min_roc_auc_gain - 1e-12 and pr_change >= -policy.max_pr_auc_loss - 1e-12
    return {
        "promote": wins,
        "reason": "beats the champion" if wins else "does not beat the champion by the required margin",
        "champion": champion.name,
        "holdout": challenger.holdout_key,
        "champion_roc_auc": champion_metrics["roc_auc"],
        "champion_pr_auc": champion_metrics["pr_auc"],
        "roc_auc_gain": round(roc_gain, 6),
        "pr_auc_change": round(pr_change, 6),
        "required_roc_auc_gain": policy.min_roc_auc_gain,
        "allowed_pr_auc_loss": policy.max_pr_auc_loss,
    }


def model_audit_record(
    *, model_version: ModelVersion, action: str, actor: str, details: dict[str, object] | None = None
) -> ModelAuditEntry:
    return ModelAuditEntry.objects.create(
        model_version=model_version, action=action, actor=actor, details=details or {}
    )


@transaction.atomic
def model_version_register(
    *,
    name: str,
    model_type: str,
    metrics: dict[str, object],
    holdout_key: str,
    actor: str,
    training_run: TrainingRun | None = None,
    mode: str = "",
    encoder: str = "",
    encoder_fingerprint: str = "",
    config: dict[str, object] | None = None,
    artifact_path: str = "",
    artifact_checksums: dict[str, object] | None = None,
    training_cutoffs: list[str] | None = None,
    horizon_days: int = 0,
    lead_days: int = 0,
    reference_profile: dict[str, object] | None = None,
) -> ModelVersion:
    """Add a trained model to the registry as ``ready`` and audit it. Promotion is a separate decision."""
    model_version = ModelVersion.objects.create(
        name=name,
        training_run=training_run,
        model_type=model_type,
        mode=mode,
        encoder=encoder,
        encoder_fingerprint=encoder_fingerprint,
        config=config or {},
        artifact_path=artifact_path,
        artifact_checksums=artifact_checksums or {},
        training_cutoffs=training_cutoffs or [],
        horizon_days=horizon_days,
        lead_days=lead_days,
        holdout_key=holdout_key,
        metrics=metrics,
        reference_profile=reference_profile or {},
        status=ModelStatus.READY,
        started_by=actor,
        trained_at=timezone.now(),
    )
    model_audit_record(model_version=model_version, action=ModelAuditEntry.Action.REGISTERED, actor=actor)
    return model_version


def _locked_champion() -> ModelVersion | None:
    """The champion, read once the registry lock is held: every change of the champion passes here first.

    Locking the champion's row alone was not enough: a second promoter waiting on it re-checks the row once the
    first commits, finds it retired and reads no champion at all (and with no champion yet there is no row to
    lock), so it would make a second champion and fail on the one-champion constraint. Behind the registry lock
    it reads the champion the first one left.
    """
    transaction_lock(name=MODEL_REGISTRY_LOCK)
    return ModelVersion.objects.select_for_update().filter(status=ModelStatus.CHAMPION).first()


def _make_champion(*, model_version: ModelVersion, previous: ModelVersion | None) -> None:
    # The old champion steps down first: the one-champion constraint is checked row by row.
    if previous is not None and previous.pk != model_version.pk:
        previous.status = ModelStatus.RETIRED
        previous.save(update_fields=["status"])
    model_version.status = ModelStatus.CHAMPION
    model_version.promoted_at = timezone.now()
    model_version.save(update_fields=["status", "promoted_at"])


@transaction.atomic
def model_version_consider_promotion(
    *,
    model_version: ModelVersion,
    actor: str,
    policy: PromotionPolicy | None = None,
    champion_metrics: dict[str, object] | None = None,
) -> bool:
    """Promote ``model_version`` automatically only if it beats the champion; record the comparison either way."""
    champion = _locked_champion()
    model_version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    if model_version.status not in (ModelStatus.READY,):
        raise ValueError(f"{model_version.name} is {model_version.status}; only a ready model can be promoted")
    measured = (champion_metrics or {}).get("model_version_id")
    if champion_metrics is not None and measured is not None and (champion is None or measured != champion.pk):
        # The champion changed after it was measured (another training run, a staff promotion): the numbers
        # belong to another model, so only stored metrics on the same holdout may decide.
        champion_metrics = None
    comparison = promotion_comparison(
        challenger=model_version,
        champion=champion,
        policy=policy or PromotionPolicy.from_settings(),
        champion_metrics=champion_metrics,
    )
    if comparison["promote"]:
        _make_champion(model_version=model_version, previous=champion)
        model_audit_record(
            model_version=model_version, action=ModelAuditEntry.Action.PROMOTED, actor=actor, details=comparison
        )
        return True
    model_audit_record(
        model_version=model_version, action=ModelAuditEntry.Action.NOT_PROMOTED, actor=actor, details=comparison
    )
    return False


@transaction.atomic
def model_version_promote(*, model_version: ModelVersion, actor: str, reason: str = "promoted by hand") -> ModelVersion:
    """Make ``model_version`` the champion by hand (staff decision), whatever the metrics say."""
    champion = _locked_champion()
    model_version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    if model_version.status in (ModelStatus.TRAINING, ModelStatus.FAILED):
        raise ValueError(f"{model_version.name} is {model_version.status} and cannot become champion")
    if champion is not None and champion.pk == model_version.pk:
        return model_version
    _refuse_without_artifact(model_version)
    _make_champion(model_version=model_version, previous=champion)
    model_audit_record(
        model_version=model_version,
        action=ModelAuditEntry.Action.PROMOTED,
        actor=actor,
        details={"reason": reason, "previous_champion": champion.name if champion else None},
    )
    return model_version


def _refuse_without_artifact(model_version: ModelVersion) -> None:
    """A champion must be loadable: scoring, rescoring and alerts would all stop on one whose files are gone."""
    if problem := model_artifact_problem(model_version):
        raise ValueError(f"{model_version.name} cannot become champion: {problem}")


@transaction.atomic
def model_version_rollback(*, actor: str) -> ModelVersion:
    """Give the champion role back to the model that held it before the current champion.

    Takes effect at the next scoring: scores already stored keep the model that produced them.
    """
    champion = _locked_champion()
    if champion is None:
        raise ValueError("there is no champion to roll back from")
    previous_entry = (
        ModelAuditEntry.objects.filter(action__in=[ModelAuditEntry.Action.PROMOTED, ModelAuditEntry.Action.ROLLED_BACK])
        .exclude(model_version=champion)
        .exclude(model_version__status=ModelStatus.FAILED)
        .select_related("model_version")
        .order_by("-at", "-id")
        .first()
    )
    if previous_entry is None:
        raise ValueError(f"{champion.name} has no earlier champion to roll back to")
    previous = ModelVersion.objects.select_for_update().get(pk=previous_entry.model_version_id)
    _refuse_without_artifact(previous)
    _make_champion(model_version=previous, previous=champion)
    model_audit_record(
        model_version=previous,
        action=ModelAuditEntry.Action.ROLLED_BACK,
        actor=actor,
        details={"rolled_back_from": champion.name},
    )
    return previous
