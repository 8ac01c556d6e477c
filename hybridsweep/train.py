"""Train and evaluate one point: ``python -m hybridsweep.train [key=value ...]``.

With ``-m`` Hydra runs one point per combination of comma-separated values, e.g.
``python -m hybridsweep.train -m batch_size=32,128,512``; every point becomes one MLflow run, and
the runs of one sweep share the ``sweep`` tag.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hybridsweep.data.datamodule import PairDataModule
from hybridsweep.data.parallel_qa import ensure_disjoint
from hybridsweep.evaluation.retrieval import RetrievalResult, evaluate_encoder
from hybridsweep.model import DualEncoderModule
from hybridsweep.schema import register_configs, validate
from hybridsweep.tracking import RunTracker, flatten


def config_dir() -> str:
    """``conf/`` as shipped inside the installed package, else beside it in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/train.yaml in {package} or its parent: the installation is incomplete")


def _run_identity() -> tuple[str, dict[str, str], Path]:
    """Run name (the point's overrides), tags and output directory from Hydra's runtime state."""
    if not HydraConfig.initialized():
        return "default", {}, Path("outputs")
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    tags = {"overrides": " ".join(overrides) or "(defaults)"}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["sweep"] = hydra_cfg.sweep.dir
        tags["sweep_job"] = str(hydra_cfg.job.num)
    return ",".join(overrides) or "default", tags, Path(hydra_cfg.runtime.output_dir)


def _log_result(tracker: RunTracker, result: RetrievalResult, prefix: str, step: int) -> None:
    tracker.log_metrics(result.metrics, step=step, prefix=prefix)
    folder = prefix.rstrip("/") or None
    tracker.log_matrix(result.pair_map, "map_full_pairs", f"mAP by language pair ({folder or 'trained'})", folder)


def train(cfg: DictConfig) -> float:
    """Validate, build, train, evaluate and log one point; returns its multilingual mAP."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_name, tags, output_dir = _run_identity()

    corpus = instantiate(cfg.data.corpus)
    eval_corpus = instantiate(cfg.eval.corpus)
    ensure_disjoint(corpus, eval_corpus)
    encoder = instantiate(cfg.model, _partial_=True)(corpus=corpus, cache_dir=cfg.cache_dir)
    datamodule = PairDataModule(
        corpus, encoder, cfg.batch_size, cfg.sampling.strategy.value, cfg.sampling.mix_ratio,
        scale=cfg.data.scale, seed=cfg.seed, subset_seed=cfg.data.subset_seed, num_workers=cfg.data.num_workers,
    )
    module = DualEncoderModule(encoder, instantiate(cfg.loss), **cfg.optim)

    tracker = RunTracker(cfg.tracking.tracking_uri, cfg.tracking.experiment, run_name, tags)
    try:
        tracker.log_params({
            **flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)),
            "model.name": encoder.name,
            "data.train_corpus": corpus.name,
            "eval.corpus_name": eval_corpus.name,
            **datamodule.stats,
        })
        tracker.log_config(cfg)
        eval_args = dict(batch_size=cfg.eval.batch_size, top_k=cfg.eval.top_k, precision=cfg.eval.precision)
        if cfg.eval.before_training:
            _log_result(tracker, evaluate_encoder(encoder, eval_corpus, **eval_args), "init/", step=0)
        trainer: L.Trainer = instantiate(
            cfg.trainer,
            logger=tracker.lightning_logger(),
            callbacks=[ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True)],
            default_root_dir=str(output_dir),
        )
        trainer.fit(module, datamodule=datamodule)
        result = evaluate_encoder(encoder, eval_corpus, **eval_args)
        _log_result(tracker, result, "", step=trainer.global_step)
    except BaseException as error:
        tracker.log_text(traceback.format_exc(), "traceback.txt")
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return result.metrics["map_full/multilingual"]


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
