"""Charts as inline SVG, drawn by matplotlib on the server: no JavaScript, no CDN.

Framework-free: plain lists in, an ``<svg>`` string out. Text in the figures (segment names come from
customer data) is written by matplotlib's SVG backend, which escapes it.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import date, datetime

__all__ = ["ChartCache", "bar_svg", "calibration_svg", "comparison_bar_svg", "line_svg", "roc_svg"]

_WIDTH, _HEIGHT = 5.6, 2.8
_COLORS = ("#417690", "#c0392b", "#7f8c8d", "#27ae60", "#8e44ad", "#d35400")
_REFERENCE = "#555555"


def _figure():  # noqa: ANN202 - a matplotlib Figure
    from matplotlib.figure import Figure  # heavy: loaded only by the dashboard

    figure = Figure(figsize=(_WIDTH, _HEIGHT), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure) -> str:  # noqa: ANN001
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, transparent=True)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _plain(text: object) -> str:
    """Text drawn as it is: matplotlib reads text between two ``$`` as maths (a segment "VIP ($$)" crashed it)."""
    return str(text).replace("$", r"\$")


def bar_svg(
    *, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "", horizontal: bool = False
) -> str:
    """One bar per label."""
    figure, axes = _figure()
    positions = range(len(labels))
    if horizontal:
        axes.barh(positions, values, color=_COLORS[0])
        axes.set_yticks(list(positions), [_plain(label) for label in labels], fontsize=8)
        axes.invert_yaxis()
        axes.set_xlabel(ylabel, fontsize=8)
    else:
        axes.bar(positions, values, color=_COLORS[0])
        axes.set_xticks(list(positions), [_plain(label) for label in labels], fontsize=8, rotation=30, ha="right")
        axes.set_ylabel(ylabel, fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.tick_params(labelsize=8)
    if not labels:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, fontsize=9)
    return _svg(figure)


def line_svg(
    *, x: Sequence[object], series: dict[str, Sequence[float]], title: str, ylabel: str = "", markers: bool = True
) -> str:
    """One line per series over the shared ``x`` (dates or numbers)."""
    figure, axes = _figure()
    for (name, values), color in zip(series.items(), _COLORS * 4, strict=False):
        axes.plot(list(x), list(values), label=_plain(name), color=color, marker="o" if markers else None, markersize=3)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.tick_params(labelsize=8)
    if len(series) > 1:
        axes.legend(fontsize=7)
    if not x:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, fontsize=9)
    figure.autofmt_xdate()
    return _svg(figure)


def roc_svg(*, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str) -> str:
    """ROC curves (false positive rate, true positive rate), the first drawn bold, with the chance diagonal."""
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], color=_REFERENCE, linestyle=":", linewidth=1, label="chance")
    for index, ((name, (fpr, tpr)), color) in enumerate(zip(curves.items(), _COLORS, strict=False)):
        axes.plot(list(fpr), list(tpr), label=_plain(name), color=color, linewidth=2.2 if index == 0 else 1.2)
    axes.set(xlim=(0, 1), ylim=(0, 1.02))
    axes.set_xlabel("false positive rate (stayers flagged)", fontsize=8)
    axes.set_ylabel("true positive rate (churners caught)", fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.tick_params(labelsize=8)
    axes.legend(fontsize=7, loc="lower right", frameon=False)  # ROC curves bow to the upper left
    return _svg(figure)


def calibration_svg(*, curves: Mapping[str, Sequence[tuple[float, float]]], title: str) -> str:
    """Reliability curves (mean predicted probability, observed churn rate) per bin, with the diagonal."""
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], color=_REFERENCE, linestyle=":", linewidth=1, label="perfectly calibrated")
    for index, ((name, points), color) in enumerate(zip(curves.items(), _COLORS, strict=False)):
        axes.plot(
            [predicted for predicted, _ in points],
            [observed for _, observed in points],
            label=_plain(name),
            color=color,
            marker="o",
            markersize=4 if index == 0 else 3,
            linewidth=2.2 if index == 0 else 1.0,
        )
    axes.set(xlim=(0, 1), ylim=(0, 1.02))
    axes.set_xlabel("mean predicted churn probability", fontsize=8)
    axes.set_ylabel("observed churn rate", fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.tick_params(labelsize=8)
    axes.legend(fontsize=7, loc="upper left", frameon=False)  # reliability curves hug the diagonal
    return _svg(figure)


def comparison_bar_svg(
    *,
    labels: Sequence[str],
    values: Sequence[float | None],
    title: str,
    ylabel: str = "",
    reference: float | None = None,
) -> str:
    """One bar per label, the first highlighted (the model the others are compared with); missing values are
    marked "n/a"; ``reference`` draws a dashed line (for example lift 1: no better than random)."""
    figure, axes = _figure()
    positions = list(range(len(labels)))
    heights = [value if value is not None else 0.0 for value in values]
    colors = [_COLORS[0] if index == 0 else _COLORS[2] for index in positions]
    bars = axes.bar(positions, heights, color=colors)
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if value is None else f"{value:.2f}"
        axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    if reference is not None:
        axes.axhline(reference, color=_REFERENCE, linestyle="--", linewidth=1)
    axes.set_xticks(positions, [_plain(label) for label in labels], fontsize=8, rotation=15, ha="right")
    axes.set_ylabel(ylabel, fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.tick_params(labelsize=8)
    axes.margins(y=0.15)
    if not labels:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, fontsize=9)
    return _svg(figure)


class ChartCache:
    """The SVG of charts already drawn, by chart function and inputs, the newest ``maxsize`` kept (in this process).

    Each chart above is a function of its inputs alone, and drawing one costs 60-90 ms of matplotlib (layout, text
    measurement): the dashboard's eight took ~620 ms of each request, while its data changes with a scoring run,
    a new alert or a new champion, not between two page views. Inputs of a type it does not know are drawn afresh.
    """

    def __init__(self, *, maxsize: int) -> None:
        self.maxsize = maxsize
        self._drawn: OrderedDict[Hashable, str] = OrderedDict()
        self._lock = threading.Lock()  # threaded servers share it

    def draw(self, chart: Callable[..., str], /, **inputs: object) -> str:
        """``chart(**inputs)``, drawn once for as long as these inputs stay among the newest ``maxsize``."""
        try:
            key = (chart.__module__, chart.__qualname__, _frozen(inputs))
        except TypeError:
            return chart(**inputs)
        with self._lock:
            svg = self._drawn.get(key)
            if svg is not None:
                self._drawn.move_to_end(key)
                return svg
        svg = chart(**inputs)
        with self._lock:
            self._drawn[key] = svg
            while len(self._drawn) > self.maxsize:
                self._drawn.popitem(last=False)
        return svg

    def clear(self) -> None:
        with self._lock:
            self._drawn.clear()


def _frozen(value: object) -> Hashable:
    """An input as a key that tells apart whatever draws differently: types (1 and 1.0 and True are equal keys
    otherwise), order, and a time's zone (equal instants in two zones give two time axes)."""
    if isinstance(value, float) and value != value:  # NaN equals nothing, itself included: never found again
        return ("float", "nan")
    if value is None or isinstance(value, str | bool | int | float):
        return (type(value).__name__, value)
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), repr(value.tzinfo))
    if isinstance(value, date):
        return ("date", value.isoformat())
    if isinstance(value, Mapping):
        return ("mapping", tuple((_frozen(key), _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple | range):
        return ("sequence", tuple(_frozen(item) for item in value))
    raise TypeError(f"not a chart input this cache knows: {type(value).__name__}")
