from __future__ import annotations

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker proved it consumes a queue (written by a task it ran)."""

    hostname = models.CharField(max_length=255)
    queue = models.CharField(max_length=64)
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hostname", "queue"], name="uniq_heartbeat_per_worker_queue")]
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"{self.hostname} on {self.queue} at {timezone.localtime(self.seen_at):%Y-%m-%d %H:%M:%S}"


class ModelStatus(models.TextChoices):
    TRAINING = "training", "training"
    READY = "ready", "ready"
    CHAMPION = "champion", "champion"
    RETIRED = "retired", "retired"
    FAILED = "failed", "failed"


class RunStatus(models.TextChoices):
    """States of a training or scoring run."""

    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class TrainingRun(models.Model):
    """One request to train a model. The training task holds a lease on this row while it works, so a task
    delivered twice trains once and produces one model version."""

    Status = RunStatus

    id = models.BigAutoField(primary_key=True)
    mode = models.CharField(max_length=32)
    config = models.JSONField(default=dict, blank=True)
    as_of = models.DateTimeField()
    horizon_days = models.PositiveIntegerField()
    lead_days = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress_percent = models.FloatField(default=0)
    current_step = models.CharField(max_length=255, blank=True, default="")
    log_tail = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    resent_at = models.DateTimeField(
        null=True, blank=True, help_text="When its training task was last sent again (its message looked lost)."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress_percent__gte=0, progress_percent__lte=100), name="training_progress_0_100"
            )
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.mode}, {self.status})"


class ModelVersion(models.Model):
    """A trained model in the registry. At most one is champion at a time (a database constraint)."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=128, unique=True)
    training_run = models.OneToOneField(
        TrainingRun, on_delete=models.PROTECT, null=True, blank=True, related_name="model_version"
    )
    model_type = models.CharField(max_length=32, help_text="hybrid, transformer, lightgbm, logreg, ...")
    mode = models.CharField(max_length=32, blank=True, default="", help_text="Encoder mode: frozen, top-k, lora, full.")
    encoder = models.CharField(max_length=512, blank=True, default="")
    encoder_fingerprint = models.CharField(max_length=64, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=1024, blank=True, default="")
    artifact_checksums = models.JSONField(default=dict, blank=True, help_text="File name -> sha256.")
    training_cutoffs = models.JSONField(default=list, blank=True)
    horizon_days = models.PositiveIntegerField(default=0)
    lead_days = models.PositiveIntegerField(default=0)
    holdout_key = models.CharField(
        max_length=128, blank=True, default="", help_text="Identifies the frozen holdout the metrics were measured on."
    )
    metrics = models.JSONField(default=dict, blank=True)
    reference_profile = models.JSONField(
        default=dict, blank=True, help_text="Score and top-feature distributions at training, for drift checks."
    )
    model_card = models.JSONField(
        default=dict,
        blank=True,
        help_text="Holdout curves (ROC, calibration), lift and baselines on the same rows (ml.model_card); "
        "empty for models trained before it was recorded.",
    )
    status = models.CharField(max_length=16, choices=ModelStatus.choices, default=ModelStatus.TRAINING, db_index=True)
    started_by = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    trained_at = models.DateTimeField(null=True, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="champion"), name="at_most_one_champion_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class ModelAuditEntry(models.Model):
    """Append-only record of every registry change: who or what did it, and why."""

    class Action(models.TextChoices):
        REGISTERED = "registered", "registered"
        PROMOTED = "promoted", "promoted"
        NOT_PROMOTED = "not_promoted", "kept as challenger"
        ROLLED_BACK = "rolled_back", "rolled back"
        RETIRED = "retired", "retired"
        FAILED = "failed", "failed"

    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="audit_entries")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=255)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "model audit entries"

    def __str__(self) -> str:
        return f"{self.model_version.name}: {self.action} by {self.actor}"


class ScoringRun(models.Model):
    """One rescoring of customers with one model at one ``as_of``; chunks record their totals here."""

    Status = RunStatus

    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="scoring_runs")
    as_of = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=64, default="manual", help_text="manual, schedule, api, ...")
    full = models.BooleanField(default=False, help_text="Re-encode every text instead of reusing the encoding cache.")
    customers_total = models.PositiveIntegerField(default=0)
    customers_scored = models.PositiveIntegerField(default=0)
    texts_encoded = models.PositiveIntegerField(default=0)
    texts_reused = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    resumed_at = models.DateTimeField(
        null=True, blank=True, help_text="When unscored customers of a stalled run were last sent again."
    )
    followups_sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the tasks that act on its scores (the alert rules) were handed to the broker.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"scoring run {self.pk} at {timezone.localtime(self.as_of):%Y-%m-%d} ({self.status})"


class RiskTier(models.TextChoices):
    LOW = "low", "low"
    MEDIUM = "medium", "medium"
    HIGH = "high", "high"


class ChurnScore(models.Model):
    """A customer's churn probability from one model at one ``as_of``: unique per (customer, model, as_of)."""

    id = models.BigAutoField(primary_key=True)
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="churn_scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="scores")
    scoring_run = models.ForeignKey(ScoringRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="scores")
    as_of = models.DateTimeField()
    probability = models.FloatField()
    risk_tier = models.CharField(max_length=8, choices=RiskTier.choices)
    top_factors = models.JSONField(default=list, blank=True, help_text="[{factor, direction, weight, evidence}]")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-as_of", "-probability"]
        indexes = [
            # A customer's newest score in the full order every reader uses (as_of, then creation, then id): one
            # index probe per customer with no sort, for the customer list, the score list and the dashboard.
            models.Index(fields=["customer", "-as_of", "-created_at", "-id"], name="score_customer_newest"),
            # One model's scores at one as_of: scoring runs, their alert rules, the drift check.
            models.Index(fields=["model_version", "as_of"], name="score_model_as_of"),
            # The score list's default order, read a page at a time.
            models.Index(fields=["-as_of", "-probability"], name="score_as_of_probability"),
            # The score API's order (highest risk first), read a page at a time from a cursor: a page passes over
            # older scores until it has its newest ones, and never reads every customer's newest score.
            models.Index(fields=["-probability", "-id"], name="score_probability"),
            # The score API's other orderings that an index serves (freshest first; by customer through the foreign
            # key's index), a page at a time from a cursor; created_at also finds the scores old enough to prune.
            models.Index(fields=["as_of", "id"], name="score_as_of_id"),
            models.Index(fields=["created_at", "id"], name="score_created_at_id"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "model_version", "as_of"], name="one_score_per_customer_model_as_of"
            ),
            models.CheckConstraint(
                condition=models.Q(probability__gte=0, probability__lte=1), name="score_probability_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.probability:.3f} ({self.risk_tier})"


class TaskDelivery(models.Model):
    """How often a task with a given idempotency key was started. A task that keeps crashing its worker
    (and so keeps being redelivered) is parked after a cap instead of looping forever."""

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(max_length=128)
    key = models.CharField(max_length=255)
    attempts = models.PositiveIntegerField(default=0)
    parked_at = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task_name", "key"], name="one_delivery_record_per_task_key")]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.key}] x{self.attempts}"


class DriftEvent(models.Model):
    """One drift check of the champion: population stability of its scores and top features."""

    id = models.BigAutoField(primary_key=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="drift_events")
    scoring_run = models.ForeignKey(ScoringRun, on_delete=models.SET_NULL, null=True, blank=True)
    score_psi = models.FloatField()
    feature_psi = models.JSONField(default=dict, blank=True)
    max_psi = models.FloatField()
    threshold = models.FloatField()
    drifted = models.BooleanField()
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, help_text="Retraining started by this drift."
    )
    checked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-checked_at"]

    def __str__(self) -> str:
        return f"drift {self.max_psi:.3f} ({'drifted' if self.drifted else 'stable'}) for {self.model_version.name}"
