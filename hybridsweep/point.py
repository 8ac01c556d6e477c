"""One point of a sweep, seen from its job: its run name, tags, thread budget and failure isolation."""

from __future__ import annotations

import logging
import math
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from hybridsweep.sweep import FAILURE_FILE, find_parent
from hybridsweep.tracking import tracking_uri

log = logging.getLogger(__name__)

# Short names of the sweep axes in run names: "bs=128,mix=auto,scale=0.25,seed=1".
SHORT_NAMES = {
    "batch_size": "bs", "sampling.mix_ratio": "mix", "data.scale": "scale", "seed": "seed", "sampling.strategy": "strategy",
}
# Config groups that only select a preset or a launcher, not a value of the point.
_NOT_IN_NAME = ("sweep", "hydra")


def run_name(overrides: list[str]) -> str:
    """``key=value`` of each override, the axes of :data:`SHORT_NAMES` first and by their short names."""
    axes, others = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element().lstrip("+~")
        if key.split(".")[0] in _NOT_IN_NAME or key.split("/")[0] in _NOT_IN_NAME:
            continue
        part = f"{SHORT_NAMES.get(key, key)}={override.get_value_element_as_str()}"
        (axes if key in SHORT_NAMES else others).append((list(SHORT_NAMES).index(key) if key in SHORT_NAMES else 0, part))
    return ",".join(part for _, part in sorted(axes) + others) or "default"


def point_identity(cfg: DictConfig) -> tuple[str, dict[str, str], Path]:
    """Run name, tags (the parent run in a multirun) and output directory from Hydra's runtime state."""
    if not HydraConfig.initialized():
        return "default", {}, Path("outputs")
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    tags = {"overrides": " ".join(overrides) or "(defaults)"}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["sweep"] = hydra_cfg.sweep.dir
        tags["sweep_job"] = str(hydra_cfg.job.num)
        client = MlflowClient(tracking_uri(cfg.tracking.tracking_uri))
        parent = find_parent(client, cfg.tracking.experiment, hydra_cfg.sweep.dir)
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent
    return run_name(overrides), tags, Path(hydra_cfg.runtime.output_dir)


def threads_per_job() -> int:
    """Cores // parallel jobs of a joblib launcher (``n_jobs=-1``: one per core), else all cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not HydraConfig.initialized():
        return cores
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return cores
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def run_point(task: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Runs ``task(cfg)`` with :func:`threads_per_job` threads.

    In a multirun a point that raises does not stop the sweep: its traceback goes to
    ``failure.txt`` in its output directory (the task has already closed its MLflow run as
    FAILED with the traceback as an artifact), it returns NaN, and the sweep callback makes the
    command exit non-zero at the end.
    """
    torch.set_num_threads(threads_per_job())
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return task(cfg)
    try:
        return task(cfg)
    except Exception:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / FAILURE_FILE).write_text(traceback.format_exc())
        log.exception("point %s failed; the sweep goes on", HydraConfig.get().job.num)
        return math.nan
