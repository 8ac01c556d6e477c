"""Scaling curves: a metric against data size or batch size, one line per configuration, each
point a mean over seeds with its 95% bootstrap interval, and per line a fitted saturating power
law ``y = a - b N^-c`` (``stats.fit_power_law``) drawn solid over the measured range and dashed
beyond it (the extrapolation)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from hybridsweep.reports.stats import N_BOOT, bootstrap_estimate, fit_power_law  # noqa: E402
from hybridsweep.reports.tables import SETTINGS, Column, QuestionLoader  # noqa: E402

FIT_COLUMNS = ("status", "a", "a_low", "a_high", "b", "b_low", "b_high", "c", "c_low", "c_high", "n_points")
FITTED = "fitted"


def scaling_points(
    runs: pd.DataFrame, x_param: str, line_keys: Sequence[str], columns: Sequence[Column],
    questions: QuestionLoader, n_boot: int = N_BOOT, seed: int = 0,
) -> pd.DataFrame:
    """Long table: line keys, ``x`` (numeric ``params.<x_param>``), column, mean, low, high, n_runs."""
    needed = [f"params.{k}" for k in (x_param, *line_keys)]
    missing = [k for k in needed if k not in runs]
    if missing:
        raise ValueError(f"runs lack the params {missing} needed for a scaling curve")
    runs = runs.assign(x=pd.to_numeric(runs[f"params.{x_param}"], errors="raise"))
    records = []
    for keys, group in runs.groupby([*needed[1:], "x"], sort=True):
        ordered = group.sort_values("params.seed") if "params.seed" in group else group
        for column in columns:
            samples = [s for s in (column.sample(run, questions) for _, run in ordered.iterrows()) if s is not None]
            if not samples:
                continue
            estimate = bootstrap_estimate(samples, n_boot, seed)
            records.append({
                **dict(zip(line_keys, keys[:-1])), "x": keys[-1], "column": column.name,
                "mean": estimate.mean, "low": estimate.low, "high": estimate.high, "n_runs": estimate.n_runs,
            })
    return pd.DataFrame.from_records(records)


def fit_lines(points: pd.DataFrame, line_keys: Sequence[str]) -> pd.DataFrame:
    """Power-law parameters with intervals per (line, column); ``status`` says ``fitted``, or why
    not: ``too few sizes`` or ``not saturating`` (parameters then left empty)."""
    records = []
    for keys, line in points.groupby([*line_keys, "column"], sort=True):
        fit = fit_power_law(line["x"], line["mean"])
        labels = dict(zip([*line_keys, "column"], keys))
        if fit is None or not fit.saturating:
            status = "too few sizes" if fit is None else "not saturating"
            records.append({**labels, "status": status, "n_points": line["x"].nunique()})
            continue
        records.append({
            **labels, "status": FITTED,
            "a": fit.a, "a_low": fit.a_ci[0], "a_high": fit.a_ci[1],
            "b": fit.b, "b_low": fit.b_ci[0], "b_high": fit.b_ci[1],
            "c": fit.c, "c_low": fit.c_ci[0], "c_high": fit.c_ci[1], "n_points": fit.n_points,
        })
    return pd.DataFrame.from_records(records, columns=[*line_keys, "column", *FIT_COLUMNS])


def _label(line_keys: Sequence[str], keys: tuple) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(line_keys, keys))


def plot_scaling(
    points: pd.DataFrame, fits: pd.DataFrame, line_keys: Sequence[str], x_label: str,
    extrapolate: float = 4.0,
) -> plt.Figure:
    """One panel per column: points with interval bars, the fit solid, its extrapolation up to
    ``extrapolate`` times the largest size dashed; log-scaled size axis. At most three panels a
    row, so that the mAP settings share a row and the bias measures take the next."""
    columns = list(dict.fromkeys(points["column"]))
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    figure, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False)
    axes = grid.ravel()
    for unused in axes[len(columns):]:
        unused.set_visible(False)
    lines = sorted({tuple(row) for row in points[list(line_keys)].itertuples(index=False)}, key=str)
    colours = {line: plt.cm.tab10(i % 10) for i, line in enumerate(lines)}
    for panel, column in zip(axes, columns):
        for line in lines:
            mask = (points["column"] == column) & np.logical_and.reduce(
                [points[k] == v for k, v in zip(line_keys, line)]
            )
            data = points[mask].sort_values("x")
            if data.empty:
                continue
            colour = colours[line]
            panel.errorbar(
                data["x"], data["mean"], yerr=[data["mean"] - data["low"], data["high"] - data["mean"]],
                fmt="o", color=colour, capsize=3, label=_label(line_keys, line),
            )
            fit = fits[(fits["column"] == column) & (fits["status"] == FITTED)
                       & np.logical_and.reduce([fits[k] == v for k, v in zip(line_keys, line)])]
            if fit.empty:
                panel.plot(data["x"], data["mean"], "-", color=colour, alpha=0.6)
                continue
            a, b, c = fit.iloc[0][["a", "b", "c"]]
            measured = np.geomspace(data["x"].min(), data["x"].max(), 100)
            beyond = np.geomspace(data["x"].max(), data["x"].max() * extrapolate, 50)
            panel.plot(measured, a - b * measured ** -c, "-", color=colour)
            panel.plot(beyond, a - b * beyond ** -c, "--", color=colour)
        panel.set_xscale("log")
        # A short log axis has one decade label at most: label the measured sizes instead.
        panel.set_xticks(sorted(points["x"].unique()))
        panel.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        panel.xaxis.set_minor_formatter(NullFormatter())
        panel.set_xlabel(x_label)
        panel.set_ylabel(f"mAP ({column})" if column in SETTINGS else column)
        panel.set_title(column)
        panel.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, title="points ±95% CI; fit solid, extrapolation dashed", title_fontsize=6)
    figure.tight_layout()
    return figure


def write_scaling(points: pd.DataFrame, fits: pd.DataFrame, figure: plt.Figure, stem, caption: str) -> list:
    """``<stem>.csv`` (the points), ``<stem>.md``/``.tex`` (the fits), ``<stem>.png`` (the figure)."""
    paths = [stem.with_suffix(s) for s in (".csv", ".md", ".tex", ".png")]
    points.to_csv(paths[0], index=False, float_format="%.5f")
    shown = fits.copy()
    for p in ("a", "b", "c"):
        shown[p] = [
            f"{m:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(m) else "–"
            for m, lo, hi in zip(fits[p].astype(float), fits[f"{p}_low"], fits[f"{p}_high"])
        ]
    shown = shown.drop(columns=[f"{p}_{e}" for p in ("a", "b", "c") for e in ("low", "high")])
    note = ("Fit of y = a - b N^-c per line of means (95% intervals from the fit's covariance). Not fitted: "
            "lines with fewer than 4 sizes, and lines whose best fit has c < 0.01 (no saturation: a log-linear "
            "or falling trend whose asymptote the points do not determine). Points with intervals: the CSV beside this file.")
    body = shown.to_markdown(index=False) if not shown.empty else "(no line has enough sizes to fit)"
    paths[1].write_text(f"{caption}\n\n{body}\n\n{note}\n")
    paths[2].write_text(shown.rename(columns=lambda c: c.replace("_", r"\_")).map(
        lambda v: v.replace("_", r"\_") if isinstance(v, str) else v
    ).to_latex(index=False, escape=False, caption=caption, float_format="%.3g"))
    figure.savefig(paths[3], dpi=130)
    plt.close(figure)
    return paths
