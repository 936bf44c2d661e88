"""Real token counts of the customer texts against the serialiser's approximate count and the 256-token budget.

For the shared profile files (telco, bank, e-commerce, as churn_evaluate prepares them) and, with ``--demo-store``,
for a generated demo store at a cutoff (seed 7, data to 2026-11-28, cut at 2026-09-27 as the README's backtest):
the longest and mean text in the default encoder's real tokens and in the approximate count, and how many texts
the approximate fit leaves over the budget (those the encoder would cut, which the tokenizer check cuts again). First
one customer message per language, whose two counts show where the approximation falls short.

    .venv/bin/python bench/text_tokens.py [--datasets telco bank ecommerce] [--demo-store] [--languages en,zh]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _scratch import DATA, at_least, scratch_django, shared_profile  # noqa: E402 - bench/ is on sys.path

BUDGET = 256
# One customer message per language: how far the approximate count falls short of the real tokenizer's.
SAMPLES = {
    "en": "My parcel is two weeks late and nobody answers my emails. I want a refund or I will cancel my account.",
    "de": "Meine Bestellung ist immer noch nicht angekommen, die Sendungsverfolgung zeigt seit Tagen nichts.",
    "ru": "Мой заказ опаздывает уже на две недели, и никто не отвечает на мои письма. Верните деньги.",
    "ko": "택배가 2주나 늦었는데 아무도 이메일에 답하지 않습니다. 환불해 주지 않으면 계정을 해지하겠습니다.",
    "zh": "包裹已经晚了两个星期，没有人回复我的邮件。请退款，否则我将注销账户。",
}


def _report(name: str, texts: list[str], tokenizer: object) -> None:
    from ml.serialize import approx_wordpiece_count

    real = [len(tokenizer(text)["input_ids"]) for text in texts]  # type: ignore[operator]
    approx = [approx_wordpiece_count(text) for text in texts]
    over = sum(count > BUDGET for count in real)
    print(
        f"{name:28} {len(texts):6d} {max(real):9d} {sum(real) / len(real):9.1f} {max(approx):10d} "
        f"{sum(approx) / len(approx):10.1f} {over:9d}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["telco", "bank", "ecommerce"])
    parser.add_argument("--demo-store", action="store_true", help="also a generated demo store (seed 7)")
    parser.add_argument("--customers", type=at_least(1), default=2000, help="demo store size")
    parser.add_argument("--languages", default="en", help="demo store languages, e.g. en,zh")
    args = parser.parse_args()

    from ml.encoder import load_tokenizer
    from ml.features import ProfileError
    from ml.serialize import serialize_profile

    tokenizer = load_tokenizer(None)
    print(
        f"{'texts':28} {'n':>6} {'real max':>9} {'real mean':>9} {'approx max':>10} {'approx mean':>10} {'over 256':>9}"
    )
    for language, sample in SAMPLES.items():
        _report(f"one message ({language})", [sample], tokenizer)
    for name in args.datasets:
        try:
            data = shared_profile(name)
        except ProfileError as error:
            raise SystemExit(f"{error} (the shared datasets are read from {DATA})") from None
        _report(name, [serialize_profile(record) for record in data.frame.to_dict(orient="records")], tokenizer)
    if args.demo_store:
        scratch_django("churn-bench-text-tokens-", LOG_LEVEL="WARNING")
        from django.core.management import call_command

        from customers.services import demo_store_generate
        from ml.serialize import serialize_snapshot
        from ml.snapshot import snapshot_at
        from predictions.selectors import customer_histories

        call_command("migrate", verbosity=0)
        languages = tuple(part.strip() for part in args.languages.split(",") if part.strip())
        end, as_of = datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 9, 27, tzinfo=UTC)
        demo_store_generate(customers=args.customers, days=365, seed=7, languages=languages, end=end)
        histories = customer_histories(until=as_of)
        texts = [serialize_snapshot(snapshot_at(history, as_of)) for history in histories]
        _report(f"demo store ({args.languages}) at 2026-09-27", texts, tokenizer)


if __name__ == "__main__":
    main()
