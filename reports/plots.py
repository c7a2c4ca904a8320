"""Charts for the driver report: matplotlib (Agg) rendered to inline SVG.

Text is drawn as paths (``svg.fonttype = "path"``), so the SVG needs no font on the reader's
machine and the report stays one offline file. Every chart labels its axes with units and
avoids model jargon: managers read these.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import ParamSpec

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

GOOD = "#1b7f4b"
BAD = "#b3261e"
ACCENT = "#2f5fb3"
MUTED = "#9aa3b2"
PREVIOUS = "#c4cad6"
PALETTE = (
    "#2f5fb3",
    "#e07b39",
    "#3a9d6e",
    "#b3261e",
    "#8e6bbf",
    "#c2a33a",
    "#4aa3c7",
    "#7a7f8c",
    "#d46aa6",
)

P = ParamSpec("P")

_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "cto-report",  # stable element ids: the same data gives the same file
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e7ee",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#8a93a3",
    "xtick.color": "#3d4556",
    "ytick.color": "#3d4556",
    "axes.labelcolor": "#1d2433",
    "legend.frameon": False,
}


def _percent_label(value: float, _position: object = None) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def percent_axis(axis) -> None:
    """Shares as percentages without trailing zeros: 15%, 12.5%."""
    axis.set_major_formatter(FuncFormatter(_percent_label))


def date_axis(ax) -> None:
    """Short day-month labels, few enough not to collide."""
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=8))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))


def to_svg(fig) -> str:
    """The figure as an inline ``<svg>`` element (XML prolog and DOCTYPE removed), figure closed."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # The chart keeps its drawn size (width/height in pt) and CSS shrinks it on narrow screens.
    return svg.replace("<svg ", '<svg role="img" ', 1)


def _styled(function: Callable[P, str]) -> Callable[P, str]:
    """Draw and save inside the report style without touching the caller's global rcParams."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        with plt.rc_context(_RC):
            return function(*args, **kwargs)

    return wrapper


def _new(width: float, height: float):
    return plt.subplots(figsize=(width, height), layout="constrained")


@_styled
def ranked_bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    xlabel: str,
    reference: float | None = None,
    reference_label: str = "overall",
    highlight: int = 1,
    percent: bool = True,
    higher_is_better: bool = True,
    annotations: Sequence[str] | None = None,
    title: str | None = None,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    marks: Sequence[str] | None = None,
    keep_order: bool = False,
) -> str:
    """Horizontal bars sorted best to worst, with 95% intervals as error bars when given.

    ``values`` come in any order; bars show top to bottom from best to worst (or in the given
    order with ``keep_order``). ``marks`` ("best"/"worst"/"") colour bars green and red; without
    them the first ``highlight`` bars are green and the last red.
    """
    order = np.arange(len(values))
    if not keep_order:
        order = np.argsort(np.asarray(values, dtype=float), kind="stable")
        if higher_is_better:
            order = np.argsort(-np.asarray(values, dtype=float), kind="stable")
    sorted_labels = [labels[i] for i in order]
    sorted_values = np.asarray(values, dtype=float)[order]
    colors = [ACCENT] * len(order)
    if marks is not None:
        palette = {"best": GOOD, "worst": BAD}
        colors = [palette.get(marks[i], ACCENT) for i in order]
    elif len(order) > 2 * highlight:
        for i in range(highlight):
            colors[i] = GOOD
            colors[-(i + 1)] = BAD
    fig, ax = _new(6.2, 0.27 * len(order) + 0.9)
    y = np.arange(len(order))
    ax.barh(y, sorted_values, color=colors, height=0.65)
    reach = sorted_values
    if low is not None and high is not None:
        lows = np.asarray(low, dtype=float)[order]
        highs = np.asarray(high, dtype=float)[order]
        ax.errorbar(
            sorted_values,
            y,
            xerr=np.vstack([sorted_values - lows, highs - sorted_values]),
            fmt="none",
            ecolor="#1d2433",
            elinewidth=1,
            capsize=2.5,
        )
        reach = highs
    ax.set_yticks(y, sorted_labels)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    if percent:
        percent_axis(ax.xaxis)
    if reference is not None:
        ax.axvline(reference, color="#1d2433", linestyle="--", linewidth=1)
        ax.annotate(
            reference_label,
            xy=(reference, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize=9,
            color="#1d2433",
        )
    if annotations is not None:
        texts = [annotations[i] for i in order]
        for yi, value, text in zip(y, reach, texts, strict=True):
            ax.annotate(
                text,
                xy=(value, yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8.5,
                color="#3d4556",
                bbox={
                    "boxstyle": "square,pad=0.1",
                    "facecolor": "white",
                    "edgecolor": "none",
                    "alpha": 0.85,
                },
            )
        ax.set_xlim(0, max(float(np.nanmax(reach)) * 1.3, 1e-9))
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, loc="left")
    return to_svg(fig)


@_styled
def weekly_lines(
    weeks: Sequence[date | datetime],
    series: dict[str, Sequence[float | None]],
    *,
    ylabel: str,
    percent: bool = True,
    shade_from: date | datetime | None = None,
    shade_until: date | datetime | None = None,
    shade_label: str = "this period",
    bars: Sequence[float] | None = None,
    bars_label: str = "contacts",
    bands: dict[str, tuple[Sequence[float | None], Sequence[float | None]]] | None = None,
) -> str:
    """One line per series over weeks; the report period shaded; optional volume bars behind.

    ``bands`` draw a series' 95% interval as a shaded band. The value axis starts at zero, so a
    swing looks as big as it is.
    """
    fig, ax = _new(7.2, 3.0)
    if bars is not None:
        volume_axis = ax.twinx()
        volume_axis.bar(weeks, bars, width=5, color="#e6e9f0", label=bars_label, zorder=0)
        volume_axis.set_ylabel(f"{bars_label} per week")
        volume_axis.grid(False)
        volume_axis.spines["right"].set_visible(True)
        ax.set_zorder(volume_axis.get_zorder() + 1)
        ax.patch.set_visible(False)
        volume_axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for i, (name, values) in enumerate(series.items()):
        clean = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        color = PALETTE[i % len(PALETTE)]
        ax.plot(weeks, clean, marker="o", markersize=3.5, color=color, label=name)
        if bands and name in bands:
            band_low, band_high = (
                np.asarray([np.nan if v is None else v for v in side], dtype=float)
                for side in bands[name]
            )
            ax.fill_between(
                weeks,
                band_low,
                band_high,
                color=color,
                alpha=0.18,
                linewidth=0,
                label="95% interval",
            )
    if shade_from is not None and len(weeks):
        until = shade_until if shade_until is not None else weeks[-1]
        ax.axvspan(shade_from, until, color="#dbe6fb", alpha=0.6, zorder=0, label=shade_label)
    if percent:
        percent_axis(ax.yaxis)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("week starting")
    date_axis(ax)
    ax.legend(
        loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8.5, ncols=min(4, len(series) + 2)
    )
    return to_svg(fig)


@_styled
def stacked_shares(
    weeks: Sequence[date | datetime],
    shares: dict[str, Sequence[float]],
    *,
    ylabel: str,
) -> str:
    """Share of each category per week, stacked to 100%."""
    fig, ax = _new(7.2, 3.0)
    stack = np.vstack([np.asarray(v, dtype=float) for v in shares.values()])
    ax.stackplot(
        weeks,
        stack,
        labels=list(shares),
        colors=[PALETTE[i % len(PALETTE)] for i in range(len(shares))],
        alpha=0.9,
    )
    percent_axis(ax.yaxis)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("week starting")
    date_axis(ax)
    # Legend top to bottom in the order the bands stack, top to bottom.
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5
    )
    return to_svg(fig)


@_styled
def grouped_share_bars(
    labels: Sequence[str],
    groups: dict[str, Sequence[float]],
    *,
    xlabel: str,
) -> str:
    """Side-by-side horizontal bars (e.g. recorded vs model-estimated shares per reason)."""
    fig, ax = _new(6.2, 0.3 * len(labels) + 1.0)
    y = np.arange(len(labels))
    height = 0.8 / max(len(groups), 1)
    for i, (name, values) in enumerate(groups.items()):
        ax.barh(y + i * height, values, height=height, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_yticks(y + height * (len(groups) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    percent_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.legend(loc="lower right", fontsize=8.5)
    return to_svg(fig)


@_styled
def dependence(
    x: np.ndarray,
    effect: np.ndarray,
    *,
    xlabel: str,
    ylabel: str = "effect on chance to order (percentage points)",
    categories: Sequence[str] | None = None,
    title: str | None = None,
    max_points: int = 1500,
    seed: int = 0,
) -> str:
    """How a feature's value moves the predicted chance to order, contact by contact.

    Numeric features: a sample of contacts as dots plus the binned average as a line.
    Categorical features (``categories`` given, ``x`` holds integer codes): one box per level.
    ``effect`` is in probability units and shown in percentage points.
    """
    fig, ax = _new(4.6, 3.0)
    effect_pp = np.asarray(effect, dtype=float) * 100
    x = np.asarray(x, dtype=float)
    if categories is not None:
        codes = [c for c in range(len(categories)) if np.any(x == c)]
        data = [effect_pp[x == c] for c in codes]
        ax.boxplot(data, orientation="horizontal", showfliers=False, widths=0.6)
        ax.set_yticks(
            np.arange(1, len(codes) + 1), [categories[c].replace("_", " ") for c in codes]
        )
        ax.axvline(0, color="#1d2433", linewidth=0.8)
        ax.set_xlabel(ylabel)
        ax.set_ylabel(xlabel)
        ax.grid(axis="y", visible=False)
    else:
        finite = np.isfinite(x)
        x, effect_pp = x[finite], effect_pp[finite]
        if len(x):
            # A few extreme values would squash everyone else into one corner.
            low, high = np.quantile(x, [0.01, 0.99])
            shown = (x >= low) & (x <= high)
            x, effect_pp = x[shown], effect_pp[shown]
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(x), size=min(max_points, len(x)), replace=False) if len(x) else []
        ax.scatter(x[sample], effect_pp[sample], s=5, alpha=0.35, color=ACCENT, linewidths=0)
        if len(np.unique(x)) > 1:
            edges = np.unique(np.quantile(x, np.linspace(0, 1, 21)))
            bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
            centers = [x[bins == b].mean() for b in range(len(edges) - 1) if np.any(bins == b)]
            means = [
                effect_pp[bins == b].mean() for b in range(len(edges) - 1) if np.any(bins == b)
            ]
            ax.plot(centers, means, color=BAD, linewidth=2, label="average")
            ax.legend(loc="best", fontsize=8.5)
        ax.axhline(0, color="#1d2433", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, loc="left")
    return to_svg(fig)


@_styled
def reliability(series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """Predicted chance vs how often it happened, one line per data set; the diagonal is perfect."""
    fig, ax = _new(4.8, 3.6)
    top = 0.05
    for i, (name, (predicted_values, observed_values)) in enumerate(series.items()):
        predicted = np.asarray(predicted_values, dtype=float)
        observed = np.asarray(observed_values, dtype=float)
        color = PALETTE[i % len(PALETTE)]
        ax.plot(
            predicted, observed, color=color, linewidth=1.5, marker="o", markersize=4, label=name
        )
        top = max(
            top, float(np.nanmax(predicted, initial=0)), float(np.nanmax(observed, initial=0))
        )
    top = min(1.0, top * 1.1)
    ax.plot(
        [0, top], [0, top], linestyle="--", color=MUTED, linewidth=1, label="predicted = actual"
    )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    ax.set_xlabel("predicted chance to order")
    ax.set_ylabel("share that actually ordered")
    ax.legend(loc="upper left", fontsize=8)
    return to_svg(fig)


@_styled
def drift_bars(
    features: Sequence[str],
    psi: Sequence[float],
    *,
    threshold: float = 0.2,
    expected: Sequence[bool] | None = None,
) -> str:
    """Population stability index per feature, the alert threshold as a line.

    Features ``expected`` to move are grey and labelled so, whatever their PSI: never an alert.
    """
    values = np.asarray(psi, dtype=float)
    expected = list(expected) if expected is not None else [False] * len(values)
    order = np.argsort(values)[::-1]
    fig, ax = _new(6.2, 0.28 * len(order) + 1.0)
    y = np.arange(len(order))
    colors = [
        PREVIOUS
        if expected[i]
        else (BAD if values[i] > threshold else (ACCENT if values[i] > 0.1 else MUTED))
        for i in order
    ]
    ax.barh(y, values[order], color=colors, height=0.7)
    ax.set_yticks(
        y,
        [f"{features[i]} (expected to move)" if expected[i] else features[i] for i in order],
        fontsize=8.5,
    )
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.axvline(threshold, color=BAD, linestyle="--", linewidth=1)
    ax.annotate(
        f"alert above {threshold}",
        xy=(threshold, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, 2),
        textcoords="offset points",
        fontsize=8.5,
        color=BAD,
    )
    ax.set_xlabel("shift against training data (PSI; 0 = same mix, above 0.2 = large shift)")
    ax.set_xlim(0, max(threshold * 1.5, float(np.nanmax(values, initial=0)) * 1.1))
    return to_svg(fig)


@_styled
def lever_bars(
    labels: Sequence[str],
    extra_orders: Sequence[float],
    *,
    xlabel: str,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> str:
    """Extra orders per lever, labelled with the number; the 95% range as error bars when given."""
    values = np.asarray(extra_orders, dtype=float)
    fig, ax = _new(6.2, 0.55 * len(labels) + 1.0)
    y = np.arange(len(labels))
    ax.barh(y, values, color=[GOOD if v >= 0 else BAD for v in values], height=0.6)
    extent = np.abs(values)
    if low is not None and high is not None:
        lows, highs = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        ax.errorbar(
            values,
            y,
            xerr=np.vstack([values - lows, highs - values]),
            fmt="none",
            ecolor="#1d2433",
            elinewidth=1,
            capsize=3,
        )
        extent = np.maximum(np.abs(lows), np.abs(highs))
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.axvline(0, color="#1d2433", linewidth=0.8)
    for yi, value, reach in zip(y, values, extent, strict=True):
        ax.annotate(
            f"{value:+,.0f}",
            xy=(np.sign(value or 1.0) * reach, yi),
            xytext=(4 if value >= 0 else -4, 0),
            textcoords="offset points",
            va="center",
            ha="left" if value >= 0 else "right",
            fontsize=9,
        )
    span = float(np.nanmax(extent, initial=1.0)) or 1.0
    lowest = float(np.nanmin(np.minimum(values, -extent * (values < 0)), initial=0))
    ax.set_xlim(min(0.0, lowest * 1.3), span * 1.3)
    ax.set_xlabel(xlabel)
    return to_svg(fig)


@_styled
def ratio_intervals(
    labels: Sequence[str],
    ratio: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    xlabel: str,
    raw: Sequence[float] | None = None,
    verdict: Sequence[str] | None = None,
    dot_label: str = "shrunk ratio (95% interval)",
) -> str:
    """Observed/expected ratios as dots with 95% intervals, in the given order; 1 marked.

    Green where the interval lies above 1, red below, grey otherwise; ``raw`` (unshrunk) as hollow
    rings, to show how far each small group was pulled towards 1.
    """
    values = np.asarray(ratio, dtype=float)
    lows, highs = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    fig, ax = _new(6.2, 0.24 * len(labels) + 1.1)
    y = np.arange(len(labels))
    palette = {"above": GOOD, "below": BAD}
    colors = [palette.get(v, MUTED) for v in (verdict or ["within"] * len(labels))]
    ax.hlines(y, lows, highs, colors=colors, linewidth=2)
    ax.scatter(values, y, color=colors, s=24, zorder=3, label=dot_label)
    if raw is not None:
        ax.scatter(
            np.asarray(raw, dtype=float),
            y,
            facecolors="none",
            edgecolors="#3d4556",
            s=18,
            linewidths=0.8,
            zorder=2,
            label="raw observed / expected",
        )
    ax.axvline(1.0, color="#1d2433", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8.5)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{v:.2f}".rstrip("0").rstrip(".") + "×")
    )
    ax.set_xlabel(xlabel)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8.5, ncols=2)
    return to_svg(fig)
