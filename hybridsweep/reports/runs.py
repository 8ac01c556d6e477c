"""Reading a sweep's runs and their per-question APs from MLflow, and logging a report's files."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT
from hybridsweep.resume import HASH_TAG
from hybridsweep.sweep import find_parent


def _training_runs(experiment: str) -> pd.DataFrame:
    """Finished runs of the experiment, leaving out report runs (tag ``report``)."""
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    if "tags.report" in runs:
        runs = runs[runs["tags.report"].isna()]
    return runs


def sweep_runs(experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """The finished runs of ``sweep`` (a value of the ``sweep`` tag; default the most recent
    sweep) in ``experiment``, as ``mlflow.search_runs`` returns them."""
    runs = _training_runs(experiment)
    if runs.empty or "tags.sweep" not in runs:
        raise SystemExit(f"no finished sweep runs in experiment {experiment!r} at {mlflow.get_tracking_uri()}")
    if sweep is None:
        sweep = runs.sort_values("start_time")["tags.sweep"].dropna().iloc[-1]
    selected = runs[runs["tags.sweep"] == sweep]
    if selected.empty:
        raise SystemExit(
            f"no finished runs with tag sweep={sweep!r} in experiment {experiment!r}; "
            f"known: {sorted(runs['tags.sweep'].dropna().unique())}"
        )
    return selected.reset_index(drop=True)


def point_runs(experiment: str, hashes: Iterable[str], sweep: str | None = None) -> pd.DataFrame:
    """One finished run per config hash in ``hashes`` (tag ``hybridsweep.config_hash``), whichever
    sweep trained it: a point shared by two sweeps is trained once and skipped by the second (see
    :mod:`hybridsweep.resume`). Where a hash has several runs, the one of ``sweep`` (a ``sweep``
    tag value) is taken, else the newest. Empty when the experiment does not exist yet."""
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    runs = _training_runs(experiment)
    column = f"tags.{HASH_TAG}"
    if runs.empty or column not in runs:
        return pd.DataFrame()
    runs = runs[runs[column].isin(set(hashes))].copy()
    own = runs["tags.sweep"] == sweep if "tags.sweep" in runs else False
    runs["_own"] = own
    runs = runs.sort_values(["_own", "start_time"], ascending=False).drop_duplicates(column)
    return runs.drop(columns="_own").reset_index(drop=True)


@lru_cache(maxsize=4096)
def per_question_ap(run_id: str, folder: str = "") -> pd.DataFrame | None:
    """The run's ``[folder/]per_question_ap.csv.gz`` (see ``RetrievalResult.per_question``), or
    ``None`` when the run has none (runs logged before it existed)."""
    path = f"{folder}/{PER_QUESTION_ARTIFACT}" if folder else PER_QUESTION_ARTIFACT
    client = MlflowClient()
    listed = {a.path for a in client.list_artifacts(run_id, folder or None)}
    if path not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        frame = pd.read_csv(local, dtype={"qid": str, "q_lang": str, "c_lang": str, "setting": str})
    missing = {"qid", "q_lang", "setting", "c_lang", "ap"} - set(frame.columns)
    if missing:
        raise ValueError(f"run {run_id}: {path} lacks columns {sorted(missing)}")
    return frame


def log_report(experiment: str, name: str, files: Iterable[Path], tags: Mapping[str, str], sweep: str | None = None) -> str:
    """One MLflow run ``report:<name>`` in ``experiment`` holding the report's files; its id.

    The same files also go to the parent run of the multirun that wrote to ``sweep`` (a sweep
    directory), under ``report/<name>/``, so the sweep's own entry in MLflow shows what was built
    from it.
    """
    client = MlflowClient()
    files = list(files)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"report:{name}", tags={"report": name, **tags})
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    parent = find_parent(client, experiment, sweep) if sweep else None
    if parent is not None:
        for path in files:
            client.log_artifact(parent, str(path), f"report/{name}")
    return run.info.run_id
