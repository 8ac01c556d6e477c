"""What both entry points build from a config: the runtime settings, the encoder and the corpus it
is built from, the evaluation, and the Trainer with its module (and, for training, the data).

Everything is built from the config's ``_target_`` nodes; :mod:`hybridsweep.train` and
:mod:`hybridsweep.evaluate` only call these and log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from hybridsweep.callbacks import PROGRESS_BAR, CurveBeforeCheckpoint, FitSummary, progress_bars
from hybridsweep.data.parallel_qa import ParallelQA, ensure_disjoint
from hybridsweep.encoders.compile import compile_encoder, compiled
from hybridsweep.evaluation.evaluator import Evaluator
from hybridsweep.model import DualEncoderModule, TextEncoder
from hybridsweep.precision import accelerator_device
from hybridsweep.schema import resolve_auto, validate
from hybridsweep.tracking.tracker import RunTracker, flatten


def prepare(cfg: DictConfig) -> DictConfig:
    """What every entry point does before anything is opened, logged or built: check the config
    (:func:`~hybridsweep.schema.validate`), make its ``auto`` precisions concrete for this
    machine (:func:`~hybridsweep.schema.resolve_auto`: identities and params hold what runs) and
    apply ``matmul_precision``, which the identity of a point and of a zero-shot evaluation
    include. Returns ``cfg``."""
    validate(cfg)
    resolve_auto(cfg)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    return cfg


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


def describe(corpus: ParallelQA, encoder: TextEncoder, evaluator: Evaluator) -> dict[str, str]:
    """Params every run gets beside its config: what was built, from what, evaluated on what."""
    names = sorted({c.name for c in evaluator.corpora()})
    return {"model.name": encoder.name, "data.train_corpus": corpus.name, "eval.corpus_name": ",".join(names)}


def build_module(cfg: DictConfig, encoder: TextEncoder) -> DualEncoderModule:
    # Built as a partial then called: instantiate would turn dataclass arguments into configs.
    return instantiate(cfg.module, _partial_=True)(encoder=encoder)


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path) -> list[L.Callback]:
    """``cfg.callbacks`` with checkpoints written to the point's own directory."""
    callbacks = [instantiate(node) for name, node in cfg.callbacks.items() if name != PROGRESS_BAR] + progress_bars(cfg)
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(checkpoint_dir)
    return callbacks


@dataclass
class Evaluation:
    """An initializer's evaluation without training: the encoder, the suites and a Trainer to encode with."""

    corpus: ParallelQA
    encoder: TextEncoder
    evaluator: Evaluator
    module: DualEncoderModule
    trainer: L.Trainer
    described: dict[str, str]
    """:func:`describe`'s params."""


def build_evaluation(cfg: DictConfig, output_dir: str) -> Evaluation:
    """What ``python -m hybridsweep.evaluate`` runs: no logger, no checkpoints."""
    corpus, encoder = build_encoder(cfg)
    evaluator = build_evaluator(cfg, corpus)
    module = build_module(cfg, encoder)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=progress_bars(cfg), enable_checkpointing=False,
                          default_root_dir=output_dir)
    return Evaluation(corpus, encoder, evaluator, module, trainer, describe(corpus, encoder, evaluator))


@dataclass
class Training(Evaluation):
    """A point to train: :class:`Evaluation`'s parts, the data module, and the params to log."""

    datamodule: L.LightningDataModule
    params: dict[str, object]
    """The resolved config flattened, :func:`describe`'s params, the data's sizes and where it runs."""


def build_training(cfg: DictConfig, tracker: RunTracker, checkpoint_dir: Path, output_dir: str) -> Training:
    """What ``python -m hybridsweep.train`` runs: the Trainer logs into ``tracker``'s run (its
    training curve, in the store before each checkpoint is written, and
    :class:`~hybridsweep.callbacks.FitSummary` at the end of fit) and keeps its checkpoints in
    ``checkpoint_dir``."""
    corpus, encoder = build_encoder(cfg)
    evaluator = build_evaluator(cfg, corpus)
    datamodule = instantiate(cfg.data.module, _partial_=True)(corpus=corpus, tokenizer=encoder.text_tokenizer)
    module = build_module(cfg, encoder)
    callbacks = [*build_callbacks(cfg, checkpoint_dir), FitSummary(tracker), CurveBeforeCheckpoint()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=tracker.lightning_logger(), callbacks=callbacks,
                                     default_root_dir=output_dir)
    described = describe(corpus, encoder, evaluator)
    params = {
        **flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), **described, **datamodule.stats,
        "runtime.torch_threads": torch.get_num_threads(), "runtime.device": str(trainer.strategy.root_device),
        "runtime.world_size": trainer.world_size, "runtime.compiled": compiled(encoder),
    }
    return Training(corpus, encoder, evaluator, module, trainer, described, datamodule, params)
