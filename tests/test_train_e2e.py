"""End to end: a real 2-point multirun through the command line, read back from MLflow."""

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from conftest import REPO_ROOT

TINY = [
    "data.corpus.n_people=40", "eval.corpus.n_people=12", "model.vocab_size=600",
    "model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2",
    "trainer.max_epochs=1", "eval.batch_size=64",
]


def run_cli(args: list[str], cwd, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    # One intra-op thread: these models are tiny, and spinning threads on a busy machine crawl.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "hybridsweep.train", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_two_point_multirun_is_logged_side_by_side(isolated_env):
    done = run_cli(["-m", "batch_size=8,16", *TINY], isolated_env)
    assert done.returncode == 0, done.stderr[-3000:]

    everything = mlflow.search_runs(experiment_names=["hybridsweep"])
    parents = everything[everything["tags.hybridsweep.role"] == "parent"]
    assert len(parents) == 1, "one parent run per multirun"
    runs = everything[everything["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]]
    assert len(runs) == 2 and len(everything) == 3
    assert set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["params.batch_size"]) == ["16", "8"]
    assert set(runs["params.sampling.strategy"]) == {"hybrid"}
    assert runs["tags.sweep"].nunique() == 1 and runs["tags.sweep"].notna().all()
    for setting in ("monolingual", "crosslingual", "multilingual"):
        values = runs[f"metrics.map_full/{setting}"]
        assert values.between(0, 1).all() and values.notna().all()
        assert runs[f"metrics.init/map_full/{setting}"].notna().all()
    assert runs["metrics.train/loss"].notna().all()
    # Where each point's time went: the phases are positive and fit inside the run's own span.
    phases = runs[["metrics.time/fit_s", "metrics.time/eval_s", "metrics.time/overhead_s"]]
    assert (phases > 0).all().all()
    span = (runs["end_time"] - runs["start_time"]).dt.total_seconds()
    assert (phases.sum(axis=1) <= span + 1.0).all()

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run_id = runs["run_id"].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "map_full_pairs.csv", "map_full_pairs.png", "per_question_ap.csv.gz", "init"} <= artifacts
    losses = client.get_metric_history(run_id, "train/loss")
    assert len(losses) >= 2, "the training-loss curve has points"

    table = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "sweep_table.py")],
        cwd=isolated_env, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert table.returncode == 0, table.stderr[-2000:]
    written = pd.read_csv(isolated_env / "reports" / "sweep_table.csv")
    assert written["batch_size"].tolist() == [8, 16]
    by_size = runs.set_index(runs["params.batch_size"].astype(int))
    for _, row in written.iterrows():
        expected = by_size.loc[row["batch_size"], "metrics.map_full/multilingual"]
        assert row["multilingual"] == pytest.approx(expected, abs=1e-4)
    assert (isolated_env / "reports" / "sweep_table.png").stat().st_size > 0


def test_bad_value_fails_before_any_work(isolated_env):
    done = run_cli(["batch_size=0", *TINY], isolated_env)
    assert done.returncode != 0
    assert "batch_size=0 is not allowed: expected an integer > 0" in done.stderr
    assert not (isolated_env / "mlflow.db").exists(), "nothing may be logged for an invalid config"
