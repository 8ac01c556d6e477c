"""Evaluate an initializer without training: ``python -m hybridsweep.evaluate model=... eval=...``.

Every evaluation suite gets one run, tagged ``hybridsweep.role=zero-shot``, with the same metrics
and artifacts as a trained point. Its identity (:func:`hybridsweep.tracking.zero_shot_hash`) is
the initializer, the corpus it is built from, the suite and the precision: an initializer is
evaluated once per (initializer, evaluation corpus, precision), and every training point of a
sweep copies those runs' metrics as its ``init/`` metrics instead of encoding the untrained model
again (:func:`zero_shot`).
"""

from __future__ import annotations

import logging
import math

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from mlflow.entities import Run
from omegaconf import DictConfig, open_dict

from hybridsweep import tracking
from hybridsweep.callbacks import progress_bars
from hybridsweep.data.parallel_qa import ParallelQA, ensure_disjoint
from hybridsweep.encoders.compile import compile_encoder
from hybridsweep.evaluation.evaluator import Evaluator, log_results
from hybridsweep.evaluation.precision import accelerator_device
from hybridsweep.model import DualEncoderModule, TextEncoder
from hybridsweep.point import MAIN_METRIC, point_context, run_point, write_result
from hybridsweep.schema import config_dir, register_configs, resolve_auto, validate

log = logging.getLogger(__name__)


def build_encoder(cfg: DictConfig) -> tuple[ParallelQA, TextEncoder]:
    """The training corpus and the encoder built from it (tokenizers and pruned vocabularies are),
    its backbone compiled as ``model.compile`` says for the device ``trainer.accelerator`` trains
    and evaluates on (:func:`~hybridsweep.encoders.compile.compile_encoder`; compilation itself
    happens at the first forward pass)."""
    corpus = instantiate(cfg.data.corpus)
    node = cfg.model.copy()  # still attached to the root config: interpolations resolve as before
    with open_dict(node):
        setting = node.pop("compile", "auto")  # read by the pipeline, not an argument of the builder
    encoder = instantiate(node, _partial_=True)(corpus=corpus, cache_dir=cfg.cache_dir)
    return corpus, compile_encoder(encoder, setting, accelerator_device(cfg.trainer.accelerator))


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
              params: dict[str, str]) -> list[Run]:
    """The finished zero-shot runs of ``cfg``'s initializer, one per suite (on global rank zero;
    empty elsewhere): earlier ones where they exist (or, while another process evaluates one,
    once it finishes), the others evaluated now in one pass with ``trainer`` and logged.

    Claims are taken suite by suite in the order of ``eval.suites``, so two processes that need
    the same evaluations never wait on each other in a circle."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model_params = tracking.flatten(tracking.result_config(cfg, ("model",)))
    decisions, trackers = {}, {}
    for key in evaluator.suites:
        name = f"zero-shot {key} model={choices.get('model', '?')} eval={choices.get('eval', '?')}"
        decisions[key], trackers[key] = tracking.open_run(cfg, "zero-shot", tracking.zero_shot_hash(cfg, key), name, {},
                                                          wait=True)
    missing = [key for key, decision in decisions.items() if decision.state == "claimed"]
    if missing:
        try:
            results = evaluator.restricted_to(missing).run(trainer, module, trained=False)
        except BaseException as error:
            for key in missing:
                trackers[key].__exit__(type(error), error, error.__traceback__)
            raise
        for key in missing:
            with trackers[key] as tracker:
                tracker.log_params({**model_params, **params, "eval.suite": key, "eval.precision": cfg.eval.precision})
                log_results(tracker, {key: evaluator.suites[key]}, results and {key: results[key]})
    if not tracking.is_global_zero():
        return []
    uri = tracking.tracking_uri(cfg.tracking.tracking_uri)
    return [tracking.get_run(uri, decision.run_id) for decision in decisions.values()]


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``cfg``'s initializer zero-shot on every suite (once: finished evaluations are
    reused); returns its multilingual mAP."""
    validate(cfg)
    resolve_auto(cfg)  # eval.precision=auto is part of the zero-shot identity as what it resolves to
    context = point_context(cfg)
    corpus, encoder = build_encoder(cfg)
    evaluator = build_evaluator(cfg, corpus)
    module = instantiate(cfg.module, _partial_=True)(encoder=encoder)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=progress_bars(cfg), enable_checkpointing=False,
                          default_root_dir=context.output_dir)
    runs = zero_shot(cfg, trainer, module, evaluator, describe(cfg, corpus, encoder, evaluator))
    metric = next((run.data.metrics[MAIN_METRIC] for run in runs if MAIN_METRIC in run.data.metrics), math.nan)
    for run in runs:
        log.info("zero-shot run %s (%s): %s", run.info.run_id, run.data.params.get("eval.suite"),
                 ", ".join(f"{k} = {v:.4f}" for k, v in sorted(run.data.metrics.items()) if "/pair/" not in k)[:500])
    if runs:
        write_result(context.output_dir, ",".join(run.info.run_id for run in runs), metric)
    return metric


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_point(evaluate, cfg)


if __name__ == "__main__":
    main()
