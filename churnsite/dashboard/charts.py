"""Charts as inline SVG, drawn by matplotlib on the server: no JavaScript, no CDN.

Framework-free: plain lists in, an ``<svg>`` string out. Text in the figures (segment names come from
customer data) is written by matplotlib's SVG backend, which escapes it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["bar_svg", "line_svg"]

_WIDTH, _HEIGHT = 5.6, 2.8
_COLORS = ("#417690", "#c0392b", "#7f8c8d", "#27ae60")


def _figure():  # noqa: ANN202 - a matplotlib Figure
    from matplotlib.figure import Figure  # heavy: loaded only by the dashboard

    figure = Figure(figsize=(_WIDTH, _HEIGHT), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure) -> str:  # noqa: ANN001
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, transparent=True)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def bar_svg(
    *, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "", horizontal: bool = False
) -> str:
    """One bar per label."""
    figure, axes = _figure()
    positions = range(len(labels))
    if horizontal:
        axes.barh(positions, values, color=_COLORS[0])
        axes.set_yticks(list(positions), [str(label) for label in labels], fontsize=8)
        axes.invert_yaxis()
        axes.set_xlabel(ylabel, fontsize=8)
    else:
        axes.bar(positions, values, color=_COLORS[0])
        axes.set_xticks(list(positions), [str(label) for label in labels], fontsize=8, rotation=30, ha="right")
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
        axes.plot(list(x), list(values), label=name, color=color, marker="o" if markers else None, markersize=3)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.tick_params(labelsize=8)
    if len(series) > 1:
        axes.legend(fontsize=7)
    if not x:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, fontsize=9)
    figure.autofmt_xdate()
    return _svg(figure)
