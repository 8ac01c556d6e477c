"""The figure of a scaling target: per column, the points of every line with their 95% intervals
(held-out points hollow), the fitted law drawn through them and extended beyond the largest level,
and the headline columns again against compute (:data:`~hybridsweep.reports.scaling.COMPUTE_AXES`)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from hybridsweep.reports.fits import CHECKED  # noqa: E402
from hybridsweep.reports.scaling import (  # noqa: E402
    COMPUTE_AXES,
    HEADLINE_COLUMNS,
    LineFit,
    ScalingPoints,
    line_mask,
    point_lines,
)
from hybridsweep.reports.tables import SETTINGS  # noqa: E402


def _label(line_keys: Sequence[str], keys: tuple) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(line_keys, keys))


def _y_label(column: str, higher_is_better: bool) -> str:
    if column in SETTINGS:
        return f"mAP ({column})"
    return f"{column} ({'higher' if higher_is_better else 'lower'} is better)"


def _log_axis(panel, label: str, ticks=None) -> None:
    panel.set_xscale("log")
    if ticks is not None:
        # A short log axis has one decade label at most: label the measured levels instead.
        panel.set_xticks(sorted(ticks))
        panel.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        panel.xaxis.set_minor_formatter(NullFormatter())
    panel.set_xlabel(label)
    panel.grid(alpha=0.3, which="both")


MARKERS = "os^vDP*X"


def _design(values: np.ndarray, along: int, fixed: dict[int, float], n_axes: int) -> np.ndarray:
    """Points varying axis ``along`` over ``values`` with the other axes at ``fixed``."""
    return np.stack([values if j == along else np.full(len(values), fixed[j]) for j in range(n_axes)], axis=1)


def _draw_group(panel, group: pd.DataFrame, xs: np.ndarray, held: set, axes, colour, marker, label) -> None:
    """Points with 95% bars; held-out points hollow."""
    is_held = np.array([tuple(r) in held for r in group[list(axes)].to_numpy(float)], dtype=bool)
    means = group["mean"].to_numpy(float)
    panel.errorbar(xs, means, yerr=[means - group["low"], group["high"] - means], fmt="none", ecolor=colour, capsize=3)
    panel.plot(xs[~is_held], means[~is_held], marker, color=colour, label=label)
    panel.plot(xs[is_held], means[is_held], marker, color=colour, markerfacecolor="white")


def _draw_law(panel, item: LineFit, xs: np.ndarray, along: int, fixed: dict, frontier: bool, extrapolate: float, colour) -> None:
    """The law solid over the group's measured range; dashed beyond it on the frontier group
    (the other axes at their largest levels); each forecast of a held-out point of the group as
    a hollow diamond with a line for its forecast interval, just right of the point."""
    n_axes = len(item.fit.axes)
    if len(xs) > 1:
        measured = np.geomspace(xs.min(), xs.max(), 100)
        panel.plot(measured, item.fit.predict(_design(measured, along, fixed, n_axes)), "-", color=colour)
    if frontier:
        beyond = np.geomspace(xs.max(), xs.max() * extrapolate, 50)
        panel.plot(beyond, item.fit.predict(_design(beyond, along, fixed, n_axes)), "--", color=colour)
    for check in item.extrapolations:
        if check.status != CHECKED:
            continue
        for levels, predicted, low, high in zip(check.held_out, check.predicted, check.forecast_low, check.forecast_high):
            if all(levels[j] == v for j, v in fixed.items()):
                # A line, not error bars: a biased law's prediction can lie outside its own interval.
                beside = levels[along] * 1.06
                panel.vlines(beside, low, high, color=colour, alpha=0.8)
                panel.plot([beside], [predicted], "D", color=colour, markerfacecolor="none")


def plot_scaling(
    points: ScalingPoints, line_fits: Sequence[LineFit], axis_labels: Sequence[str],
    compute_axis: str | None = None, extrapolate: float = 4.0,
) -> plt.Figure:
    """Per column one panel per axis: points with their 95% intervals (one curve per line and
    level of the other axes), the law solid over the measured range and dashed up to
    ``extrapolate`` times the largest level; a held-out point hollow, with the forecast of the
    fit without it (diamond, forecast interval) beside it. With ``compute_axis`` (a key of
    :data:`COMPUTE_AXES`), the headline columns also against compute, points joined along the
    first axis. Rows of three panels (one axis) or of two columns x two axes; the legend below."""
    table, axes, line_keys = points.table, points.axes, points.line_keys
    columns = list(dict.fromkeys(table["column"]))
    panels = [(column, k) for column in columns for k in range(len(axes))]
    if compute_axis is not None:
        panels += [(column, compute_axis) for column in HEADLINE_COLUMNS if column in columns]
    ncols = min(3 if len(axes) == 1 else 2 * len(axes), len(panels))
    nrows = -(-len(panels) // ncols)
    figure, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False)
    flat = grid.ravel()
    for unused in flat[len(panels):]:
        unused.set_visible(False)
    lines = point_lines(points)
    colours = {line: plt.cm.tab10(i % 10) for i, line in enumerate(lines)}
    fits = {(item.line, item.column): item for item in line_fits}
    for panel, (column, k) in zip(flat, panels):
        on_compute = isinstance(k, str)
        along = 0 if on_compute else k
        others = [j for j in range(len(axes)) if j != along]
        for line in lines:
            data = table[line_mask(table, line_keys, line, column)]
            if data.empty:
                continue
            item = fits.get((line, column))
            held = {tuple(levels) for check in (item.extrapolations if item else ()) if check.status == CHECKED
                    for levels in check.held_out}
            levels = sorted(dict.fromkeys(data[[axes[j] for j in others]].itertuples(index=False, name=None)))
            for g, level in enumerate(levels):
                fixed = dict(zip(others, level))
                mask = np.ones(len(data), dtype=bool)
                for j, value in fixed.items():
                    mask &= (data[axes[j]] == value).to_numpy()
                group = data[mask].sort_values(axes[along])
                xs = group[k if on_compute else axes[along]].to_numpy(float)
                label = _label([*line_keys, *[axes[j] for j in others]], (*line, *level))
                colour, marker = colours[line], MARKERS[g % len(MARKERS)]
                _draw_group(panel, group, xs, held, axes, colour, marker, label)
                if on_compute or item is None or not item.fit.fitted:
                    panel.plot(xs, group["mean"], "-", color=colour, alpha=0.5)
                else:
                    _draw_law(panel, item, xs, along, fixed, g == len(levels) - 1, extrapolate, colour)
        if on_compute:
            _log_axis(panel, f"{COMPUTE_AXES[k]} (log scale)")
            panel.set_title(f"{column} against compute")
        else:
            _log_axis(panel, axis_labels[along], table[axes[along]].unique())
            panel.set_title(column)
        panel.set_ylabel(_y_label(column, points.higher_is_better.get(column, True)))
    # Markers stand for the other axes' levels, which differ between the axes' panels: one
    # legend entry per label of every axis's first panel.
    entries = {}
    for panel in flat[: len(axes)]:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    ncol = min(4, max(1, len(entries)))
    legend_height = 0.45 + 0.2 * -(-len(entries) // ncol)
    figure.set_size_inches(figure.get_figwidth(), 4.0 * nrows + legend_height)
    figure.legend(
        list(entries.values()), list(entries), loc="lower center", ncol=ncol, fontsize=7, title_fontsize=7,
        title="points ±95% CI (hollow: held out); law solid, beyond dashed; "
              "diamond: forecast of the held-out point, line: its forecast interval",
    )
    figure.tight_layout(rect=(0, legend_height / (4.0 * nrows + legend_height), 1, 1))
    return figure
