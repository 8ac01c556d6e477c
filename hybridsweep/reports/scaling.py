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
panels of their own (:mod:`hybridsweep.reports.scaling_figure` draws them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hybridsweep.reports.extrapolation import Extrapolation, check_extrapolation  # noqa: E402
from hybridsweep.reports.fits import (  # noqa: E402
    CHECKED,
    DEFAULT_FIT,
    FitSettings,
    LawFit,
    LogLinearTrend,
    fit_law,
    log_linear_trend,
    parameter_names,
    trend_names,
)
from hybridsweep.reports.stats import N_BOOT, bootstrap_replicates  # noqa: E402
from hybridsweep.reports.tables import Column, QuestionLoader  # noqa: E402

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


def _unequal_seed_notes(groups: Sequence[tuple], n_line_keys: int, axes: Sequence[str]) -> list[str]:
    """One note per line whose levels hold different sets of seeds: while a sweep is partial, a
    step between two such levels mixes the variation between seeds into the effect of the axis."""
    seeds_by_line: dict[tuple, dict[tuple, tuple]] = {}
    for keys, group in groups:
        seeds = tuple(sorted(group["params.seed"].astype(str), key=_sort_key)) if "params.seed" in group else ()
        seeds_by_line.setdefault(tuple(keys[:n_line_keys]), {})[tuple(keys[n_line_keys:])] = seeds
    notes = []
    for line, levels in seeds_by_line.items():
        if len(set(levels.values())) > 1:
            held = "; ".join(f"{', '.join(f'{v:g}' for v in level)}: seeds {', '.join(seeds) or 'none'}"
                             for level, seeds in levels.items())
            notes.append(f"{' / '.join(map(str, line)) or 'the line'}: its levels hold different seeds ({'/'.join(axes)} "
                         f"{held}), so a step between two of them includes the variation between seeds.")
    return notes


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
    notes.extend(_unequal_seed_notes(groups, len(line_keys), axes))
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
    """The law of one (line, column), its extrapolation checks (one per axis) and its log-linear trend."""

    line: tuple
    column: str
    fit: LawFit
    extrapolations: tuple[Extrapolation, ...]
    trend: LogLinearTrend


def point_lines(points: ScalingPoints) -> list[tuple]:
    keys = points.table[list(points.line_keys)].itertuples(index=False, name=None) if points.line_keys else [()] * len(points.table)
    return sorted(dict.fromkeys(keys), key=lambda line: tuple(_sort_key(v) for v in line))


def line_mask(table: pd.DataFrame, line_keys: Sequence[str], line: tuple, column: str | None = None) -> np.ndarray:
    mask = np.ones(len(table), dtype=bool)
    for key, value in zip(line_keys, line):
        mask &= (table[key] == value).to_numpy()
    if column is not None:
        mask &= (table["column"] == column).to_numpy()
    return mask


def fit_lines(points: ScalingPoints, settings: FitSettings = DEFAULT_FIT, n_boot: int = N_BOOT, seed: int = 0) -> list[LineFit]:
    """The law of every (line, column) fitted with bootstrap refits, per axis the check of an
    extrapolation to its largest level (``extrapolation.check_extrapolation``), and the
    log-linear trend (``fits.log_linear_trend``)."""
    table = points.table
    results = []
    for line in point_lines(points):
        for column in dict.fromkeys(table["column"]):
            mask = line_mask(table, points.line_keys, line, column)
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
            results.append(LineFit(line, column, fit, checks, log_linear_trend(x, y, draws, points.axes)))
    return results


def fit_table(line_fits: Sequence[LineFit], line_keys: Sequence[str]) -> pd.DataFrame:
    """One row per (line, column): status, loss, resampling, points, every parameter with its
    bootstrap interval (``<name>``, ``<name>_low``, ``<name>_high``), and the log-linear trend's
    change per doubling of each axis with its interval (``per_doubling[<axis>]``, ...)."""
    records = []
    for item in line_fits:
        fit = item.fit
        low, high = fit.interval() if fit.fitted else (fit.estimate, fit.estimate)
        record = {
            **dict(zip(line_keys, item.line)), "column": item.column, "status": fit.status,
            "n_points": fit.n_points, "loss": fit.settings.loss, "resampling": fit.resampling if len(fit.refits) else "",
            "refits": len(fit.refits),
        }
        trend = item.trend
        for name, value, lo, hi in (*zip(fit.names, fit.estimate, low, high),
                                    *zip(trend_names(trend.axes), trend.slopes, *trend.interval(fit.settings.level))):
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


def _with_interval(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]" if np.isfinite(low) else f"{value:.3g}"


def shown_fits(fits: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """The fit table with ``value [low, high]`` cells."""
    shown = fits.copy()
    for name in (*parameter_names(axes), *trend_names(axes)):
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
        f"per_doubling[axis]: the change of y per doubling of the axis, y = c + sum_k s_k log2(axis_k) by least "
        f"squares, for every line whether or not it saturates; interval ({level}) over the same replicates' refits.",
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
        f"{caption}\n\n## Fitted law and log-linear trend\n\n{fit_body}\n\n## Extrapolation to the largest level\n\n{check_body}\n\n"
        + "\n".join(f"- {line}" for line in method) + "\n"
    )
    latex = _latex(shown_fits(fits, points.axes), f"{caption}: fitted law ({settings.describe()}, {level} bootstrap intervals)")
    if not shown_checks.empty:
        latex += "\n" + _latex(shown_checks, f"{caption}: extrapolation to the largest level")
    paths[2].write_text(latex)
    figure.savefig(paths[3], dpi=130)
    plt.close(figure)
    return [*paths, fits_path, checks_path]
