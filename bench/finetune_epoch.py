"""Training time per epoch of each fine-tuning mode with the default encoder.

    .venv/bin/python bench/finetune_epoch.py [--texts 2000] [--tokens 200] [--modes frozen top-k lora full]
    .venv/bin/python bench/finetune_epoch.py --demo-store [--texts 400] [--customers 2000] [--seed 7]

Synthesised customer texts of about ``--tokens`` tokens each (no dataset needed), a 20% churn rate; or, with
``--demo-store``, the serialised training snapshots of the demo store's backtest (a store generated in a
scratch database as ``make demo`` does; as-of 2026-09-27, 60-day horizon), of which ``--texts`` drawn at random
are trained on and 32 others validate, and the epoch over the whole training set is extrapolated from the
measured texts/s; ``--texts 0`` trains on all of them but the 32 (a measured epoch, nothing extrapolated).
One epoch per mode (batch 16, max_length 256), on CUDA when present and on CPU otherwise.
``frozen`` is the time to encode every text once (no cache) and fit the logistic head; the other modes are one
pass of training plus scoring a 32-text validation set. Prints seconds per epoch and texts/s per mode.

``top-k`` runs the frozen layers once per text before its first epoch (``prefix_cache_mb``); that one-off time is
printed apart, and ``top-k`` is run a second time in the same process with the cache off (the frozen layers in
every step, as before it existed) to print the ratio per epoch and for ``--cost-epochs`` epochs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _scratch import at_least  # noqa: E402 - bench/ is on sys.path when a bench runs
from encode import CLOSERS, MIDDLES, OPENERS  # noqa: E402

from ml.encoder import load_encoder, resolve_device, tokenize  # noqa: E402
from ml.finetune import FineTuneConfig, TransformerChurnClassifier  # noqa: E402

CHURN_SENTENCES = ["please close my account", "I want a refund and I will not order again", "cancel my subscription"]


def synthesise_long_texts(n: int, *, words: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.random() < 0.2)
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            sentence = rng.choice(CHURN_SENTENCES) if label and rng.random() < 0.15 else rng.choice(MIDDLES)
            parts.append(f"{rng.choice(OPENERS)} {rng.randint(10000, 99999)} {sentence}. {rng.choice(CLOSERS)}")
        texts.append(" ".join(parts))
        labels.append(label)
    return texts, labels


def demo_store_texts(
    *, customers: int, seed: int, sample: int
) -> tuple[list[str], list[int], list[str], list[int], int]:
    """(training texts, labels, validation texts, labels, size of the whole training set) from the demo store."""
    from datetime import UTC, datetime, timedelta

    from _scratch import scratch_django

    scratch_django("churn-bench-finetune-", LOG_LEVEL="WARNING")
    from django.core.management import call_command

    from customers.services import demo_store_generate
    from ml.evaluation import BacktestSetup, backtest_data
    from ml.snapshot import LabelConfig
    from predictions.selectors import customer_histories

    call_command("migrate", verbosity=0)
    demo_store_generate(customers=customers, days=365, seed=seed, end=datetime(2026, 11, 28, tzinfo=UTC))
    # The end of 2026-09-27, as churn_backtest reads --as-of 2026-09-27.
    as_of = datetime(2026, 9, 28, tzinfo=UTC) - timedelta(microseconds=1)
    setup = BacktestSetup(as_of=as_of, labels=LabelConfig(horizon_days=60))
    train = backtest_data(customer_histories(), setup, with_texts=True).train
    assert train.texts is not None
    rows = np.random.default_rng(0).permutation(len(train.texts))
    if sample <= 0 or sample > len(rows) - 32:
        sample = len(rows) - 32
    chosen, held = rows[:sample], rows[sample : sample + 32]
    return (
        [train.texts[i] for i in chosen],
        train.y[chosen].tolist(),
        [train.texts[i] for i in held],
        train.y[held].tolist(),
        len(train.texts),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=at_least(0), default=2000, help="with --demo-store, 0: the whole training set")
    parser.add_argument("--tokens", type=int, default=200, help="approximate tokens per text")
    parser.add_argument("--modes", nargs="+", default=["frozen", "top-k", "lora", "full"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--demo-store", action="store_true", help="texts of the demo store's training snapshots")
    parser.add_argument("--customers", type=int, default=2000, help="demo store size (with --demo-store)")
    parser.add_argument("--seed", type=int, default=7, help="demo store seed (with --demo-store)")
    parser.add_argument("--cost-epochs", type=int, default=3, help="epochs of the top-k cache's total-cost ratio")
    parser.add_argument("--no-prefix-baseline", action="store_true", help="top-k: skip the run without the cache")
    args = parser.parse_args()
    if args.texts == 0 and not args.demo_store:
        parser.error("--texts 0 (the whole training set) needs --demo-store")

    torch.set_num_threads(args.threads)
    whole = None
    if args.demo_store:
        texts, labels, val_texts, val_labels, whole = demo_store_texts(
            customers=args.customers, seed=args.seed, sample=args.texts
        )
        print(
            f"demo store: {args.customers} customers, seed {args.seed}; {whole} training snapshots "
            f"({np.mean(labels):.0%} churn in the sample)"
        )
    else:
        texts, labels = synthesise_long_texts(args.texts, words=int(args.tokens * 0.72))
        val_texts, val_labels = synthesise_long_texts(32, words=int(args.tokens * 0.72), seed=1)
    tokenizer, _ = load_encoder(None)
    lengths = tokenize(tokenizer, texts, max_length=256).lengths
    device = resolve_device("auto")
    print(
        f"device {device}, threads {torch.get_num_threads()}, {len(texts)} texts, tokens per text: "
        f"mean {lengths.mean():.0f}, median {int(np.median(lengths))}, max {lengths.max()}"
    )
    runs = [(mode, None) for mode in args.modes]
    if "top-k" in args.modes and not args.no_prefix_baseline:
        runs.insert(args.modes.index("top-k") + 1, ("top-k", 0))
    cached: tuple[float, float] | None = None
    for mode, cache_mb in runs:
        config = FineTuneConfig(mode=mode, epochs=1, batch_size=args.batch_size, max_length=256, show_progress=False)
        if cache_mb is not None:
            config = replace(config, prefix_cache_mb=cache_mb)
        started = time.perf_counter()
        model = TransformerChurnClassifier(config).fit(texts, labels, val_texts=val_texts, val_y=val_labels)
        total = time.perf_counter() - started
        epoch = model.history_[0].seconds
        prefix = getattr(model, "prefix_seconds_", None)
        if mode == "top-k" and cache_mb is None and prefix is not None:
            cached = (prefix, epoch)
            print(f" top-k: {prefix:7.1f} s once, running the frozen layers over every text (cache on)")
        if mode == "top-k" and cache_mb == 0:
            mode = "top-k, cache off"
        trainable = (
            ""
            if mode == "frozen"
            else f", {sum(p.numel() for p in model._network.trainable.values()):,} trainable parameters"
        )
        extrapolated = (
            f"; the whole training set: about {whole / (len(texts) / epoch):.0f} s per epoch"
            if whole and len(texts) + 32 < whole
            else ""
        )
        print(
            f"{mode:>6}: {epoch:7.1f} s per epoch of {len(texts)} texts ({len(texts) / epoch:5.1f} texts/s; "
            f"{total:.1f} s with loading{trainable}){extrapolated}",
            flush=True,
        )
        if mode == "top-k, cache off" and cached is not None:
            once, per_epoch = cached
            n = args.cost_epochs
            print(
                f" top-k cache: {epoch / per_epoch:.2f}x faster per epoch; {n} epochs: "
                f"{n * epoch:.1f} s without, {once + n * per_epoch:.1f} s with ({n * epoch / (once + n * per_epoch):.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
