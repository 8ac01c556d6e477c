"""Logging into one MLflow run: :class:`RunTracker` (params, metrics, tables, figures, models),
Lightning's logger writing the training curve into the same run (:class:`RunLogger`), and the
heartbeat that keeps the run's claim live (:mod:`hybridsweep.tracking.claims`) while it trains.

The tracker draws nothing: figures come drawn by their owners (the evaluation's heatmaps) and
are stored as they are.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from hybridsweep.tracking.store import HEARTBEAT_TAG, PARAM_LIMIT, client

log = logging.getLogger(__name__)

# MLflow caps a batch at 100 params / 1000 metrics.
_PARAM_BATCH, _METRIC_BATCH = 100, 1000


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """Dotted keys of a nested mapping, e.g. ``{"sampling.mix_ratio": "auto"}``."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_LIMIT]
    return flat


class _LoggedSteps:
    """The steps a run holds for each metric key; a (key, step) it holds is a replay.

    A resumed point recomputes, bit for bit, the steps its killed process had logged past the
    last checkpoint; dropping them keeps every step of the run's history exactly once. The steps
    held are a set, not a last step: asynchronous writes land out of order, so a killed process
    can leave step 16 in the store and not step 15, which the resumed one must still log.
    """

    def __init__(self, store: MlflowClient | None = None, run_id: str | None = None):
        self.held: dict[str, set[int]] = {}
        if store is not None and run_id is not None:
            for key in store.get_run(run_id).data.metrics:
                self.held[key] = {m.step for m in store.get_metric_history(run_id, key)}

    def new(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        return {key: value for key, value in metrics.items() if step not in self.held.get(key, ())}


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger writing into a run that a :class:`RunTracker` owns.

    Asynchronous: the training curve is queued and written by MLflow's background threads, so no
    step waits on the store. The queue is flushed before every checkpoint
    (:class:`~hybridsweep.callbacks.CurveBeforeCheckpoint`): a resume recomputes only the steps
    after its checkpoint, so those before it must be in the store by then. Steps a resumed run
    already holds are not logged again. The end of ``fit`` only flushes the queue: Lightning would
    mark the run FINISHED there, yet evaluation is still to come (a kill during it must leave a
    run that resume reopens); the tracker sets the final status when the point is complete.
    """

    def __init__(self, logged: _LoggedSteps, **kwargs):
        super().__init__(synchronous=False, log_model=False, experiment_name=None, **kwargs)
        self._logged = logged

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        fresh = self._logged.new(metrics, step or 0)
        if fresh:
            super().log_metrics(fresh, step)

    def flush(self) -> None:
        """Wait until every queued step is in the store."""
        if self._initialized:
            self.experiment._tracking_client.store.flush_async_logging()

    def finalize(self, status: str = "success") -> None:
        self.flush()


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
        values = {k: str(v)[:PARAM_LIMIT] for k, v in params.items()}
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

    def log_matrix(self, matrix: pd.DataFrame, name: str, figure, folder: str | None = None) -> None:
        """A language-pair matrix as ``[folder/]<name>.csv`` beside its figure (drawn by the
        caller) as ``[folder/]<name>.png``."""
        if not self.active:
            return
        self.log_frame(matrix, f"{name}.csv", folder, index=True, float_format="%.4f")
        self.log_figure(figure, f"{folder}/{name}.png" if folder else f"{name}.png")

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

