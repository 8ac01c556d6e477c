"""Resume: a point is identified by a hash of its resolved config, and picked up where it stopped.

A point's MLflow run carries the tag ``hybridsweep.config_hash``. When the same point is started
again (the same command re-run after a crash, or a larger sweep that contains it):

- a FINISHED run with that hash means the point is done: it is skipped;
- a RUNNING run (its process was killed: nobody closed it) or a KILLED run (interrupted) is
  reopened, and Lightning resumes from that run's ``last.ckpt`` (``ckpt_path="last"``);
- a FAILED run, or none, means a fresh run (a failure stays on record with its traceback).

Exactness of a resume. Checkpoints are written at the end of every epoch and hold, besides the
weights, optimiser and scheduler, the random state of torch / numpy / python
(:class:`RngStateCheckpoint`), and the batch sampler draws epoch ``e`` from ``(seed, e)`` alone.
So the epochs after the checkpoint are recomputed bit for bit (with ``trainer.deterministic``),
and the metric steps the killed process had already logged past the checkpoint come out again
with the same values: :class:`ResumableTracker` drops every ``(key, step)`` the run already holds
(``step <= last logged step of that key``), so the run's history has each step exactly once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig, OmegaConf

from hybridsweep.sweep import member_tag
from hybridsweep.tracking import RunTracker, TrackedRunLogger, tracking_uri

HASH_TAG = "hybridsweep.config_hash"
# Keys that say where things are written or how fast, not what is computed.
_NOT_IDENTITY = ("cache_dir", "tracking", "resume", "data.num_workers")


def config_hash(cfg: DictConfig) -> str:
    """sha256 (first 16 hex digits) of the resolved config as sorted JSON, minus ``_NOT_IDENTITY``."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _LoggedSteps:
    """The last step a run holds for each metric key; a (key, step) at or below it is a replay."""

    def __init__(self, client: MlflowClient, run_id: str):
        keys = client.get_run(run_id).data.metrics
        self.last = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}

    def new(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        return {key: value for key, value in metrics.items() if step > self.last.get(key, -1)}


class _ResumingMLFlowLogger(TrackedRunLogger):
    """Lightning's MLflow logger that does not log again the steps a resumed run already holds."""

    def __init__(self, logged: _LoggedSteps, **kwargs):
        super().__init__(**kwargs)
        self._logged = logged

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        fresh = self._logged.new(metrics, step or 0)
        if fresh:
            super().log_metrics(fresh, step)


class ResumableTracker(RunTracker):
    """A :class:`RunTracker` that, reopening a run, skips the metric steps that run already holds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._logged = _LoggedSteps(self.client, self.run_id)

    def lightning_logger(self) -> MLFlowLogger:
        return _ResumingMLFlowLogger(
            self._logged, tracking_uri=self.uri, run_id=self.run_id, experiment_name=None, log_model=False
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, prefix: str = "") -> None:
        named = {f"{prefix}{key}": value for key, value in metrics.items()}
        super().log_metrics(self._logged.new(named, step), step=step)


class RngStateCheckpoint(Callback):
    """Stores the torch / numpy / python random state in each checkpoint and restores it on resume,
    so the dropout masks after a resume are those an uninterrupted run draws."""

    def state_dict(self) -> dict:
        # Tensors, lists and numbers only, so that torch.load(weights_only=True) accepts the checkpoint.
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        random.setstate(state_dict["python"])


@dataclass
class PointRun:
    """Where one point stands: ``done`` (a finished run to skip to) or a tracker to train into."""

    config_hash: str
    done: Run | None = None
    tracker: ResumableTracker | None = None
    resumed: bool = False
    checkpoint_dir: Path | None = None

    @property
    def ckpt_path(self) -> str | None:
        """``"last"`` on resume: Lightning then loads ``checkpoint_dir/last.ckpt`` when it exists."""
        return "last" if self.resumed else None


def find_point_runs(client: MlflowClient, experiment: str, digest: str) -> list[Run]:
    """Runs of ``experiment`` tagged with config hash ``digest``, newest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id], f"tags.`{HASH_TAG}` = '{digest}'", order_by=["attributes.start_time DESC"]
    )


def open_point_run(cfg: DictConfig, run_name: str, tags: Mapping[str, str]) -> PointRun:
    """Skip, resume or start the point ``cfg`` (see the module docstring for the rule)."""
    digest = config_hash(cfg)
    client = MlflowClient(tracking_uri(cfg.tracking.tracking_uri))
    runs = find_point_runs(client, cfg.tracking.experiment, digest) if cfg.resume.enabled else []
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if finished:
        parent = tags.get(MLFLOW_PARENT_RUN_ID)
        if parent and finished[0].data.tags.get(MLFLOW_PARENT_RUN_ID) != parent:
            # Done under an earlier sweep: list it in this sweep's summary too.
            client.set_tag(finished[0].info.run_id, member_tag(parent), "finished earlier")
        return PointRun(digest, done=finished[0])
    reopen = runs[0].info.run_id if runs and runs[0].info.status in ("RUNNING", "KILLED") else None
    tags = {**tags, HASH_TAG: digest}
    tracker = ResumableTracker(cfg.tracking.tracking_uri, cfg.tracking.experiment, run_name, tags, run_id=reopen)
    if reopen:
        tracker.set_tags(tags)  # the sweep that resumes it is now its sweep
    checkpoint_dir = Path(cfg.resume.checkpoint_dir).expanduser() / digest / tracker.run_id
    return PointRun(digest, tracker=tracker, resumed=reopen is not None, checkpoint_dir=checkpoint_dir)
