"""Rescoring speed, end to end (database to stored scores), full against incremental.

    .venv/bin/python bench/rescore.py [--customers 20000] [--train-customers 3000] [--mode frozen]
                                      [--threads N] [--quantize none|int8] [--profile DIR]

In a scratch SQLite database (CHURN_VAR_DIR in a temporary folder; DATABASE_URL is ignored), generates a
demo store, trains a model of ``--mode`` (default frozen: all-MiniLM-L6-v2 vectors + LightGBM) on all
customers or, with ``--train-customers N``, on the first N only (the figure is about rescoring: training on
20,000 customers at two cutoffs would encode 40,000 texts first), then:

1. **full**: scores every customer with an empty encoding cache (every text is encoded, and the
   leave-one-part-out variants of the text factors of each chunk's riskiest customers);
2. gives 5% of the customers a new support message;
3. **incremental**: scores everybody again one minute later with a freshly loaded model (no in-process
   memo), so only the encoding cache on disk serves the unchanged texts and text variants; the tabular
   part (features, LightGBM, feature factors) is recomputed for all, and the changed customers' texts and,
   for those among a chunk's riskiest, their text factors are computed afresh.

Prints customers/s of both runs, the customer texts encoded and reused, the texts encoded for text factors,
the 1-minute load average before and after each run (the machine is shared), and the ratio incremental/full
(target: >= 10x). ``--profile DIR`` writes cProfile stats of both runs (``full.prof``, ``incremental.prof``).

``--quantize int8`` trains and scores with ``CHURN_ENCODER_QUANTIZE=int8`` (the frozen encoder's linear layers
in int8; frozen mode only).

``--threads N`` sets torch's intra-op threads for both runs (default: torch's own choice, one per core). On a
machine shared with other work, two threads on two cores wait on each other whenever one is descheduled: the
encoder's throughput then swings several-fold with the neighbours' load, and so would the ratio. One thread
measures both runs the same way whatever the load.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from _scratch import scratch_django  # noqa: E402 - bench/ is on sys.path when a bench runs

_LAST_TRAINING_ID = 0


def customers_left_out_of_training(*, until: object = None) -> object:
    """With --train-customers: everybody after the first N customers (CHURN_TRAINING_EXCLUDED_CUSTOMERS)."""
    from customers.models import Customer

    return Customer.objects.filter(id__gt=_LAST_TRAINING_ID).values("id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--mode", default="frozen")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--changed", type=float, default=0.05, help="share of customers given a new message")
    parser.add_argument(
        "--train-customers",
        type=int,
        default=None,
        help="train on the first N customers only (the figure is about rescoring; all customers are scored)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of both runs to this folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="CHURN_ENCODER_QUANTIZE")
    args = parser.parse_args()

    scratch = scratch_django(
        "churn-bench-rescore-",
        CELERY_TASK_ALWAYS_EAGER="true",
        LOG_LEVEL="WARNING",
        CHURN_ENCODER_QUANTIZE=args.quantize,
    )
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from customers.models import Customer, Message
    from customers.services import demo_store_generate
    from predictions.models import ScoringRun, TrainingRun
    from predictions.services import scoring as scoring_service
    from predictions.services.scoring import scoring_run_start
    from predictions.services.training import training_run_execute

    settings.CHURN_RESCORE_ON_PROMOTION = False
    settings.CHURN_AFTER_SCORING_TASKS = []
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"encoder quantisation {settings.CHURN_ENCODER_QUANTIZE}",
        flush=True,
    )
    call_command("migrate", verbosity=0)
    end = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    demo_store_generate(customers=args.customers, days=args.days, seed=args.seed, end=end)
    print(f"generated {args.customers} customers in {time.perf_counter() - started:.0f}s", flush=True)

    if args.train_customers:
        global _LAST_TRAINING_ID
        first = Customer.objects.order_by("id").values_list("id", flat=True)[: args.train_customers]
        _LAST_TRAINING_ID = list(first)[-1]
        settings.CHURN_TRAINING_EXCLUDED_CUSTOMERS = f"{__name__}.customers_left_out_of_training"
    started = time.perf_counter()
    run = TrainingRun.objects.create(
        mode=args.mode, as_of=end, horizon_days=60, config={"max_training_cutoffs": 2, "inner_folds": 3}
    )
    version = training_run_execute(training_run_id=run.pk)
    trained_on = f"the first {args.train_customers}" if args.train_customers else "all"
    print(
        f"trained {version.name} on {trained_on} customers in {time.perf_counter() - started:.0f}s "
        f"(ROC AUC {version.metrics['roc_auc']:.3f}); scoring chunks of {settings.CHURN_SCORING_CHUNK_SIZE}",
        flush=True,
    )

    def score(as_of: object, label: str) -> tuple[float, ScoringRun]:
        scoring_service._loaded_models.clear()  # a fresh model: nothing memoised in this process
        load_before = os.getloadavg()[0]
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        scoring = scoring_run_start(trigger=label, as_of=as_of)
        seconds = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(args.profile / f"{label}.prof")
        scoring.refresh_from_db()
        assert scoring.status == ScoringRun.Status.SUCCEEDED, scoring.error
        rate = scoring.customers_scored / seconds
        (model,) = scoring_service._loaded_models.values()
        embedder = getattr(model.hybrid_, "embedder", None)
        for_factors = (
            "" if embedder is None else f"; texts encoded for text factors {embedder.n_encoded - scoring.texts_encoded}"
        )
        print(
            f"{label:12s} {scoring.customers_scored} customers in {seconds:7.1f}s = {rate:8.1f} customers/s; "
            f"customer texts encoded {scoring.texts_encoded}, reused {scoring.texts_reused}{for_factors}; "
            f"load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
            flush=True,
        )
        return rate, scoring

    shutil.rmtree(settings.CHURN_CACHE_DIR, ignore_errors=True)
    full_rate, full = score(end, "full")
    rng = random.Random(args.seed)
    ids = list(Customer.objects.values_list("id", flat=True))
    changed = rng.sample(ids, int(len(ids) * args.changed))
    Message.objects.bulk_create(
        Message(
            external_id=f"bench-new-{customer_id}",
            customer_id=customer_id,
            conversation_id=f"bench-{customer_id}",
            sent_at=end - timedelta(hours=1),
            text="Where is my parcel? It is two weeks late and nobody answers my emails.",
        )
        for customer_id in changed
    )
    incremental_rate, incremental = score(end + timedelta(minutes=1), "incremental")
    print(f"{len(changed)} customers ({args.changed:.0%}) got a new message")
    print(f"incremental / full = {incremental_rate / full_rate:.1f}x (target >= 10x)")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
