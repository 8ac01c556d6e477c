"""MLflow tracking: one run per training point, its params, config, metrics and figures.

The run is created here and handed to Lightning's own ``MLFlowLogger`` (by run id), so that the
training curve goes through Lightning's logging while the evaluation results, the resolved config
and the figures are logged with the same client into the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

# MLflow caps a param value at 6000 characters and a batch at 100 params / 1000 metrics.
_PARAM_LIMIT, _PARAM_BATCH, _METRIC_BATCH = 6000, 100, 1000


def tracking_uri(configured: str) -> str:
    """``MLFLOW_TRACKING_URI`` wins over the config, as MLflow users expect."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


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


class TrackedRunLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing into a run that :class:`RunTracker` owns.

    At the end of ``fit`` Lightning's logger marks its run FINISHED, yet evaluation is still to
    come: a point killed there would leave a FINISHED run without results, which resume would then
    skip as done. Here the end of ``fit`` only flushes the queued training curve; the tracker sets
    the final status when the point is complete.
    """

    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            self.experiment._tracking_client.store.flush_async_logging()


class RunTracker:
    """One MLflow run: create it, log into it, and close it with its final status."""

    def __init__(
        self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ):
        """Creates a run, or with ``run_id`` reopens that one (status back to RUNNING) to go on logging."""
        self.uri = tracking_uri(uri)
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def lightning_logger(self) -> MLFlowLogger:
        # Asynchronous: the training curve is queued and written by MLflow's background thread, so
        # no training step waits on the database; the end of fit flushes the queue.
        return TrackedRunLogger(
            tracking_uri=self.uri, run_id=self.run_id, experiment_name=None, log_model=False, synchronous=False
        )

    def log_params(self, params: Mapping[str, object]) -> None:
        items = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, prefix: str = "") -> None:
        now = int(time.time() * 1000)
        items = [Metric(f"{prefix}{k}", float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + _METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_config(self, cfg: DictConfig) -> None:
        self.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_matrix(self, matrix: pd.DataFrame, name: str, title: str, folder: str | None = None) -> None:
        """A language-pair matrix as ``[folder/]<name>.csv`` and an annotated heatmap ``<name>.png``."""
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / f"{name}.csv"
            matrix.to_csv(csv, float_format="%.4f")
            self.client.log_artifact(self.run_id, str(csv), folder)
            figure = heatmap(matrix, title)
            self.client.log_figure(self.run_id, figure, f"{folder}/{name}.png" if folder else f"{name}.png")
            plt.close(figure)

    def log_frame(self, frame: pd.DataFrame, name: str, folder: str | None = None) -> None:
        """A table as a gzipped CSV artifact ``[folder/]<name>`` (``name`` ends in ``.csv.gz``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False, float_format="%.6g")
            self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def heatmap(matrix: pd.DataFrame, title: str) -> plt.Figure:
    """An annotated heatmap of a query-language x candidate-language matrix."""
    size = 1.0 + 0.55 * max(matrix.shape)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    axes.set_xticks(range(matrix.shape[1]), matrix.columns)
    axes.set_yticks(range(matrix.shape[0]), matrix.index)
    axes.set_xlabel(f"{matrix.columns.name or 'candidate'} language")
    axes.set_ylabel(f"{matrix.index.name or 'query'} language")
    for (i, j), value in pd.DataFrame(matrix.to_numpy(dtype=float)).stack().items():
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure
