"""Evaluate an initializer without training: ``python -m hybridsweep.evaluate model=... eval=...``.

Every evaluation suite gets one zero-shot run (:mod:`hybridsweep.zero_shot`), found again rather
than evaluated when it exists; training points copy those runs' metrics as their ``init/`` metrics.
"""

from __future__ import annotations

import logging
import math

import hydra
from omegaconf import DictConfig

from hybridsweep.builders import build_evaluation, prepare
from hybridsweep.point import MAIN_METRIC, point_context, run_point, write_result
from hybridsweep.schema import config_dir, register_configs
from hybridsweep.zero_shot import zero_shot

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float:
    """Evaluate ``cfg``'s initializer zero-shot on every suite (once: finished evaluations are
    reused); returns its multilingual mAP."""
    context = point_context(prepare(cfg))
    built = build_evaluation(cfg, context.output_dir)
    runs = zero_shot(cfg, built.trainer, built.module, built.evaluator, built.described)
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
