"""What every benchmark shares: the config it measures, the machine it ran on, and ratio reporting.

A benchmark names a model config (``--model tiny``, ``--model tiny_wide``, ``--model e5_small``)
and optional further overrides; the config is composed exactly as ``python -m hybridsweep.train``
composes it, so a benchmark measures what a sweep point runs. Every figure is printed next to a
baseline measured in the same process, interleaved round by round, because the machines are shared
and absolute times drift by integer factors within minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable as `python benchmarks/<name>.py` from the repository root without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from hybridsweep.schema import register_configs, validate  # noqa: E402
from hybridsweep.train import config_dir  # noqa: E402


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: the model config, extra overrides, rounds."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--model", default="tiny", help="a config of conf/model/ (default: tiny)")
    args.add_argument("--rounds", type=int, default=3, help="interleaved baseline/candidate rounds")
    args.add_argument("overrides", nargs="*", help="further Hydra overrides, e.g. batch_size=64")
    return args


def load_config(model: str, overrides: list[str]) -> DictConfig:
    """The validated training config of ``model=<model>`` plus ``overrides``."""
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *overrides])
    validate(cfg)
    return cfg


def build_corpora_and_encoder(cfg: DictConfig):
    """The training corpus, evaluation corpus and encoder of a config, built as train.py builds them."""
    corpus = instantiate(cfg.data.corpus)
    eval_corpus = instantiate(cfg.eval.corpus)
    encoder = instantiate(cfg.model, _partial_=True)(corpus=corpus, cache_dir=cfg.cache_dir)
    return corpus, eval_corpus, encoder


def machine() -> str:
    """One line naming the CPU, its core count, the threads torch uses, and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), load average {load:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


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
