"""Training time per epoch of each fine-tuning mode with the default encoder.

    .venv/bin/python bench/finetune_epoch.py [--texts 2000] [--tokens 200] [--modes frozen top-k lora full]

Synthesised customer texts of about ``--tokens`` tokens each (no dataset needed), a 20% churn rate, one
epoch per mode (batch 16, max_length 256), on CUDA when present and on CPU otherwise. ``frozen`` is the time
to encode every text once (no cache) and fit the logistic head; the other modes are one pass of training
plus scoring a 32-text validation set. Prints seconds per epoch and texts/s per mode.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=200, help="approximate tokens per text")
    parser.add_argument("--modes", nargs="+", default=["frozen", "top-k", "lora", "full"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    texts, labels = synthesise_long_texts(args.texts, words=int(args.tokens * 0.72))
    val_texts, val_labels = synthesise_long_texts(32, words=int(args.tokens * 0.72), seed=1)
    tokenizer, _ = load_encoder(None)
    lengths = tokenize(tokenizer, texts, max_length=256).lengths
    device = resolve_device("auto")
    print(
        f"device {device}, threads {torch.get_num_threads()}, {len(texts)} texts, tokens per text: "
        f"mean {lengths.mean():.0f}, median {int(np.median(lengths))}, max {lengths.max()}"
    )
    for mode in args.modes:
        config = FineTuneConfig(mode=mode, epochs=1, batch_size=args.batch_size, max_length=256, show_progress=False)
        started = time.perf_counter()
        model = TransformerChurnClassifier(config).fit(texts, labels, val_texts=val_texts, val_y=val_labels)
        total = time.perf_counter() - started
        epoch = model.history_[0].seconds
        trainable = (
            ""
            if mode == "frozen"
            else f", {sum(p.numel() for p in model._network.trainable.values()):,} trainable parameters"
        )
        print(
            f"{mode:>6}: {epoch:7.1f} s per epoch ({len(texts) / epoch:5.1f} texts/s; {total:.1f} s with loading{trainable})",
            flush=True,
        )


if __name__ == "__main__":
    main()
