"""One parent MLflow run per multirun, made by a Hydra callback (registered in conf/train.yaml).

``on_multirun_start`` runs once, in the launching process, before any job: it creates the
experiment (and so, with a SQLite store, its schema) and the parent run, so that parallel jobs
never race to create them. The parent is identified by a hash of the sweep definition (the
command's overrides and ``hydra.sweeper.params``): re-running the same command reopens the same
parent, whose children are then skipped or resumed (see :mod:`hybridsweep.resume`). Each job
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
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from hybridsweep.tracking import tracking_uri  # noqa: E402

log = logging.getLogger(__name__)

ROLE_TAG, SWEEP_HASH_TAG, SWEEP_DIR_TAG = "hybridsweep.role", "hybridsweep.sweep_hash", "hybridsweep.sweep_dir"
# Written into a job's output directory by a point that raised (see hybridsweep.point).
FAILURE_FILE = "failure.txt"
MAIN_METRIC = "map_full/multilingual"


class SweepFailed(SystemExit):
    """Some points of a multirun raised; the message lists them. A ``SystemExit`` because Hydra turns
    any ``Exception`` of a callback into a warning, while this must end the command with status 1."""


def member_tag(parent_run_id: str) -> str:
    """Tag set on a run finished under an earlier sweep and skipped by this one, to list it here."""
    return f"hybridsweep.in_sweep.{parent_run_id}"


def sweep_definition(config: DictConfig) -> dict:
    """The command's overrides and the swept axes (``key -> values``), from both the command line
    (``batch_size=32,128``) and ``hydra.sweeper.params`` (the presets in ``conf/sweep/``)."""
    overrides = [o for o in config.hydra.overrides.task]
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


def find_parent(client: MlflowClient, experiment: str, sweep_dir: str) -> str | None:
    """The parent run of the multirun writing to ``sweep_dir``, if one was opened."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.`{ROLE_TAG}` = 'parent' and tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def sweep_children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Child runs of a parent, plus finished runs of earlier sweeps this one skipped."""
    nested = client.search_runs([experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")
    reused = client.search_runs([experiment_id], f"tags.`{member_tag(parent_run_id)}` LIKE '%'")
    return nested + [run for run in reused if run.info.run_id not in {r.info.run_id for r in nested}]


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


def _failures(sweep_dir: str) -> list[tuple[str, str]]:
    """(job directory, last traceback line) of every point of this multirun that raised."""
    found = []
    for path in sorted(Path(sweep_dir).rglob(FAILURE_FILE)):
        lines = path.read_text().strip().splitlines()
        found.append((str(path.parent), lines[-1] if lines else "(empty traceback)"))
    return found


class SweepCallback(Callback):
    """Opens the parent run before the first job and summarises and closes it after the last."""

    def _client(self, config: DictConfig) -> tuple[MlflowClient, str]:
        client = MlflowClient(tracking_uri(config.tracking.tracking_uri))
        found = client.get_experiment_by_name(config.tracking.experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(config.tracking.experiment)
        return client, experiment_id

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        client, experiment_id = self._client(config)
        definition = sweep_definition(config)
        digest = sweep_hash(definition, config.tracking.experiment)
        earlier = client.search_runs(
            [experiment_id], f"tags.`{ROLE_TAG}` = 'parent' and tags.`{SWEEP_HASH_TAG}` = '{digest}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        tags = {ROLE_TAG: "parent", SWEEP_HASH_TAG: digest, SWEEP_DIR_TAG: config.hydra.sweep.dir}
        if earlier:
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            log.info("Sweep %s: reopened parent run %s", digest, run_id)
        else:
            name = "sweep " + (",".join(definition["axes"]) or "(no axes)")
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            for axis, values in definition["axes"].items():
                client.log_param(run_id, f"sweep.{axis}", values[:6000])
            client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(definition)), "sweep.yaml")
            log.info("Sweep %s: parent run %s", digest, run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        client, experiment_id = self._client(config)
        parent = find_parent(client, config.tracking.experiment, config.hydra.sweep.dir)
        failures = _failures(config.hydra.sweep.dir)
        if parent is not None:
            axes = list(sweep_definition(config)["axes"])
            table = summary_table(sweep_children(client, experiment_id, parent), axes)
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "summary.csv"
                table.to_csv(csv, index=False, float_format="%.6g")
                client.log_artifact(parent, str(csv))
            if not table.empty:
                figure = summary_figure(table, axes)
                client.log_figure(parent, figure, "summary.png")
                plt.close(figure)
            client.set_terminated(parent, "FAILED" if failures else "FINISHED")
        if failures:
            lines = "\n".join(f"  {job}: {error}" for job, error in failures)
            raise SweepFailed(f"{len(failures)} point(s) of the sweep failed (traceback in each {FAILURE_FILE}):\n{lines}")
