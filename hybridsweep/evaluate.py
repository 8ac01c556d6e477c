"""Evaluate an initializer without training: ``python -m hybridsweep.evaluate model=... eval=...``.

The run is tagged ``hybridsweep.role=zero-shot`` and holds the same metrics and artifacts as a
trained point. Its identity (:func:`hybridsweep.tracking.zero_shot_hash`) is the initializer, the
corpus it is built from and the evaluation: an initializer is evaluated once per (initializer,
evaluation, precision), and every training point of a sweep copies that run's metrics as its
``init/`` metrics instead of encoding the untrained model again (:func:`zero_shot`).
"""

from __future__ import annotations

import logging
import math

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from mlflow.entities import Run
from omegaconf import DictConfig

from hybridsweep import tracking
from hybridsweep.data.parallel_qa import ParallelQA, ensure_disjoint
from hybridsweep.evaluation.evaluator import Evaluator, log_results
from hybridsweep.model import DualEncoderModule, TextEncoder
from hybridsweep.point import MAIN_METRIC, point_context, run_point, write_result
from hybridsweep.schema import config_dir, register_configs, validate

log = logging.getLogger(__name__)


def build_encoder(cfg: DictConfig) -> tuple[ParallelQA, TextEncoder]:
    """The training corpus and the encoder built from it (tokenizers and pruned vocabularies are)."""
    corpus = instantiate(cfg.data.corpus)
    return corpus, instantiate(cfg.model, _partial_=True)(corpus=corpus, cache_dir=cfg.cache_dir)


def build_evaluator(cfg: DictConfig, corpus: ParallelQA) -> Evaluator:
    """The suites of ``eval.suites``, refused when one evaluates on the training corpus."""
    evaluator = Evaluator(instantiate(cfg.eval.suites), cfg.eval.batch_size, cfg.eval.precision, cfg.eval.checkpoint)
    for evaluation_corpus in evaluator.corpora():
        ensure_disjoint(corpus, evaluation_corpus)
    return evaluator


def describe(cfg: DictConfig, corpus: ParallelQA, encoder: TextEncoder, evaluator: Evaluator) -> dict[str, str]:
    """Params every run gets beside its config: what was built, from what, evaluated on what."""
    names = sorted({c.name for c in evaluator.corpora()})
    return {"model.name": encoder.name, "data.train_corpus": corpus.name, "eval.corpus_name": ",".join(names)}


def zero_shot(cfg: DictConfig, trainer: L.Trainer, module: DualEncoderModule, evaluator: Evaluator,
              params: dict[str, str]) -> Run | None:
    """The finished zero-shot run of ``cfg``'s initializer (on global rank zero; None elsewhere):
    an earlier one when it exists (or, while another process evaluates it, once that finishes),
    else evaluated now with ``trainer`` and logged."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    name = f"zero-shot model={choices.get('model', '?')} eval={choices.get('eval', '?')}"
    decision, tracker = tracking.open_run(cfg, "zero-shot", tracking.zero_shot_hash(cfg), name, {}, wait=True)
    if decision.state == "claimed":
        with tracker:
            tracker.log_params({**tracking.flatten(tracking.result_config(cfg, tracking.ZERO_SHOT_KEYS)), **params})
            log_results(tracker, evaluator.suites, evaluator.run(trainer, module, trained=False))
    if not tracking.is_global_zero():
        return None
    return tracking.get_run(tracking.tracking_uri(cfg.tracking.tracking_uri), decision.run_id)


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``cfg``'s initializer zero-shot (once: a finished evaluation is reused); returns
    its multilingual mAP."""
    validate(cfg)
    context = point_context(cfg)
    corpus, encoder = build_encoder(cfg)
    evaluator = build_evaluator(cfg, corpus)
    module = instantiate(cfg.module, _partial_=True)(encoder=encoder)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                          default_root_dir=context.output_dir)
    run = zero_shot(cfg, trainer, module, evaluator, describe(cfg, corpus, encoder, evaluator))
    if run is None:
        return math.nan
    metric = run.data.metrics.get(MAIN_METRIC, math.nan)
    log.info("zero-shot run %s: %s = %.4f", run.info.run_id, MAIN_METRIC, metric)
    write_result(context.output_dir, run.info.run_id, metric)
    return metric


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_point(evaluate, cfg)


if __name__ == "__main__":
    main()
