"""A deterministic text view of a customer, for the transformer.

Layout of :func:`serialize_snapshot` (one ``name: value`` per line, then behaviour, then messages)::

    segment: gold
    country: DE
    loyalty_tier: silver                 <- attributes, sorted by name
    customer since: 2024-03
    orders: 12 (spend 1.2k, average 98, returned 2, with discount 3)
    orders by month: 2025-01 3 (310); 2024-12 5 (520); ...
    last order: 1-3 months ago
    browsing: 120 events (page_view 80, search 20, add_to_cart 10); last 1-4 weeks ago
    support: 3 conversations, 5 messages from the customer
    messages, newest first:
    [2025-01-03 chat] The parcel is late again ...

Why it looks like this:

* The text depends only on the customer's own rows, not on the exact cutoff: dates are absolute,
  totals are all-time and monthly buckets are calendar months. What changes every day (days since
  the last order, 30-day windows) lives in the tabular features instead, and the text carries
  recency only as coarse buckets (``1-4 weeks ago``) that change a handful of times in a customer's
  life. So the text, and a cached encoding keyed by its sha256, stays the same while the customer's
  data is unchanged.
* Messages are the customer's own, newest first, HTML reduced to plain text, and cut so that the
  whole text fits the token budget (default 256 tokens including ``[CLS]``/``[SEP]``).
* Everything is sorted and formatted explicitly, so the same input always gives the same bytes.

Token counting is pluggable: pass ``count_tokens`` (any ``str -> int``), or use
:func:`token_counter` on a Hugging Face tokenizer. The default, :func:`approx_wordpiece_count`,
approximates a WordPiece tokenizer so ``ml`` tests need no model.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ml.snapshot import Snapshot

__all__ = [
    "SerializeConfig",
    "TokenCounter",
    "approx_wordpiece_count",
    "html_to_text",
    "serialize_profile",
    "serialize_snapshot",
    "token_counter",
]

TokenCounter = Callable[[str], int]

_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff00-\uffef])")
_PIECES = re.compile(r"[^\W_]+|\S")
_DROP_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# A tag starts with a letter (or "/" and a letter, or "!" for a doctype) after "<": "<3" and "took > 2 weeks" in a
# plain-text message are words, not markup.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>|<![A-Za-z][^<>]*>", re.DOTALL)
_BREAK_TAG = re.compile(r"<\s*(br|/p|/div|/li|p|div|li)\b[^>]*>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
RETURN_STATUSES = frozenset({"returned", "refunded"})


def approx_wordpiece_count(text: str) -> int:
    """Approximate BERT WordPiece token count, with ``[CLS]`` and ``[SEP]``.

    Each CJK character, punctuation mark or emoji is one token; a run of letters or digits costs one
    token per 6 characters (common words are one piece, rare ones split into several).
    """
    spaced = _CJK.sub(r" \1 ", text)
    count = 2
    for piece in _PIECES.findall(spaced):
        count += 1 if len(piece) == 1 else math.ceil(len(piece) / 6)
    return count


def token_counter(tokenizer: object) -> TokenCounter:
    """A ``str -> int`` counter from a Hugging Face tokenizer (special tokens included), or the callable itself."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        if callable(tokenizer):
            return tokenizer  # type: ignore[return-value]
        raise TypeError(f"{type(tokenizer).__name__} has neither encode() nor __call__; pass a str -> int counter")

    def count(text: str) -> int:
        # verbose=False: counting a long text is the point here, not a mistake worth a warning.
        return len(encode(text, add_special_tokens=True, verbose=False))

    return count


def html_to_text(text: str) -> str:
    """Plain text from a message that may hold HTML: scripts and tags removed, entities decoded, spaces collapsed."""
    text = _DROP_BLOCKS.sub(" ", text)
    text = _BREAK_TAG.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class SerializeConfig:
    """Options of the serialisers.

    Attributes:
        token_budget: the most tokens the whole text may take (special tokens included).
        months_shown: calendar months with orders listed, newest first.
        max_messages: customer messages considered before the budget cuts them.
        min_message_tokens: a message is cut to fit only if at least this many tokens are left.
        include_recency_buckets: add coarse ``last order: 1-3 months ago`` phrases.
    """

    token_budget: int = 256
    months_shown: int = 6
    max_messages: int = 20
    min_message_tokens: int = 8
    include_recency_buckets: bool = True


def serialize_snapshot(
    snapshot: Snapshot,
    *,
    config: SerializeConfig | None = None,
    count_tokens: TokenCounter | object = None,
    check_tokens: TokenCounter | object = None,
) -> str:
    """The text of a customer at a snapshot (see the module docstring for the layout).

    Args:
        snapshot: the customer at the cutoff.
        config: budget and layout options.
        count_tokens: a ``str -> int`` token counter or a Hugging Face tokenizer (``encode`` is used);
            None approximates WordPiece (:func:`approx_wordpiece_count`).
        check_tokens: the encoder's tokenizer (or counter), when the text is fitted with a faster approximate
            count: the finished text is counted with it once, and fitted again with it if the approximation fell
            short (text in other languages than English, which the encoder would otherwise cut from the end).
    """
    config = config or SerializeConfig()
    count = token_counter(count_tokens) if count_tokens is not None else approx_wordpiece_count
    snapshot.assert_point_in_time()
    customer = snapshot.customer
    lines: list[str] = []
    for name, value in (("segment", customer.segment), ("country", customer.country), ("language", customer.language)):
        if value:
            lines.append(f"{name}: {_clean_value(value)}")
    for name, value in sorted(customer.attributes.items(), key=lambda item: str(item[0])):
        lines.append(f"{_clean_value(name)}: {_format_value(value)}")
    if customer.signed_up_at is not None:
        lines.append(f"customer since: {customer.signed_up_at:%Y-%m}")
    lines += _order_lines(snapshot, config)
    lines += _browsing_lines(snapshot, config)
    lines += _support_lines(snapshot)
    # Messages with no text once the HTML is gone (an image-only email) take none of the max_messages places.
    messages = [
        (f"[{m.sent_at:%Y-%m-%d} {m.channel}] ", text)
        for m in reversed(snapshot.messages)
        if m.author_role == "customer" and (text := html_to_text(m.text))
    ][: config.max_messages]
    return _fit_checked(lines, messages, config, count, check_tokens)


def serialize_profile(
    values: Mapping[str, object],
    *,
    config: SerializeConfig | None = None,
    count_tokens: TokenCounter | object = None,
    check_tokens: TokenCounter | object = None,
) -> str:
    """The text of a profile row: ``name: value`` per column in the given order, missing values as ``unknown``.
    ``count_tokens`` and ``check_tokens`` as for :func:`serialize_snapshot`."""
    config = config or SerializeConfig()
    lines = [f"{_clean_value(name)}: {_format_value(value)}" for name, value in values.items()]
    count = token_counter(count_tokens) if count_tokens is not None else approx_wordpiece_count
    return _fit_checked(lines, [], config, count, check_tokens)


def _fit_checked(
    lines: Sequence[str],
    messages: Sequence[tuple[str, str]],
    config: SerializeConfig,
    count: TokenCounter,
    check_tokens: TokenCounter | object,
) -> str:
    text = _fit_budget(lines, messages, config, count)
    if check_tokens is None:
        return text
    exact = token_counter(check_tokens)
    return text if exact(text) <= config.token_budget else _fit_budget(lines, messages, config, exact)


def _order_lines(snapshot: Snapshot, config: SerializeConfig) -> list[str]:
    orders = [o for o in snapshot.orders if o.status != "cancelled"]
    if not orders:
        return ["orders: none"]
    completed = [o for o in orders if o.status not in RETURN_STATUSES]
    spend = sum(o.amount for o in completed)
    parts = [f"spend {_compact(spend)}"]
    if completed:
        parts.append(f"average {_compact(spend / len(completed))}")
    returned = len(orders) - len(completed)
    if returned:
        parts.append(f"returned {returned}")
    discounted = sum(1 for o in orders if o.discount_amount > 0)
    if discounted:
        parts.append(f"with discount {discounted}")
    lines = [f"orders: {len(orders)} ({', '.join(parts)})"]
    by_month: dict[str, list[float]] = {}
    for o in orders:
        by_month.setdefault(f"{o.placed_at:%Y-%m}", []).append(o.amount if o.status not in RETURN_STATUSES else 0.0)
    months = sorted(by_month, reverse=True)[: config.months_shown]
    lines.append(
        "orders by month: " + "; ".join(f"{m} {len(by_month[m])} ({_compact(sum(by_month[m]))})" for m in months)
    )
    if config.include_recency_buckets:
        lines.append(f"last order: {_recency_bucket(snapshot.as_of, orders[-1].placed_at)}")
    return lines


def _browsing_lines(snapshot: Snapshot, config: SerializeConfig) -> list[str]:
    if not snapshot.events:
        return ["browsing: none"]
    kinds: Counter[str] = Counter()
    for kind, n in snapshot.events.kind_counts().items():
        kinds[_clean_value(kind)] += n
    top = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
    line = f"browsing: {len(snapshot.events)} events ({top})"
    if config.include_recency_buckets:
        line += f"; last {_recency_bucket(snapshot.as_of, snapshot.events[-1].occurred_at)}"
    return [line]


def _support_lines(snapshot: Snapshot) -> list[str]:
    written = [m for m in snapshot.messages if m.author_role == "customer"]
    if not written:
        return ["support: none"]
    conversations = {m.conversation_id or f"{m.channel}:{m.sent_at.isoformat()}" for m in written}
    channels = Counter(m.channel for m in written)
    by_channel = ", ".join(f"{c} {n}" for c, n in sorted(channels.items()))
    return [f"support: {len(conversations)} conversations, {len(written)} messages from the customer ({by_channel})"]


def _recency_bucket(as_of: datetime, when: datetime) -> str:
    days = (as_of - when).total_seconds() / 86400.0
    for limit, words in ((7, "this week"), (30, "1-4 weeks ago"), (90, "1-3 months ago"), (180, "3-6 months ago")):
        if days <= limit:
            return words
    return "6-12 months ago" if days <= 365 else "over a year ago"


class _Budget:
    """Lines added while the text stays within the token budget.

    Costs are counted per line (one tokenizer call per line, not per growing text) and the final text is
    checked as a whole, dropping lines from the end in the rare case a tokenizer does not add up.
    """

    def __init__(self, count: TokenCounter, budget: int) -> None:
        self.count, self.budget = count, budget
        self.special = count("")
        self.separator = max(0, count("x\nx") - 2 * count("x") + self.special)
        self.used = self.special
        self.lines: list[str] = []

    def cost(self, line: str) -> int:
        return max(0, self.count(line) - self.special) + (self.separator if self.lines else 0)

    def fits(self, line: str, reserve: int = 0) -> bool:
        return self.used + self.cost(line) + reserve <= self.budget

    def add(self, line: str) -> bool:
        cost = self.cost(line)
        if self.used + cost > self.budget:
            return False
        self.lines.append(line)
        self.used += cost
        return True

    def add_truncated(self, line: str, keep: int = 0) -> bool:
        """Add the longest prefix of ``line`` longer than ``keep`` characters that fits (cut at a space when
        possible, with an ellipsis); False when none fits."""
        low, high = 0, len(line)
        while low < high:
            middle = (low + high + 1) // 2
            if self.fits(line[:middle].rstrip() + " …"):
                low = middle
            else:
                high = middle - 1
        if low <= keep:
            return False
        prefix = line[:low]
        space = prefix.rfind(" ")
        if space > max(low // 2, keep):
            prefix = prefix[:space]
        return self.add(prefix.rstrip() + " …")

    def text(self) -> str:
        while self.lines and self.count("\n".join(self.lines)) > self.budget:
            self.lines.pop()
        return "\n".join(self.lines)


def _fit_budget(
    lines: Sequence[str], messages: Sequence[tuple[str, str]], config: SerializeConfig, count: TokenCounter
) -> str:
    """``lines``, then ``messages`` (``(header, text)``, newest first) under the header, within the budget."""
    budget = _Budget(count, config.token_budget)
    for line in lines:
        if not budget.add(line):
            budget.add_truncated(line)
            return budget.text()
    header = "messages, newest first:"
    if messages and budget.fits(header, reserve=config.min_message_tokens):
        budget.add(header)
        for message_header, text in messages:
            if budget.add(message_header + text):
                continue
            # Cut only where the message's date and channel fit with min_message_tokens of its text, and never
            # inside the header (a line "[2025-06-09 …" says nothing and reads as no message at all).
            if budget.fits(message_header.rstrip(), reserve=config.min_message_tokens):
                budget.add_truncated(message_header + text, keep=len(message_header))
            break
    return budget.text()


def _clean_value(value: object) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFC", str(value))).strip()


def _format_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _compact(float(value))
    return _clean_value(value)


def _compact(value: float) -> str:
    """Short, stable number formatting: 3, 0.25, 98.5, 627, 1.2k, 3.4M."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 1000:
        return f"{value / 1000:.1f}k"
    if float(value).is_integer() or magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.{1 if magnitude >= 10 else 2}f}".rstrip("0").rstrip(".")
