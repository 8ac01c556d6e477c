"""One parent MLflow run per multirun, made by a Hydra callback (registered in conf/train.yaml).

``on_multirun_start`` runs once, in the launching process, before any job: it creates the
experiment (and so, with a SQLite store, its schema) and the parent run, so that parallel jobs
never race to create them. The parent is identified by a hash of the sweep definition (the
command's overrides and ``hydra.sweeper.params``): re-running the same command reopens the same
parent, whose children are then skipped or resumed (see :mod:`hybridsweep.tracking.claims`). Each job
finds its parent by the sweep directory tag and names it in ``mlflow.parentRunId``, which makes
it a nested child in the MLflow UI.

``on_multirun_end`` logs to the parent a summary table (``summary.csv``) and a plot
(``summary.png``: the main metric against each swept axis) of its children, closes it FINISHED or
FAILED, and, when a point failed, raises :class:`SweepFailed` so that the command exits non-zero
with the list of failed points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from hybridsweep.point import FAILURE_FILE, MAIN_METRIC  # noqa: E402
from hybridsweep.sweep_runs import close_parent, find_parent, open_parent, sweep_children  # noqa: E402
from hybridsweep.tracking.store import tracking_uri  # noqa: E402

log = logging.getLogger(__name__)


class SweepFailed(SystemExit):
    """Some points of a multirun raised; the message lists them. A ``SystemExit`` because Hydra turns
    any ``Exception`` of a callback into a warning, while this must end the command with status 1."""


def sweep_definition(config: DictConfig) -> dict:
    """The command's overrides and the swept axes (``key -> values``), from both the command line
    (``batch_size=32,128``) and ``hydra.sweeper.params`` (the presets in ``conf/sweep/``)."""
    # As typed: an override may hold an interpolation (``lr='${sqrt_batch_scaled:...}'``) that only
    # a point's own config can resolve.
    overrides = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    params = config.hydra.sweeper.get("params") or {}
    axes = {str(key): str(value) for key, value in params.items()}
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():  # the sweep as typed: "32,128", "range(1,4)", ...
            axes[override.get_key_element().lstrip("+~")] = override.input_line.split("=", 1)[1]
        else:
            axes.pop(override.get_key_element().lstrip("+~"), None)  # a fixed value wins over a preset axis
    return {"overrides": overrides, "axes": axes}


def sweep_hash(definition: dict, experiment: str) -> str:
    text = json.dumps({"experiment": experiment, **definition}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary_table(children: list[Run], axes: list[str]) -> pd.DataFrame:
    """One row per child: name, status, the swept params and the final aggregate metrics."""
    rows = []
    for run in children:
        final = {
            key: value for key, value in run.data.metrics.items()
            if "/pair/" not in key and not key.startswith(("train/", "init/", "eval/", "epoch"))
        }
        rows.append({
            "run": run.info.run_name, "status": run.info.status, "run_id": run.info.run_id,
            **{axis: run.data.params.get(axis) for axis in axes}, **dict(sorted(final.items())),
        })
    table = pd.DataFrame(rows)
    return table.sort_values(["status", "run"]).reset_index(drop=True) if rows else table


def summary_figure(table: pd.DataFrame, axes: list[str], metric: str = MAIN_METRIC) -> plt.Figure:
    """``metric`` against each numeric swept axis, one line per combination of the other axes."""
    numeric = [a for a in axes if a in table and pd.to_numeric(table[a], errors="coerce").notna().any()]
    figure, panels = plt.subplots(1, max(len(numeric), 1), figsize=(5 * max(len(numeric), 1), 4), squeeze=False)
    done = table[table["status"] == "FINISHED"] if "status" in table else table
    for panel, axis in zip(panels[0], numeric):
        others = [a for a in axes if a != axis]
        groups = done.groupby(others, dropna=False) if others else [((), done)]
        for key, group in groups:
            group = group.assign(x=pd.to_numeric(group[axis], errors="coerce")).dropna(subset=["x"]).sort_values("x")
            if metric in group:
                label = ",".join(f"{a}={v}" for a, v in zip(others, key if isinstance(key, tuple) else (key,)))
                panel.plot(group["x"], group[metric], marker="o", label=label or None)
        x = pd.to_numeric(done[axis], errors="coerce")
        if x.min() > 0 and x.max() / x.min() >= 8:
            panel.set_xscale("log", base=2)  # batch sizes and data scales are doubling series
        panel.set_xlabel(axis)
        panel.set_ylabel(metric)
        if others:
            panel.legend(fontsize=7)
    figure.suptitle(f"{metric} of {len(done)} finished points")
    figure.tight_layout()
    return figure


def _set_aside_earlier_failures(sweep_dir: str) -> None:
    """Renames every ``failure.txt`` an earlier invocation left under the sweep directory to
    ``failure.<n>.txt`` beside it (n = 1 for the first set aside, then 2, ...). A sweep run again
    in its directory (to resume it, or with its grid changed) reuses the job directories, and its
    summary must report this invocation's failures only, including where a job directory is not
    run again; the earlier tracebacks are kept."""
    for path in list(Path(sweep_dir).rglob(FAILURE_FILE)):
        path.rename(path.with_name(f"failure.{len(list(path.parent.glob('failure.*.txt'))) + 1}.txt"))


def _failures(sweep_dir: str) -> list[tuple[str, str]]:
    """(job directory, last traceback line) of every point of this multirun that raised."""
    found = []
    for path in sorted(Path(sweep_dir).rglob(FAILURE_FILE)):
        lines = path.read_text().strip().splitlines()
        found.append((str(path.parent), lines[-1] if lines else "(empty traceback)"))
    return found


class SweepCallback(Callback):
    """Opens the parent run before the first job and summarises and closes it after the last."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _set_aside_earlier_failures(config.hydra.sweep.dir)
        definition = sweep_definition(config)
        digest = sweep_hash(definition, config.tracking.experiment)
        name = "sweep " + (",".join(definition["axes"]) or "(no axes)")
        uri = tracking_uri(config.tracking.tracking_uri)
        run_id = open_parent(uri, config.tracking.experiment, digest, config.hydra.sweep.dir, name, definition)
        log.info("Sweep %s: parent run %s", digest, run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        uri = tracking_uri(config.tracking.tracking_uri)
        parent = find_parent(uri, config.tracking.experiment, config.hydra.sweep.dir)
        failures = _failures(config.hydra.sweep.dir)
        if parent is not None:
            axes = list(sweep_definition(config)["axes"])
            table = summary_table(sweep_children(uri, parent), axes)
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "summary.csv"
                table.to_csv(csv, index=False, float_format="%.6g")
                figure = summary_figure(table, axes) if not table.empty else None
                close_parent(uri, parent, [csv], figure, failed=bool(failures))
                if figure is not None:
                    plt.close(figure)
        if failures:
            lines = "\n".join(f"  {job}: {error}" for job, error in failures)
            raise SweepFailed(f"{len(failures)} point(s) of the sweep failed (traceback in each {FAILURE_FILE}):\n{lines}")
