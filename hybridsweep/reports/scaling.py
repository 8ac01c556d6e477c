"""Scaling curves and laws over a sweep's runs.

A *point* is one level of the fitted axes (``data.question_ids``, ``batch_size`` or both) on one
*line* (the line keys, e.g. the strategy), in one *column* (a retrieval setting's mAP, a bias
metric, ``val/loss_best``): the mean over its runs with a 95% two-level bootstrap interval and the
bootstrap replicates themselves (``stats.bootstrap_replicates``). Every point uses the same
bootstrap seed, so replicate ``b`` of every point of a line resamples the same evaluation
questions (the evaluation set is one sample shared by all points) and, where points have the same
number of seeds, the same seed indices; each replicate ``b`` is refitted as a whole
(``fits.fit_law``), which gives the intervals of the law's parameters and predictions.

Per line and column: the law of :mod:`hybridsweep.reports.fits` over the target's axes (one axis:
``y = E - A (N/N_min)^-alpha``; two: the additive joint law), and for each axis the extrapolation
check (its largest level held out and forecast from the rest).

The size axes are the design's, and they are not compute: at a fixed number of epochs a larger
batch takes fewer optimizer steps over the same pairs. Each point therefore also carries
``optimizer_steps`` and ``pairs_seen`` (:data:`COMPUTE_AXES`), tabulated beside it and drawn in
panels of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from hybridsweep.reports.fits import (  # noqa: E402
    CHECKED,
    DEFAULT_FIT,
    Extrapolation,
    FitSettings,
    LawFit,
    check_extrapolation,
    fit_law,
    parameter_names,
)
from hybridsweep.reports.stats import N_BOOT, bootstrap_replicates  # noqa: E402
from hybridsweep.reports.tables import SETTINGS, Column, QuestionLoader  # noqa: E402

COMPUTE_AXES = {
    "optimizer_steps": "optimizer steps",
    "pairs_seen": "training pairs seen",
}
"""Per-run compute: ``compute/steps`` (else ``sampling.steps_per_epoch x trainer.max_epochs``)
and ``compute/pairs_seen`` (else optimizer steps x ``batch_size``)."""
LOSS_COLUMN = "val/loss_best"
HEADLINE_COLUMNS = ("multilingual", LOSS_COLUMN)
"""The columns also drawn against compute."""
NO_LAW = "no law to check"
"""Extrapolation status of a line whose law was not fitted (its fit row says why)."""


@dataclass(frozen=True)
class ScalingPoints:
    """``table``: one row per (line keys, axis levels, column) with ``mean``, ``low``, ``high``,
    ``n_runs`` and the compute columns; ``replicates[i]``: the bootstrap replicates of row ``i``.
    ``higher_is_better`` maps each column to its direction; ``notes`` are caveats for the report
    (where compute came from, points that rest on one run)."""

    table: pd.DataFrame
    replicates: np.ndarray
    axes: tuple[str, ...]
    line_keys: tuple[str, ...]
    higher_is_better: dict[str, bool]
    notes: tuple[str, ...] = ()


def _numeric_param(runs: pd.DataFrame, key: str) -> pd.Series | None:
    column = f"params.{key}"
    return pd.to_numeric(runs[column], errors="coerce") if column in runs else None


def _metric(runs: pd.DataFrame, key: str) -> pd.Series | None:
    column = f"metrics.{key}"
    return runs[column] if column in runs and runs[column].notna().any() else None


def compute_columns(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per run ``optimizer_steps`` and ``pairs_seen`` (:data:`COMPUTE_AXES`), NaN where neither
    the metric nor its derivation is available, and a note per fallback taken."""
    notes = []
    steps_per_epoch, epochs = _numeric_param(runs, "sampling.steps_per_epoch"), _numeric_param(runs, "trainer.max_epochs")
    derived_steps = steps_per_epoch * epochs if steps_per_epoch is not None and epochs is not None else pd.Series(np.nan, runs.index)
    logged_steps = _metric(runs, "compute/steps")
    steps = derived_steps if logged_steps is None else logged_steps.fillna(derived_steps)
    if logged_steps is None or logged_steps.isna().any():
        notes.append("optimizer steps: compute/steps is not logged by every run; there "
                     "sampling.steps_per_epoch x trainer.max_epochs (exact unless training stopped early)")
    batch = _numeric_param(runs, "batch_size")
    derived_pairs = steps * batch if batch is not None else pd.Series(np.nan, runs.index)
    logged_pairs = _metric(runs, "compute/pairs_seen")
    pairs = derived_pairs if logged_pairs is None else logged_pairs.fillna(derived_pairs)
    if logged_pairs is None or logged_pairs.isna().any():
        notes.append("pairs seen: compute/pairs_seen is not logged by every run; there optimizer steps x batch_size")
    return pd.DataFrame({"optimizer_steps": steps, "pairs_seen": pairs}, index=runs.index), notes


def _sort_key(value) -> tuple:
    """Numbers in numeric order before other values (so batch sizes read 8, 16, 32)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def scaling_points(
    runs: pd.DataFrame, axes: Sequence[str], line_keys: Sequence[str], columns: Sequence[Column],
    questions: QuestionLoader, n_boot: int = N_BOOT, seed: int = 0,
) -> ScalingPoints:
    """Group the runs by line keys and axis levels (numeric ``params.<axis>``) and estimate each
    column at each point (module doc)."""
    axes, line_keys = tuple(axes), tuple(line_keys)
    overlap = set(axes) & set(line_keys)
    if overlap:
        raise ValueError(f"{sorted(overlap)} cannot be both a fitted axis and a line key")
    needed = [f"params.{k}" for k in (*line_keys, *axes)]
    missing = [k for k in needed if k not in runs]
    if missing:
        raise ValueError(f"runs lack the params {missing} needed for a scaling curve")
    levels = {}
    for axis in axes:
        values = pd.to_numeric(runs[f"params.{axis}"], errors="coerce")
        if values.isna().any():
            bad = sorted(runs.loc[values.isna(), f"params.{axis}"].astype(str).unique())
            raise ValueError(f"params.{axis} must be numeric to be a scaling axis; got {bad}")
        levels[axis] = values
    compute, notes = compute_columns(runs)
    runs = runs.assign(**{f"_axis{k}": levels[a] for k, a in enumerate(axes)}).join(compute)
    groups = sorted(
        runs.groupby([*needed[: len(line_keys)], *[f"_axis{k}" for k in range(len(axes))]], sort=False),
        key=lambda item: tuple(_sort_key(v) for v in item[0]),
    )
    records, replicates = [], []
    for keys, group in groups:
        # Seed order fixes the bootstrap's draw order, so a point is reproducible.
        ordered = group.sort_values("params.seed") if "params.seed" in group else group
        for column in columns:
            samples = [s for s in (column.sample(run, questions) for _, run in ordered.iterrows()) if s is not None]
            if not samples:
                continue
            draws = bootstrap_replicates(samples, n_boot, seed)
            low, high = np.nanpercentile(draws, [2.5, 97.5])
            records.append({
                **dict(zip((*line_keys, *axes), keys)), "column": column.name,
                "mean": float(np.mean([s.value for s in samples])), "low": float(low), "high": float(high),
                "n_runs": len(samples), "optimizer_steps": float(group["optimizer_steps"].mean()),
                "pairs_seen": float(group["pairs_seen"].mean()),
            })
            replicates.append(draws)
    table = pd.DataFrame.from_records(
        records, columns=[*line_keys, *axes, "column", "mean", "low", "high", "n_runs", *COMPUTE_AXES]
    )
    single = int((table["n_runs"] < 2).sum())
    if single:
        notes.append(f"{single} of {len(table)} points rest on one run: their intervals, and the fits' through them, "
                     "cover the evaluation questions but not the variation between training seeds (sweep seed=0,1,2 "
                     "for that), so a held-out point falls outside its forecast interval more often than the level says.")
    return ScalingPoints(
        table, np.array(replicates).reshape(len(records), n_boot), axes, line_keys,
        {c.name: c.higher_is_better for c in columns}, tuple(notes),
    )


@dataclass(frozen=True)
class LineFit:
    """The law of one (line, column) and its extrapolation checks, one per axis."""

    line: tuple
    column: str
    fit: LawFit
    extrapolations: tuple[Extrapolation, ...]


def _lines(points: ScalingPoints) -> list[tuple]:
    keys = points.table[list(points.line_keys)].itertuples(index=False, name=None) if points.line_keys else [()] * len(points.table)
    return sorted(dict.fromkeys(keys), key=lambda line: tuple(_sort_key(v) for v in line))


def _mask(table: pd.DataFrame, line_keys: Sequence[str], line: tuple, column: str | None = None) -> np.ndarray:
    mask = np.ones(len(table), dtype=bool)
    for key, value in zip(line_keys, line):
        mask &= (table[key] == value).to_numpy()
    if column is not None:
        mask &= (table["column"] == column).to_numpy()
    return mask


def fit_lines(points: ScalingPoints, settings: FitSettings = DEFAULT_FIT, n_boot: int = N_BOOT, seed: int = 0) -> list[LineFit]:
    """The law of every (line, column) fitted with bootstrap refits, and per axis the check of
    an extrapolation to its largest level (``fits.check_extrapolation``)."""
    table = points.table
    results = []
    for line in _lines(points):
        for column in dict.fromkeys(table["column"]):
            mask = _mask(table, points.line_keys, line, column)
            if not mask.any():
                continue
            x = table.loc[mask, list(points.axes)].to_numpy(dtype=float)
            y = table.loc[mask, "mean"].to_numpy(dtype=float)
            draws = points.replicates[mask].T  # (B, n): replicate b of every point
            fit = fit_law(x, y, draws, points.axes, settings, n_boot=n_boot, seed=seed)
            if fit.fitted:
                checks = tuple(
                    check_extrapolation(x, y, draws, points.axes, axis, settings, n_boot, seed) for axis in points.axes
                )
            else:
                checks = tuple(Extrapolation(axis, NO_LAW) for axis in points.axes)
            results.append(LineFit(line, column, fit, checks))
    return results


def fit_table(line_fits: Sequence[LineFit], line_keys: Sequence[str]) -> pd.DataFrame:
    """One row per (line, column): status, loss, resampling, points and every parameter with
    its bootstrap interval (``<name>``, ``<name>_low``, ``<name>_high``)."""
    records = []
    for item in line_fits:
        fit = item.fit
        low, high = fit.interval() if fit.fitted else (fit.estimate, fit.estimate)
        record = {
            **dict(zip(line_keys, item.line)), "column": item.column, "status": fit.status,
            "n_points": fit.n_points, "loss": fit.settings.loss, "resampling": fit.resampling if len(fit.refits) else "",
            "refits": len(fit.refits),
        }
        for name, value, lo, hi in zip(fit.names, fit.estimate, low, high):
            record.update({name: value, f"{name}_low": lo, f"{name}_high": hi})
        records.append(record)
    return pd.DataFrame.from_records(records)


def extrapolation_table(line_fits: Sequence[LineFit], line_keys: Sequence[str], axes: Sequence[str]) -> pd.DataFrame:
    """One row per held-out point (or per axis whose check could not be made, with the reason):
    its levels, measured mean, prediction, forecast interval, error and whether it is inside."""
    records = []
    for item in line_fits:
        labels = {**dict(zip(line_keys, item.line)), "column": item.column}
        for check in item.extrapolations:
            if check.status != CHECKED:
                records.append({**labels, "held_out": check.axis, "status": check.status})
                continue
            for levels, measured, predicted, low, high, inside in zip(
                check.held_out, check.measured, check.predicted, check.forecast_low, check.forecast_high, check.inside
            ):
                records.append({
                    **labels, "held_out": check.axis, "status": CHECKED, **dict(zip(axes, levels)),
                    "measured": measured, "predicted": predicted, "forecast_low": low, "forecast_high": high,
                    "error": measured - predicted, "relative_error": (measured - predicted) / abs(measured)
                    if measured else np.nan, "inside": bool(inside),
                })
    columns = [*line_keys, "column", "held_out", *axes, "measured", "predicted", "forecast_low",
               "forecast_high", "error", "relative_error", "inside", "status"]
    return pd.DataFrame.from_records(records, columns=columns)


def law_text(axes: Sequence[str]) -> str:
    """The fitted law in words, with the parameter names of the tables."""
    terms = " - ".join(f"A[{a}] ({a} / min {a})^-alpha[{a}]" for a in axes)
    return f"y = E - {terms}"


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
    lines = _lines(points)
    colours = {line: plt.cm.tab10(i % 10) for i, line in enumerate(lines)}
    fits = {(item.line, item.column): item for item in line_fits}
    for panel, (column, k) in zip(flat, panels):
        on_compute = isinstance(k, str)
        along = 0 if on_compute else k
        others = [j for j in range(len(axes)) if j != along]
        for line in lines:
            data = table[_mask(table, line_keys, line, column)]
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


def _with_interval(value: float, low: float, high: float) -> str:
    return f"{value:.3g} [{low:.3g}, {high:.3g}]" if np.isfinite(value) else "–"


def shown_fits(fits: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """The fit table with ``value [low, high]`` cells."""
    shown = fits.copy()
    for name in parameter_names(axes):
        if name not in shown:
            continue
        shown[name] = [_with_interval(*v) for v in zip(fits[name], fits[f"{name}_low"], fits[f"{name}_high"])]
        shown = shown.drop(columns=[f"{name}_low", f"{name}_high"])
    return shown


def shown_extrapolations(table: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """The extrapolation table with the forecast as ``predicted [low, high]``, empty cells where
    no check was made, and without the lines that have no law (the fit table says why)."""
    table = table[table["status"] != NO_LAW].reset_index(drop=True)
    checked = (table["status"] == CHECKED).to_numpy()
    shown = table.drop(columns=["predicted", "forecast_low", "forecast_high", "error", "relative_error", "inside", "status"])
    for key in (*axes, "measured"):
        shown[key] = [f"{v:.4g}" if ok else "" for v, ok in zip(table[key].astype(float), checked)]
    shown["forecast"] = [_with_interval(*v) if ok else "" for v, ok in
                         zip(zip(table["predicted"], table["forecast_low"], table["forecast_high"]), checked)]
    shown["relative error"] = [f"{v:+.1%}" if ok else "" for v, ok in zip(table["relative_error"].astype(float), checked)]
    shown["inside"] = [("yes" if v else "NO") if ok else "" for v, ok in zip(table["inside"], checked)]
    shown["status"] = table["status"]
    return shown


def _latex(frame: pd.DataFrame, caption: str) -> str:
    def escape(value):
        if not isinstance(value, str):
            return value
        return value.replace("_", r"\_").replace("%", r"\%").replace("<", "$<$").replace(">", "$>$")

    return frame.rename(columns=escape).map(escape).to_latex(index=False, escape=False, caption=escape(caption), float_format="%.4g")


def write_scaling(
    points: ScalingPoints, line_fits: Sequence[LineFit], figure: plt.Figure, stem, caption: str,
    settings: FitSettings, notes: Sequence[str] = (),
) -> list:
    """``<stem>.csv`` (the points), ``<stem>_fits.csv`` and ``<stem>_extrapolation.csv`` (the
    law's parameters and the extrapolation checks, numeric), ``<stem>.md``/``.tex`` (both tables
    with intervals and the method), ``<stem>.png`` (the figure)."""
    paths = [stem.with_suffix(s) for s in (".csv", ".md", ".tex", ".png")]
    fits_path, checks_path = (stem.with_name(f"{stem.name}_{part}.csv") for part in ("fits", "extrapolation"))
    points.table.to_csv(paths[0], index=False, float_format="%.8g")
    fits = fit_table(line_fits, points.line_keys)
    checks = extrapolation_table(line_fits, points.line_keys, points.axes)
    fits.to_csv(fits_path, index=False, float_format="%.8g")
    checks.to_csv(checks_path, index=False, float_format="%.8g")
    level = f"{settings.level:.0%}"
    method = [
        f"Law: {law_text(points.axes)}, fitted per line and column to the points' means by {settings.describe()}.",
        f"Intervals ({level}): percentile intervals over bootstrap refits: replicate b of every point of a line "
        "refitted together (resampling = points); where points carry no resampling spread (one run, no "
        "per-question data), residual bootstrap (resampling = residuals).",
        "Not fitted: an axis with fewer than 3 levels, fewer points than parameters + 1, or an exponent at "
        "its lower bound 0.01 (not saturating: a log-linear trend whose asymptote the points do not determine).",
        "Extrapolation: the largest level of each axis held out, the law fitted to the rest and its forecast "
        f"compared with the measured mean; forecast interval ({level}) = the refits' predictions plus the held-out "
        "point's own bootstrap noise; inside = the measured mean lies in it.",
        "Points with intervals and compute (optimizer steps, pairs seen): the CSV beside this file; numeric fits: "
        f"{fits_path.name}, {checks_path.name}.",
        *points.notes, *notes,
    ]
    fit_body = shown_fits(fits, points.axes).to_markdown(index=False) if not fits.empty else "(no line to fit)"
    shown_checks = shown_extrapolations(checks, points.axes)
    check_body = shown_checks.to_markdown(index=False) if not shown_checks.empty else "(no line has a law to check)"
    paths[1].write_text(
        f"{caption}\n\n## Fitted law\n\n{fit_body}\n\n## Extrapolation to the largest level\n\n{check_body}\n\n"
        + "\n".join(f"- {line}" for line in method) + "\n"
    )
    latex = _latex(shown_fits(fits, points.axes), f"{caption}: fitted law ({settings.describe()}, {level} bootstrap intervals)")
    if not shown_checks.empty:
        latex += "\n" + _latex(shown_checks, f"{caption}: extrapolation to the largest level")
    paths[2].write_text(latex)
    figure.savefig(paths[3], dpi=130)
    plt.close(figure)
    return [*paths, fits_path, checks_path]
