"""Train and evaluate one point: ``python -m hybridsweep.train [key=value ...]``.

With ``-m`` Hydra runs one point per combination of comma-separated values, e.g.
``python -m hybridsweep.train -m batch_size=32,128,512``; every point becomes one MLflow run, and
the runs of one sweep share the ``sweep`` tag. What is built comes from the config's
``_target_`` nodes (:mod:`hybridsweep.builders`); whether this process trains the point, skips it
or resumes it is the claim protocol's (:mod:`hybridsweep.tracking.claims`).
"""

from __future__ import annotations

import hydra
import lightning as L
from omegaconf import DictConfig

from hybridsweep.builders import build_training, prepare
from hybridsweep.evaluation.evaluator import log_results
from hybridsweep.export import log_model
from hybridsweep.point import PhaseClock, PointRun, run_point
from hybridsweep.schema import config_dir, register_configs
from hybridsweep.tracking.store import ZERO_SHOT_RUN_TAG
from hybridsweep.zero_shot import zero_shot


def train(cfg: DictConfig) -> float:
    """Build what ``cfg`` names, fit, evaluate and log one point; returns its multilingual mAP.

    The run holds the resolved config and what was built (params), the untrained initializer's
    metrics under ``init/`` (copied from its zero-shot run), the training curve, what training
    processed and the best validation score (:class:`~hybridsweep.callbacks.FitSummary`), the
    evaluated weights' metrics and tables, the encoder as a logged model and where the time went
    (:class:`~hybridsweep.point.PhaseClock`).
    """
    clock = PhaseClock()
    point = PointRun.open(prepare(cfg))
    if not point.claimed:
        return point.skip()
    with point.tracker as tracker:
        L.seed_everything(cfg.seed, workers=True)
        built = build_training(cfg, tracker, point.checkpoint_dir, point.context.output_dir)
        trainer, module = built.trainer, built.module
        tracker.log_params(built.params)
        tracker.log_config(cfg)
        if cfg.eval.before_training:
            with clock("eval"):
                initial = zero_shot(cfg, trainer, module, built.evaluator, built.described)
            for run in initial:  # each suite's metrics already carry the suite's prefix
                tracker.copy_metrics(run, "init/")
            if initial:
                tracker.set_tags({ZERO_SHOT_RUN_TAG: ",".join(run.info.run_id for run in initial)})
        with clock("fit"):
            trainer.fit(module, datamodule=built.datamodule, ckpt_path=point.resume_from)
        with clock("eval"):
            results = built.evaluator.run(trainer, module, trained=True)
            log_results(tracker, built.evaluator.suites, results, step=trainer.global_step)
        if cfg.tracking.log_model:
            log_model(tracker, module.encoder, step=trainer.global_step)  # the weights just evaluated
        clock.log(tracker, step=trainer.global_step, resumed=point.decision.resumed)
    return point.finish()


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_point(train, cfg)


if __name__ == "__main__":
    main()
