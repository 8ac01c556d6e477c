"""One e5-small point end to end on a CUDA GPU, through the real command line (``make gpu-check``).

    HYBRIDSWEEP_DATA=../shared/data python benchmarks/gpu_check.py [--cpu-uri URI] [override ...]

The point is the hybrid point of seed 1 of ``conf/paper/cpu.yaml`` (its sweep ``hybrid_seed1``:
multilingual-e5-small, the paper's settings, one epoch on MLQA-R, zero-shot evaluation on XQuAD-R) with
``trainer=gpu`` in place of the CPU trainer; it runs as ``python -m hybridsweep.train`` in a
subprocess, into a store of its own. Printed, and written to ``benchmarks/results/gpu_check.json``:

- training pairs/s (``compute/pairs_seen`` / ``time/fit_s``) and evaluation texts/s (XQuAD-R's
  questions and candidates / ``time/eval_s``; the untrained model is not evaluated);
- the share of the GPU's bf16 matrix-product peak (best of 20 products of 8192^2 matrices,
  measured in this run) that training and evaluation reach, counting the dense matrix products of
  the tokens they processed (:func:`common.token_flops` at the mean text length; a training step
  as three forward passes). Padding and the attention's softmax are not counted, so the shares are
  lower bounds of what the GPU computed;
- the peak GPU memory of the point (``compute/peak_device_memory_gb``);
- the point's metrics beside those of the same point trained on the CPU, read from ``--cpu-uri``
  (default: this checkout's ``mlflow.db``, which ``make paper PROFILE=cpu`` fills).

``--accelerator cpu`` runs the same measurement without a GPU (a smoke run of this script; the
peak is then the CPU's bf16 peak); ``--profile``/``--sweep`` pick another profile point.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, matmul_peak, token_flops, write_results

COMPARED = ("map_full/multilingual", "map_full/monolingual", "map_full/crosslingual", "val/loss_best")
SAME_POINT = ("model.name", "data.train_corpus", "eval.corpus_name", "sampling.strategy", "sampling.mix_ratio",
              "seed", "batch_size", "trainer.max_epochs")


def point_overrides(profile_name: str, sweep: str, accelerator: str, extra: list[str]) -> list[str]:
    """The profile sweep's overrides (one point: no comma-separated values left) on ``accelerator``."""
    from hybridsweep.paper import load_profile, sweep_overrides

    profile = load_profile(profile_name)
    overrides = [o for o in sweep_overrides(profile, sweep) if not o.startswith("tracking.experiment=")]
    trainer = ["trainer=gpu"] if accelerator == "gpu" else []
    return [*trainer, *overrides, "eval.before_training=false", *extra]


def run_point(overrides: list[str], workdir: Path) -> str:
    """``python -m hybridsweep.train <overrides>`` into ``workdir``'s store; returns the tracking URI."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "hybridsweep.train", *overrides, "tracking.experiment=gpu-check",
               f"hydra.run.dir={workdir / 'run'}", f"resume.checkpoint_dir={workdir / 'checkpoints'}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, cwd=workdir, check=True)
    return uri


def finished_point(uri: str, experiment: str, params: dict[str, str] | None = None):
    """The newest FINISHED point run of ``experiment`` in ``uri`` whose params include ``params``."""
    from mlflow.tracking import MlflowClient

    from hybridsweep.tracking.store import POINT_ROLE, ROLE_TAG

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    for run in runs:
        if (run.info.status == "FINISHED" and run.data.tags.get(ROLE_TAG) == POINT_ROLE
                and all(run.data.params.get(k) == v for k, v in (params or {}).items())):
            return run
    return None


def evaluation_tokens(overrides: list[str]) -> tuple[int, int, object]:
    """Texts and tokens (as the evaluation tokenizes them) of the point's evaluation corpus, and the
    backbone's config."""
    from common import build_corpora_and_encoder, load_config

    cfg = load_config("e5_small", [o for o in overrides if not o.startswith(("trainer=", "model="))])
    _, corpus, encoder = build_corpora_and_encoder(cfg)
    tokenizer = encoder.text_tokenizer
    questions = tokenizer.lengths([q.text for q in corpus.questions], "query")
    candidates = tokenizer.lengths([c.text for c in corpus.candidates], "passage")
    return len(questions) + len(candidates), sum(questions) + sum(candidates), encoder.backbone.config


def main() -> None:
    import torch

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    args.add_argument("--profile", default="cpu", help="the paper profile whose point is run (default: cpu)")
    args.add_argument("--sweep", default="hybrid_seed1", help="its sweep holding one point")
    args.add_argument("--cpu-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}",
                      help="the store holding the same point trained on the CPU")
    args.add_argument("--cpu-experiment", default="paper-cpu")
    args.add_argument("--workdir", default="", help="where the point's store and outputs go (default: a temporary folder)")
    args.add_argument("--no-write", action="store_true", help="print only (no benchmarks/results/gpu_check.json)")
    args.add_argument("overrides", nargs="*", help="further Hydra overrides of the point")
    args = args.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); "
                         "run it on a GPU machine, or with --accelerator cpu as a smoke run")
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    print(f"machine: {machine()}" + (f"; GPU {torch.cuda.get_device_name(0)}" if device == "cuda" else ""))
    peak = matmul_peak(torch.bfloat16, size=8192 if device == "cuda" else 1024, device=device)
    print(f"bf16 matrix-product peak: {peak / 1e12:.1f} TFLOP/s", flush=True)

    overrides = point_overrides(args.profile, args.sweep, args.accelerator, args.overrides)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        uri = run_point(overrides, workdir)
        run = finished_point(uri, "gpu-check")
    if run is None:
        raise SystemExit(f"gpu_check: the point left no FINISHED run in {uri}")
    metrics = run.data.metrics
    texts, tokens, config = evaluation_tokens(overrides)
    pairs, train_tokens = metrics["compute/pairs_seen"], metrics["compute/tokens"]
    train_length = train_tokens / (2 * pairs)
    train_flops = 3 * token_flops(config, round(train_length)) * train_tokens
    eval_flops = token_flops(config, round(tokens / texts)) * tokens
    figures = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "overrides": overrides,
        "bf16_peak_tflops": peak / 1e12,
        "train_pairs_per_s": pairs / metrics["time/fit_s"],
        "eval_texts_per_s": texts / metrics["time/eval_s"],
        "train_share_of_bf16_peak": train_flops / metrics["time/fit_s"] / peak,
        "eval_share_of_bf16_peak": eval_flops / metrics["time/eval_s"] / peak,
        "peak_device_memory_gb": metrics.get("compute/peak_device_memory_gb"),
        "fit_s": metrics["time/fit_s"], "eval_s": metrics["time/eval_s"], "overhead_s": metrics["time/overhead_s"],
        "metrics": {k: metrics[k] for k in COMPARED if k in metrics},
    }
    reference = finished_point(args.cpu_uri, args.cpu_experiment, {k: run.data.params[k] for k in SAME_POINT
                                                                    if k in run.data.params})
    figures["cpu_metrics"] = {k: reference.data.metrics[k] for k in COMPARED if k in reference.data.metrics} if reference else None
    for key, value in figures.items():
        if key not in ("metrics", "cpu_metrics", "overrides"):
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"{'metric':<24}{args.accelerator:>10}{'cpu':>10}")
    for key, value in figures["metrics"].items():
        cpu = (figures["cpu_metrics"] or {}).get(key)
        print(f"{key:<24}{value:>10.4f}{'' if cpu is None else f'{cpu:>10.4f}':>10}")
    if reference is None:
        print(f"no CPU run of the same point in {args.cpu_uri} (experiment {args.cpu_experiment}); "
              f"`make paper PROFILE={args.profile}` trains it")
    if not args.no_write:
        print(f"wrote {write_results('gpu_check' if device == 'cuda' else 'gpu_check_cpu_smoke', figures)}")


if __name__ == "__main__":
    main()
