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
    "before": "#6e7781",  # an earlier checkout's learner
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
    # the truths in colours of their own: never the estimate's blue
    markers = [("D", "#d1242f"), ("s", "#1a7f37"), ("^", "#9a6700")]
    for (name, truth), (marker, colour) in zip(truths.items(), markers, strict=False):
        ax.scatter(truth, y, marker=marker, s=40, zorder=3, color=colour, label=name)
    ax.set_yticks(y, [_wrap(label) for label in labels])
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    fig.legend(loc="outside lower center", ncol=3, frameon=False)  # below, never on the axes
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


def bubbles(
    labels: Sequence[str],
    x: Sequence[float],
    y: Sequence[float],
    sizes: Sequence[int],
    flagged: Sequence[bool],
    xlabel: str,
    ylabel: str,
    title: str,
) -> str:
    """Pega's view of its adaptive models: one bubble per label at (x, y), its area by
    ``sizes``, red when ``flagged``; each labelled. Points with a NaN are left out."""
    fig, ax = _figure(7.0, 4.6)
    keep = [i for i in range(len(labels)) if np.isfinite(x[i]) and np.isfinite(y[i])]
    if keep:
        top = max(max(sizes[i] for i in keep), 1)
        area = [30 + 900 * sizes[i] / top for i in keep]
        colors = ["#b42318" if flagged[i] else "#1f6feb" for i in keep]
        ax.scatter([x[i] for i in keep], [y[i] for i in keep], s=area, c=colors, alpha=0.45,
                   edgecolors="#24292f", linewidths=0.6)  # fmt: skip
        # Beside each bubble, above it when it is the higher of it and its nearest
        # neighbour, else below: two close bubbles' labels part the way they do.
        span_x = (max(x[i] for i in keep) - min(x[i] for i in keep)) or 1.0
        span_y = (max(y[i] for i in keep) - min(y[i] for i in keep)) or 1.0
        for i in keep:
            others = [j for j in keep if j != i]
            nearest = min(
                others,
                key=lambda j: ((x[j] - x[i]) / span_x) ** 2 + ((y[j] - y[i]) / span_y) ** 2,
                default=i,
            )
            up = y[i] >= y[nearest]
            ax.annotate(labels[i], (x[i], y[i]), xytext=(7, 6 if up else -8),
                        textcoords="offset points", fontsize=7, ha="left", va="center")  # fmt: skip
        ax.axhline(0.5, color="#999", linestyle="--", linewidth=1)
    else:
        ax.text(0.5, 0.5, "no answered decisions yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    return _svg(fig)


def calibration_grid(
    labels: Sequence[str],
    bins: Sequence[Sequence[Sequence[float]]],
    flagged: Sequence[bool],
    columns: int = 4,
) -> str:
    """A small calibration plot per label: realised rate against mean predicted, per bin
    (``bins``: (predicted, realised, rows) each), with the diagonal."""
    if not labels:
        fig, ax = _figure(4.0, 1.2)
        ax.axis("off")
        ax.text(0.5, 0.5, "no answered decisions yet", ha="center", transform=ax.transAxes)
        return _svg(fig)
    import matplotlib.pyplot as plt

    rows = -(-len(labels) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(9.0, 2.2 * rows), layout="constrained", squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        if k >= len(labels):
            ax.axis("off")
            continue
        xs = [b[0] for b in bins[k]]
        ys = [b[1] for b in bins[k]]
        top = max(max(xs), max(ys), 0.01) * 1.1
        ax.plot([0, top], [0, top], color="#999", linestyle="--", linewidth=1)
        ax.plot(xs, ys, marker="o", markersize=3, color="#b42318" if flagged[k] else "#1f6feb")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(_wrap(labels[k], 34), fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    fig.supxlabel("predicted propensity", fontsize=9)
    fig.supylabel("realised rate", fontsize=9)
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
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1180px;"
        "color:#24292f}h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}"
        "svg{max-width:100%;height:auto}pre{background:#f6f8fa;padding:1rem;"
        "white-space:pre-wrap;font-size:11px}</style>"
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
