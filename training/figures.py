"""The reports' plots, drawn with matplotlib as inline SVG (one self-contained HTML file
each): the simulation by day, the head-to-head over seeds, calibration, feature
importance, what-if estimates against their truth, and uplift per arm."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

COLORS = {
    "arbiter": "#1f6feb",
    "served": "#1f6feb",
    "greedy": "#8250df",
    "oracle": "#1a7f37",
    "vw": "#d4a72c",
    "value": "#9a6700",
    "value-only": "#9a6700",
    "random": "#b42318",
}


def _figure(width: float = 7.0, height: float = 3.6) -> tuple[Any, Any]:
    try:
        import matplotlib
    except ImportError as e:
        needed = "the HTML reports need matplotlib: pip install 'arbiter[simulation]'"
        raise SystemExit(needed) from e

    matplotlib.use("Agg")  # no display: files only
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg") :]  # inline: no XML prologue


def lines_by_day(
    days: Sequence[int],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    percent: bool = False,
) -> str:
    """One line per series over the days; ``bands``: a shaded interval per series."""
    fig, ax = _figure()
    for name, values in series.items():
        color = COLORS.get(name)
        ax.plot(days, values, marker="o", linewidth=2, label=name, color=color)
        if bands and name in bands:
            low, high = bands[name]
            ax.fill_between(days, low, high, alpha=0.18, color=color, linewidth=0)
    ax.set_xlabel("day")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xticks(list(days))
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _svg(fig)


def estimates_against_truth(
    labels: Sequence[str],
    estimates: Sequence[tuple[float, float, float]],
    truths: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
) -> str:
    """An estimate with its 95% interval per label, and the truths beside it."""
    fig, ax = _figure(7.0, 0.9 + 0.55 * len(labels))
    y = np.arange(len(labels))
    values = np.array([e[0] for e in estimates])
    err = np.array([[e[0] - e[1] for e in estimates], [e[2] - e[0] for e in estimates]])
    ax.errorbar(values, y, xerr=err, fmt="o", color="#1f6feb", capsize=4, label="estimate, 95%")
    markers = ["D", "s", "^"]
    for (name, truth), marker in zip(truths.items(), markers, strict=False):
        ax.scatter(truth, y, marker=marker, s=40, zorder=3, label=name)
    ax.set_yticks(y, [_wrap(label) for label in labels])
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
    return _svg(fig)


def calibration(predicted: Sequence[float], observed: Sequence[float], title: str) -> str:
    """Mean observed rate against mean predicted, in deciles of the prediction."""
    p, o = np.asarray(predicted, dtype=float), np.asarray(observed, dtype=float)
    fig, ax = _figure(4.6, 4.0)
    if p.size:
        edges = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
        xs = [p[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
        ys = [o[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
        top = max(max(xs, default=0), max(ys, default=0)) * 1.1 or 1.0
        ax.plot([0, top], [0, top], color="#999", linestyle="--", label="perfect")
        ax.plot(xs, ys, marker="o", color="#1f6feb", label="model (deciles)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(loc="upper left", frameon=False)
    else:
        ax.text(0.5, 0.5, "no offers served", ha="center", transform=ax.transAxes)
    ax.set_xlabel("predicted propensity")
    ax.set_ylabel("true acceptance probability")
    ax.set_title(title, loc="left", fontsize=11)
    return _svg(fig)


def importance(names: Sequence[str], gains: Sequence[float], title: str, top: int = 15) -> str:
    order = np.argsort(gains)[::-1][:top]
    total = float(np.sum(gains)) or 1.0
    fig, ax = _figure(7.0, 0.6 + 0.28 * len(order))
    ax.barh(range(len(order)), [gains[i] / total for i in order], color="#1f6feb")
    ax.set_yticks(range(len(order)), [names[i] for i in order])
    ax.invert_yaxis()
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of the model's total gain")
    ax.set_title(title, loc="left", fontsize=11)
    return _svg(fig)


def arms(
    names: Sequence[str], rates: Sequence[float], lows: Sequence[float], highs: Sequence[float],
    ylabel: str, title: str,
) -> str:  # fmt: skip
    fig, ax = _figure(5.0, 3.4)
    x = np.arange(len(names))
    rates_a = np.asarray(rates)
    err = np.array([rates_a - np.asarray(lows), np.asarray(highs) - rates_a])
    ax.bar(x, rates_a, color=["#8c959f", "#1f6feb"][: len(names)], width=0.55)
    ax.errorbar(x, rates_a, yerr=err, fmt="none", color="#24292f", capsize=6)
    ax.set_xticks(x, names)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    return _svg(fig)


def page(title: str, sections: Sequence[tuple[str, str]], text: str = "") -> str:
    """A self-contained page: a heading, each section's heading and figure (or HTML),
    and the plain-text report."""
    body = "".join(
        f"<section><h2>{html.escape(heading)}</h2>{content}</section>"
        for heading, content in sections
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:980px;"
        "color:#24292f}h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}"
        "svg{max-width:100%;height:auto}pre{background:#f6f8fa;padding:1rem;"
        "overflow-x:auto;font-size:12px}</style>"
        f"<h1>{html.escape(title)}</h1>{body}"
        + (f"<h2>The figures</h2><pre>{html.escape(text)}</pre>" if text else "")
        + "</html>"
    )


def _wrap(label: str, width: int = 28) -> str:
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
