"""Finished runs carried between tracking stores: a compact folder that a study leaves in the
repository (``reports/<profile>/runs/``) and any store can take back.

A store does not outlive its machine, and a study can outlast one: the folder holds what the
reports are built from, so a new store that imports it skips the points it holds (they are known
by their identity tags), trains the rest and builds every table as the first store would have.

**What is kept** of each FINISHED run: its name, experiment-independent tags (identity, results
version, role, sweep, git commit; not MLflow's parent link, whose parent is not carried), params,
every metric's full history (step, time, value), start and end time, and the per-question APs of
its retrieval suite (``per_question_ap.csv.gz``). Not kept: model weights, figures and other
artifacts, which are rebuilt by training again.

**Layout** (``folder/``):

- ``runs.json.gz``: one record per run, in start-time order;
- ``per_question_ap.parquet``: one column of APs per run (named by its original run id) beside
  the key columns ``qid, q_lang, setting, c_lang`` of the evaluation. Runs whose tables list the
  same keys in the same order share the key columns (they evaluated the same set); a run whose
  keys differ gets a file of its own, ``per_question_ap.<n>.parquet``. A run's rows keep their
  order, so a table's bootstrap draws the same questions from an imported run as from its source.

Imported runs carry ``hybridsweep.imported_from`` (the source run id) and are exported again as
that run, so exporting a store rebuilt from an archive gives the archive's bytes back. Import is
idempotent: a run whose identity already has a FINISHED run in the target experiment is left out.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from tqdm import tqdm

from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT
from hybridsweep.tracking.store import (
    CLAIM_TAG,
    HASH_TAG,
    HEARTBEAT_TAG,
    POINT_ROLE,
    ROLE_TAG,
    ZERO_SHOT_ROLE,
    client,
    experiment_id,
)
from hybridsweep.tracking.tracker import RunTracker

RUNS_FILE = "runs.json.gz"
AP_FILE = "per_question_ap.parquet"
KEY_COLUMNS = ("qid", "q_lang", "setting", "c_lang")
IMPORTED_TAG = "hybridsweep.imported_from"
FORMAT = 1
_DROPPED_TAGS = (MLFLOW_PARENT_RUN_ID, "mlflow.log-model.history", "mlflow.source.name", "mlflow.user")
_BATCH = 1000


def _exported_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items()
            if k not in _DROPPED_TAGS and not k.startswith("hybridsweep.in_sweep.") and k not in (
                CLAIM_TAG, HEARTBEAT_TAG, IMPORTED_TAG)}


def _per_question(store: MlflowClient, run_id: str) -> pd.DataFrame | None:
    if PER_QUESTION_ARTIFACT not in {a.path for a in store.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_csv(store.download_artifacts(run_id, PER_QUESTION_ARTIFACT, tmp),
                           dtype={c: str for c in KEY_COLUMNS}, keep_default_na=False)


def export_runs(uri: str, experiment: str, folder: str | Path,
                roles: Iterable[str] = (POINT_ROLE, ZERO_SHOT_ROLE)) -> int:
    """Write the FINISHED runs of ``experiment`` (a profile's own experiment) with one of
    ``roles`` to ``folder``, replacing what it held; returns how many. Runs are selected by their
    tags alone, never by recomputing identities, so any machine exports all of them."""
    store = client(uri)
    found = store.get_experiment_by_name(experiment)
    roles = set(roles)
    runs = []
    if found is not None:
        runs = [run for run in store.search_runs([found.experiment_id], "attributes.status = 'FINISHED'",
                                                 order_by=["attributes.start_time ASC"], max_results=50000)
                if run.data.tags.get(ROLE_TAG) in roles and HASH_TAG in run.data.tags]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records, key_sets, columns = [], [], []
    for run in tqdm(runs, desc=f"export {experiment}", unit="run"):
        histories = {key: [[m.step, m.timestamp, m.value] for m in store.get_metric_history(run.info.run_id, key)]
                     for key in sorted(run.data.metrics)}
        # An imported run is exported as the run it came from: a store rebuilt from the archive
        # writes the archive back unchanged.
        record = {"run_id": run.data.tags.get(IMPORTED_TAG, run.info.run_id), "run_name": run.info.run_name,
                  "start_time": run.info.start_time,
                  "end_time": run.info.end_time, "tags": dict(sorted(_exported_tags(run.data.tags).items())),
                  "params": dict(sorted(run.data.params.items())), "metrics": histories, "per_question": None}
        frame = _per_question(store, run.info.run_id)
        if frame is not None:
            keys = frame[list(KEY_COLUMNS)]
            index = next((i for i, known in enumerate(key_sets) if known.equals(keys)), None)
            if index is None:
                index = len(key_sets)
                key_sets.append(keys)
                columns.append({})
            columns[index][record["run_id"]] = frame["ap"].to_numpy()
            record["per_question"] = {"file": _ap_file(index), "rows": len(frame)}
        records.append(record)
    for old in folder.glob("per_question_ap*.parquet"):
        old.unlink()
    for index, keys in enumerate(key_sets):
        table = pd.concat([keys.reset_index(drop=True), pd.DataFrame(columns[index])], axis=1)
        table.to_parquet(folder / _ap_file(index), compression="zstd", index=False)
    payload = {"format": FORMAT, "experiment": experiment, "runs": records}
    # No time stamp in the gzip header: the same runs export to the same bytes, so a committed
    # archive changes only when its runs do.
    (folder / RUNS_FILE).write_bytes(gzip.compress(json.dumps(payload, sort_keys=True).encode("utf-8"), mtime=0))
    return len(records)


def _ap_file(index: int) -> str:
    return AP_FILE if index == 0 else AP_FILE.replace(".parquet", f".{index}.parquet")


def read_archive(folder: str | Path) -> dict:
    """The ``runs.json.gz`` of an exported folder; a ``ValueError`` naming the file when it is not one."""
    path = Path(folder) / RUNS_FILE
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not an exported run folder ({error})") from None
    if payload.get("format") != FORMAT or not isinstance(payload.get("runs"), list):
        raise ValueError(f"{path}: expected format {FORMAT} with a list of runs, got format {payload.get('format')!r}")
    return payload


def import_runs(uri: str, experiment: str, folder: str | Path) -> list[str]:
    """Recreate in ``experiment`` of store ``uri`` every run of ``folder`` whose identity has no
    FINISHED run there yet; returns the new run ids."""
    folder = Path(folder)
    payload = read_archive(folder)
    store = client(uri)
    experiment_key = experiment_id(store, experiment)
    present = {run.data.tags.get(HASH_TAG) for run in store.search_runs(
        [experiment_key], "attributes.status = 'FINISHED'", max_results=50000)}
    missing = [r for r in payload["runs"] if r["tags"].get(HASH_TAG) not in present]
    tables: dict[str, pd.DataFrame] = {}
    created = []
    for record in tqdm(missing, desc=f"import {experiment}", unit="run", disable=not missing):
        tags = {**record["tags"], IMPORTED_TAG: record["run_id"]}
        run_id = store.create_run(experiment_key, start_time=record["start_time"], tags=tags,
                                  run_name=record["run_name"]).info.run_id
        params = [Param(k, v) for k, v in record["params"].items()]
        metrics = [Metric(key, value, timestamp, step) for key, history in record["metrics"].items()
                   for step, timestamp, value in history]
        for start in range(0, len(params), 100):
            store.log_batch(run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), _BATCH):
            store.log_batch(run_id, metrics=metrics[start:start + _BATCH])
        reference = record.get("per_question")
        if reference is not None:
            if reference["file"] not in tables:
                tables[reference["file"]] = pd.read_parquet(folder / reference["file"])
            table = tables[reference["file"]]
            if record["run_id"] not in table:
                raise ValueError(f"{folder / reference['file']}: no column {record['run_id']!r} for run {record['run_name']!r}")
            frame = table[[*KEY_COLUMNS, record["run_id"]]].rename(columns={record["run_id"]: "ap"})
            RunTracker(uri, run_id).log_frame(frame, PER_QUESTION_ARTIFACT)
        store.set_terminated(run_id, "FINISHED", end_time=record["end_time"])
        created.append(run_id)
    return created
