"""Sweep overhead: a point's time outside training and evaluation, as a share of its training time.

Runs ``--points`` sweep points in one process, as Hydra's launcher does (``-m`` runs every point in
the process that parsed the command line), each point being :func:`hybridsweep.train.train` on the
composed config with ``seed`` = 0, 1, ... The figures are the ones the point logs itself:
``time/fit_s`` (``Trainer.fit``), ``time/eval_s`` (the evaluations), ``time/overhead_s`` (the rest
of the point's wall time: data, tokenizer and model building, MLflow run and logging, the model's
export, and ``torch.compile``'s compilation) and ``time/compile_s`` (the compilation alone; see
the docstring of :func:`hybridsweep.train.train`). The overhead's parts outside compilation are
timed here by wrapping what ``train`` calls. The process's import of the pipeline, paid once per
sweep, is measured in a fresh interpreter and spread over the points.

The first point runs with empty caches (fresh cache directory and MLflow database) and also
evaluates the untrained model (once per sweep: later points reuse that zero-shot run), the later
points with the caches the first one left, as in a sweep. The target (issue 16) is a warm point's
overhead at most 5% of its training time in the full-model profile.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep_overhead.py --model tiny data.scale=0.25
    OMP_NUM_THREADS=1 HYBRIDSWEEP_DATA=../shared/data python benchmarks/bench_sweep_overhead.py \\
        --model e5_small_cpu data=mlqa_r eval=xquad_r data.scale=300 batch_size=32 trainer.max_epochs=1
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

from common import load_config, machine, parser, write_results

import hybridsweep.builders as builders
import hybridsweep.point as point_module
import hybridsweep.train as pipeline
from hybridsweep.tracking.identity import config_hash
from hybridsweep.tracking.store import HASH_TAG, client, experiment_id

TIMES = ("fit_s", "eval_s", "overhead_s", "compile_s")


def import_seconds() -> float:
    """Wall time of ``import hybridsweep.train`` in a fresh interpreter (what a sweep pays once)."""
    code = "import time; t = time.perf_counter(); import hybridsweep.train; print(time.perf_counter() - t)"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    return float(out.stdout.strip().splitlines()[-1])


def logged_times(cfg, uri: str) -> dict[str, float]:
    """The ``time/*`` metrics of the finished point run of ``cfg`` (train resolved it in place)."""
    store = client(uri)
    experiment = experiment_id(store, cfg.tracking.experiment)
    [run] = store.search_runs([experiment], f"tags.`{HASH_TAG}` = '{config_hash(cfg)}'")
    return {name: run.data.metrics.get(f"time/{name}", 0.0) for name in TIMES}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--points", type=int, default=3)
    args.add_argument("--workdir", default=None, help="where the cache, MLflow store and checkpoints go (default: a new temporary folder)")
    args.add_argument("--no-write", action="store_true", help="print the figures only (smoke runs)")
    args = args.parse_args()
    print(f"machine: {machine()}")
    workdir = str(Path(args.workdir or tempfile.mkdtemp(prefix="sweep-overhead-")).resolve())
    Path(workdir).mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir}/mlflow.db"
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # it would win over the store of this benchmark
    overrides = [f"cache_dir={workdir}/cache", f"tracking.tracking_uri={uri}", *args.overrides]
    print(f"overrides: {' '.join(args.overrides) or '(defaults)'}; model {args.model}; work in {workdir}")
    imports = import_seconds()
    os.chdir(workdir)  # outside Hydra's runtime a point writes its checkpoints under ./outputs
    print(f"import hybridsweep.train (fresh interpreter): {imports:.2f} s, paid once per sweep")

    # The parts of the overhead, timed where train() calls them.
    parts = {"corpus and encoder": (builders, "build_encoder"), "evaluator": (builders, "build_evaluator"),
             "instantiate": (builders, "instantiate"), "mlflow run": (point_module, "open_run"),
             "model export": (pipeline, "log_model")}
    timings = dict.fromkeys(parts, 0.0)

    def timed(name, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                timings[name] += time.perf_counter() - start
        return wrapper

    rows = []
    with contextlib.ExitStack() as patches:
        for name, (owner, attribute) in parts.items():
            patches.enter_context(mock.patch.object(owner, attribute, timed(name, getattr(owner, attribute))))
        for point in range(args.points):
            cfg = load_config(args.model, [*overrides, f"seed={point}"])
            timings.update(dict.fromkeys(parts, 0.0))
            start = time.perf_counter()
            pipeline.train(cfg)
            total = time.perf_counter() - start
            logged = logged_times(cfg, uri)
            rows.append({"total_s": total, **logged, "overhead_over_fit": logged["overhead_s"] / logged["fit_s"],
                         "parts_s": dict(timings)})
            print(f"point {point + 1} ({'cold' if point == 0 else 'warm'} caches): total {total:.1f} s, "
                  f"fit {logged['fit_s']:.1f} s, eval {logged['eval_s']:.1f} s, overhead {logged['overhead_s']:.1f} s "
                  f"(compile {logged['compile_s']:.1f} s) = {logged['overhead_s'] / logged['fit_s']:.1%} of fit; "
                  "overhead parts: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()), flush=True)
    total_fit = sum(r["fit_s"] for r in rows)
    total_overhead = sum(r["overhead_s"] for r in rows) + imports
    print(f"sweep of {args.points} points: overhead (incl. one import and compilation) {total_overhead:.1f} s "
          f"= {total_overhead / total_fit:.1%} of training time {total_fit:.1f} s")
    warm = rows[1:] or rows
    warm_share = sum(r["overhead_s"] for r in warm) / sum(r["fit_s"] for r in warm)
    print(f"warm point overhead / fit: {warm_share:.1%} (target <= 5% in the full-model profile)")
    figures = {
        "model": args.model, "overrides": args.overrides, "import_s": imports, "points": rows,
        "sweep_overhead_over_fit": total_overhead / total_fit, "warm_overhead_over_fit": warm_share,
    }
    if not args.no_write:
        write_results(f"sweep_overhead_{args.model}", figures)


if __name__ == "__main__":
    main()
