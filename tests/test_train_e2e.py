"""End to end: a real 2-point multirun through the command line, read back from MLflow, and the
zero-shot entry point."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from conftest import REPO_ROOT, cli_env, run_cli
from hybridsweep.precision import resolve_precision, resolve_trainer_precision
from hybridsweep.tracking.store import MACHINE_TAG, RESUMED_TAG, ROLE_TAG, ZERO_SHOT_RUN_TAG


@pytest.mark.slow
def test_two_point_multirun_is_logged_side_by_side(tmp_path):
    started = time.monotonic()
    done = run_cli(tmp_path, "-m", "batch_size=8,16", "trainer.max_epochs=1")
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]

    mlflow.set_tracking_uri(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    everything = mlflow.search_runs(experiment_names=["hybridsweep"])
    role = everything[f"tags.{ROLE_TAG}"]
    parents, runs, zero_shot = (everything[role == r] for r in ("parent", "point", "zero-shot"))
    assert len(parents) == 1 and len(runs) == 2 and len(zero_shot) == 1 and len(everything) == 4
    assert set(runs["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["params.batch_size"]) == ["16", "8"]
    assert sorted(runs["tags.mlflow.runName"]) == ["bs=16,seed=0", "bs=8,seed=0"]
    assert set(runs["params.sampling.strategy"]) == {"hybrid"}
    assert runs["tags.sweep"].nunique() == 1 and runs["tags.sweep"].notna().all()
    for setting in ("monolingual", "crosslingual", "multilingual"):
        values = runs[f"metrics.map_full/{setting}"]
        assert values.between(0, 1).all() and values.notna().all()
        # The untrained model was evaluated once; every point carries that evaluation as init/.
        assert (runs[f"metrics.init/map_full/{setting}"] == zero_shot[f"metrics.map_full/{setting}"].iloc[0]).all()
    assert (runs[f"tags.{ZERO_SHOT_RUN_TAG}"] == zero_shot["run_id"].iloc[0]).all()
    assert runs["metrics.train/loss"].notna().all() and runs["metrics.val/loss"].notna().all()
    # What training processed: pairs are steps x batch size.
    steps = runs["params.sampling.steps_per_epoch"].astype(int)
    assert (runs["metrics.compute/steps"] == steps).all()
    assert (runs["metrics.compute/pairs_seen"] == steps * runs["params.batch_size"].astype(int)).all()
    assert (runs["metrics.compute/tokens"] > 2 * runs["metrics.compute/pairs_seen"]).all()
    assert set(runs["params.runtime.device"]) == {"cpu"}
    # Where each point's time went: the phases are positive, training and evaluation happen inside
    # the run's own span, and the overhead, which starts before the run is created (composing and
    # claiming), keeps the points' totals within the command's wall time.
    phases = runs[["metrics.time/fit_s", "metrics.time/eval_s", "metrics.time/overhead_s"]]
    assert (phases > 0).all().all()
    span = (runs["end_time"] - runs["start_time"]).dt.total_seconds()
    assert (runs["metrics.time/fit_s"] + runs["metrics.time/eval_s"] <= span).all()
    assert phases.to_numpy().sum() <= wall
    # Beside the times, what they ran on (the CPU as /proc/cpuinfo names it) and that no run was resumed.
    assert set(runs[f"tags.{RESUMED_TAG}"]) == {"false"}
    cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("model name"))
    assert all(tag.startswith(f"{cpu} (") and f"{len(os.sched_getaffinity(0))} cores" in tag
               for tag in runs[f"tags.{MACHINE_TAG}"])
    # A finished point keeps no checkpoint (resume.keep_checkpoints=false).
    assert not list((tmp_path / "checkpoints").rglob("*.ckpt"))

    client = mlflow.MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    run_id = runs["run_id"].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "map_full_pairs.csv", "map_full_pairs.png", "per_question_ap.csv.gz"} <= artifacts
    assert {"map_full_pairs.csv", "per_question_ap.csv.gz"} <= {a.path for a in client.list_artifacts(zero_shot["run_id"].iloc[0])}
    losses = client.get_metric_history(run_id, "train/loss")
    assert len(losses) >= 2, "the training-loss curve has points"

    table = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "sweep_table.py")],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert table.returncode == 0, table.stderr[-2000:]
    written = pd.read_csv(tmp_path / "reports" / "sweep_table.csv")
    assert written["batch_size"].tolist() == [8, 16]
    by_size = runs.set_index(runs["params.batch_size"].astype(int))
    for _, row in written.iterrows():
        expected = by_size.loc[row["batch_size"], "metrics.map_full/multilingual"]
        assert row["multilingual"] == pytest.approx(expected, abs=1e-4)
    assert (tmp_path / "reports" / "sweep_table.png").stat().st_size > 0

    # The evaluation entry point finds that initializer's evaluation done and logs nothing new;
    # another initializer is evaluated and logged as one zero-shot run.
    again = run_cli(tmp_path, "batch_size=8", entry="hybridsweep.evaluate")
    assert again.returncode == 0, again.stderr[-3000:]
    other = run_cli(tmp_path, "model.num_layers=1", entry="hybridsweep.evaluate")
    assert other.returncode == 0, other.stderr[-3000:]
    everything = mlflow.search_runs(experiment_names=["hybridsweep"])
    zero_shot = everything[everything[f"tags.{ROLE_TAG}"] == "zero-shot"]
    assert len(zero_shot) == 2 and set(zero_shot["status"]) == {"FINISHED"}
    fresh = zero_shot[zero_shot["params.model.num_layers"] == "1"]
    assert fresh["metrics.map_full/multilingual"].between(0, 1).all()
    assert {"map_full_pairs.csv", "per_question_ap.csv.gz"} <= {a.path for a in client.list_artifacts(fresh["run_id"].iloc[0])}


def test_bad_value_fails_before_any_work(tmp_path):
    done = run_cli(tmp_path, "batch_size=0")
    assert done.returncode != 0
    assert "batch_size=0 is not allowed: expected an integer > 0" in done.stderr
    # The store (a copy of the empty one) was never opened: opening it creates the Default experiment.
    with sqlite3.connect(tmp_path / "mlflow.db") as store:
        assert store.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,), "nothing may be logged for an invalid config"


@pytest.mark.slow
def test_auto_precision_is_logged_and_identified_as_the_value_it_resolves_to(tmp_path):
    """trainer.precision=auto and eval.precision=auto run, log and hash as their concrete values:
    the same point given those values explicitly is found done."""
    trained, evaluated = resolve_trainer_precision("auto", "cpu"), resolve_precision("auto", torch.device("cpu"))
    point = ["batch_size=8", "trainer.max_epochs=1", "trainer.accelerator=cpu"]
    first = run_cli(tmp_path, *point, "trainer.precision=auto", "eval.precision=auto")
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli(tmp_path, *point, f"trainer.precision={trained}", f"eval.precision={evaluated}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier in run" in again.stdout + again.stderr

    client = mlflow.MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("hybridsweep").experiment_id])
    [run] = [r for r in runs if r.data.tags[ROLE_TAG] == "point"]
    [zero_shot] = [r for r in runs if r.data.tags[ROLE_TAG] == "zero-shot"]
    assert run.data.params["trainer.precision"] == trained and run.data.params["eval.precision"] == evaluated
    assert zero_shot.data.params["eval.precision"] == evaluated
    assert "auto" not in (run.data.params["trainer.precision"], zero_shot.data.params["eval.precision"])


@pytest.mark.slow
def test_compute_totals_cover_all_training_when_an_earlier_checkpoint_is_evaluated(tmp_path):
    """The kept checkpoint is the one of the lowest step (monitor=step, mode=min): the first
    epoch's. Evaluating it must not turn the logged totals into that checkpoint's counts."""
    done = run_cli(tmp_path, "batch_size=8", "eval.checkpoint=best", "callbacks.model_checkpoint.monitor=step")
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["hybridsweep"])
    point = runs[runs[f"tags.{ROLE_TAG}"] == "point"].iloc[0]
    steps_per_epoch, epochs = int(point["params.sampling.steps_per_epoch"]), int(point["params.trainer.max_epochs"])
    assert epochs == 2 and point["metrics.step_best"] == steps_per_epoch  # the first epoch's checkpoint was kept
    assert point["metrics.compute/steps"] == epochs * steps_per_epoch
    assert point["metrics.compute/pairs_seen"] == epochs * steps_per_epoch * 8
