"""Lightning callbacks of a training point (the ``callbacks`` config group builds them, and the
pipeline adds :class:`FitSummary` and :class:`CurveBeforeCheckpoint`).

Exactness of a resume: checkpoints hold, besides the weights, optimiser and scheduler, the random
state of torch / numpy / python (:class:`RngStateCheckpoint`) and what has been processed so far
(:class:`ComputeAccounting`), the data modules keep the training loader's position
(:class:`~hybridsweep.data.datamodule.ResumableTrainingData`), and the samplers draw epoch ``e``
from ``(seed, e)`` alone, so the steps after a checkpoint are recomputed bit for bit (with
``trainer.deterministic``), whether it was written at an epoch's end or in its middle.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from hybridsweep.tracking.tracker import RunLogger, RunTracker

PROGRESS_BAR = "progress_bar"
"""The key of ``cfg.callbacks`` that holds the progress bar, shared by training and evaluation."""


def progress_bars(cfg: DictConfig) -> list[Callback]:
    """The configured progress bar (``callbacks.progress_bar``), or none where the trainer shows
    none (``trainer.enable_progress_bar=false``, which Lightning refuses beside a bar callback)."""
    node = cfg.callbacks.get(PROGRESS_BAR)
    if node is None or not cfg.trainer.get("enable_progress_bar", True):
        return []
    return [instantiate(node)]


class RngStateCheckpoint(Callback):
    """Stores the torch / numpy / python random state in each checkpoint and restores it on resume,
    so the dropout masks after a resume are those an uninterrupted run draws.

    The state is set at the first training batch after the restore, not when the checkpoint is
    read: in between, the resumed process builds its loaders and reruns the validation a
    mid-epoch checkpoint was written in, which the uninterrupted run did before writing it. The
    uninterrupted run draws nothing between a checkpoint and its next batch: the training loaders
    take their worker seed from a generator of their own (:func:`loader_generator`).
    """

    def __init__(self):
        self.restored: dict | None = None

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.restored is not None:
            state, self.restored = self.restored, None
            torch.set_rng_state(state["torch"])
            name, keys, position, has_gauss, cached_gaussian = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
            random.setstate(state["python"])

    def state_dict(self) -> dict:
        # Tensors, lists and numbers only, so that torch.load(weights_only=True) accepts the checkpoint.
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict


def loader_generator() -> torch.Generator:
    """The generator a training loader draws its worker base seed from at each new iterator. The
    default, torch's global generator, would move the dropout stream at every epoch start, so a
    resume at an epoch's end could not land on the stream an uninterrupted run continues with.
    The workers draw nothing with it: the batches come from the seeded samplers."""
    return torch.Generator().manual_seed(0)


class ComputeAccounting(Callback):
    """What training processed, over all ranks: ``pairs`` (rows of the global batches) and
    ``tokens`` (non-padding tokens of both towers). Kept in checkpoints, so a resumed point
    reports the totals of one uninterrupted run; the optimizer steps are ``trainer.global_step``."""

    def __init__(self):
        self.pairs = 0
        self.tokens = 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        counts = torch.tensor([
            batch["query"]["input_ids"].shape[0],
            int(batch["query"]["attention_mask"].sum() + batch["passage"]["attention_mask"].sum()),
        ], dtype=torch.float64, device=module.device)
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        self.pairs += int(counts[0])
        self.tokens += int(counts[1])

    def metrics(self, trainer: L.Trainer) -> dict[str, float]:
        """The totals, and on a CUDA device the peak memory its tensors took in this process; read
        them before an evaluation loads a checkpoint, which restores the counts saved in it."""
        figures = {"pairs_seen": self.pairs, "tokens": self.tokens, "steps": trainer.global_step}
        device = trainer.strategy.root_device
        if device.type == "cuda":
            figures["peak_device_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        return figures

    def state_dict(self) -> dict:
        return {"pairs": self.pairs, "tokens": self.tokens}

    def load_state_dict(self, state_dict: dict) -> None:
        self.pairs, self.tokens = state_dict["pairs"], state_dict["tokens"]


class FitSummary(Callback):
    """Logs into the point's run, when ``fit`` ends, what training processed
    (:class:`ComputeAccounting`'s totals, as ``compute/*``) and the monitored score of the kept
    checkpoint (``<monitor>_best``: with ``val/loss``, a contrastive entropy at a fixed number of
    negatives, comparable across the points of a sweep).

    At the end of ``fit`` and not later: the evaluation that follows may load the best checkpoint,
    which restores every callback's state and would turn the totals of training into the counts
    at that checkpoint.
    """

    def __init__(self, tracker: RunTracker):
        self.tracker = tracker

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        accounting = next((c for c in trainer.callbacks if isinstance(c, ComputeAccounting)), None)
        if accounting is not None:
            self.tracker.log_metrics(accounting.metrics(trainer), step=step, prefix="compute/")
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_score is not None:
            self.tracker.log_metrics({f"{checkpoint.monitor}_best": float(checkpoint.best_model_score)}, step=step)


class CurveBeforeCheckpoint(Callback):
    """Flushes the training curve's queue (:class:`~hybridsweep.tracking.tracker.RunLogger`) while
    a checkpoint is assembled, before it is written: a resume recomputes only the steps after its
    checkpoint, so a step still queued when the process is killed after the write would be lost."""

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.flush()
