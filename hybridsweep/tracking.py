"""Everything hybridsweep asks of MLflow, in one place.

This module owns the MLflow client, every tag name, experiment get-or-create, the identity of a
point, the claim that stops two processes from training one point, the skip/resume decision and
the rank-zero rule. The entry points (:mod:`hybridsweep.train`, :mod:`hybridsweep.evaluate`), the
sweep callback and the report builders call it and hold no MLflow logic of their own.

**Identity.** A point is the hash of its resolved config (:func:`config_hash`) without the keys
of :data:`NON_RESULT_KEYS` (where files live, how fast or how verbosely it runs), plus the
package's :data:`~hybridsweep.RESULTS_VERSION`, bumped by every change that alters results. Moving
the data, the cache or the working directory keeps every point; a new results version retrains.

**Claims.** Before a process trains a point it claims the point's run: the run carries
``hybridsweep.claim`` (``host:pid:token``) and ``hybridsweep.heartbeat`` (unix seconds), which a
background thread renews every ``resume.heartbeat_s``. A RUNNING run whose heartbeat is older
than ``resume.claim_expiry_s`` (or whose process, on this host, is gone) was left by a killed
process: it is *stale* and can be resumed. A live claim is never taken over. With a local store
(SQLite or a folder) the decision runs under a file lock beside the store, so it is exact. With a
tracking server there is no shared lock: each contender writes its claim, waits
``resume.claim_settle_s`` for the others' writes to land and reads the claims back; a contender
goes on only when its claim is the one live claim, else it withdraws and retries after a random
pause (:func:`claim_run`). This assumes that no contender stalls for longer than the settle time
between reading a stale run and claiming it.

**Decision** (:func:`claim_run`), for the runs of the point's hash, newest first:

- a FINISHED run: the point is done and is skipped;
- a RUNNING run with a live claim: another process is on it; this one leaves it alone (``busy``);
- a stale RUNNING run, or a KILLED one (interrupted by Ctrl-C, or told to exit: preempted): reopened and resumed into;
- a FAILED run, or none: a new run (a failure stays on record with its traceback).

**Ranks.** Under DDP only global rank zero talks to MLflow. It makes the decision before the
Trainer starts the other ranks and hands it to them in the environment (:func:`share_decision`),
which Lightning's launcher copies into every rank it starts; the other ranks read it there and
never open, log to or finish a run (their tracker is a :class:`RunTracker` without a run).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import cache, lru_cache
from pathlib import Path
from urllib.parse import urlparse

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from filelock import FileLock  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric, Param, Run, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from hybridsweep import RESULTS_VERSION, __version__  # noqa: E402
from hybridsweep.evaluation.figures import heatmap  # noqa: E402

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Tag names
ROLE_TAG = "hybridsweep.role"
"""What a run is: ``parent`` (a multirun), ``point`` (a trained point), ``zero-shot`` (an
initializer evaluated without training) or ``report`` (files built from runs)."""
HASH_TAG = "hybridsweep.config_hash"
RESULTS_VERSION_TAG = "hybridsweep.results_version"
PACKAGE_VERSION_TAG = "hybridsweep.version"
COMMIT_TAG = "hybridsweep.git_commit"
CLAIM_TAG = "hybridsweep.claim"
HEARTBEAT_TAG = "hybridsweep.heartbeat"
ZERO_SHOT_RUN_TAG = "hybridsweep.zero_shot_run"
"""On a point: the zero-shot runs (one per suite, comma-separated) its ``init/`` metrics were copied from."""
AXES_TAG = "hybridsweep.axes"
"""On a point of a multirun: the swept keys and this point's values, as JSON."""
SWEEP_TAG = "sweep"
"""The multirun's sweep directory, on its points: runs of one sweep share it."""
SWEEP_HASH_TAG, SWEEP_DIR_TAG = "hybridsweep.sweep_hash", "hybridsweep.sweep_dir"
REPORT_TAG = "report"
OVERRIDES_TAG = "overrides"

ROLES = PARENT_ROLE, POINT_ROLE, ZERO_SHOT_ROLE, REPORT_ROLE = ("parent", "point", "zero-shot", "report")

# MLflow caps a param value at 6000 characters and a batch at 100 params / 1000 metrics.
_PARAM_LIMIT, _PARAM_BATCH, _METRIC_BATCH = 6000, 100, 1000
_DECISION_ENV = "HYBRIDSWEEP_DECISION_{role}_{digest}"


def tracking_uri(configured: str) -> str:
    """``MLFLOW_TRACKING_URI`` wins over the config, as MLflow users expect."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


@cache
def client(uri: str) -> MlflowClient:
    """The one client of a store (``uri`` as given; see :func:`tracking_uri`). A new SQLite
    store's tables are created under the store's lock: two processes creating them at once (two
    sweeps started together) corrupt its schema."""
    with _store_lock(uri):
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


# ---------------------------------------------------------------------------------------------
# Identity
NON_RESULT_KEYS = (
    # Where things are read from and written to.
    "cache_dir", "tracking", "resume", "*.root", "*.download_dir", "*.shards",
    # How fast or on how many processes it runs: the global batch is the same on any number of
    # ranks, and evaluation encodes the same texts at any batch size.
    "*.num_workers", "eval.batch_size", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "model.compile",
    # What is shown while it runs.
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "callbacks.progress_bar", "callbacks.*.refresh_rate",
)
"""Dotted keys (``fnmatch`` patterns; ``*.x`` also matches the copies that config nodes
interpolate, e.g. ``data.module.num_workers``) that do not change a point's results: left out of
its identity. Everything else in the resolved config is part of it. Where sharded data lives
(``data.shards``) is a location too: a shard directory is identified by where it is read from
only through its path, so rewriting shards in place needs a new results version or seed."""


def _without(node: object, patterns: Iterable[str], path: str = "") -> object:
    if not isinstance(node, dict):
        return node
    kept = {}
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else str(key)
        if not any(fnmatch.fnmatchcase(dotted, p) for p in patterns):
            kept[key] = _without(value, patterns, dotted)
    return kept


def result_config(cfg: DictConfig | Mapping, keys: Iterable[str] | None = None) -> dict:
    """The resolved config (or only its top-level ``keys``) without :data:`NON_RESULT_KEYS`."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if keys is not None:
        config = {key: config.get(key) for key in keys}
    return _without(config, NON_RESULT_KEYS)


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig, version: int = RESULTS_VERSION) -> str:
    """The identity of a trained point: its result config and the results version."""
    return _digest({"results_version": version, "config": result_config(cfg)})


def zero_shot_hash(cfg: DictConfig, suite: str, version: int = RESULTS_VERSION) -> str:
    """The identity of an initializer's zero-shot evaluation on one suite: the model, the
    training corpus (the embedded tokenizer is trained on it, pruned vocabularies are taken from
    it), the suite (``eval.suites.<suite>``) and the encoding precision; not the training
    schedule, sampling or data scale. One run per suite: points that evaluate on different sets of
    suites share the evaluations they have in common."""
    config = result_config(cfg, ("model", "data", "eval"))
    identity = {
        "model": config["model"], "corpus": (config.get("data") or {}).get("corpus"),
        "suite": (config["eval"].get("suites") or {}).get(suite), "precision": config["eval"].get("precision"),
    }
    return _digest({"results_version": version, "zero-shot": identity})


@lru_cache(maxsize=1)
def provenance_tags() -> dict[str, str]:
    """Results version, package version and the git commit of the code that ran (``+dirty``)."""
    tags = {RESULTS_VERSION_TAG: str(RESULTS_VERSION), PACKAGE_VERSION_TAG: __version__}
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "hybridsweep"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        tags[COMMIT_TAG] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        tags[COMMIT_TAG] = "unknown (not a git checkout)"
    return tags


# ---------------------------------------------------------------------------------------------
# Logging into one run
def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """Dotted keys of a nested mapping, e.g. ``{"sampling.mix_ratio": "auto"}``."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:_PARAM_LIMIT]
    return flat


class _LoggedSteps:
    """The last step a run holds for each metric key; a (key, step) at or below it is a replay.

    A resumed point recomputes, bit for bit, the steps its killed process had logged past the
    last checkpoint; dropping them keeps every step of the run's history exactly once.
    """

    def __init__(self, store: MlflowClient | None = None, run_id: str | None = None):
        self.last: dict[str, int] = {}
        if store is not None and run_id is not None:
            for key in store.get_run(run_id).data.metrics:
                self.last[key] = max(m.step for m in store.get_metric_history(run_id, key))

    def new(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        return {key: value for key, value in metrics.items() if step > self.last.get(key, -1)}


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger writing into a run that a :class:`RunTracker` owns.

    Asynchronous: the training curve is queued and written by MLflow's background thread, so no
    step waits on the store. Steps a resumed run already holds are not logged again. The end of
    ``fit`` only flushes the queue: Lightning would mark the run FINISHED there, yet evaluation is
    still to come (a kill during it must leave a run that resume reopens); the tracker sets the
    final status when the point is complete.
    """

    def __init__(self, logged: _LoggedSteps, **kwargs):
        super().__init__(synchronous=False, log_model=False, experiment_name=None, **kwargs)
        self._logged = logged

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        fresh = self._logged.new(metrics, step or 0)
        if fresh:
            super().log_metrics(fresh, step)

    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            self.experiment._tracking_client.store.flush_async_logging()


class _Heartbeat(threading.Thread):
    """Renews a run's heartbeat tag every ``interval`` seconds until stopped."""

    def __init__(self, uri: str, run_id: str, interval: float):
        super().__init__(daemon=True, name="hybridsweep-heartbeat")
        self.uri, self.run_id, self.interval = uri, run_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        own = MlflowClient(self.uri)  # its own client: the main thread keeps logging meanwhile
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                own.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")


class RunTracker:
    """One MLflow run to log into, or none (``run_id=None``: every call does nothing), which is
    what ranks other than zero hold."""

    def __init__(self, uri: str | None = None, run_id: str | None = None, heartbeat_s: float | None = None,
                 resumed: bool = False, system_metrics: bool = False):
        """``resumed``: the run existed, so steps it holds are replays; ``heartbeat_s``: renew the
        claim that often; ``system_metrics``: sample MLflow's system metrics into the run."""
        self.uri, self.run_id = uri, run_id
        self.client = client(uri) if uri else None
        self._logged = _LoggedSteps(self.client, run_id) if run_id and resumed else _LoggedSteps()
        self._resumed = resumed
        self._heartbeat = self._system = None
        if run_id and heartbeat_s:
            self._heartbeat = _Heartbeat(uri, run_id, heartbeat_s)
            self._heartbeat.start()
        if run_id and system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=uri)
            self._system.start()

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, kind, error, trace) -> None:
        """FINISHED when the block completes; on an exception the traceback goes to
        ``traceback.txt`` and the run ends FAILED, or KILLED when the process was told to stop
        (Ctrl-C; a ``SystemExit`` such as submitit's exit after requeueing a preempted SLURM job or
        Lightning's on SIGTERM), which the next attempt resumes rather than starting over."""
        if error is not None:
            with contextlib.suppress(Exception):
                self.log_text("".join(traceback.format_exception(kind, error, trace)), "traceback.txt")
            self.finish("KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED")
        else:
            self.finish("FINISHED")

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def lightning_logger(self) -> RunLogger | bool:
        if not self.active:
            return False
        return RunLogger(self._logged, tracking_uri=self.uri, run_id=self.run_id)

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log ``params``; a resumed run keeps the values it first logged (MLflow refuses to change
        a param), and those that differ now, necessarily outside the identity (data and cache
        locations, thread count), are named in the log."""
        if not self.active:
            return
        values = {k: str(v)[:_PARAM_LIMIT] for k, v in params.items()}
        if self._resumed:
            before = self.client.get_run(self.run_id).data.params
            changed = sorted(k for k, v in values.items() if k in before and before[k] != v)
            if changed:
                log.info("resumed run %s keeps its first values of %s", self.run_id, ", ".join(changed))
            values = {k: v for k, v in values.items() if k not in before}
        items = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start: start + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, prefix: str = "") -> None:
        if not self.active:
            return
        named = self._logged.new({f"{prefix}{k}": v for k, v in metrics.items()}, step)
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in named.items()]
        for start in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start: start + _METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        if self.active:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_config(self, cfg: DictConfig) -> None:
        self.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def log_text(self, text: str, name: str) -> None:
        if self.active:
            self.client.log_text(self.run_id, text, name)

    def log_figure(self, figure, name: str) -> None:
        if self.active:
            self.client.log_figure(self.run_id, figure, name)

    def log_frame(self, frame: pd.DataFrame, name: str, folder: str | None = None, index: bool = False,
                  float_format: str = "%.6g") -> None:
        """A table as a CSV artifact ``[folder/]<name>`` (gzipped when ``name`` ends in ``.gz``)."""
        if not self.active:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=index, float_format=float_format)
            self.client.log_artifact(self.run_id, str(path), folder)

    def log_matrix(self, matrix: pd.DataFrame, name: str, title: str, folder: str | None = None) -> None:
        """A language-pair matrix as ``[folder/]<name>.csv`` and an annotated heatmap ``<name>.png``."""
        if not self.active:
            return
        self.log_frame(matrix, f"{name}.csv", folder, index=True, float_format="%.4f")
        figure = heatmap(matrix, title)
        self.log_figure(figure, f"{folder}/{name}.png" if folder else f"{name}.png")
        plt.close(figure)

    def log_artifacts(self, directory: str | Path, folder: str | None = None) -> None:
        if self.active:
            self.client.log_artifacts(self.run_id, str(directory), folder)

    def log_model(self, folder: str | Path, name: str, model_type: str, params: Mapping[str, str],
                  step: int = 0) -> LoggedModel | None:
        """The files of ``folder`` as an MLflow logged model of this run: created in the run's
        experiment with ``source_run_id`` this run (``mlflow.search_logged_models`` finds it),
        listed among the run's outputs at ``step``, READY once its files are stored (FAILED if
        storing them failed)."""
        if not self.active:
            return None
        experiment = self.client.get_run(self.run_id).info.experiment_id
        model = self.client.create_logged_model(experiment, name=name, source_run_id=self.run_id,
                                                model_type=model_type, params=dict(params))
        try:
            self.client.log_model_artifacts(model.model_id, str(folder))
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
        return self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)

    def copy_metrics(self, source_run: Run, prefix: str, step: int = 0) -> None:
        """The latest value of each metric of ``source_run``, logged here under ``prefix``."""
        self.log_metrics(source_run.data.metrics, step=step, prefix=prefix)

    def finish(self, status: str = "FINISHED") -> None:
        """Stop the heartbeat and close the run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self._heartbeat is not None:
            self._heartbeat.stopped.set()
        if self._system is not None:
            self._system.finish()
        if self.active:
            self.client.set_terminated(self.run_id, status)


# ---------------------------------------------------------------------------------------------
# Claims and the skip/resume decision
@dataclass(frozen=True)
class ClaimSettings:
    """How claims behave (``resume.*`` in the config)."""

    enabled: bool = True
    """False: never skip or resume; every start is a new run."""
    heartbeat_s: float = 30.0
    claim_expiry_s: float = 120.0
    claim_settle_s: float = 2.0

    @classmethod
    def from_config(cls, resume: DictConfig) -> ClaimSettings:
        return cls(bool(resume.enabled), float(resume.heartbeat_s), float(resume.claim_expiry_s),
                   float(resume.claim_settle_s))


@dataclass
class Decision:
    """What to do with one point (or zero-shot evaluation), as rank zero decided it.

    ``state``: ``done`` (``run_id`` finished it earlier), ``busy`` (``run_id`` is live in another
    process), or ``claimed`` (this process works on ``run_id``; ``resumed`` when the run existed).
    """

    state: str
    run_id: str
    resumed: bool = False

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def busy(self) -> bool:
        return self.state == "busy"


def _claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_live(run: Run, settings: ClaimSettings, now: float | None = None) -> bool:
    """Whether a RUNNING run is being worked on: a claim whose heartbeat is fresh and, when it was
    made on this host, whose process still exists."""
    claim = run.data.tags.get(CLAIM_TAG)
    if run.info.status != "RUNNING" or not claim:
        return False
    beat = float(run.data.tags.get(HEARTBEAT_TAG, 0.0))
    if (now or time.time()) - beat > settings.claim_expiry_s:
        return False
    host, pid, _ = claim.split(":", 2)
    return host != socket.gethostname() or _process_alive(int(pid))


def _local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store (``sqlite:///...``, ``file:...`` or a path); None for a server."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri[len("sqlite:///"):]).expanduser().resolve()
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or uri).expanduser().resolve()
    return None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[bool]:
    """A file lock beside a local store (yields True), or nothing for a server (yields False)."""
    path = _local_store_path(uri)
    if path is None:
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".hybridsweep.lock"):
        yield True


def _runs_of(store: MlflowClient, experiment: str, role: str, digest: str) -> list[Run]:
    """Runs of ``experiment`` with ``role`` and identity ``digest``, newest first."""
    return store.search_runs(
        [experiment_id(store, experiment)],
        f"tags.`{HASH_TAG}` = '{digest}' and tags.`{ROLE_TAG}` = '{role}'",
        order_by=["attributes.start_time DESC"],
    )


def _decide(store: MlflowClient, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
            settings: ClaimSettings, me: str) -> tuple[Decision, bool]:
    """One look at the point's runs and, when nobody works on it, this process's claim:
    (decision, whether a new run was created for it)."""
    stamp = {CLAIM_TAG: me, HEARTBEAT_TAG: f"{time.time():.3f}"}
    runs = _runs_of(store, experiment, role, digest) if settings.enabled else []
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if finished:
        return Decision("done", finished[0].info.run_id), False
    live = [run for run in runs if claim_is_live(run, settings)]
    if live:
        return Decision("busy", live[0].info.run_id), False
    stale = [run for run in runs if run.info.status in ("RUNNING", "KILLED")]
    if stale:
        run_id = stale[0].info.run_id
        store.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, **stamp}.items()])
        store.update_run(run_id, status="RUNNING")
        return Decision("claimed", run_id, resumed=True), False
    all_tags = {**tags, **provenance_tags(), HASH_TAG: digest, ROLE_TAG: role, **stamp}
    run_id = store.create_run(experiment_id(store, experiment), run_name=run_name, tags=all_tags).info.run_id
    return Decision("claimed", run_id), True


_JITTER = random.Random()
"""Its own generator: a claim must not move the global random state a point is seeded with."""


def claim_run(uri: str, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
              settings: ClaimSettings) -> Decision:
    """Skip, leave, resume or start the run of ``digest`` (module docstring), claiming it when
    this process is to work on it.

    Without a lock (a tracking server), a claim holds only once, ``claim_settle_s`` after it was
    written, it is the one live claim of the point: any write that landed before it is then
    visible, and any later contender sees it and leaves. Contenders that see each other all
    withdraw and retry after a random pause, so one of them goes on.
    """
    store = client(uri)
    me = _claimant()
    while True:
        with _store_lock(uri) as exact:
            decision, created = _decide(store, experiment, role, digest, run_name, tags, settings, me)
        if exact or decision.state != "claimed":
            return decision
        time.sleep(settings.claim_settle_s)
        live = [run for run in _runs_of(store, experiment, role, digest) if claim_is_live(run, settings)]
        if [(run.info.run_id, run.data.tags.get(CLAIM_TAG)) for run in live] == [(decision.run_id, me)]:
            return decision
        if created:
            store.delete_run(decision.run_id)
        elif any(run.info.run_id == decision.run_id and run.data.tags.get(CLAIM_TAG) == me for run in live):
            store.set_tag(decision.run_id, HEARTBEAT_TAG, "0")  # withdraw from the reopened run
        time.sleep(_JITTER.uniform(0, 2 * settings.claim_settle_s))


def wait_for(uri: str, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
             settings: ClaimSettings, poll_s: float = 5.0) -> Decision:
    """:func:`claim_run` until the run is done or claimed by this process: while another process
    works on it, wait for it to finish (or for its claim to go stale)."""
    while True:
        decision = claim_run(uri, experiment, role, digest, run_name, tags, settings)
        if not decision.busy:
            return decision
        time.sleep(poll_s)


def _agent_store():
    """The key-value store that torchrun's agent serves its workers at MASTER_ADDR:MASTER_PORT, or
    None when this process was not started by torchrun. Ranks that torchrun starts on several
    nodes share no environment: rank zero hands them its decisions through this store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed import TCPStore

    # Rank zero may wait for another process's evaluation before it decides: the others wait too.
    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                    timeout=timedelta(hours=6))


def share_decision(role: str, digest: str, decide) -> Decision:
    """Rank zero calls ``decide()`` and leaves the result in the environment, which the launcher
    copies into the ranks it starts; the other ranks read it from there. Under torchrun (ranks on
    several nodes, started by their agents) it goes through the agents' store instead."""
    key = _DECISION_ENV.format(role=role.replace("-", "_"), digest=digest)
    store = _agent_store() if key not in os.environ else None
    # A restarted group (torchrun --max-restarts) decides again.
    store_key = f"hybridsweep/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{key}"
    if is_global_zero():
        decision = decide()
        os.environ[key] = json.dumps(asdict(decision))
        if store is not None:
            store.set(store_key, os.environ[key])
        return decision
    if store is not None:
        return Decision(**json.loads(store.get(store_key)))
    if key not in os.environ:
        raise RuntimeError(
            f"rank {rank_zero_only.rank} has no decision from rank zero for {role} {digest} (${key} unset): "
            "ranks must be started by the Trainer of a rank-zero process (trainer.devices=N) or by torchrun"
        )
    return Decision(**json.loads(os.environ[key]))


def get_run(uri: str, run_id: str) -> Run:
    return client(uri).get_run(run_id)


def open_run(cfg: DictConfig, role: str, digest: str, run_name: str, tags: Mapping[str, str],
             wait: bool = False) -> tuple[Decision, RunTracker]:
    """The decision for the run of ``digest`` (made on rank zero, shared with the other ranks) and
    the tracker to log into it: a live one on rank zero when the run is claimed, else one that
    does nothing. ``wait``: while another process works on it, wait rather than leave it."""
    uri = tracking_uri(cfg.tracking.tracking_uri)
    settings = ClaimSettings.from_config(cfg.resume)
    claim = wait_for if wait else claim_run
    decision = share_decision(role, digest, lambda: claim(uri, cfg.tracking.experiment, role, digest, run_name, tags, settings))
    if decision.state != "claimed" or not is_global_zero():
        return decision, RunTracker()
    return decision, RunTracker(uri, decision.run_id, settings.heartbeat_s, decision.resumed, cfg.tracking.system_metrics)


# ---------------------------------------------------------------------------------------------
# Sweeps: the parent run of a multirun and its children
def find_parent(uri: str, experiment: str, sweep_dir: str) -> str | None:
    """The parent run of the multirun writing to ``sweep_dir``, if one was opened."""
    store = client(uri)
    found = store.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = store.search_runs(
        [found.experiment_id], f"tags.`{ROLE_TAG}` = 'parent' and tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_parent(uri: str, experiment: str, digest: str, sweep_dir: str, name: str, definition: dict) -> str:
    """The parent run of a multirun: the one of an earlier invocation of the same sweep definition
    (``digest``), reopened, or a new one holding the definition."""
    store = client(uri)
    experiment_key = experiment_id(store, experiment)
    earlier = store.search_runs(
        [experiment_key], f"tags.`{ROLE_TAG}` = 'parent' and tags.`{SWEEP_HASH_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    tags = {ROLE_TAG: "parent", SWEEP_HASH_TAG: digest, SWEEP_DIR_TAG: sweep_dir, **provenance_tags()}
    if earlier:
        run_id = earlier[0].info.run_id
        store.update_run(run_id, status="RUNNING")
        store.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return run_id
    run_id = store.create_run(experiment_key, run_name=name, tags=tags).info.run_id
    store.log_batch(run_id, params=[Param(f"sweep.{axis}", str(v)[:_PARAM_LIMIT]) for axis, v in definition["axes"].items()])
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


# ---------------------------------------------------------------------------------------------
# Reading runs back (reports)
def finished_runs(experiment: str, roles: Iterable[str] = ("point", "zero-shot")) -> pd.DataFrame:
    """Finished runs of ``experiment`` with one of ``roles`` (runs from before roles were tagged
    count as points), as ``mlflow.search_runs`` returns them; empty when the experiment is new."""
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    if runs.empty:
        return runs
    role = runs.get(f"tags.{ROLE_TAG}", pd.Series(index=runs.index, dtype=object))
    untagged_point = role.isna() & runs.get(f"tags.{REPORT_TAG}", pd.Series(index=runs.index, dtype=object)).isna()
    keep = role.isin(list(roles)) | (untagged_point if "point" in roles else False)
    return runs[keep].reset_index(drop=True)


def read_frame(run_id: str, path: str, dtypes: Mapping[str, object] | None = None) -> pd.DataFrame | None:
    """A CSV artifact of a run as a DataFrame, or None when the run has no such artifact."""
    store = client(mlflow.get_tracking_uri())
    folder = str(Path(path).parent) if "/" in path else None
    if path not in {a.path for a in store.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_csv(store.download_artifacts(run_id, path, tmp), dtype=dict(dtypes or {}))


def logged_model(uri: str, run_id: str, model_type: str) -> LoggedModel:
    """The newest READY logged model of ``model_type`` from run ``run_id``; a ``LookupError``
    naming the run when it has none."""
    store = client(uri)
    try:
        run = store.get_run(run_id)
    except MlflowException as error:
        raise LookupError(f"no run {run_id!r} in the tracking store {uri}") from error
    models = store.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    ready = [m for m in models if m.status == LoggedModelStatus.READY and m.model_type == model_type]
    if not ready:
        raise LookupError(
            f"run {run_id} ({run.info.run_name}) has no logged {model_type} model: it was trained with "
            f"tracking.log_model=false, or before models were logged, or it did not finish"
        )
    return max(ready, key=lambda m: m.creation_timestamp)


def download_model(uri: str, model: LoggedModel, directory: str | Path) -> Path:
    """The files of a logged model, downloaded into ``directory``."""
    mlflow.artifacts.download_artifacts(artifact_uri=model.model_uri, dst_path=str(directory), tracking_uri=uri)
    return Path(directory)


def log_report(experiment: str, name: str, files: Iterable[Path], tags: Mapping[str, str], sweep: str | None = None) -> str:
    """One run ``report:<name>`` in ``experiment`` holding a report's files; its id.

    The same files also go to the parent run of the multirun that wrote to ``sweep`` (a sweep
    directory), under ``report/<name>/``, so the sweep's own entry shows what was built from it.
    """
    uri = mlflow.get_tracking_uri()
    store = client(uri)
    files = list(files)
    run_id = store.create_run(experiment_id(store, experiment), run_name=f"report:{name}",
                              tags={REPORT_TAG: name, ROLE_TAG: "report", **provenance_tags(), **tags}).info.run_id
    for path in files:
        store.log_artifact(run_id, str(path))
    store.set_terminated(run_id, "FINISHED")
    parent = find_parent(uri, experiment, sweep) if sweep else None
    if parent is not None:
        for path in files:
            store.log_artifact(parent, str(path), f"report/{name}")
    return run_id
