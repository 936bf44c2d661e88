"""The migrations that store the default schedules run on databases where staff have edited the schedules.

django_celery_beat keeps no unique constraint on an interval's (every, period) or on a crontab's fields, and its
admin lets staff add the same interval twice (its own ``from_schedule`` takes the first of several). A migration
that looked its schedule up with ``get_or_create`` then failed with ``MultipleObjectsReturned`` and stopped the
upgrade."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db

SCHEDULE_MIGRATIONS = [
    ("predictions.migrations.0002_default_schedules", "create_heartbeat_schedules"),
    ("predictions.migrations.0006_operating_schedules", "create_schedules"),
    ("predictions.migrations.0009_scoring_run_resumed_at", "create_schedule"),
    ("predictions.migrations.0010_training_run_resent_at", "create_schedule"),
    ("alerts.migrations.0002_default_schedules", "create_schedules"),
]


def test_schedule_migrations_run_where_staff_stored_the_same_schedule_twice() -> None:
    # Every schedule the migrations use, twice, as staff could have added them in the admin before an upgrade.
    for every, period in [(60, "seconds"), (86400, "seconds"), (900, "seconds"), (5, "minutes"), (10, "minutes")]:
        IntervalSchedule.objects.create(every=every, period=period)
        IntervalSchedule.objects.create(every=every, period=period)
    for minute, hour, day_of_week in [("0", "2", "*"), ("0", "3", "0"), ("30", "2", "*")]:
        for _ in range(2):
            CrontabSchedule.objects.create(
                minute=minute, hour=hour, day_of_week=day_of_week, day_of_month="*", month_of_year="*", timezone="UTC"
            )
    PeriodicTask.objects.all().delete()  # as before the migrations ran
    intervals_before, crontabs_before = IntervalSchedule.objects.count(), CrontabSchedule.objects.count()

    for module, function in SCHEDULE_MIGRATIONS:
        getattr(importlib.import_module(module), function)(apps, connection.schema_editor())

    tasks = PeriodicTask.objects.all()
    assert tasks.count() == 10
    # The schedules already stored are used (the first of the duplicates), none is added.
    assert (IntervalSchedule.objects.count(), CrontabSchedule.objects.count()) == (intervals_before, crontabs_before)
    resume = PeriodicTask.objects.get(name="resume stalled scoring runs").interval
    assert resume == IntervalSchedule.objects.filter(every=5, period="minutes").order_by("pk").first()
    rescoring = PeriodicTask.objects.get(name="daily rescoring").crontab
    assert rescoring == CrontabSchedule.objects.filter(minute="0", hour="2", day_of_week="*").order_by("pk").first()


def test_schedule_migrations_create_the_schedules_they_need() -> None:
    PeriodicTask.objects.all().delete()
    IntervalSchedule.objects.all().delete()
    CrontabSchedule.objects.all().delete()

    for module, function in SCHEDULE_MIGRATIONS:
        getattr(importlib.import_module(module), function)(apps, connection.schema_editor())
    for module, function in SCHEDULE_MIGRATIONS:  # again: nothing is added twice
        getattr(importlib.import_module(module), function)(apps, connection.schema_editor())

    assert PeriodicTask.objects.count() == 10
    assert IntervalSchedule.objects.count() == 5
    assert CrontabSchedule.objects.count() == 3
