"""Sweeps: parent and child runs, failure isolation, skipping finished points, resuming a killed
point, and parallel joblib jobs against one tracking server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hybridsweep.point import run_name

REPO_ROOT = Path(__file__).resolve().parents[1]
# A point that trains in seconds: 22 question ids x 2 languages = 88 pairs, 11 steps per epoch.
TINY = [
    "data.corpus.n_people=30", "data.corpus.languages=[en,de]", "data.scale=0.25", "eval.corpus.n_people=10",
    "model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2", "model.vocab_size=500",
    "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "+trainer.deterministic=true",
    "+trainer.enable_progress_bar=false", "eval.before_training=false",
]
STEPS_PER_EPOCH = 88 // 8


def _env(tmp_path: Path, uri: str | None = None) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(REPO_ROOT), "HYBRIDSWEEP_CACHE": str(tmp_path / "cache"),
        "MLFLOW_TRACKING_URI": uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


def _train(tmp_path: Path, *args: str, uri: str | None = None, script: list[str] | None = None,
           extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # Hydra's -m must precede the overrides
    overrides = [a for a in args if not a.startswith("-")]
    command = [sys.executable, *(script or ["-m", "hybridsweep.train"]), *flags, *TINY, *overrides]
    return subprocess.run(
        command, cwd=tmp_path, env={**_env(tmp_path, uri), **(extra_env or {})},
        capture_output=True, text=True, timeout=900,
    )


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_run_name_uses_short_axis_names_and_drops_presets():
    overrides = ["+sweep=grid", "seed=1", "data.scale=0.25", "trainer.max_epochs=3", "sampling.mix_ratio=auto",
                 "batch_size=128", "hydra/launcher=parallel"]
    assert run_name(overrides) == "bs=128,mix=auto,scale=0.25,seed=1,trainer.max_epochs=3"
    assert run_name([]) == "default"


def test_resumed_tracker_drops_steps_the_run_already_holds(tmp_path):
    from hybridsweep.resume import ResumableTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = ResumableTracker(uri, "e", "point")
    first.client.log_batch(first.run_id, metrics=[Metric("train/loss", 1.0 / (s + 1), 0, s) for s in range(4)])
    reopened = ResumableTracker(uri, "e", "point", run_id=first.run_id)
    # Steps 2 and 3 are replays of what the killed process logged; 4 and 5 are new.
    reopened.log_metrics({"loss": 9.0}, step=2, prefix="train/")
    reopened.log_metrics({"loss": 9.0}, step=3, prefix="train/")
    reopened.lightning_logger().log_metrics({"train/loss": 0.2, "epoch": 1.0}, step=4)
    reopened.log_metrics({"loss": 0.1}, step=5, prefix="train/")
    assert _history(reopened.client, first.run_id, "train/loss") == [
        (0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25), (4, 0.2), (5, 0.1)
    ]
    assert _history(reopened.client, first.run_id, "epoch") == [(4, 1.0)]
    assert reopened.client.get_run(first.run_id).info.status == "RUNNING"


def test_end_of_fit_flushes_the_curve_but_leaves_the_run_open_for_evaluation(tmp_path):
    """Lightning would mark the run FINISHED when fit ends; a kill during the evaluation that
    follows must leave a run that resume reopens, not a finished one without results."""
    from hybridsweep.tracking import RunTracker

    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "e", "point")
    logger = tracker.lightning_logger()
    logger.log_metrics({"train/loss": 0.5}, step=9)
    logger.finalize("success")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "RUNNING"
    assert run.data.metrics["train/loss"] == 0.5, "the queued training curve was not flushed"
    tracker.finish("FINISHED")
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_failing_point_is_isolated_and_finished_points_are_skipped(tmp_path):
    # batch_size=100 exceeds the 22 distinct question ids of the tiny corpus: that point raises.
    sweep = ["-m", "batch_size=8,100", "hydra.sweep.dir=sweep"]
    first = _train(tmp_path, *sweep)
    assert first.returncode != 0
    assert "1 point(s) of the sweep failed" in first.stderr
    assert "batch_size=100 exceeds" in first.stderr

    client = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = _runs(client, "hybridsweep")
    parents = [r for r in runs if r.data.tags.get("hybridsweep.role") == "parent"]
    children = {r.data.params.get("batch_size") or r.data.tags["overrides"]: r for r in runs if r not in parents}
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    parent = parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent}
    finished = [r for r in children.values() if r.info.status == "FINISHED"]
    failed = [r for r in children.values() if r.info.status == "FAILED"]
    assert len(finished) == 1 and len(failed) == 1
    assert finished[0].info.run_name.startswith("bs=8,scale=0.25,")
    traceback_text = client.download_artifacts(failed[0].info.run_id, "traceback.txt", str(tmp_path))
    assert "ValueError: batch_size=100 exceeds" in Path(traceback_text).read_text()
    assert {a.path for a in client.list_artifacts(parent)} >= {"summary.csv", "summary.png", "sweep.yaml"}
    assert len(_history(client, finished[0].info.run_id, "train/loss")) == 2 * STEPS_PER_EPOCH

    second = _train(tmp_path, *sweep)
    assert second.returncode != 0  # the failing point fails again
    runs = _runs(client, "hybridsweep")
    # Trainings: still one run of the finished point (skipped, not retrained), a second failed attempt.
    assert sorted(r.info.status for r in runs if r.data.tags.get("hybridsweep.role") != "parent") == [
        "FAILED", "FAILED", "FINISHED"
    ]
    again = [r for r in runs if r.info.status == "FINISHED"][0]
    assert again.info.run_id == finished[0].info.run_id and again.info.end_time == finished[0].info.end_time
    assert [r.info.run_id for r in runs if r.data.tags.get("hybridsweep.role") == "parent"] == [parent]
    assert f"finished earlier in run {finished[0].info.run_id}, skipped" in second.stdout


@pytest.mark.slow
def test_killed_point_resumes_into_its_run_with_the_uninterrupted_metrics(tmp_path):
    kill_at = STEPS_PER_EPOCH + 4  # inside the second epoch, after the first epoch's checkpoint
    reference = _train(tmp_path, "batch_size=8", "tracking.experiment=reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _train(tmp_path, "batch_size=8", "tracking.experiment=resumed", script=[str(REPO_ROOT / "tests" / "kill_during_training.py")],
                    extra_env={"KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9  # SIGKILL

    client = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [crashed] = _runs(client, "resumed")
    assert crashed.info.status == "RUNNING"  # nobody closed it
    logged_before = _history(client, crashed.info.run_id, "train/loss")
    assert max(step for step, _ in logged_before) > STEPS_PER_EPOCH  # steps past the checkpoint exist

    resumed = _train(tmp_path, "batch_size=8", "tracking.experiment=resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [run] = _runs(client, "resumed")
    [ref] = _runs(client, "reference")
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout
    curve = _history(client, run.info.run_id, "train/loss")
    # Every step exactly once, none lost, and the values of the uninterrupted run.
    assert [step for step, _ in curve] == list(range(2 * STEPS_PER_EPOCH))
    reference_curve = _history(client, ref.info.run_id, "train/loss")
    assert [step for step, _ in reference_curve] == list(range(2 * STEPS_PER_EPOCH))
    assert [value for _, value in curve] == pytest.approx([value for _, value in reference_curve], rel=1e-6)
    assert run.data.metrics.keys() == ref.data.metrics.keys()
    # Results equal the uninterrupted run's; the time/* metrics are wall-clock, not results.
    final, expected = ({k: v for k, v in r.data.metrics.items() if not k.startswith("time/")} for r in (run, ref))
    assert final == pytest.approx(expected, rel=1e-6)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_parallel_joblib_jobs_against_one_server_lose_nothing(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts"), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                MlflowClient(uri).search_experiments()
                break
            except Exception:
                time.sleep(0.5)
        done = _train(tmp_path, "-m", "batch_size=8", "seed=0,1", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", uri=uri)
        assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(uri)
        runs = _runs(client, "hybridsweep")
        children = [r for r in runs if r.data.tags.get("hybridsweep.role") != "parent"]
        assert len(runs) == 3 and len(children) == 2
        assert {r.data.params["seed"] for r in children} == {"0", "1"}
        parent = [r for r in runs if r not in children][0]
        for run in children:
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.params["sampling.steps_per_epoch"] == str(STEPS_PER_EPOCH)
            steps = [step for step, _ in _history(client, run.info.run_id, "train/loss")]
            assert steps == list(range(2 * STEPS_PER_EPOCH))
            assert "map_full/multilingual" in run.data.metrics
        # Both points evaluated the same metric set: nothing dropped under concurrency.
        assert children[0].data.metrics.keys() == children[1].data.metrics.keys()
        # Each job got cores // n_jobs threads.
        assert {r.data.params.get("runtime.torch_threads") for r in children} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_sweep_axes_come_from_presets_and_command_line_with_fixed_values_winning():
    from omegaconf import OmegaConf

    from hybridsweep.sweep import sweep_definition

    config = OmegaConf.create({"hydra": {
        "overrides": {"task": ["+sweep=grid", "batch_size=4,8", "data.scale=0.5", "seed=range(0,3)"]},
        "sweeper": {"params": {"batch_size": "32,64", "data.scale": "0.25,1.0", "sampling.mix_ratio": "0,auto"}},
    }})
    assert sweep_definition(config)["axes"] == {
        "batch_size": "4,8", "sampling.mix_ratio": "0,auto", "seed": "range(0,3)"
    }
