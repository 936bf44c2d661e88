"""The README's baseline table: every baseline on the three shared datasets and on a demo-store backtest.

Runs the real commands (``churn_evaluate`` on ../shared/data, ``churn_generate`` + ``churn_backtest`` in a
scratch SQLite directory), keeps their JSON under var/bench/baselines/ and prints a markdown table.

    .venv/bin/python bench/baselines.py [--models recency,logreg,lightgbm] [--skip-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _scratch import var_dir

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
BANK_LEAKS = [
    "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon_Dependent_count_Education_Level_"
    f"Months_Inactive_12_mon_{i}"
    for i in (1, 2)
]
PROFILES = {
    "telco": [
        str(DATA / "telco" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"),
        "--label-col=Churn", "--positive=Yes", "--id-col=customerID",
    ],
    "ecommerce": [
        str(DATA / "ecommerce" / "ecommerce_churn.csv"),
        "--label-col=Churn", "--positive=1", "--id-col=CustomerID", "--dedupe",
    ],
    "bank": [
        str(DATA / "bank" / "BankChurners.csv"),
        "--label-col=Attrition_Flag", "--positive=Attrited Customer", "--id-col=CLIENTNUM",
        *[f"--drop-col={c}" for c in BANK_LEAKS],
    ],
}  # fmt: skip
DEMO = {"customers": "2000", "days": "365", "seed": "7", "end": "2026-01-01", "as_of": "2025-10-31", "horizon": "60"}


def manage(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **(env or {})})
    if done.returncode:  # the command has said why
        raise SystemExit(f"manage.py {args[0]} failed (exit status {done.returncode}); see its message above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="recency,logreg,lightgbm")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    out = var_dir() / "bench" / "baselines"
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, command in PROFILES.items():
        target = out / f"{name}.json"
        manage("churn_evaluate", *command, f"--models={args.models}", f"--name={name}", f"--json={target}")
        reports[name] = json.loads(target.read_text())
    if not args.skip_demo:
        with tempfile.TemporaryDirectory(prefix="churn-bench-") as scratch:
            env = {"CHURN_VAR_DIR": scratch, "DATABASE_URL": f"sqlite:///{scratch}/demo.sqlite3"}
            manage("migrate", "-v", "0", env=env)
            manage(
                "churn_generate", f"--customers={DEMO['customers']}", f"--days={DEMO['days']}",
                f"--seed={DEMO['seed']}", f"--end={DEMO['end']}", env=env,
            )  # fmt: skip
            variants = {
                "demo store backtest": [],
                # Only customers who ordered in the 60 days before a cutoff: the harder, more useful question.
                "demo store, active customers": ["--max-days-inactive=60"],
            }
            for index, (name, extra) in enumerate(variants.items()):
                target = out / f"demo-{index}.json"
                manage(
                    "churn_backtest", f"--as-of={DEMO['as_of']}", f"--horizon-days={DEMO['horizon']}",
                    f"--models={args.models}", f"--name={name}", f"--json={target}", *extra, env=env,
                )  # fmt: skip
                reports[name] = json.loads(target.read_text())
    print("| dataset | n | churn rate | model | ROC AUC | PR AUC | lift@10% | Brier | ECE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, report in reports.items():
        for model, m in report["models"].items():
            cells = [
                f"{m[k]:.3f} ± {m[k + '_std']:.3f}" if m.get(k) is not None else "n/a"
                for k in ("roc_auc", "pr_auc", "lift_at_10", "brier", "ece")
            ]
            print(f"| {name} | {report['n']} | {report['positive_rate']:.3f} | {model} | {' | '.join(cells)} |")
        for model, reason in report.get("skipped", {}).items():
            print(f"| {name} | {report['n']} | {report['positive_rate']:.3f} | {model} | skipped: {reason} |||||")


if __name__ == "__main__":
    main()
