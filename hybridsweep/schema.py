"""Structured configs (the schema of ``conf/``) and the validation run before any work.

Hydra merges every group's YAML into these dataclasses, so an unknown key or a value of the
wrong type fails at composition with the offending key named. Range checks that types cannot
express live in ``__post_init__`` and run in :func:`validate`. Nodes that name a ``_target_``
(model, corpora, trainer) are checked against the target's signature, so a misspelt argument is
reported with the accepted ones before anything is built.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from hybridsweep.precision import PRECISIONS, accelerator_device, resolve_precision, resolve_trainer_precision


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
    mix_ratio: Any = 0.5
    """Probability of a monolingual batch under ``hybrid``: a float in [0, 1], or ``auto``."""
    mono_batches: str = "per_language"
    """``per_language``: a monolingual batch holds one language, drawn per batch (the paper's
    X-X, LAReQA's X-X-mono); ``mixed``: one pool of every language (LAReQA's X-X)."""
    mono_language_weights: str = "uniform"
    """How the language of a per-language batch is drawn: ``uniform`` or ``proportional`` to its pairs."""

    def __post_init__(self) -> None:
        ratio = self.mix_ratio
        ok = ratio == "auto" or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 1)
        _require(ok, "sampling.mix_ratio", "a number in [0, 1] or 'auto'", ratio)
        _require(self.mono_batches in ("per_language", "mixed"), "sampling.mono_batches",
                 "'per_language' or 'mixed'", self.mono_batches)
        _require(self.mono_language_weights in ("uniform", "proportional"), "sampling.mono_language_weights",
                 "'uniform' or 'proportional'", self.mono_language_weights)


def _check_fraction_or_count(value: float, key: str, zero_allowed: bool) -> None:
    allowed = f"a fraction in ({'[' if zero_allowed else '('}0, 1{')' if zero_allowed else ']'} or a whole count"
    low_ok = value >= 0 if zero_allowed else value > 0
    fraction = value < 1 if zero_allowed else value <= 1
    _require(low_ok and (fraction or value == int(value)), key, allowed, value)


@dataclass
class DataConfig:
    corpus: Any = None
    """A ``_target_`` node building the training :class:`~hybridsweep.data.parallel_qa.ParallelQA`."""
    module: Any = None
    """A ``_target_`` node building the Lightning data module (in memory or streamed); the run
    passes it the corpus and the encoder's tokenizer."""
    scale: float = 1.0
    """A fraction in (0, 1] of the training question ids, or a count (> 1) of them; nested across values."""
    subset_seed: int = 0
    validation: float = 0.1
    """Question ids held out of training for ``val/loss``: a fraction in [0, 1) or a count; 0: none."""
    validation_batch_size: int = 32
    num_workers: int = 0
    shards: str | None = None
    """A shard directory (``python -m hybridsweep.data.shards``) that ``data=streaming`` streams the
    training pairs from; ``scale`` selects a prefix of the shards' question-id order."""

    def __post_init__(self) -> None:
        _check_fraction_or_count(self.scale, "data.scale", zero_allowed=False)
        _check_fraction_or_count(self.validation, "data.validation", zero_allowed=True)
        _require(self.validation_batch_size > 0, "data.validation_batch_size", "an integer > 0", self.validation_batch_size)
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
    optimizer: Any = None
    """A ``_partial_`` ``_target_`` node: the optimizer, called with the parameter groups."""
    scheduler: Any = None
    """A ``_partial_`` ``_target_`` node called with (optimizer, total_steps), or null."""

    def __post_init__(self) -> None:
        lr = (self.optimizer or {}).get("lr")
        _require(lr is None or lr > 0, "optim.optimizer.lr", "a number > 0", lr)
        decay = (self.optimizer or {}).get("weight_decay")
        _require(decay is None or decay >= 0, "optim.optimizer.weight_decay", "a number >= 0", decay)
        warmup = (self.scheduler or {}).get("warmup_ratio")
        _require(warmup is None or 0 <= warmup < 1, "optim.scheduler.warmup_ratio", "a number in [0, 1)", warmup)


@dataclass
class EvalConfig:
    corpus: Any = None
    """A ``_target_`` node building the held-out parallel QA corpus (never trained on)."""
    suites: dict[str, Any] = field(default_factory=dict)
    """Suites by name, each a ``_target_`` node (the LAReQA suite over ``corpus``, Tatoeba, MIRACL;
    see evaluation/suites.py)."""
    batch_size: int = 256
    top_k: int = 20
    before_training: bool = True
    """Also evaluate the initial model (once per initializer, reused by every point), logged
    under the ``init/`` prefix."""
    precision: str = "fp32"
    """Encoding precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where the hardware has it)."""
    checkpoint: str = "last"
    """Which weights are evaluated after training: ``last`` or ``best`` (lowest ``val/loss``)."""

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "eval.batch_size", "an integer > 0", self.batch_size)
        _require(self.precision in PRECISIONS, "eval.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        _require(self.top_k > 0, "eval.top_k", "an integer > 0", self.top_k)
        _require(self.checkpoint in ("best", "last"), "eval.checkpoint", "'best' or 'last'", self.checkpoint)


@dataclass
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "hybridsweep"
    log_model: bool = True
    """Log the evaluated encoder of every finished point as a sentence-transformers model."""
    system_metrics: bool = False
    """MLflow system metrics (CPU, memory, GPU) sampled during the run."""


@dataclass
class ResumeConfig:
    enabled: bool = True
    """Skip points whose identity has a finished run; resume interrupted ones (hybridsweep.tracking.claims)."""
    checkpoint_dir: str = "checkpoints"
    """Checkpoints go to ``<checkpoint_dir>/<config hash>/<run id>/``, stable across re-runs."""
    keep_checkpoints: bool = False
    """Keep a finished point's checkpoints (by default they are deleted once it is logged)."""
    heartbeat_s: float = 30.0
    """How often a working process renews its claim on the point's run."""
    claim_expiry_s: float = 120.0
    """A claim not renewed for this long belongs to a dead process: the point can be resumed."""
    claim_settle_s: float = 2.0
    """On a tracking server: how long contenders wait for each other's claims before reading them back."""

    def __post_init__(self) -> None:
        _require(0 < self.heartbeat_s < self.claim_expiry_s, "resume.heartbeat_s",
                 f"a number in (0, resume.claim_expiry_s={self.claim_expiry_s})", self.heartbeat_s)
        _require(self.claim_settle_s >= 0, "resume.claim_settle_s", "a number >= 0", self.claim_settle_s)


@dataclass
class TrainConfig:
    batch_size: int = 128
    """Contrastive batch size: pairs per step over all devices, i.e. in-batch negatives plus one."""
    mini_batch_size: int | None = None
    """Rows the encoder takes at once under gradient caching; ``null`` encodes the batch whole."""
    length_buckets: int | None = None
    """Encoder calls per role and batch, rows grouped by token count; ``null``: one call."""
    seed: int = 0
    cache_dir: str = "~/.cache/hybridsweep"
    matmul_precision: str = "highest"
    """``torch.set_float32_matmul_precision``: ``high`` allows TF32 on GPUs (trainer=gpu sets it)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    """A ``_target_`` node building the encoder; its ``compile`` key (``true``, ``false`` or ``auto``)
    is the pipeline's (:data:`PIPELINE_KEYS`)."""
    module: Any = None
    """A ``_target_`` node building the Lightning module; the run passes it the encoder."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: Any = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    """Lightning callbacks by name, each a ``_target_`` node (conf/callbacks/)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", "an integer > 0", self.batch_size)
        _require(self.mini_batch_size is None or self.mini_batch_size > 0, "mini_batch_size",
                 "null or an integer > 0", self.mini_batch_size)
        _require(self.length_buckets is None or self.length_buckets > 0, "length_buckets",
                 "null or an integer > 0", self.length_buckets)
        _require(self.length_buckets is None or self.mini_batch_size is None, "length_buckets",
                 f"null when mini_batch_size is set ({self.mini_batch_size}: gradient caching already splits the batch)",
                 self.length_buckets)
        _require(self.matmul_precision in ("highest", "high", "medium"), "matmul_precision",
                 "'highest', 'high' or 'medium'", self.matmul_precision)
        monitored = sorted(f"callbacks.{name}.monitor" for name, node in (self.callbacks or {}).items()
                           if str((node or {}).get("monitor") or "").startswith("val/"))
        _require(not monitored or self.data.validation > 0, "data.validation",
                 f"> 0, since {', '.join(monitored)} watch the validation loss (or drop those callbacks)",
                 self.data.validation)
        _require(self.eval.checkpoint == "last" or "model_checkpoint" in (self.callbacks or {}), "eval.checkpoint",
                 "'last' unless callbacks.model_checkpoint keeps the best weights", self.eval.checkpoint)
        compile_setting = (self.model or {}).get("compile", "auto")
        _require(isinstance(compile_setting, bool) or compile_setting == "auto", "model.compile", "true, false or auto",
                 compile_setting)


def config_dir() -> str:
    """``conf/`` as shipped inside the installed package, else beside it in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/train.yaml in {package} or its parent: the installation is incomplete")


def steps_for_pairs(pairs: int, batch_size: int) -> int:
    """Optimizer steps that see ``pairs`` training pairs at ``batch_size`` pairs a step: the
    resolver ``${steps_for_pairs:<pairs>,${batch_size}}``, which gives points of different batch
    sizes one budget of pairs seen (equal compute) in ``trainer.max_steps``."""
    pairs, batch_size = int(pairs), int(batch_size)
    if pairs <= 0 or batch_size <= 0 or pairs % batch_size:
        raise ConfigError(f"steps_for_pairs:{pairs},{batch_size} is not allowed: expected a budget of pairs > 0 "
                          f"that is a multiple of the batch size {batch_size} (a whole number of steps)")
    return pairs // batch_size


def sqrt_batch_scaled(value: float, batch_size: int, reference_batch_size: int) -> float:
    """``value * sqrt(batch_size / reference_batch_size)``: the resolver
    ``${sqrt_batch_scaled:3e-5,${batch_size},100}``, the square-root learning-rate rule across
    batch sizes (the gradient's noise scale falls as 1/sqrt(B); Krizhevsky 2014, Hoffer et al. 2017),
    so that a batch-size effect is not a learning-rate effect."""
    if float(batch_size) <= 0 or float(reference_batch_size) <= 0:
        raise ConfigError(f"sqrt_batch_scaled:{value},{batch_size},{reference_batch_size} is not allowed: "
                          "expected batch sizes > 0")
    return float(value) * math.sqrt(float(batch_size) / float(reference_batch_size))


RESOLVERS = {"steps_for_pairs": steps_for_pairs, "sqrt_batch_scaled": sqrt_batch_scaled}
"""Config resolvers of the pipeline. The identity hashes the resolved config, so a point holds the
steps and learning rate they resolve to, whatever expression produced them."""


def compose_train(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` as ``python -m hybridsweep.train`` composes
    it, without running anything (for commands that must agree with training, e.g. on its store)."""
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def register_configs() -> None:
    """Make the schema the base of ``conf/train.yaml`` (its defaults list names ``train_schema``),
    and the :data:`RESOLVERS` available to every config."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


PIPELINE_KEYS = {"model": ("compile",)}
"""Keys of a ``_target_`` node that the pipeline reads itself and does not pass to the target."""


def _check_target(node: DictConfig, key: str) -> None:
    target = node.get("_target_")
    try:
        function = get_method(target)
    except Exception as error:  # hydra raises a bare ImportError/ValueError chain here
        raise ConfigError(f"{key}._target_={target!r} cannot be imported: {error}") from None
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = set(parameters)
    for name in node:
        if not str(name).startswith("_") and name not in accepted and name not in PIPELINE_KEYS.get(key, ()):
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


def resolve_auto(cfg: DictConfig, fast_bf16: bool | None = None) -> DictConfig:
    """``trainer.precision: auto`` and ``eval.precision: auto`` made concrete, in place, for the
    device ``trainer.accelerator`` trains and evaluates on (:mod:`hybridsweep.precision`):
    ``bf16-mixed`` / ``bf16`` where it multiplies bf16 natively, else ``32-true`` / ``fp32``;
    ``fast_bf16`` resolves as for hardware that does (True) or does not (False) instead of
    probing this machine.

    The entry points call it before a point's identity is computed, so the identity and the
    logged params hold what ran, and ``auto`` shares its runs with the value it resolves to.
    Returns ``cfg``.
    """
    device = accelerator_device(cfg.trainer.get("accelerator", "auto"))
    if "precision" in cfg.trainer:
        cfg.trainer.precision = resolve_trainer_precision(cfg.trainer.precision, device, fast_bf16)
    cfg.eval.precision = resolve_precision(cfg.eval.precision, device, fast_bf16)
    return cfg


def auto_resolutions(cfg: DictConfig) -> list[DictConfig]:
    """Every config ``cfg`` can run as: resolved for this machine (:func:`resolve_auto`) first,
    then, where it differs, for hardware that resolves ``auto`` the other way. A run of ``cfg``
    recorded the identity of one of them, whichever machine trained it: reports look for each."""
    local = resolve_auto(copy.deepcopy(cfg))
    both = [resolve_auto(copy.deepcopy(cfg), fast_bf16=fast) for fast in (True, False)]
    return [local, *(resolved for resolved in both if resolved != local)]
