"""Interventions made before 0007 that were repeats: marked ``not_measured`` as the dispatch marks them since.

0007 added the ``not_measured`` outcome, and the dispatch sets it on a rule's repeat action for a customer whose
treated outcome window with that rule is still open, but nothing marked the repeats already stored: the outcomes
task went on to measure them (or had measured them), and each counted as a second treated outcome, the bias that
0007 removed for new actions (README, alert outcomes).

An intervention is a repeat when it was not suppressed at dispatch and an earlier measured treated intervention of
the same rule and customer, on another alert, was made less than the rule's ``horizon_days`` before it; earlier
repeats do not open a window (they are not measured), as in ``alerts.services._treated_window_customers``. An
outcome already recorded for a repeat is replaced too, since the uplift must leave it out. The marks are
recomputed, not only added: an action that a dispatch after 0007 marked ``not_measured`` only because an unmarked
repeat from before it seemed to hold the window open is no repeat, and goes back to ``unknown`` (the outcomes task
measures it).

The interventions are read once, in order, a row at a time from a server-side cursor, and the repeats (few)
written with one UPDATE per thousand: no query per row and no table in memory.

Not reversed: 0008 and earlier read ``not_measured`` as it is meant, and the replaced outcomes are not kept.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import migrations
from django.db.models import Q

BATCH = 1000


def mark_earlier_repeats(apps, schema_editor) -> None:  # noqa: ANN001
    Intervention = apps.get_model("alerts", "Intervention")
    AlertRule = apps.get_model("alerts", "AlertRule")
    horizons = {pk: timedelta(days=days) for pk, days in AlertRule.objects.values_list("pk", "horizon_days")}
    rows = (
        Intervention.objects.exclude(Q(status="suppressed") & ~Q(reason__startswith="at send time"))
        .order_by("alert__rule_id", "customer_id", "created_at", "pk")
        .values_list("pk", "alert__rule_id", "customer_id", "alert_id", "created_at", "status", "outcome")
    )
    group = None
    treated: list[tuple[object, int]] = []  # (created_at, alert_id) of the group's measured treated interventions
    repeats: list[int] = []
    not_repeats: list[int] = []  # marked not_measured by a dispatch that took an unmarked earlier repeat for treated
    for pk, rule_id, customer_id, alert_id, created_at, status, outcome in rows.iterator(chunk_size=2000):
        if (rule_id, customer_id) != group:
            group, treated = (rule_id, customer_id), []
        opened_after = created_at - horizons[rule_id]
        if any(at > opened_after and other != alert_id for at, other in treated):
            if outcome != "not_measured":
                repeats.append(pk)
            continue
        if outcome == "not_measured":
            not_repeats.append(pk)
        if status in ("sent", "failed", "suppressed"):  # MEASURED_TREATED, now that this one is no repeat
            treated.append((created_at, alert_id))
    for start in range(0, len(repeats), BATCH):
        Intervention.objects.filter(pk__in=repeats[start : start + BATCH]).update(outcome="not_measured")
    for start in range(0, len(not_repeats), BATCH):  # measured by the next outcomes run
        Intervention.objects.filter(pk__in=not_repeats[start : start + BATCH]).update(outcome="unknown")


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0008_intervention_by_rule"),
    ]

    operations = [
        migrations.RunPython(mark_earlier_repeats, migrations.RunPython.noop, elidable=True),
    ]
