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


def finished_overrides(experiment: str, sweep: str) -> set[frozenset[str]]:
    """The override sets (``overrides`` tag, split on spaces) of the sweep's finished runs."""
    if mlflow.get_experiment_by_name(experiment) is None:
        return set()
    runs = _training_runs(experiment)
    if runs.empty or "tags.sweep" not in runs or "tags.overrides" not in runs:
        return set()
    selected = runs[runs["tags.sweep"] == sweep]
    return {frozenset(str(tag).split()) for tag in selected["tags.overrides"].dropna()}


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


def log_report(experiment: str, name: str, files: Iterable[Path], tags: Mapping[str, str]) -> str:
    """One MLflow run ``report:<name>`` in ``experiment`` holding the report's files; its id."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"report:{name}", tags={"report": name, **tags})
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
