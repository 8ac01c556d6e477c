"""The identity of a point: what its results depend on, hashed, and where its code came from.

A point is the hash of its resolved config (:func:`config_hash`) without the keys of
:data:`NON_RESULT_KEYS` (where files live, how fast or how verbosely it runs), plus the package's
:data:`~hybridsweep.RESULTS_VERSION`, bumped by every change that alters results. Moving the
data, the cache or the working directory keeps every point; a new results version retrains.
An initializer's zero-shot evaluation has an identity of its own (:func:`zero_shot_hash`), shared
by every point of a sweep that trains from it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hybridsweep import RESULTS_VERSION, __version__
from hybridsweep.tracking.store import COMMIT_TAG, PACKAGE_VERSION_TAG, RESULTS_VERSION_TAG

DEFAULT_MATMUL_PRECISION = "highest"
"""``matmul_precision`` of the runs whose zero-shot identities were recorded before it was part of
them: at this value it stays out of the identity, so those runs keep theirs."""

NON_RESULT_KEYS = (
    # Where things are read from and written to.
    "cache_dir", "tracking", "resume", "*.root", "*.download_dir", "*.shards",
    # How fast or on how many processes it runs: the global batch is the same on any number of
    # ranks, and evaluation encodes the same texts at any batch size.
    "*.num_workers", "eval.batch_size", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "model.compile",
    # What is shown while it runs.
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "callbacks.progress_bar", "callbacks.*.refresh_rate",
)
"""Dotted keys (``fnmatch`` patterns; ``*.x`` also matches the copies that config nodes
interpolate, e.g. ``data.module.num_workers``) that do not change a point's results: left out of
its identity. Everything else in the resolved config is part of it. Where sharded data lives
(``data.shards``) is a location too: a shard directory is identified by where it is read from
only through its path, so rewriting shards in place needs a new results version or seed."""


def is_result_key(key: str) -> bool:
    """Whether the dotted ``key`` (or a node above it) is part of a point's identity, i.e. not
    matched by :data:`NON_RESULT_KEYS`."""
    parts = key.lstrip("+~").split(".")
    prefixes = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
    return not any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in NON_RESULT_KEYS)


def _without(node: object, patterns: Iterable[str], path: str = "") -> object:
    if not isinstance(node, dict):
        return node
    kept = {}
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else str(key)
        if not any(fnmatch.fnmatchcase(dotted, p) for p in patterns):
            kept[key] = _without(value, patterns, dotted)
    return kept


def result_config(cfg: DictConfig | Mapping, keys: Iterable[str] | None = None) -> dict:
    """The resolved config (or only its top-level ``keys``) without :data:`NON_RESULT_KEYS`."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if keys is not None:
        config = {key: config.get(key) for key in keys}
    return _without(config, NON_RESULT_KEYS)


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig, version: int = RESULTS_VERSION) -> str:
    """The identity of a trained point: its result config and the results version."""
    return _digest({"results_version": version, "config": result_config(cfg)})


def zero_shot_hash(cfg: DictConfig, suite: str, version: int = RESULTS_VERSION) -> str:
    """The identity of an initializer's zero-shot evaluation on one suite: the model, the
    training corpus (the embedded tokenizer is trained on it, pruned vocabularies are taken from
    it), the suite (``eval.suites.<suite>``), the encoding precision and ``matmul_precision``
    (TF32 or bf16 products of fp32 matrices, where the hardware has them); not the training
    schedule, sampling or data scale. One run per suite: points that evaluate on different sets of
    suites share the evaluations they have in common. ``matmul_precision`` enters only where it
    is not :data:`DEFAULT_MATMUL_PRECISION`, which every earlier zero-shot run used."""
    config = result_config(cfg, ("model", "data", "eval"))
    identity = {
        "model": config["model"], "corpus": (config.get("data") or {}).get("corpus"),
        "suite": (config["eval"].get("suites") or {}).get(suite), "precision": config["eval"].get("precision"),
    }
    matmul = cfg.get("matmul_precision", DEFAULT_MATMUL_PRECISION)
    if matmul != DEFAULT_MATMUL_PRECISION:
        identity["matmul_precision"] = matmul
    return _digest({"results_version": version, "zero-shot": identity})


@lru_cache(maxsize=1)
def provenance_tags() -> dict[str, str]:
    """Results version, package version and the git commit of the code that ran (``+dirty``)."""
    tags = {RESULTS_VERSION_TAG: str(RESULTS_VERSION), PACKAGE_VERSION_TAG: __version__}
    source = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "hybridsweep"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        tags[COMMIT_TAG] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        tags[COMMIT_TAG] = "unknown (not a git checkout)"
    return tags

