"""The MLflow store: its client, the tag names and run roles hybridsweep writes, and the
rank-zero rule (only global rank zero talks to MLflow)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# Tag names
ROLE_TAG = "hybridsweep.role"
"""What a run is: one of :data:`ROLES`."""
HASH_TAG = "hybridsweep.config_hash"
RESULTS_VERSION_TAG = "hybridsweep.results_version"
PACKAGE_VERSION_TAG = "hybridsweep.version"
COMMIT_TAG = "hybridsweep.git_commit"
CLAIM_TAG = "hybridsweep.claim"
HEARTBEAT_TAG = "hybridsweep.heartbeat"
ZERO_SHOT_RUN_TAG = "hybridsweep.zero_shot_run"
"""On a point: the zero-shot runs (one per suite, comma-separated) its ``init/`` metrics were copied from."""
MACHINE_TAG = "hybridsweep.machine"
"""On a point: what its last process ran on (:func:`hybridsweep.machine.describe_machine`), for its ``time/*``."""
RESUMED_TAG = "hybridsweep.resumed"
"""On a point: ``true`` when its last process resumed it from a checkpoint, whose ``time/*`` then
cover that process only (a cost table should leave it out); ``false`` otherwise."""
AXES_TAG = "hybridsweep.axes"
"""On a point of a multirun: the swept keys and this point's values, as JSON."""
SWEEP_TAG = "sweep"
"""The multirun's sweep directory, on its points: runs of one sweep share it."""
SWEEP_HASH_TAG, SWEEP_DIR_TAG = "hybridsweep.sweep_hash", "hybridsweep.sweep_dir"
REPORT_TAG = "report"
OVERRIDES_TAG = "overrides"

ROLES = PARENT_ROLE, POINT_ROLE, ZERO_SHOT_ROLE, REPORT_ROLE = ("parent", "point", "zero-shot", "report")
"""The values of :data:`ROLE_TAG`: ``parent`` (a multirun), ``point`` (a trained point),
``zero-shot`` (an initializer evaluated without training) or ``report`` (files built from runs)."""

PARAM_LIMIT = 6000
"""MLflow's limit on the characters of a param value."""


def tracking_uri(configured: str) -> str:
    """``MLFLOW_TRACKING_URI`` wins over the config, as MLflow users expect."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


@cache
def client(uri: str) -> MlflowClient:
    """The one client of a store (``uri`` as given; see :func:`tracking_uri`). A new SQLite
    store's tables are created under the store's lock: two processes creating them at once (two
    sweeps started together) corrupt its schema."""
    with store_lock(uri):
        store = MlflowClient(uri)
        store._tracking_client.store  # noqa: B018 (creates and migrates the store, where it is lazy)
    return store


def experiment_id(store: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created on first use (safe when two processes race)."""
    found = store.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return store.create_experiment(name)
    except MlflowException:  # another process created it between the two calls
        return store.get_experiment_by_name(name).experiment_id


def is_global_zero() -> bool:
    """Whether this process is global rank zero (Lightning's rule: RANK / LOCAL_RANK / SLURM_PROCID)."""
    return rank_zero_only.rank == 0


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store (``sqlite:///...``, ``file:...`` or a path); None for a server."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri[len("sqlite:///"):]).expanduser().resolve()
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or uri).expanduser().resolve()
    return None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[bool]:
    """A file lock beside a local store (yields True), or nothing for a server (yields False)."""
    path = local_store_path(uri)
    if path is None:
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".hybridsweep.lock"):
        yield True
