"""Fault injection: SIGKILL a 3-point sweep again and again, re-invoke it after each kill, and
check that it ends as an uninterrupted sweep does.

    python benchmarks/fault_injection.py --kills 20 --seed 0 [--tracking-uri http://127.0.0.1:5000]

A kill is a phase (training step, evaluation batch, metric write, checkpoint serialisation) and
an occurrence of it drawn at random (``benchmarks/faulty_point.py`` dies there). The benchmark
runs in rounds: each round is the same sweep in a fresh MLflow experiment, invoked again and again
with a new random fault until one invocation completes (its fault came after the sweep's last
occurrence of that phase). Then every point of the round must be FINISHED, with metrics equal to
the uninterrupted reference sweep's (same seeds, ``trainer.deterministic``), each metric step
logged exactly once, and no run of the round left RUNNING. Rounds go on until ``--kills`` kills
have happened. The store is a SQLite file of a temporary folder, or ``--tracking-uri`` (a tracking
server, e.g. ``make mlflow-server BACKEND=postgresql``; the experiments are then named after the
seed and the start time). Figures go to ``benchmarks/results/fault_injection_seed<seed>.json``
(``fault_injection_<backend>_seed<seed>.json`` with ``--backend-name``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_results
from mlflow.tracking import MlflowClient

from hybridsweep.tracking.store import POINT_ROLE, ROLE_TAG

REPO = Path(__file__).resolve().parents[1]
SWEEP = [
    "-m", "batch_size=4,8,16", "hydra.sweep.dir=sweep", "data.corpus.n_people=30", "data.corpus.languages=[en,de]",
    "data.scale=0.25", "data.validation_batch_size=4", "eval.corpus.n_people=10", "model.hidden_size=32",
    "model.intermediate_size=64", "model.num_heads=2", "model.vocab_size=500", "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1", "+trainer.deterministic=true", "+trainer.enable_progress_bar=false",
]
# Upper bounds of the occurrence drawn per phase, from one uninterrupted sweep (3 points, 2 epochs).
PHASES = {"train": 60, "eval": 12, "log": 30, "checkpoint": 12}


def sweep(workdir: Path, uri: str, experiment: str, fault: str | None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYBRIDSWEEP_CACHE": str(workdir / "cache"),
           "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, *([str(REPO / "benchmarks" / "faulty_point.py")] if fault else ["-m", "hybridsweep.train"]),
               *SWEEP, f"tracking.experiment={experiment}"]
    if fault:
        env["HYBRIDSWEEP_FAULT"] = fault
    with open(workdir / f"{experiment}.log", "a") as log:
        return subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def points(client: MlflowClient, experiment: str) -> dict[str, object]:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {r.data.params.get("batch_size"): r for r in runs if r.data.tags.get(ROLE_TAG) == POINT_ROLE}


def check_round(client: MlflowClient, experiment: str, reference: dict) -> list[str]:
    """What differs between a finished round and the reference sweep (empty: nothing)."""
    faulty, problems = points(client, experiment), []
    if sorted(faulty) != sorted(reference):
        problems.append(f"{experiment}: points {sorted(faulty)} vs {sorted(reference)}")
    for size, run in faulty.items():
        if run.info.status != "FINISHED":
            problems.append(f"{experiment} bs={size}: {run.info.status}")
            continue
        expected = reference[size]
        for key, value in expected.data.metrics.items():
            if key.startswith("time/"):
                continue
            got = run.data.metrics.get(key)
            if got is None or not np.isclose(got, value, rtol=1e-6, atol=1e-9):
                problems.append(f"{experiment} bs={size} {key}: {got} vs {value}")
        for key in ("train/loss", "val/loss"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            want = sorted(m.step for m in client.get_metric_history(expected.info.run_id, key))
            if steps != want:
                problems.append(f"{experiment} bs={size} {key}: steps {steps} vs {want}")
    running = [r.info.run_id for r in client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
               if r.info.status == "RUNNING"]
    problems += [f"{experiment}: run {run_id} left RUNNING" for run_id in running]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", help="a tracking server (default: a SQLite file in a temporary folder)")
    parser.add_argument("--backend-name", help="named in the results file: fault_injection_<name>_seed<seed>.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.time()
    kills, rounds, problems, invocations = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
        # Experiments of their own on a server that earlier invocations wrote to as well.
        prefix = f"s{args.seed}-{int(started)}-" if args.tracking_uri else ""
        assert sweep(workdir, uri, f"{prefix}reference", None) == 0, (workdir / f"{prefix}reference.log").read_text()[-3000:]
        client = MlflowClient(uri)
        reference = points(client, f"{prefix}reference")
        while len(kills) < args.kills:
            experiment, round_kills = f"{prefix}faulty-{len(rounds) + 1}", []
            while True:
                phase = str(rng.choice(list(PHASES)))
                fault = f"{phase}:{int(rng.integers(1, PHASES[phase] + 1))}"
                status = sweep(workdir, uri, experiment, fault)
                invocations += 1
                if status == -9:
                    round_kills.append(fault)
                    print(f"[fault] {experiment} kill {len(kills) + len(round_kills)}: {fault}", flush=True)
                elif status == 0:
                    print(f"[fault] {experiment} completed under {fault} after {len(round_kills)} kills", flush=True)
                    break
                else:
                    raise SystemExit(f"the sweep failed without being killed ({fault}): see {workdir / experiment}.log")
            found = check_round(client, experiment, reference)
            print(f"[fault] {experiment}: {'identical to the reference' if not found else found}", flush=True)
            kills += round_kills
            problems += found
            rounds.append({"experiment": experiment, "kills": round_kills, "problems": found})
    figures = {
        "kills": len(kills), "kills_by_phase": {phase: sum(k.startswith(phase) for k in kills) for phase in PHASES},
        "rounds": len(rounds), "rounds_identical": sum(not r["problems"] for r in rounds), "invocations": invocations,
        "problems": problems, "round_details": rounds, "wall_s": round(time.time() - started, 1),
    }
    figures["store"] = args.backend_name or ("tracking server" if args.tracking_uri else "sqlite")
    write_results(f"fault_injection_{args.backend_name + '_' if args.backend_name else ''}seed{args.seed}", figures)
    print({k: v for k, v in figures.items() if k != "round_details"})
    if problems:
        raise SystemExit("fault injection found a difference from the uninterrupted sweep (see above)")


if __name__ == "__main__":
    main()
