"""How much the demo store's messages *could* add under a backtest label: the oracle bound of README "A world
where text comes first".

    .venv/bin/python bench/demo_label_bound.py [--customers 2000] [--seed 7] [--end 2026-11-28]
                                               [--as-of 2026-09-27] [--horizon-days 60] [--no-incident-churn]

In a scratch SQLite database (CHURN_VAR_DIR in a temporary folder; DATABASE_URL is ignored), generates the demo
store (with ``--incident-churn`` unless told otherwise) and simulates it again for the hidden truth. For each
label (activity ``orders`` or ``orders_and_events``; every eligible customer, or only those active in the 30
days before the cutoff) it prints how many positives truly leave inside the label window, how many positives and
negatives are incident churners whose complaint came before the cutoff, and the ROC AUC of features-only
LightGBM (the backtest's training cutoffs) with and without an *oracle* column that flags exactly those incident
churners. No text model can add more through the incidents than the oracle does.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import scratch_django  # noqa: E402 - bench/ is on sys.path when a bench runs


def _day(value: str) -> datetime:
    day = date.fromisoformat(value)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", default="2026-11-28", help="end of the history (exclusive), YYYY-MM-DD")
    parser.add_argument("--as-of", default="2026-09-27", help="backtest cutoff, YYYY-MM-DD (end of that day)")
    parser.add_argument("--horizon-days", type=int, default=60)
    parser.add_argument("--no-incident-churn", action="store_true", help="the default store, without incidents")
    args = parser.parse_args()

    scratch_django("churn-bench-label-bound-", LOG_LEVEL="WARNING")
    import numpy as np
    from django.core.management import call_command

    from customers.generator import StoreOptions, simulate_store
    from customers.services import demo_store_generate
    from ml.baselines import LightGBMChurn, LightGBMOptions
    from ml.evaluation import BacktestSetup, backtest_data
    from ml.metrics import roc_auc
    from ml.snapshot import EligibilityRule, LabelConfig
    from predictions.selectors import customer_histories

    incident_churn = not args.no_incident_churn
    end, as_of = _day(args.end), _day(args.as_of) + timedelta(days=1) - timedelta(microseconds=1)
    call_command("migrate", verbosity=0)
    demo_store_generate(
        customers=args.customers, days=args.days, seed=args.seed, end=end, incident_churn=incident_churn
    )
    options = StoreOptions(
        customers=args.customers, days=args.days, seed=args.seed, end=end, incident_churn=incident_churn
    )
    truth = {t.external_id: t for block in simulate_store(options) for t in block.truths}
    churners = [t for t in truth.values() if t.churn_at is not None]
    incident_share = np.mean([t.churn_cause == "incident" for t in churners])
    print(
        f"{args.customers} customers, seed {args.seed}, incident churn {incident_churn}: {len(churners)} churners, "
        f"{incident_share:.0%} of them over an incident; as-of {args.as_of}, {args.horizon_days}-day window"
    )
    histories = customer_histories()
    horizon = timedelta(days=args.horizon_days)

    def visible_incident(row_id: str) -> tuple[bool, bool]:
        """(leaves inside the window, incident churner whose complaint came before the cutoff and who is still here)."""
        external_id, day = row_id.split("@")
        cutoff = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        t = truth[external_id]
        inside = t.churn_at is not None and cutoff < t.churn_at <= cutoff + horizon
        incident = (
            t.churn_cause == "incident"
            and t.churn_at > cutoff
            and any(t.churn_at - timedelta(days=91) <= at < cutoff for at, _ in t.conversation_topics)
        )
        return inside, incident

    lightgbm = LightGBMOptions(num_leaves_grid=(3, 7, 15, 31))
    for activity in ("orders", "orders_and_events"):
        for max_days_inactive in (None, 30):
            setup = BacktestSetup(
                as_of=as_of,
                labels=LabelConfig(horizon_days=args.horizon_days, activity=activity),
                eligibility=EligibilityRule(max_days_inactive=max_days_inactive),
            )
            data = backtest_data(histories, setup)
            train = np.array([visible_incident(i) for i in data.train.ids])
            test = np.array([visible_incident(i) for i in data.test.ids])
            y = data.test.y
            plain = LightGBMChurn(lightgbm).fit(data.train.frame, data.train.y)
            oracle = LightGBMChurn(lightgbm).fit(
                data.train.frame.assign(oracle=train[:, 1].astype(float)), data.train.y
            )
            auc = roc_auc(y, plain.predict_proba(data.test.frame)[:, 1])
            auc_oracle = roc_auc(y, oracle.predict_proba(data.test.frame.assign(oracle=test[:, 1].astype(float)))[:, 1])
            print(
                f"label {activity}, {'all eligible' if max_days_inactive is None else 'active in the last 30 days'}: "
                f"{len(y)} customers, {int(y.sum())} positive; positives leaving inside the window "
                f"{test[y == 1, 0].mean():.1%}; visible incidents: {int(test[y == 1, 1].sum())} positives, "
                f"{int(test[y == 0, 1].sum())} negatives; LightGBM ROC AUC {auc:.3f}, with the oracle {auc_oracle:.3f} "
                f"({auc_oracle - auc:+.3f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
