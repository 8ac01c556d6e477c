"""The runs a report is built from, read from MLflow into pandas (a sweep's points, by sweep tag
or by identity, and their per-question APs), the store they are read from, and the report run the
built files are logged to."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import mlflow
import pandas as pd

from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT
from hybridsweep.schema import compose_train
from hybridsweep.sweep_runs import find_parent
from hybridsweep.tracking.identity import is_result_key, provenance_tags
from hybridsweep.tracking.store import (
    HASH_TAG,
    POINT_ROLE,
    REPORT_ROLE,
    REPORT_TAG,
    ROLE_TAG,
    ROLES,
    SWEEP_TAG,
    ZERO_SHOT_ROLE,
    client,
    experiment_id,
    tracking_uri,
)


def store_uri(overrides: Sequence[str] = ()) -> str:
    """The tracking store that ``python -m hybridsweep.train`` writes to under ``overrides``:
    ``tracking.tracking_uri`` of the composed config, where ``MLFLOW_TRACKING_URI`` wins as it
    does in training."""
    return tracking_uri(compose_train(overrides).tracking.tracking_uri)


def location_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` (``key=value``) given to a command that reads runs, refused unless every key is
    outside a point's identity (where runs are stored, how fast they run): a report reads the runs,
    it does not choose what they computed."""
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" not in override or is_result_key(key):
            raise SystemExit(f"{override!r}: only overrides of keys outside a point's identity are accepted here "
                             f"(tracking.tracking_uri, resume.*, cache_dir, ...); {key!r} is part of it")
    return list(overrides)


def finished_runs(experiment: str, roles: Iterable[str] = (POINT_ROLE, ZERO_SHOT_ROLE)) -> pd.DataFrame:
    """Finished runs of ``experiment`` with one of ``roles`` (runs from before roles were tagged
    count as points), as ``mlflow.search_runs`` returns them; empty when the experiment is new."""
    roles = list(roles)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"roles {unknown} are not run roles: expected some of {list(ROLES)}")
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    if runs.empty:
        return runs
    role = runs.get(f"tags.{ROLE_TAG}", pd.Series(index=runs.index, dtype=object))
    untagged_point = role.isna() & runs.get(f"tags.{REPORT_TAG}", pd.Series(index=runs.index, dtype=object)).isna()
    keep = role.isin(roles) | (untagged_point if POINT_ROLE in roles else False)
    return runs[keep].reset_index(drop=True)


def sweep_runs(experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """The finished points of ``sweep`` (a value of the ``sweep`` tag; default the most recent
    sweep) in ``experiment``, as ``mlflow.search_runs`` returns them."""
    runs = finished_runs(experiment, roles=(POINT_ROLE,))
    column = f"tags.{SWEEP_TAG}"
    if runs.empty or column not in runs:
        raise SystemExit(f"no finished sweep runs in experiment {experiment!r} at {mlflow.get_tracking_uri()}")
    if sweep is None:
        sweep = runs.sort_values("start_time")[column].dropna().iloc[-1]
    selected = runs[runs[column] == sweep]
    if selected.empty:
        raise SystemExit(
            f"no finished runs with tag sweep={sweep!r} in experiment {experiment!r}; "
            f"known: {sorted(runs[column].dropna().unique())}"
        )
    return selected.reset_index(drop=True)


def runs_by_identity(experiment: str, hashes: Iterable[str], sweep: str | None = None,
                     roles: Iterable[str] = (POINT_ROLE, ZERO_SHOT_ROLE)) -> pd.DataFrame:
    """One finished run per identity in ``hashes`` (tag ``hybridsweep.config_hash``), whichever
    sweep made it: a point shared by two sweeps is trained once and skipped by the second. Where
    an identity has several runs, the one of ``sweep`` (a ``sweep`` tag value) is taken, else the
    newest. Empty when there is none."""
    runs = finished_runs(experiment, roles)
    column = f"tags.{HASH_TAG}"
    if runs.empty or column not in runs:
        return pd.DataFrame()
    runs = runs[runs[column].isin(set(hashes))].copy()
    sweep_column = f"tags.{SWEEP_TAG}"
    runs["_own"] = runs[sweep_column] == sweep if sweep_column in runs else False
    runs = runs.sort_values(["_own", "start_time"], ascending=False).drop_duplicates(column)
    return runs.drop(columns="_own").reset_index(drop=True)


def read_frame(run_id: str, path: str, dtypes: Mapping[str, object] | None = None) -> pd.DataFrame | None:
    """A CSV artifact of a run as a DataFrame, or None when the run has no such artifact."""
    store = client(mlflow.get_tracking_uri())
    folder = str(Path(path).parent) if "/" in path else None
    if path not in {a.path for a in store.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_csv(store.download_artifacts(run_id, path, tmp), dtype=dict(dtypes or {}))


@lru_cache(maxsize=4096)
def per_question_ap(run_id: str, folder: str = "") -> pd.DataFrame | None:
    """The run's ``[folder/]per_question_ap.csv.gz`` (see ``RetrievalResult.per_question``), or
    ``None`` when the run has none (runs logged before it existed)."""
    path = f"{folder}/{PER_QUESTION_ARTIFACT}" if folder else PER_QUESTION_ARTIFACT
    frame = read_frame(run_id, path, {"qid": str, "q_lang": str, "c_lang": str, "setting": str})
    if frame is None:
        return None
    missing = {"qid", "q_lang", "setting", "c_lang", "ap"} - set(frame.columns)
    if missing:
        raise ValueError(f"run {run_id}: {path} lacks columns {sorted(missing)}")
    return frame


def log_report(experiment: str, name: str, files: Iterable[Path], tags: Mapping[str, str], sweep: str | None = None) -> str:
    """One run ``report:<name>`` in ``experiment`` holding a report's files; its id.

    The same files also go to the parent run of the multirun that wrote to ``sweep`` (a sweep
    directory), under ``report/<name>/``, so the sweep's own entry shows what was built from it.
    """
    uri = mlflow.get_tracking_uri()
    store = client(uri)
    files = list(files)
    run_id = store.create_run(experiment_id(store, experiment), run_name=f"report:{name}",
                              tags={REPORT_TAG: name, ROLE_TAG: REPORT_ROLE, **provenance_tags(), **tags}).info.run_id
    for path in files:
        store.log_artifact(run_id, str(path))
    store.set_terminated(run_id, "FINISHED")
    parent = find_parent(uri, experiment, sweep) if sweep else None
    if parent is not None:
        for path in files:
            store.log_artifact(parent, str(path), f"report/{name}")
    return run_id

