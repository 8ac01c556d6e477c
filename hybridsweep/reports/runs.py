"""The runs a report is built from: a sweep's points, by sweep tag or by identity, and their
per-question APs (all read through :mod:`hybridsweep.tracking`)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import mlflow
import pandas as pd

from hybridsweep import tracking
from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT


def sweep_runs(experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """The finished points of ``sweep`` (a value of the ``sweep`` tag; default the most recent
    sweep) in ``experiment``, as ``mlflow.search_runs`` returns them."""
    runs = tracking.finished_runs(experiment, roles=("point",))
    column = f"tags.{tracking.SWEEP_TAG}"
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
                     roles: Iterable[str] = ("point", "zero-shot")) -> pd.DataFrame:
    """One finished run per identity in ``hashes`` (tag ``hybridsweep.config_hash``), whichever
    sweep made it: a point shared by two sweeps is trained once and skipped by the second. Where
    an identity has several runs, the one of ``sweep`` (a ``sweep`` tag value) is taken, else the
    newest. Empty when there is none."""
    runs = tracking.finished_runs(experiment, roles)
    column = f"tags.{tracking.HASH_TAG}"
    if runs.empty or column not in runs:
        return pd.DataFrame()
    runs = runs[runs[column].isin(set(hashes))].copy()
    sweep_column = f"tags.{tracking.SWEEP_TAG}"
    runs["_own"] = runs[sweep_column] == sweep if sweep_column in runs else False
    runs = runs.sort_values(["_own", "start_time"], ascending=False).drop_duplicates(column)
    return runs.drop(columns="_own").reset_index(drop=True)


@lru_cache(maxsize=4096)
def per_question_ap(run_id: str, folder: str = "") -> pd.DataFrame | None:
    """The run's ``[folder/]per_question_ap.csv.gz`` (see ``RetrievalResult.per_question``), or
    ``None`` when the run has none (runs logged before it existed)."""
    path = f"{folder}/{PER_QUESTION_ARTIFACT}" if folder else PER_QUESTION_ARTIFACT
    frame = tracking.read_frame(run_id, path, {"qid": str, "q_lang": str, "c_lang": str, "setting": str})
    if frame is None:
        return None
    missing = {"qid", "q_lang", "setting", "c_lang", "ap"} - set(frame.columns)
    if missing:
        raise ValueError(f"run {run_id}: {path} lacks columns {sorted(missing)}")
    return frame
