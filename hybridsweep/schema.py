"""Structured configs (the schema of ``conf/``) and the validation run before any work.

Hydra merges every group's YAML into these dataclasses, so an unknown key or a value of the
wrong type fails at composition with the offending key named. Range checks that types cannot
express live in ``__post_init__`` and run in :func:`validate`. Nodes that name a ``_target_``
(model, corpora, trainer) are checked against the target's signature, so a misspelt argument is
reported with the accepted ones before anything is built.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from hybridsweep.evaluation.precision import PRECISIONS


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key."""


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


class SamplingStrategy(str, Enum):
    mono = "mono"
    cross = "cross"
    hybrid = "hybrid"


@dataclass
class SamplingConfig:
    strategy: SamplingStrategy = SamplingStrategy.hybrid
    mix_ratio: Any = "auto"
    """Probability of a monolingual batch under ``hybrid``: a float in [0, 1], or ``auto``."""

    def __post_init__(self) -> None:
        ratio = self.mix_ratio
        ok = ratio == "auto" or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 1)
        _require(ok, "sampling.mix_ratio", "a number in [0, 1] or 'auto'", ratio)


@dataclass
class DataConfig:
    corpus: Any = None
    """A ``_target_`` node building the training :class:`~hybridsweep.data.parallel_qa.ParallelQA`."""
    scale: float = 1.0
    """A fraction in (0, 1] of the question ids, or a count (> 1) of them; nested across values."""
    subset_seed: int = 0
    num_workers: int = 0
    shards: Optional[str] = None
    """A shard directory (``python -m hybridsweep.data.shards``) to stream the training pairs from
    instead of building them from ``corpus`` in memory; ``corpus`` then only trains the tokenizer.
    ``scale`` selects a prefix of the shards' question-id order (``subset_seed`` is not used)."""

    def __post_init__(self) -> None:
        _require(self.scale > 0, "data.scale", "a fraction in (0, 1] or a whole count > 1", self.scale)
        _require(self.scale <= 1 or self.scale == int(self.scale), "data.scale",
                 "a fraction in (0, 1] or a whole count > 1", self.scale)
        _require(self.num_workers >= 0, "data.num_workers", "an integer >= 0", self.num_workers)


@dataclass
class LossConfig:
    _target_: str = "hybridsweep.losses.InfoNCELoss"
    temperature: float = 0.05
    symmetric: bool = False

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "loss.temperature", "a number > 0", self.temperature)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", "a number > 0", self.lr)
        _require(self.weight_decay >= 0, "optim.weight_decay", "a number >= 0", self.weight_decay)
        _require(0 <= self.warmup_ratio < 1, "optim.warmup_ratio", "a number in [0, 1)", self.warmup_ratio)


@dataclass
class EvalConfig:
    corpus: Any = None
    """A ``_target_`` node building the held-out evaluation corpus (never trained on)."""
    batch_size: int = 256
    top_k: int = 20
    before_training: bool = True
    """Also evaluate the initial model, logged under the ``init/`` prefix."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further suites by name, each a ``_target_`` node (e.g. Tatoeba, MIRACL; see evaluation/suites.py)."""
    precision: str = "fp32"
    """Encoding precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where the hardware has it)."""

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "eval.batch_size", "an integer > 0", self.batch_size)
        _require(self.precision in PRECISIONS, "eval.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        _require(self.top_k > 0, "eval.top_k", "an integer > 0", self.top_k)


@dataclass
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "hybridsweep"


@dataclass
class ResumeConfig:
    enabled: bool = True
    """Skip points whose config hash has a finished run; resume interrupted ones (hybridsweep.resume)."""
    checkpoint_dir: str = "checkpoints"
    """Checkpoints go to ``<checkpoint_dir>/<config hash>/<run id>/``, stable across re-runs."""


@dataclass
class TrainConfig:
    batch_size: int = 128
    """Contrastive batch size: pairs per step over all devices, i.e. in-batch negatives plus one."""
    mini_batch_size: Optional[int] = None
    """Rows the encoder takes at once under gradient caching; ``null`` encodes the batch whole."""
    seed: int = 0
    cache_dir: str = "~/.cache/hybridsweep"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: Any = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", "an integer > 0", self.batch_size)
        _require(self.mini_batch_size is None or self.mini_batch_size > 0, "mini_batch_size",
                 "null or an integer > 0", self.mini_batch_size)


def register_configs() -> None:
    """Make the schema the base of ``conf/train.yaml`` (its defaults list names ``train_schema``)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


# Arguments a builder receives from the pipeline at run time rather than from the config.
RUNTIME_ARGUMENTS = {"corpus", "cache_dir", "logger", "callbacks"}


def _check_target(node: DictConfig, key: str) -> None:
    target = node.get("_target_")
    try:
        function = get_method(target)
    except Exception as error:  # hydra raises a bare ImportError/ValueError chain here
        raise ConfigError(f"{key}._target_={target!r} cannot be imported: {error}") from None
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = set(parameters) - RUNTIME_ARGUMENTS
    for name in node:
        if not str(name).startswith("_") and name not in accepted:
            raise ConfigError(
                f"{key}.{name} is not an argument of {target}: expected one of {sorted(accepted)}"
            )


def _check_targets(node: Any, key: str) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target(node, key)
        for name in node:
            _check_targets(node._get_node(name), f"{key}.{name}" if key else str(name))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{key}[{i}]")


def validate(cfg: DictConfig) -> TrainConfig:
    """Run every range and signature check; raises :class:`ConfigError` naming the key."""
    try:
        typed = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as error:  # omegaconf wraps __post_init__ errors; surface ours unwrapped
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
    _check_targets(cfg, "")
    return typed
