"""One point of a sweep, seen from its job: its run name and tags, its run (claimed, or skipped
with the reason in ``result.json``), where its time went, its thread budget, failure isolation,
and its own process tree when it trains on several processes.

Under DDP Lightning starts the other ranks by running the command line again with
``LOCAL_RANK`` set. A multirun job cannot be re-run that way (the command line is the whole
sweep, and the launcher starts ranks only once per process), so a multirun point that needs
several processes runs as a single run in a child process (:func:`run_point`), whose Trainer
then starts its ranks as usual; the job hands it its name and tags through the environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from hybridsweep.encoders.compile import compile_seconds
from hybridsweep.machine import describe_machine, usable_cores
from hybridsweep.precision import accelerator_device
from hybridsweep.sweep_runs import find_parent, list_in_sweep, parent_axes
from hybridsweep.tracking.claims import Decision, open_run
from hybridsweep.tracking.identity import config_hash
from hybridsweep.tracking.store import (
    AXES_TAG,
    MACHINE_TAG,
    OVERRIDES_TAG,
    POINT_ROLE,
    RESUMED_TAG,
    SWEEP_TAG,
    client,
    is_global_zero,
    tracking_uri,
)
from hybridsweep.tracking.tracker import RunTracker

log = logging.getLogger(__name__)

# Short names of the sweep axes in run names: "bs=128,mix=auto,scale=0.25,seed=1".
SHORT_NAMES = {
    "batch_size": "bs", "sampling.mix_ratio": "mix", "data.scale": "scale", "sampling": "strategy",
    "sampling.strategy": "strategy", "seed": "seed",
}
RUN_NAME_LIMIT = 250
"""Characters of a run name that MLflow's database stores hold (``runs.name`` is a VARCHAR(250):
PostgreSQL and MySQL refuse a longer name, SQLite does not check)."""
FAILURE_FILE = "failure.txt"
"""Written into a job's output directory by a point that raised; the sweep's summary reads it."""
RESULT_FILE = "result.json"
"""Written into a point's output directory: its run and main metric."""
MAIN_METRIC = "map_full/multilingual"
_CONTEXT_ENV = "HYBRIDSWEEP_POINT_CONTEXT"


@dataclass
class PointContext:
    """Where a point stands in its sweep: its run name, tags and output directory."""

    run_name: str = "default"
    tags: dict[str, str] = field(default_factory=dict)
    output_dir: str = "outputs"


def _parsed(overrides: Iterable[str]) -> list[tuple[str, str]]:
    return [(o.get_key_element().lstrip("+~"), o.get_value_element_as_str())
            for o in OverridesParser.create().parse_overrides(list(overrides))]


def run_name(overrides: list[str], axes: Iterable[str] | None, seed: int) -> str:
    """The swept keys' values (short names, in :data:`SHORT_NAMES` order, then the others) and the
    seed, e.g. ``bs=128,seed=0``; without a sweep (``axes=None``), every override and the seed.
    At most :data:`RUN_NAME_LIMIT` characters: a longer list is cut before the seed."""
    values = dict(_parsed(overrides))
    keys = list(axes) if axes is not None else [k for k in values if k.split(".")[0] != "hydra"]
    keys = [k for k in keys if k in values and k != "seed"]
    order = list(SHORT_NAMES)
    keys.sort(key=lambda k: (order.index(k) if k in SHORT_NAMES else len(order), k))
    name = ",".join([*(f"{SHORT_NAMES.get(k, k)}={values[k]}" for k in keys), f"seed={seed}"])
    if len(name) > RUN_NAME_LIMIT:  # cut before the seed, marked; the overrides tag keeps them all
        tail = f"...,seed={seed}"
        name = name[: RUN_NAME_LIMIT - len(tail)] + tail
    return name


def point_context(cfg: DictConfig) -> PointContext:
    """The point's name, tags and output directory: handed down by the multirun job that started
    this process, else read from Hydra's runtime state (on global rank zero; the other ranks
    never log)."""
    if _CONTEXT_ENV in os.environ:
        return PointContext(**json.loads(os.environ[_CONTEXT_ENV]))
    if not HydraConfig.initialized():
        return PointContext(run_name=run_name([], None, cfg.seed))
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    tags = {OVERRIDES_TAG: " ".join(overrides) or "(defaults)"}
    axes = None
    if hydra_cfg.mode == RunMode.MULTIRUN and is_global_zero():
        uri = tracking_uri(cfg.tracking.tracking_uri)
        tags[SWEEP_TAG] = hydra_cfg.sweep.dir
        parent = find_parent(uri, cfg.tracking.experiment, hydra_cfg.sweep.dir)
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent
            axes = parent_axes(uri, parent)
            values = dict(_parsed(overrides))
            tags[AXES_TAG] = json.dumps({axis: values.get(axis) for axis in axes})
    return PointContext(run_name(overrides, axes, cfg.seed), tags, hydra_cfg.runtime.output_dir)


@dataclass
class PointRun:
    """A training point's MLflow run, as global rank zero decided it
    (:mod:`hybridsweep.tracking.claims`): claimed by this process, or to be skipped."""

    cfg: DictConfig
    context: PointContext
    digest: str
    """The point's identity (:func:`~hybridsweep.tracking.identity.config_hash`)."""
    decision: Decision
    tracker: RunTracker
    """The run to log into: live on rank zero when the run is claimed, else one that does nothing."""

    @classmethod
    def open(cls, cfg: DictConfig) -> PointRun:
        context = point_context(cfg)
        digest = config_hash(cfg)
        decision, tracker = open_run(cfg, POINT_ROLE, digest, context.run_name, context.tags)
        return cls(cfg, context, digest, decision, tracker)

    @property
    def claimed(self) -> bool:
        return self.decision.state == "claimed"

    @property
    def checkpoint_dir(self) -> Path:
        """``<resume.checkpoint_dir>/<identity>/<run id>``: stable across re-runs, so a resumed run finds its checkpoints."""
        return Path(self.cfg.resume.checkpoint_dir).expanduser() / self.digest / self.decision.run_id

    @property
    def resume_from(self) -> str | None:
        """The ``ckpt_path`` of ``Trainer.fit``: the last checkpoint of a resumed run."""
        return "last" if self.decision.resumed else None

    def _metric(self) -> float:
        run = client(tracking_uri(self.cfg.tracking.tracking_uri)).get_run(self.decision.run_id)
        return run.data.metrics.get(MAIN_METRIC, math.nan)

    def skip(self) -> float:
        """A point this process does not train: finished earlier (its metric; listed as a member of
        this process's sweep) or being trained by another process (NaN). Either way ``result.json``
        says so, so that the multirun job relaying this process's result never reads another's."""
        if self.decision.done:
            log.info("%s: finished earlier in run %s, skipped", self.context.run_name, self.decision.run_id)
            parent = self.context.tags.get(MLFLOW_PARENT_RUN_ID)
            if parent and is_global_zero():
                list_in_sweep(tracking_uri(self.cfg.tracking.tracking_uri), self.decision.run_id, parent)
            metric = self._metric()
        else:
            log.warning("%s: run %s is being trained by another process; left to it", self.context.run_name,
                        self.decision.run_id)
            metric = math.nan
        if is_global_zero():
            write_result(self.context.output_dir, self.decision.run_id, metric)
        return metric

    def finish(self) -> float:
        """After the run is closed: its checkpoints deleted (unless ``resume.keep_checkpoints``), its
        metric written to ``result.json`` and returned (NaN on ranks other than zero)."""
        if not is_global_zero():
            return math.nan
        if not self.cfg.resume.keep_checkpoints:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        metric = self._metric()
        write_result(self.context.output_dir, self.decision.run_id, metric)
        return metric


class PhaseClock:
    """Where a point's time went, logged as ``time/*_s``: ``fit`` (``Trainer.fit``), ``eval`` (the
    evaluations, before and after training) and ``overhead``, the rest of the point since the
    clock started (building data, tokenizer and model, MLflow run and logging, compilation), which
    a sweep pays once per point; the three add up to the point's wall time.

    ``compile`` is the part of the overhead spent in ``torch.compile`` (``model.compile``):
    compilation is lazy, so it happens inside the first forward and backward passes of fit and
    eval, and is measured there by Dynamo's own account
    (:func:`~hybridsweep.encoders.compile.compile_seconds`) and moved out of ``fit`` and ``eval``
    into ``overhead``; 0 for an eager model.
    """

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds = {"fit": 0.0, "eval": 0.0, "compile": 0.0}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Add the block's wall time to ``phase``, less what ``torch.compile`` spent in it."""
        started, compiling = time.perf_counter(), compile_seconds()
        try:
            yield
        finally:
            compile_time = compile_seconds() - compiling
            self.seconds[phase] += time.perf_counter() - started - compile_time
            self.seconds["compile"] += compile_time

    def log(self, tracker: RunTracker, step: int, resumed: bool) -> None:
        """The phases' seconds under ``time/``, and beside them the machine they ran on and
        whether this process resumed the run (then they time this process only)."""
        total = time.perf_counter() - self.started
        seconds = self.seconds
        tracker.log_metrics({"fit_s": seconds["fit"], "eval_s": seconds["eval"], "compile_s": seconds["compile"],
                             "overhead_s": total - seconds["fit"] - seconds["eval"]}, step=step, prefix="time/")
        tracker.set_tags({MACHINE_TAG: describe_machine(), RESUMED_TAG: str(resumed).lower()})


def threads_per_job() -> int:
    """Cores // parallel jobs of a joblib launcher (``n_jobs=-1``: one per core), else all cores;
    never more than ``OMP_NUM_THREADS`` where it is set. The cap matters on a shared machine: an
    OpenMP thread that waits at a barrier for a descheduled sibling spins, so a 2-thread point
    among other busy processes ran slower than a 1-thread one."""
    cores = usable_cores()
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        cores = min(cores, int(requested))
    if not HydraConfig.initialized():
        return cores
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return cores
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def training_processes(trainer: DictConfig) -> int:
    """How many processes ``trainer`` runs on (devices x nodes), read from the config alone, as
    Lightning counts them: ``devices: auto`` (or -1) is every visible GPU where the accelerator is
    CUDA (``auto`` picks CUDA wherever a GPU is visible), else one process."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, str) and devices != "auto":
        devices = [d for d in devices.split(",") if d.strip()]
    if devices == "auto" or devices == -1:
        on_cuda = accelerator_device(trainer.get("accelerator", "auto")).type == "cuda"
        count = torch.cuda.device_count() if on_cuda else 1
    else:
        count = len(devices) if not isinstance(devices, int) else devices
    return max(1, count) * int(trainer.get("num_nodes", 1))


def write_result(output_dir: str | Path, run_id: str | None, metric: float) -> None:
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / RESULT_FILE).write_text(json.dumps({"run_id": run_id, MAIN_METRIC: metric}))


def _entry_command() -> list[str]:
    """The command that started this process (module or script), as Lightning's launcher builds it."""
    import __main__

    if getattr(__main__, "__spec__", None) is None:
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", __main__.__spec__.name]


def _in_own_processes(cfg: DictConfig) -> float:
    """Run this multirun job's point as a single run in a child process, which starts its ranks."""
    hydra_cfg = HydraConfig.get()
    context = point_context(cfg)
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    command = [*_entry_command(), *overrides, f"hydra.run.dir={hydra_cfg.runtime.output_dir}"]
    env = {**os.environ, _CONTEXT_ENV: json.dumps(asdict(context))}
    result = Path(hydra_cfg.runtime.output_dir) / RESULT_FILE
    result.unlink(missing_ok=True)  # an earlier invocation's: the child writes this one's
    done = subprocess.run(command, env=env, cwd=hydra_cfg.runtime.cwd)
    if done.returncode != 0:
        raise RuntimeError(f"the point's processes exited with status {done.returncode}: {' '.join(command)}")
    return json.loads(result.read_text())[MAIN_METRIC] if result.is_file() else math.nan


def run_point(task: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Runs ``task(cfg)`` with :func:`threads_per_job` threads.

    In a multirun, a point on several processes runs in its own process tree, and a point that
    raises does not stop the sweep: its traceback goes to ``failure.txt`` in its output directory
    (the task has already closed its MLflow run as FAILED with the traceback as an artifact), it
    returns NaN, and the sweep callback makes the command exit non-zero at the end.
    """
    torch.set_num_threads(threads_per_job())
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return task(cfg)
    try:
        return _in_own_processes(cfg) if training_processes(cfg.trainer) > 1 else task(cfg)
    except Exception:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / FAILURE_FILE).write_text(traceback.format_exc())
        log.exception("point %s failed; the sweep goes on", HydraConfig.get().job.num)
        return math.nan
