"""An initializer evaluated without training, once: one MLflow run per evaluation suite, tagged
``hybridsweep.role=zero-shot``, with the same metrics and artifacts as a trained point.

Its identity (:func:`~hybridsweep.tracking.identity.zero_shot_hash`) is the initializer, the
corpus it is built from, the suite and the precisions: an initializer is evaluated once per
(initializer, evaluation corpus, precision), and every training point of a sweep copies those
runs' metrics as its ``init/`` metrics instead of encoding the untrained model again.
"""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Run
from omegaconf import DictConfig

from hybridsweep.evaluation.evaluator import Evaluator, log_results
from hybridsweep.model import DualEncoderModule
from hybridsweep.tracking.claims import open_run
from hybridsweep.tracking.identity import result_config, zero_shot_hash
from hybridsweep.tracking.store import ZERO_SHOT_ROLE, client, is_global_zero, tracking_uri
from hybridsweep.tracking.tracker import flatten


def zero_shot(cfg: DictConfig, trainer: L.Trainer, module: DualEncoderModule, evaluator: Evaluator,
              params: dict[str, str]) -> list[Run]:
    """The finished zero-shot runs of ``cfg``'s initializer, one per suite (on global rank zero;
    empty elsewhere): earlier ones where they exist (or, while another process evaluates one,
    once it finishes), the others evaluated now in one pass with ``trainer`` and logged.

    Claims are taken suite by suite in the order of ``eval.suites``, so two processes that need
    the same evaluations never wait on each other in a circle."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model_params = flatten(result_config(cfg, ("model",)))
    decisions, trackers = {}, {}
    for key in evaluator.suites:
        name = f"zero-shot {key} model={choices.get('model', '?')} eval={choices.get('eval', '?')}"
        decisions[key], trackers[key] = open_run(cfg, ZERO_SHOT_ROLE, zero_shot_hash(cfg, key), name, {}, wait=True)
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
                tracker.log_params({**model_params, **params, "eval.suite": key, "eval.precision": cfg.eval.precision,
                                    "matmul_precision": cfg.matmul_precision})
                log_results(tracker, {key: evaluator.suites[key]}, results and {key: results[key]})
    if not is_global_zero():
        return []
    store = client(tracking_uri(cfg.tracking.tracking_uri))
    return [store.get_run(decision.run_id) for decision in decisions.values()]
