"""What every benchmark shares: the config it measures, the machine it ran on, and ratio reporting.

A benchmark names a model config (``--model tiny``, ``--model tiny_wide``, ``--model e5_small``)
and optional further overrides; the config is composed exactly as ``python -m hybridsweep.train``
composes it, so a benchmark measures what a sweep point runs. Every figure is printed next to a
baseline measured in the same process, interleaved round by round, because the machines are shared
and absolute times drift by integer factors within minutes.

Every benchmark also writes its figures to ``benchmarks/results/<name>.json`` through
:func:`write_results`, with the machine and the command that produced them; BENCHMARKS.md is
the readable record of the same figures. The heavy imports (torch, Hydra, the pipeline) happen
inside the functions that need them, so that the memory benchmarks can import this module in
the processes they measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
# Runnable as `python benchmarks/<name>.py` from the repository root without installing.
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from omegaconf import DictConfig


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: the model config, extra overrides, rounds."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--model", default="tiny", help="a config of conf/model/ (default: tiny)")
    args.add_argument("--rounds", type=int, default=3, help="interleaved baseline/candidate rounds")
    args.add_argument("overrides", nargs="*", help="further Hydra overrides, e.g. batch_size=64")
    return args


def load_config(model: str, overrides: list[str]) -> DictConfig:
    """The validated training config of ``model=<model>`` plus ``overrides``, its ``auto``
    precisions resolved as the entry points resolve them (:func:`hybridsweep.schema.resolve_auto`)."""
    from hydra import compose, initialize_config_dir

    from hybridsweep.schema import register_configs, resolve_auto, validate
    from hybridsweep.train import config_dir

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *overrides])
    validate(cfg)
    return resolve_auto(cfg)


def build_corpora_and_encoder(cfg: DictConfig):
    """The training corpus, evaluation corpus and encoder of a config, built as train.py builds them
    (:func:`hybridsweep.builders.build_encoder`: compiled as ``model.compile`` says)."""
    from hydra.utils import instantiate

    from hybridsweep.builders import build_encoder

    corpus, encoder = build_encoder(cfg)
    return corpus, instantiate(cfg.eval.corpus), encoder


def build_datamodule(cfg: DictConfig, corpus, encoder):
    """The config's Lightning data module (``data.module``) over ``corpus``, as train.py builds it."""
    from hydra.utils import instantiate

    # A partial then called, as in train.py: instantiate would turn dataclass arguments into configs.
    return instantiate(cfg.data.module, _partial_=True)(corpus=corpus, tokenizer=encoder.text_tokenizer)


def build_module(cfg: DictConfig, encoder):
    """The config's Lightning module (``module``: loss, optimizer, schedule) around ``encoder``, as train.py builds it."""
    from hydra.utils import instantiate

    return instantiate(cfg.module, _partial_=True)(encoder=encoder)


def bench_tracker(uri: str, experiment: str, name: str):
    """A :class:`hybridsweep.tracking.tracker.RunTracker` on a new run ``name`` of ``experiment`` in the store at
    ``uri``, outside the pipeline's claims (a benchmark's runs are never resumed)."""
    from hybridsweep.tracking.store import client, experiment_id
    from hybridsweep.tracking.tracker import RunTracker

    store = client(uri)
    run = store.create_run(experiment_id(store, experiment), run_name=name)
    return RunTracker(uri, run.info.run_id)


def encode_char_sorted(encoder, texts: list[str], role: str, batch_size: int, precision: str = "fp32"):
    """Embeddings as evaluation computed them before batches were sorted by token count: texts
    sorted by characters, autocast entered per batch (the baseline of that change)."""
    import numpy as np
    import torch

    from hybridsweep.precision import autocast_context

    encoder.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs = encoder.tokenize([texts[i] for i in order[start : start + batch_size]], role)
            with autocast_context(precision, torch.device("cpu")):
                chunks.append(encoder(**inputs).float().numpy())
    embeddings = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
    embeddings[order] = np.concatenate(chunks)
    return embeddings


OPERATOR_GROUPS = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul"),
    "attention": ("scaled_dot_product",),
    "optimizer": ("adamw", "adam"),
    "gradient clipping": ("_foreach_norm", "linalg_vector_norm", "_foreach_mul"),
}
"""Operator-name fragments (case-insensitive) of the groups :func:`operator_shares` reports."""

INCLUSIVE = {"embedding backward": "EmbeddingBackward"}
"""Autograd functions reported with everything they call (the zero fill of a dense embedding
gradient shows up as ``aten::fill_`` in self time)."""


def operator_shares(prof) -> dict:
    """Shares of a ``torch.profiler`` run's self CPU time: per operator, best first; per group of
    :data:`OPERATOR_GROUPS` (an operator counts in the first group whose fragment it contains;
    ``other``: none); and the inclusive time of the functions of :data:`INCLUSIVE`."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    operators = {e.key: e.self_cpu_time_total / total for e in sorted(events, key=lambda e: -e.self_cpu_time_total)}
    groups = dict.fromkeys([*OPERATOR_GROUPS, "other"], 0.0)
    for name, share in operators.items():
        group = next((g for g, marks in OPERATOR_GROUPS.items() if any(m in name.lower() for m in marks)), "other")
        groups[group] += share
    inclusive = {name: sum(e.cpu_time_total for e in events if mark in e.key) / total for name, mark in INCLUSIVE.items()}
    return {"operators": operators, "groups": groups, "inclusive": inclusive}


def matmul_peak(dtype, size: int = 2048, repeats: int = 20, device: str = "cpu") -> float:
    """Best FLOP/s of ``size x size`` matrix products in ``dtype`` over ``repeats`` timed calls."""
    import torch

    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up: lets oneDNN / cuBLAS pick and cache its kernel
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def token_flops(config, length: int) -> float:
    """Forward matrix-product FLOPs per token of a BERT-style encoder in a batch padded to
    ``length`` (the formula in bench_encode's docstring); a training step costs three times it."""
    layers, hidden, mlp = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    return 2 * layers * (4 * hidden**2 + 2 * hidden * mlp) + 4 * layers * length * hidden


def batch_flops(config, input_ids) -> float:
    """Forward matrix-product FLOPs of one padded batch through a BERT-style encoder."""
    batch, length = input_ids.shape
    return token_flops(config, length) * batch * length


def step_precision(cfg: DictConfig) -> str:
    """The precision (``bf16`` or ``fp32``, for :func:`hybridsweep.precision.autocast_context`) in
    which a hand-run training step mirrors ``cfg.trainer.precision`` as Lightning's plugin runs
    it; only ``32-true`` and ``bf16-mixed`` are mirrored."""
    precision = str(cfg.trainer.precision)
    if precision not in ("32-true", "32", "bf16-mixed"):
        raise SystemExit(f"trainer.precision={precision}: a hand-run step mirrors 32-true and bf16-mixed only")
    return "bf16" if precision == "bf16-mixed" else "fp32"


def machine() -> str:
    """One line naming the machine (:func:`hybridsweep.machine.describe_machine`: CPU, its bf16
    units, cores, torch threads, GPUs), the load average and the date."""
    from hybridsweep.machine import describe_machine

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{describe_machine()}, load average {load:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def interleave(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every candidate once per round and collect their rates.

    Each callable returns a rate (higher is better), e.g. pairs/s. Interleaving exposes every
    candidate to the same drift of a shared machine, so per-round ratios are comparable; the order
    rotates from round to round so that no candidate always holds the same place in the waves of
    the machine's load.
    """
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = candidates[name]
            rates[name].append(run())
            print(f"  round {round_index + 1} {name}: {rates[name][-1]:.2f}", flush=True)
    return rates


def ratio_report(rates: dict[str, list[float]], candidate: str, unit: str) -> dict[str, float]:
    """Print each baseline's median per-round ratio candidate/baseline; returns them by baseline."""
    ratios = {}
    print(f"{candidate}: median {statistics.median(rates[candidate]):.2f} {unit}")
    for name, values in rates.items():
        if name == candidate:
            continue
        per_round = [c / b for c, b in zip(rates[candidate], values)]
        ratios[name] = statistics.median(per_round)
        print(f"{candidate} / {name}: {ratios[name]:.3f}x (median of rounds "
              f"{', '.join(f'{r:.3f}' for r in per_round)}; {name} median {statistics.median(values):.2f} {unit})")
    return ratios


def write_results(name: str, figures: Mapping[str, Any]) -> Path:
    """Write ``figures`` to ``benchmarks/results/<name>.json`` with the machine and the command.

    The file holds ``{**figures, "machine": ..., "load_average": [1, 5, 15 min], "command": ...}``;
    the command is this process's command line with the environment variables that change the
    figures (thread count, data root). Values must be JSON-serialisable (numbers, strings, lists,
    dicts of them). Returns the path written.
    """
    reserved = {"machine", "load_average", "command"} & set(figures)
    if reserved:
        raise ValueError(f"figure names {sorted(reserved)} are reserved for write_results itself")
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "HYBRIDSWEEP_DATA") if k in os.environ)
    command = " ".join(filter(None, [env, "python", shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])]))
    record = {**figures, "machine": machine(),
              "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
              "command": command}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    print(f"figures written to {path.relative_to(ROOT)}")
    return path
