"""Train and evaluate one point: ``python -m hybridsweep.train [key=value ...]``.

With ``-m`` Hydra runs one point per combination of comma-separated values, e.g.
``python -m hybridsweep.train -m batch_size=32,128,512``; every point becomes one MLflow run, and
the runs of one sweep share the ``sweep`` tag. Everything is built from the config's ``_target_``
nodes; the skip/resume decision, the claim and the logging rules are :mod:`hybridsweep.tracking`'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig, OmegaConf

from hybridsweep import tracking
from hybridsweep.callbacks import PROGRESS_BAR, ComputeAccounting, progress_bars
from hybridsweep.encoders.compile import compile_seconds, compiled
from hybridsweep.evaluate import build_encoder, build_evaluator, describe, zero_shot
from hybridsweep.evaluation.evaluator import log_results
from hybridsweep.export import log_model
from hybridsweep.point import MAIN_METRIC, point_context, run_point, write_result
from hybridsweep.schema import config_dir, register_configs, resolve_auto, validate

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path) -> list[L.Callback]:
    """``cfg.callbacks`` with checkpoints written to the point's own directory."""
    callbacks = [instantiate(node) for name, node in cfg.callbacks.items() if name != PROGRESS_BAR] + progress_bars(cfg)
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(checkpoint_dir)
    return callbacks


@contextlib.contextmanager
def timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[phase]``, less what ``torch.compile`` spent in it,
    which goes to ``seconds["compile"]``."""
    started, compiling = time.perf_counter(), compile_seconds()
    try:
        yield
    finally:
        compile_time = compile_seconds() - compiling
        seconds[phase] += time.perf_counter() - started - compile_time
        seconds["compile"] += compile_time


def train(cfg: DictConfig) -> float:
    """Validate, build, train, evaluate and log one point; returns its multilingual mAP.

    Where the point's time went is logged as ``time/*_s``: ``fit`` (``Trainer.fit``), ``eval``
    (the evaluations, before and after training) and ``overhead``, the rest of the point
    (building data, tokenizer and model, MLflow run and logging, compilation), which a sweep pays
    once per point; the three add up to the point's wall time. ``compile`` is the part of the
    overhead spent in ``torch.compile`` (``model.compile``): compilation is lazy, so it happens
    inside the first forward and backward passes of fit and eval, and is measured there by
    Dynamo's own account (:func:`~hybridsweep.encoders.compile.compile_seconds`) and moved out of
    ``fit`` and ``eval`` into ``overhead``; 0 for an eager model. Whether the backbone was
    compiled is the param ``runtime.compiled``. What training processed is logged as ``compute/*``.
    """
    started = time.perf_counter()
    validate(cfg)  # before anything is opened or logged
    resolve_auto(cfg)  # the identity and the params hold the precisions that run, never "auto"
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    context = point_context(cfg)
    digest = tracking.config_hash(cfg)
    decision, tracker = tracking.open_run(cfg, "point", digest, context.run_name, context.tags)
    uri = tracking.tracking_uri(cfg.tracking.tracking_uri)
    if decision.done:
        log.info("%s: finished earlier in run %s, skipped", context.run_name, decision.run_id)
        parent = context.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent and tracking.is_global_zero():
            tracking.list_in_sweep(uri, decision.run_id, parent)
        return tracking.get_run(uri, decision.run_id).data.metrics.get(MAIN_METRIC, math.nan)
    if decision.busy:
        log.warning("%s: run %s is being trained by another process; left to it", context.run_name, decision.run_id)
        return math.nan
    checkpoint_dir = Path(cfg.resume.checkpoint_dir).expanduser() / digest / decision.run_id
    with tracker:
        L.seed_everything(cfg.seed, workers=True)
        corpus, encoder = build_encoder(cfg)
        evaluator = build_evaluator(cfg, corpus)
        # Built as partials then called: instantiate would turn dataclass arguments into configs.
        datamodule = instantiate(cfg.data.module, _partial_=True)(corpus=corpus, tokenizer=encoder.text_tokenizer)
        module = instantiate(cfg.module, _partial_=True)(encoder=encoder)
        callbacks = build_callbacks(cfg, checkpoint_dir)
        trainer: L.Trainer = instantiate(cfg.trainer, logger=tracker.lightning_logger(), callbacks=callbacks,
                                         default_root_dir=context.output_dir)
        params = describe(cfg, corpus, encoder, evaluator)
        tracker.log_params({
            **tracking.flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), **params,
            **datamodule.stats, "runtime.torch_threads": torch.get_num_threads(),
            "runtime.device": str(trainer.strategy.root_device), "runtime.world_size": trainer.world_size,
            "runtime.compiled": compiled(encoder),
        })
        tracker.log_config(cfg)
        seconds = {"fit": 0.0, "eval": 0.0, "compile": 0.0}
        if cfg.eval.before_training:
            with timed(seconds, "eval"):
                initial = zero_shot(cfg, trainer, module, evaluator, params)
            for run in initial:  # each suite's metrics already carry the suite's prefix
                tracker.copy_metrics(run, "init/")
            if initial:
                tracker.set_tags({tracking.ZERO_SHOT_RUN_TAG: ",".join(run.info.run_id for run in initial)})
        with timed(seconds, "fit"):
            trainer.fit(module, datamodule=datamodule, ckpt_path="last" if decision.resumed else None)
        accounting = next((c for c in callbacks if isinstance(c, ComputeAccounting)), None)
        if accounting is not None:
            # Logged before the evaluation: loading the best checkpoint restores every callback's
            # state, which would turn the totals of training into the counts at that checkpoint.
            tracker.log_metrics(accounting.metrics(trainer), step=trainer.global_step, prefix="compute/")
        with timed(seconds, "eval"):
            results = evaluator.run(trainer, module, trained=True)
            log_results(tracker, evaluator.suites, results, step=trainer.global_step)
        if cfg.tracking.log_model:
            log_model(tracker, module.encoder, step=trainer.global_step)  # the weights just evaluated
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_score is not None:
            # The monitored score of the kept checkpoint: with val/loss, a contrastive entropy at a
            # fixed number of negatives, comparable across the points of a sweep.
            tracker.log_metrics({f"{checkpoint.monitor}_best": float(checkpoint.best_model_score)}, step=trainer.global_step)
        total = time.perf_counter() - started
        tracker.log_metrics({"fit_s": seconds["fit"], "eval_s": seconds["eval"], "compile_s": seconds["compile"],
                             "overhead_s": total - seconds["fit"] - seconds["eval"]}, step=trainer.global_step, prefix="time/")
    if not tracking.is_global_zero():
        return math.nan
    if not cfg.resume.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    metric = tracking.get_run(uri, decision.run_id).data.metrics.get(MAIN_METRIC, math.nan)
    write_result(context.output_dir, decision.run_id, metric)
    return metric


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_point(train, cfg)


if __name__ == "__main__":
    main()
