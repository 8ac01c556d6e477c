"""Side-by-side table and curve of one sweep's runs, read from MLflow (never re-trains).

    python pipelines/sweep_table.py                       # the latest sweep of the experiment
    python pipelines/sweep_table.py --sweep multirun/2026-11-25/20-30-00 --axis batch_size
    python pipelines/sweep_table.py tracking.tracking_uri=sqlite:///other.db   # the store training used

Writes ``reports/sweep_table.{md,csv}`` and ``reports/sweep_table.png`` (each retrieval setting's
mAP against the swept axis, the untrained model's as a dashed reference where the runs evaluated it,
``eval.before_training``). The store is the one training writes to: ``conf/tracking`` with the
overrides given, ``MLFLOW_TRACKING_URI`` winning as in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

from hybridsweep.reports.runs import location_overrides, store_uri, sweep_runs  # noqa: E402
from hybridsweep.reports.tables import SETTINGS  # noqa: E402


def summary_table(runs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """One row per run: the swept value, each setting's mAP and, where logged, the initial model's (``init/``)."""
    columns = {f"metrics.{prefix}map_full/{s}": f"{prefix}{s}" for prefix in ("init/", "") for s in SETTINGS
               if f"metrics.{prefix}map_full/{s}" in runs}
    table = runs[[f"params.{axis}", *columns]].rename(columns={f"params.{axis}": axis, **columns})
    numeric = pd.to_numeric(table[axis], errors="coerce")
    if numeric.notna().all():
        table[axis] = numeric
    return table.sort_values(axis).reset_index(drop=True)


def plot(table: pd.DataFrame, axis: str) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(6, 4))
    for setting, colour in zip(SETTINGS, ("tab:blue", "tab:orange", "tab:green")):
        axes.plot(table[axis], table[setting], "o-", color=colour, label=f"{setting} (trained)")
        if f"init/{setting}" in table:
            axes.plot(table[axis], table[f"init/{setting}"], "--", color=colour, alpha=0.5, label=f"{setting} (initial)")
    if pd.api.types.is_numeric_dtype(table[axis]):
        axes.set_xscale("log", base=2)
    axes.set_xlabel(axis)
    axes.set_ylabel("mAP (full ranking)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="hybridsweep")
    parser.add_argument("--sweep", help="value of the runs' `sweep` tag (default: the latest sweep)")
    parser.add_argument("--axis", default="batch_size", help="swept param on the x axis")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the training config that locate the store, e.g. tracking.tracking_uri=...")
    args = parser.parse_intermixed_args()
    mlflow.set_tracking_uri(store_uri(location_overrides(args.overrides)))

    table = summary_table(sweep_runs(args.experiment, args.sweep), args.axis)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "sweep_table.csv", index=False, float_format="%.4f")
    (args.out / "sweep_table.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot(table, args.axis).savefig(args.out / "sweep_table.png", dpi=120)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
