"""Why a customer got their churn score: the top factors, in words staff can read.

Two kinds of factor, in one unit (log-odds of the hybrid's LightGBM score, before calibration):

* **features**: LightGBM's exact per-row contributions (``pred_contrib``, TreeSHAP) of each tabular feature,
  named with :func:`ml.features.describe_feature`; the evidence is the customer's value (``orders_30d = 0``).
  The stacked text columns are not listed as such: their effect is split over the text's parts below.
* **text**: leave-one-part-out. The serialised text is one line per part (a profile line such as
  ``orders: 12 (...)`` or one customer message ``[2025-01-03 chat] ...``); the text is scored again
  without each line, and the change of the hybrid's log-odds is that part's contribution. For a message the
  evidence quotes the sentence that moves the score most (leave-one-sentence-out inside the message).

:func:`explain_hybrid` returns, for each row, the ``top_n`` factors by weight as
``{"factor": str, "direction": "raises" | "lowers", "weight": float, "evidence": str}``.
Cost: the text is re-scored once per line (and once per sentence of the top messages), so explain the
customers you show, not the whole base.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ml.features import describe_feature
from ml.hybrid import TEXT_DIM_PREFIX, TEXT_SCORE_COLUMN, HybridChurnModel

__all__ = [
    "MESSAGES_HEADER",
    "Factor",
    "explain_hybrid",
    "feature_contributions",
    "sentence_spans",
    "split_sentences",
    "text_parts",
    "without_sentence",
]

Factor = dict[str, object]
MESSAGES_HEADER = "messages, newest first:"
_MESSAGE_LINE = re.compile(r"^\[(?P<date>[^\] ]+) (?P<channel>[^\]]+)\] (?P<body>.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of a message (split after ``. ! ?`` and their CJK forms, surrounding
    spaces left out); the whole text when it has no sentence."""
    spans: list[tuple[int, int]] = []
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(text))]
    ends = [*(m.start() for m in _SENTENCE_END.finditer(text)), len(text)]
    for start, end in zip(starts, ends, strict=True):
        piece = text[start:end]
        if piece.strip():
            first = start + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(piece.strip())))
    return spans or [(0, len(text))]


def split_sentences(text: str) -> list[str]:
    """Sentences of a message (split after ``. ! ?`` and their CJK forms); the text itself when it has one."""
    return [text[start:end] for start, end in sentence_spans(text)]


def without_sentence(line: str, span: tuple[int, int]) -> str:
    """A message line with the sentence at ``span`` of its body cut out (by position: the same words elsewhere in
    the line stay)."""
    match = _MESSAGE_LINE.match(line)
    offset = match.start("body") if match is not None else 0
    return line[: offset + span[0]] + line[offset + span[1] :]


def text_parts(text: str) -> list[tuple[int, str]]:
    """``(line index, line)`` of each part of a serialised text that can be left out (not the messages header)."""
    return [(i, line) for i, line in enumerate(text.split("\n")) if line.strip() and line.strip() != MESSAGES_HEADER]


def _without_line(text: str, index: int) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:index] + lines[index + 1 :])


def _with_line(text: str, index: int, line: str) -> str:
    lines = text.split("\n")
    return "\n".join([*lines[:index], line, *lines[index + 1 :]])


def feature_contributions(hybrid: HybridChurnModel, stacked: pd.DataFrame) -> pd.DataFrame:
    """LightGBM ``pred_contrib`` per row and stacked column (plus ``bias``), in log-odds."""
    booster = hybrid.lightgbm_
    if booster is None:
        raise RuntimeError("the hybrid is not fitted")
    matrix = booster._matrix(stacked)  # the same encoding of categories as in training
    values = booster.booster_.predict(matrix, pred_contrib=True)  # type: ignore[union-attr]
    return pd.DataFrame(np.asarray(values), columns=[*booster.columns_, "bias"], index=stacked.index)


def _format_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, float):
        if value.is_integer():
            return f"{value:.0f}"
        # An amount reads as staff write it, with at most two decimals (26734.12, not 2.67e+04; 159.93 a month, not
        # 160); values below 1 (ratios, shares) keep three significant digits.
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _message_factor(line: str) -> tuple[str, str | None]:
    match = _MESSAGE_LINE.match(line)
    if match is None:
        return f"record: {line.split(':', 1)[0].strip()}", None
    return f"message of {match.group('date')} ({match.group('channel')})", match.group("body")


def explain_hybrid(
    hybrid: HybridChurnModel,
    frame: pd.DataFrame,
    texts: Sequence[str] | None,
    *,
    top_n: int = 5,
    text_factors: bool = True,
    text_rows: Sequence[int] | None = None,
    stacked: pd.DataFrame | None = None,
) -> list[list[Factor]]:
    """The ``top_n`` factors of each row's score (see the module docstring).

    Args:
        hybrid: a fitted :class:`ml.hybrid.HybridChurnModel`.
        frame: feature rows (the training columns).
        texts: one serialised text per row (``None`` for a features-only model).
        top_n: factors kept per row, largest weight first.
        text_factors: add the leave-one-part-out text factors (False: features only, as cheap as scoring).
        text_rows: with ``text_factors``, the rows (positions) that get text factors; None: every row. A row's
            factors do not depend on the other rows, so explaining a subset gives each of its rows the factors
            it would get alone.
        stacked: ``hybrid.stacked_frame(frame, texts)`` when the caller has it already (scoring just built it).
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    if len(frame) == 0:
        return []
    frame = frame.reset_index(drop=True)
    if stacked is None:
        stacked = hybrid.stacked_frame(frame, texts)
    contributions = feature_contributions(hybrid, stacked)
    explanations = _feature_factors(hybrid, frame, contributions, top_n=top_n)
    if text_factors and texts is not None and hybrid.uses_text:
        rows = list(range(len(frame))) if text_rows is None else sorted(set(text_rows))
        if rows:
            # The log-odds of the whole texts are the stacked rows' scores: computed once, here.
            full = _logit(hybrid.raw_scores_from_stacked(stacked.iloc[rows]))
            subset = [explanations[row] for row in rows]
            _add_text_factors(hybrid, frame.iloc[rows].reset_index(drop=True), [texts[r] for r in rows], subset, full)
    out: list[list[Factor]] = []
    for factors in explanations:
        ranked = sorted(factors, key=lambda f: (-abs(float(f["weight"])), str(f["factor"])))[:top_n]  # type: ignore[arg-type]
        out.append([{**f, "weight": round(abs(float(f["weight"])), 4)} for f in ranked])  # type: ignore[arg-type]
    return out


def _feature_factors(
    hybrid: HybridChurnModel, frame: pd.DataFrame, contributions: pd.DataFrame, *, top_n: int
) -> list[list[Factor]]:
    """Each row's ``top_n`` feature factors by (weight, name), in that order (zero weights left out).

    Only a row's ``top_n`` strongest features can end among its ``top_n`` factors once the text factors join
    them (the final ranking uses the same order), so the weaker ones are not turned into dicts at all.
    """
    columns = [c for c in hybrid.columns_ if c != TEXT_SCORE_COLUMN and not str(c).startswith(TEXT_DIM_PREFIX)]
    names = [describe_feature(c) for c in columns]
    # A customer attribute's evidence names it as imported ("Contract = Month-to-month"), as describe_feature does.
    evidence_names = [str(c).removeprefix("attr_") for c in columns]
    # Columns in the order of the final ranking's tie-break (factor name, then column order: the sort is stable).
    order = sorted(range(len(columns)), key=lambda i: names[i])
    weights = contributions[[columns[i] for i in order]].to_numpy(dtype=float)
    values = [frame[columns[i]].tolist() for i in order]
    strongest = np.argsort(-np.abs(weights), axis=1, kind="stable")
    explanations: list[list[Factor]] = []
    for row in range(len(frame)):
        factors: list[Factor] = []
        for k in strongest[row]:
            weight = float(weights[row, k])
            if abs(weight) < 1e-9:
                break  # sorted by |weight|: the rest are zero too
            factors.append(
                {
                    "factor": names[order[k]],
                    "direction": "raises" if weight > 0 else "lowers",
                    "weight": weight,
                    "evidence": f"{evidence_names[order[k]]} = {_format_value(values[k][row])}",
                }
            )
            if len(factors) == top_n:
                break
        explanations.append(factors)
    return explanations


def _log_odds(hybrid: HybridChurnModel, frame: pd.DataFrame, rows: Sequence[int], texts: Sequence[str]) -> np.ndarray:
    if not rows:
        return np.zeros(0)
    repeated = frame.iloc[list(rows)].reset_index(drop=True)
    return _logit(hybrid.raw_scores_from_stacked(hybrid.stacked_frame(repeated, list(texts))))


def _add_text_factors(
    hybrid: HybridChurnModel, frame: pd.DataFrame, texts: list[str], explanations: list[list[Factor]], full: np.ndarray
) -> None:
    """Append the text factors of each row to ``explanations``; ``full`` holds the log-odds of the whole texts."""
    rows: list[int] = []
    variants: list[str] = []
    lines: list[str] = []
    indices: list[int] = []
    for row, text in enumerate(texts):
        for index, line in text_parts(text):
            rows.append(row)
            variants.append(_without_line(text, index))
            lines.append(line)
            indices.append(index)
    without = _log_odds(hybrid, frame, rows, variants)
    best_message: dict[int, tuple[float, int]] = {}
    text_factors: list[tuple[int, Factor, str | None]] = []
    factor_lines: list[int] = []  # the line index of each text factor (a quoted reply can repeat a message)
    for k, (row, line) in enumerate(zip(rows, lines, strict=True)):
        weight = float(full[row] - without[k])
        if abs(weight) < 1e-9:
            continue
        name, body = _message_factor(line)
        factor: Factor = {
            "factor": name,
            "direction": "raises" if weight > 0 else "lowers",
            "weight": weight,
            "evidence": line if body is None else body,
        }
        text_factors.append((row, factor, body))
        factor_lines.append(indices[k])
        if body is not None and abs(weight) > best_message.get(row, (0.0, -1))[0]:
            best_message[row] = (abs(weight), len(text_factors) - 1)
    # Quote the sentence that moves the score most, for each row's strongest message with several sentences
    # (the sentence variants of all rows are scored in one batch).
    quoted: list[tuple[int, Factor, list[str]]] = []
    sentence_rows: list[int] = []
    sentence_texts: list[str] = []
    for row, (_, position) in best_message.items():
        _, factor, body = text_factors[position]
        spans = sentence_spans(body or "")
        if len(spans) < 2:
            continue
        index = factor_lines[position]
        line = texts[row].split("\n")[index]
        quoted.append((row, factor, [(body or "")[start:end] for start, end in spans]))
        sentence_rows += [row] * len(spans)
        sentence_texts += [_with_line(texts[row], index, without_sentence(line, span)) for span in spans]
    sentence_log_odds = _log_odds(hybrid, frame, sentence_rows, sentence_texts)
    start = 0
    for row, factor, sentences in quoted:
        shifts = full[row] - sentence_log_odds[start : start + len(sentences)]
        start += len(sentences)
        sign = 1.0 if float(factor["weight"]) > 0 else -1.0  # type: ignore[arg-type]
        factor["evidence"] = sentences[int(np.argmax(sign * shifts))]
    for row, factor, _ in text_factors:
        explanations[row].append(factor)
