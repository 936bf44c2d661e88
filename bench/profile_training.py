"""The shared profile files through the database path: import with the churn label, train on the flag, score.

    .venv/bin/python bench/profile_training.py [--datasets telco bank ecommerce] [--mode lightgbm]

Each dataset goes into a scratch SQLite database (a temporary CHURN_VAR_DIR) with the README's own commands:
`churn_import customers FILE --label-col ... --positive ...`, `churn_train --mode MODE --labels-from flag` and
`churn_score`. Prints the seconds of each step, the holdout ROC AUC and PR AUC of the trained model (a stratified
20% of the customers, one split) and how many customers were scored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _scratch import without_services  # noqa: E402 - bench/ is on sys.path when a bench runs
from baselines import BANK_LEAKS, DATA  # noqa: E402

DATASETS: dict[str, list[str]] = {
    "telco": [str(DATA / "telco/WA_Fn-UseC_-Telco-Customer-Churn.csv"), "--label-col", "Churn", "--positive", "Yes"],
    "bank": [
        str(DATA / "bank/BankChurners.csv"), "--map", "external_id=CLIENTNUM", "--label-col", "Attrition_Flag",
        "--positive", "Attrited Customer", "--drop-col", *BANK_LEAKS,
    ],
    "ecommerce": [str(DATA / "ecommerce/ecommerce_churn.csv"), "--label-col", "Churn", "--positive", "1"],
}  # fmt: skip

REPORT = (
    "import json; from predictions.models import ModelVersion, ScoringRun; v = ModelVersion.objects.latest('created_at'); "
    "r = ScoringRun.objects.latest('created_at'); print(json.dumps({'roc_auc': v.metrics['roc_auc'], "
    "'pr_auc': v.metrics['pr_auc'], 'holdout': v.metrics['n'], 'scored': r.customers_scored}))"
)


def manage(*args: str, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args[:2])} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["telco"], choices=list(DATASETS))
    parser.add_argument("--mode", default="lightgbm")
    options = parser.parse_args()
    print(
        f"{'dataset':10} {'import s':>9} {'train s':>8} {'score s':>8} {'ROC AUC':>8} {'PR AUC':>7} {'holdout':>8} {'scored':>7}"
    )
    for name in options.datasets:
        with tempfile.TemporaryDirectory(prefix=f"profile-{name}-") as var:
            env = {**os.environ, "CHURN_VAR_DIR": var, "CHURN_RESCORE_ON_PROMOTION": "false"}
            without_services(env)  # blank, so that a developer's .env cannot bring its database back
            manage("migrate", "-v0", env=env)
            imported, _ = manage("churn_import", "customers", *DATASETS[name], env=env)
            trained, _ = manage("churn_train", f"--mode={options.mode}", "--labels-from=flag", env=env)
            scored, _ = manage("churn_score", env=env)
            _, out = manage("shell", "-v0", "-c", REPORT, env=env)
            row = json.loads(out.strip().splitlines()[-1])
            print(
                f"{name:10} {imported:9.1f} {trained:8.1f} {scored:8.1f} {row['roc_auc']:8.4f} {row['pr_auc']:7.4f} "
                f"{row['holdout']:8d} {row['scored']:7d}"
            )


if __name__ == "__main__":
    main()
