"""Train and evaluate one point: ``python -m hybridsweep.train [key=value ...]``.

With ``-m`` Hydra runs one point per combination of comma-separated values, e.g.
``python -m hybridsweep.train -m batch_size=32,128,512``; every point becomes one MLflow run, and
the runs of one sweep share the ``sweep`` tag.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hybridsweep.data.datamodule import PairDataModule
from hybridsweep.data.parallel_qa import ensure_disjoint
from hybridsweep.data.streaming import StreamingDataModule
from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT, RetrievalResult, evaluate_encoder
from hybridsweep.evaluation.suites import EvalSuite
from hybridsweep.model import DualEncoderModule, TextEncoder
from hybridsweep.point import point_identity, run_point
from hybridsweep.resume import RngStateCheckpoint, open_point_run
from hybridsweep.schema import register_configs, validate
from hybridsweep.sweep import MAIN_METRIC
from hybridsweep.tracking import RunTracker, flatten

log = logging.getLogger(__name__)


def config_dir() -> str:
    """``conf/`` as shipped inside the installed package, else beside it in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/train.yaml in {package} or its parent: the installation is incomplete")


def _log_result(tracker: RunTracker, result: RetrievalResult, prefix: str, step: int) -> None:
    tracker.log_metrics(result.metrics, step=step, prefix=prefix)
    folder = prefix.rstrip("/") or None
    tracker.log_matrix(result.pair_map, "map_full_pairs", f"mAP by language pair ({folder or 'trained'})", folder)
    tracker.log_frame(result.per_question, PER_QUESTION_ARTIFACT, folder)


def _log_suites(tracker: RunTracker, suites: dict[str, EvalSuite], encoder: TextEncoder, eval_cfg: DictConfig,
                prefix: str, step: int) -> None:
    """Evaluate every ``eval.extra`` suite (in ``eval.precision``) and log it under ``<prefix><key>/``."""
    for key, suite in suites.items():
        result = suite.evaluate(encoder, eval_cfg.batch_size, eval_cfg.precision)
        tracker.log_metrics(result.metrics, step=step, prefix=f"{prefix}{key}/")
        for name, matrix in result.matrices.items():
            tracker.log_matrix(matrix, name, f"{key} {name} ({prefix.rstrip('/') or 'trained'})", f"{prefix}{key}")


def train(cfg: DictConfig) -> float:
    """Validate, build, train, evaluate and log one point; returns its multilingual mAP.

    A point whose config hash has a finished run is skipped; an interrupted one is resumed from
    its last checkpoint into its run (:mod:`hybridsweep.resume`). Where the point's time went is
    logged as ``time/*_s``: ``fit`` (``Trainer.fit``), ``eval`` (the evaluations, before and after
    training) and ``overhead``, the rest of the point (building data, tokenizer and model,
    MLflow run and logging), which a sweep pays once per point.
    """
    started = time.perf_counter()
    validate(cfg)  # before anything is opened or logged
    run_name, tags, output_dir = point_identity(cfg)
    point = open_point_run(cfg, run_name, tags)
    if point.done is not None:
        log.info("%s: finished earlier in run %s, skipped", run_name, point.done.info.run_id)
        return point.done.data.metrics.get(MAIN_METRIC, math.nan)
    tracker: RunTracker = point.tracker
    try:
        L.seed_everything(cfg.seed, workers=True)
        corpus = instantiate(cfg.data.corpus)
        eval_corpus = instantiate(cfg.eval.corpus)
        ensure_disjoint(corpus, eval_corpus)
        extra_suites: dict[str, EvalSuite] = {key: instantiate(node) for key, node in cfg.eval.extra.items()}
        encoder = instantiate(cfg.model, _partial_=True)(corpus=corpus, cache_dir=cfg.cache_dir)
        if cfg.data.shards:
            datamodule = StreamingDataModule(
                cfg.data.shards, encoder, cfg.batch_size, cfg.sampling.strategy.value, cfg.sampling.mix_ratio,
                scale=cfg.data.scale, seed=cfg.seed, num_workers=cfg.data.num_workers,
            )
        else:
            datamodule = PairDataModule(
                corpus, encoder, cfg.batch_size, cfg.sampling.strategy.value, cfg.sampling.mix_ratio,
                scale=cfg.data.scale, seed=cfg.seed, subset_seed=cfg.data.subset_seed, num_workers=cfg.data.num_workers,
            )
        module = DualEncoderModule(encoder, instantiate(cfg.loss), **cfg.optim, mini_batch_size=cfg.mini_batch_size)
        tracker.log_params({
            **flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)),
            "model.name": encoder.name,
            "data.train_corpus": corpus.name,
            "eval.corpus_name": eval_corpus.name,
            **datamodule.stats,
            "runtime.torch_threads": torch.get_num_threads(),
        })
        tracker.log_config(cfg)
        eval_args = dict(batch_size=cfg.eval.batch_size, top_k=cfg.eval.top_k, precision=cfg.eval.precision)
        eval_seconds = 0.0
        if cfg.eval.before_training:
            eval_started = time.perf_counter()
            _log_result(tracker, evaluate_encoder(encoder, eval_corpus, **eval_args), "init/", step=0)
            _log_suites(tracker, extra_suites, encoder, cfg.eval, "init/", step=0)
            eval_seconds += time.perf_counter() - eval_started
        trainer: L.Trainer = instantiate(
            cfg.trainer,
            logger=tracker.lightning_logger(),
            callbacks=[ModelCheckpoint(dirpath=point.checkpoint_dir, save_last=True), RngStateCheckpoint()],
            default_root_dir=str(output_dir),
        )
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=point.ckpt_path)
        fit_seconds = time.perf_counter() - fit_started
        eval_started = time.perf_counter()
        result = evaluate_encoder(encoder, eval_corpus, **eval_args)
        _log_result(tracker, result, "", step=trainer.global_step)
        _log_suites(tracker, extra_suites, encoder, cfg.eval, "", step=trainer.global_step)
        eval_seconds += time.perf_counter() - eval_started
        total = time.perf_counter() - started
        tracker.log_metrics({"fit_s": fit_seconds, "eval_s": eval_seconds, "overhead_s": total - fit_seconds - eval_seconds},
                            step=trainer.global_step, prefix="time/")
    except BaseException as error:
        tracker.log_text(traceback.format_exc(), "traceback.txt")
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return result.metrics[MAIN_METRIC]


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_point(train, cfg)


if __name__ == "__main__":
    main()
