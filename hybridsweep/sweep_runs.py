"""The MLflow side of a multirun: its parent run and the runs it counts as its children.

The parent is found again by the sweep definition's hash (re-running a command reopens it) and,
from a job, by the sweep directory. A point finished under an earlier sweep and skipped by this
one is listed as a member of this sweep too (:func:`list_in_sweep`), so the parent's summary
covers every point of its grid. :mod:`hybridsweep.sweep`'s Hydra callback opens and closes the
parent; each point names it as its ``mlflow.parentRunId`` (:mod:`hybridsweep.point`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mlflow.entities import Param, Run, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import OmegaConf

from hybridsweep.tracking.identity import provenance_tags
from hybridsweep.tracking.store import PARAM_LIMIT, PARENT_ROLE, ROLE_TAG, SWEEP_DIR_TAG, SWEEP_HASH_TAG, client, experiment_id


def find_parent(uri: str, experiment: str, sweep_dir: str) -> str | None:
    """The parent run of the multirun writing to ``sweep_dir``, if one was opened."""
    store = client(uri)
    found = store.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = store.search_runs(
        [found.experiment_id], f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}' and tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_parent(uri: str, experiment: str, digest: str, sweep_dir: str, name: str, definition: dict) -> str:
    """The parent run of a multirun: the one of an earlier invocation of the same sweep definition
    (``digest``), reopened, or a new one holding the definition."""
    store = client(uri)
    experiment_key = experiment_id(store, experiment)
    earlier = store.search_runs(
        [experiment_key], f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}' and tags.`{SWEEP_HASH_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    tags = {ROLE_TAG: PARENT_ROLE, SWEEP_HASH_TAG: digest, SWEEP_DIR_TAG: sweep_dir, **provenance_tags()}
    if earlier:
        run_id = earlier[0].info.run_id
        store.update_run(run_id, status="RUNNING")
        store.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return run_id
    run_id = store.create_run(experiment_key, run_name=name, tags=tags).info.run_id
    store.log_batch(run_id, params=[Param(f"sweep.{axis}", str(v)[:PARAM_LIMIT]) for axis, v in definition["axes"].items()])
    store.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(definition)), "sweep.yaml")
    return run_id


def parent_axes(uri: str, parent_run_id: str) -> list[str]:
    """The swept keys of a parent run (its ``sweep.<key>`` params)."""
    params = client(uri).get_run(parent_run_id).data.params
    return [key[len("sweep."):] for key in params if key.startswith("sweep.")]


def member_tag(parent_run_id: str) -> str:
    """Tag set on a run finished under an earlier sweep and skipped by this one, to list it here."""
    return f"hybridsweep.in_sweep.{parent_run_id}"


def list_in_sweep(uri: str, run_id: str, parent_run_id: str) -> None:
    """Make a run finished under another sweep count as a member of ``parent_run_id`` too."""
    store = client(uri)
    if store.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID) != parent_run_id:
        store.set_tag(run_id, member_tag(parent_run_id), "finished earlier")


def sweep_children(uri: str, parent_run_id: str) -> list[Run]:
    """Child runs of a parent, plus finished runs of earlier sweeps this one skipped."""
    store = client(uri)
    experiment_key = store.get_run(parent_run_id).info.experiment_id
    nested = store.search_runs([experiment_key], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")
    reused = store.search_runs([experiment_key], f"tags.`{member_tag(parent_run_id)}` LIKE '%'")
    known = {run.info.run_id for run in nested}
    return nested + [run for run in reused if run.info.run_id not in known]


def close_parent(uri: str, parent_run_id: str, files: Iterable[Path], figure, failed: bool) -> None:
    store = client(uri)
    for path in files:
        store.log_artifact(parent_run_id, str(path))
    if figure is not None:
        store.log_figure(parent_run_id, figure, "summary.png")
    store.set_terminated(parent_run_id, "FAILED" if failed else "FINISHED")

