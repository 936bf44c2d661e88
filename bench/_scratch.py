"""Django for a benchmark in a scratch folder: its own SQLite database and var directory, no Redis."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The shared evaluation datasets, beside the checkout (../shared/data; see its README for the protocol).
DATA = PROJECT_ROOT.parent / "shared" / "data"
BANK_LEAKS = [
    "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon_Dependent_count_Education_Level_"
    f"Months_Inactive_12_mon_{i}"
    for i in (1, 2)
]

# Blank, not removed: the settings read the project's .env without overwriting what the environment holds, so a
# removed DATABASE_URL would come back from a developer's .env and the benchmark would write into that database.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CHURN_CACHE_URL")


def without_services(environment: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``environment`` with the service variables blank: the embedded SQLite database and Celery setup."""
    for name in SERVICE_VARIABLES:
        environment[name] = ""
    return environment


def scratch_django(prefix: str, **environment: str) -> Path:
    """Point ``CHURN_VAR_DIR`` at a new temporary folder, blank the service variables (so the embedded SQLite
    database and Celery setup are used, whatever a .env says), apply ``environment`` and run ``django.setup()``. The
    folder is removed when the process exits (``CHURN_BENCH_KEEP=1`` keeps it, and says where).

    Returns:
        The scratch folder.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update({"CHURN_VAR_DIR": str(scratch), **environment})
    without_services(os.environ)
    if os.environ.get("CHURN_BENCH_KEEP") == "1":
        print(f"scratch folder kept: {scratch}")
    else:
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "churnsite.settings"
    import django

    django.setup()
    return scratch


def _directory(name: str, default: Path) -> Path:
    value = os.environ.get(name, "")
    return (PROJECT_ROOT / value).resolve() if value else default.resolve()


def var_dir() -> Path:
    """``CHURN_VAR_DIR`` as the settings read it (relative to the project, default ``var/``)."""
    return _directory("CHURN_VAR_DIR", PROJECT_ROOT / "var")


def cache_dir() -> Path:
    """``CHURN_CACHE_DIR`` as the settings read it (default ``<CHURN_VAR_DIR>/cache``): the encoding cache that
    ``churn_evaluate`` fills."""
    return _directory("CHURN_CACHE_DIR", var_dir() / "cache")


def at_least(minimum: int):  # noqa: ANN201 - an argparse type
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def shared_profile(name: str):  # noqa: ANN201 - ml.features.ProfileData, imported lazily
    """A shared profile dataset (``telco``, ``bank``, ``ecommerce``) prepared as ``churn_evaluate`` prepares it
    (the bank leaks dropped, e-commerce deduplicated). Raises ``ml.features.ProfileError`` when the file is missing."""
    from ml.features import load_profile_file, prepare_profile

    if name == "telco":
        raw = load_profile_file(DATA / "telco" / "WA_Fn-UseC_-Telco-Customer-Churn.csv")
        return prepare_profile(raw, label_col="Churn", positive="Yes", id_col="customerID")
    if name == "bank":
        raw = load_profile_file(DATA / "bank" / "BankChurners.csv")
        return prepare_profile(
            raw, label_col="Attrition_Flag", positive="Attrited Customer", id_col="CLIENTNUM", drop_cols=BANK_LEAKS
        )
    if name == "ecommerce":
        raw = load_profile_file(DATA / "ecommerce" / "ecommerce_churn.csv")
        return prepare_profile(raw, label_col="Churn", positive="1", id_col="CustomerID", dedupe=True)
    raise ValueError(f"unknown shared dataset {name!r}: telco, bank or ecommerce")
