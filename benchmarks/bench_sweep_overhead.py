"""Sweep overhead: a point's time outside training and evaluation, as a share of its training time.

Runs ``--points`` sweep points in one process, as Hydra's launcher does (``-m`` runs every point in
the process that parsed the command line), each point being :func:`hybridsweep.train.train` on the
composed config. ``Trainer.fit`` and :func:`evaluate_encoder` are timed by wrapping them; what is
left of a point's wall time (data generation, tokenizer and model building, the data module, MLflow
run creation and logging, Trainer construction) is its overhead. The process's import of the
pipeline, paid once per sweep, is measured in a fresh interpreter and spread over the points.

The first point runs with empty caches (fresh cache directory and MLflow database), the later
points with the caches the first one left, as in a sweep.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep_overhead.py --model tiny data.scale=0.25
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import lightning as L
from common import load_config, machine, parser, write_results

import hybridsweep.train as pipeline  # noqa: E402


def import_seconds() -> float:
    """Wall time of ``import hybridsweep.train`` in a fresh interpreter (what a sweep pays once)."""
    code = "import time; t = time.perf_counter(); import hybridsweep.train; print(time.perf_counter() - t)"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--points", type=int, default=3)
    args = args.parse_args()
    print(f"machine: {machine()}")
    workdir = tempfile.mkdtemp(prefix="sweep-overhead-")
    overrides = [f"cache_dir={workdir}/cache", f"tracking.tracking_uri=sqlite:///{workdir}/mlflow.db",
                 *args.overrides]
    print(f"overrides: {' '.join(args.overrides) or '(defaults)'}; model {args.model}")
    imports = import_seconds()
    os.chdir(workdir)  # outside Hydra's runtime a point writes its checkpoints under ./outputs
    print(f"import hybridsweep.train (fresh interpreter): {imports:.2f} s, paid once per sweep")

    timings = {"fit": 0.0, "eval": 0.0}

    def timed(name, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                timings[name] += time.perf_counter() - start
        return wrapper

    # The parts of the overhead, timed where train() calls them (instantiate builds the corpora,
    # the model, the loss and the Trainer).
    parts = {"instantiate": (pipeline, "instantiate"), "data module": (pipeline, "PairDataModule"),
             "mlflow run": (pipeline, "RunTracker"), "mlflow results": (pipeline, "_log_result")}
    rows = []
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(L.Trainer, "fit", timed("fit", L.Trainer.fit)))
        patches.enter_context(mock.patch.object(pipeline, "evaluate_encoder", timed("eval", pipeline.evaluate_encoder)))
        for name, (owner, attribute) in parts.items():
            patches.enter_context(mock.patch.object(owner, attribute, timed(name, getattr(owner, attribute))))
        for point in range(args.points):
            cfg = load_config(args.model, [*overrides, f"seed={point}"])
            timings.update({name: 0.0 for name in ("fit", "eval", *parts)})
            start = time.perf_counter()
            pipeline.train(cfg)
            total = time.perf_counter() - start
            overhead = total - timings["fit"] - timings["eval"]
            rows.append((total, timings["fit"], timings["eval"], overhead))
            print(f"point {point + 1} ({'cold' if point == 0 else 'warm'} caches): total {total:.1f} s, "
                  f"fit {timings['fit']:.1f} s, eval {timings['eval']:.1f} s, overhead {overhead:.1f} s "
                  f"= {overhead / timings['fit']:.1%} of fit; of which "
                  + ", ".join(f"{name} {timings[name]:.1f} s" for name in parts), flush=True)
    total_fit = sum(r[1] for r in rows)
    total_overhead = sum(r[3] for r in rows) + imports
    print(f"sweep of {args.points} points: overhead (incl. one import) {total_overhead:.1f} s "
          f"= {total_overhead / total_fit:.1%} of training time {total_fit:.1f} s")
    warm = rows[1:] or rows
    warm_share = sum(r[3] for r in warm) / sum(r[1] for r in warm)
    print(f"warm point overhead / fit: {warm_share:.1%}")
    write_results(f"sweep_overhead_{args.model}", {
        "model": args.model, "overrides": args.overrides, "import_s": imports,
        "points": [{"total_s": t, "fit_s": f, "eval_s": e, "overhead_s": o, "overhead_over_fit": o / f}
                   for t, f, e, o in rows],
        "warm_overhead_over_fit": warm_share,
    })


if __name__ == "__main__":
    main()
