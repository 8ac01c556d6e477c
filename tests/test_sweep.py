"""Sweeps: parent and child runs, names, failure isolation, skipping finished points, resuming a
killed point, and parallel joblib jobs against one tracking server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.entities import Metric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, cli_env, run_cli, sqlite_store
from hybridsweep.callbacks import CurveBeforeCheckpoint
from hybridsweep.point import run_name
from hybridsweep.tracking.claims import ClaimSettings, claim_run
from hybridsweep.tracking.store import AXES_TAG, RESUMED_TAG, ROLE_TAG
from hybridsweep.tracking.tracker import RunTracker

SETTINGS = ClaimSettings()


def _runs(client: MlflowClient, experiment: str, role: str | None = "point") -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if role is None or r.data.tags.get(ROLE_TAG) == role]


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _steps_per_epoch(run) -> int:
    return int(run.data.params["sampling.steps_per_epoch"])


def test_run_name_holds_the_swept_keys_and_the_seed():
    overrides = ["+sweep=grid", "seed=1", "data.scale=0.25", "trainer.max_epochs=3", "sampling.mix_ratio=auto",
                 "batch_size=128", "hydra/launcher=parallel"]
    axes = ["sampling.mix_ratio", "data.scale", "batch_size", "seed"]
    assert run_name(overrides, axes, seed=1) == "bs=128,mix=auto,scale=0.25,seed=1"
    assert run_name(["sampling=mono", "model=e5_small", "batch_size=32"], ["sampling", "model"], seed=0) == \
        "strategy=mono,model=e5_small,seed=0"
    # A single run: every override it was given.
    assert run_name(["trainer.max_epochs=3", "batch_size=8"], None, seed=0) == "bs=8,trainer.max_epochs=3,seed=0"
    assert run_name([], None, seed=2) == "seed=2"
    # A database store holds 250 characters of a name: a long list is cut before the seed.
    many = [f"model.layer_{i}.size={i}" for i in range(40)]
    cut = run_name(many, None, seed=3)
    assert len(cut) == 250 and cut.endswith("...,seed=3") and cut.startswith("model.layer_0.size=0,model.layer_1.size=1,")


def _claimed_tracker(tmp_path: Path, resumed_from: str | None = None) -> RunTracker:
    uri = sqlite_store(tmp_path / "mlflow.db")
    decision = claim_run(uri, "e", "point", "abc", "point", {}, SETTINGS)
    return RunTracker(uri, decision.run_id, resumed=decision.resumed)


def test_resumed_tracker_drops_steps_the_run_already_holds(tmp_path):
    first = _claimed_tracker(tmp_path)
    first.client.log_batch(first.run_id, metrics=[Metric("train/loss", 1.0 / (s + 1), 0, s) for s in range(4)])
    first.client.set_terminated(first.run_id, "KILLED")
    reopened = _claimed_tracker(tmp_path)
    assert reopened.run_id == first.run_id
    # Steps 2 and 3 are replays of what the killed process logged; 4 and 5 are new.
    reopened.log_metrics({"loss": 9.0}, step=2, prefix="train/")
    reopened.log_metrics({"loss": 9.0}, step=3, prefix="train/")
    logger = reopened.lightning_logger()
    logger.log_metrics({"train/loss": 0.2, "epoch": 1.0}, step=4)
    logger.finalize()
    reopened.log_metrics({"loss": 0.1}, step=5, prefix="train/")
    assert _history(reopened.client, first.run_id, "train/loss") == [
        (0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25), (4, 0.2), (5, 0.1)
    ]
    assert _history(reopened.client, first.run_id, "epoch") == [(4, 1.0)]
    assert reopened.client.get_run(first.run_id).info.status == "RUNNING"


def test_resumed_tracker_logs_a_step_the_killed_process_left_out_of_order(tmp_path):
    """Asynchronous writes land out of order: a killed process can leave step 3 and not step 2."""
    first = _claimed_tracker(tmp_path)
    first.client.log_batch(first.run_id, metrics=[Metric("train/loss", 1.0, 0, s) for s in (0, 1, 3)])
    first.client.set_terminated(first.run_id, "KILLED")
    reopened = _claimed_tracker(tmp_path)
    for step in (2, 3, 4):
        reopened.log_metrics({"loss": 0.5}, step=step, prefix="train/")
    assert _history(reopened.client, first.run_id, "train/loss") == [(0, 1.0), (1, 1.0), (2, 0.5), (3, 1.0), (4, 0.5)]


def test_the_queued_curve_is_in_the_store_before_a_checkpoint_is_written(tmp_path, monkeypatch):
    """A resume recomputes only the steps after its checkpoint: the steps before it must be stored
    by the time it is written, even when the store writes slowly."""
    original = SqlAlchemyStore.log_batch

    def slow(self, *args, **kwargs):
        time.sleep(0.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", slow)
    tracker = _claimed_tracker(tmp_path)
    logger = tracker.lightning_logger()
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    CurveBeforeCheckpoint().on_save_checkpoint(SimpleNamespace(loggers=[logger]), None, {})
    assert [step for step, _ in _history(tracker.client, tracker.run_id, "train/loss")] == [0, 1, 2]


def test_end_of_fit_flushes_the_curve_but_leaves_the_run_open_for_evaluation(tmp_path):
    """Lightning would mark the run FINISHED when fit ends; a kill during the evaluation that
    follows must leave a run that resume reopens, not a finished one without results."""
    tracker = _claimed_tracker(tmp_path)
    logger = tracker.lightning_logger()
    logger.log_metrics({"train/loss": 0.5}, step=9)
    logger.finalize("success")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "RUNNING"
    assert run.data.metrics["train/loss"] == 0.5, "the queued training curve was not flushed"
    tracker.finish("FINISHED")
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"


def test_the_training_curve_is_logged_asynchronously(tmp_path, monkeypatch):
    """The logger a real run trains with queues the curve (MLflow's async logging), not one
    database write per step."""
    calls = []
    original = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        calls.append(({m.key for m in metrics}, synchronous))
        return original(self, run_id, metrics, params, tags, synchronous=synchronous)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    logger = _claimed_tracker(tmp_path).lightning_logger()
    logger.log_metrics({"train/loss": 0.5}, step=1)
    logger.finalize()
    curve = [synchronous for keys, synchronous in calls if "train/loss" in keys]
    assert curve == [False]


@pytest.mark.slow
def test_failing_point_is_isolated_and_finished_points_are_skipped(tmp_path):
    # batch_size=100 exceeds the 20 training question ids of the tiny corpus: that point raises.
    sweep = ["-m", "batch_size=8,100", "hydra.sweep.dir=sweep"]
    first = run_cli(tmp_path, *sweep)
    assert first.returncode != 0
    assert "1 point(s) of the sweep failed" in first.stderr
    assert "batch_size=100 exceeds" in first.stderr

    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [parent] = _runs(client, "hybridsweep", "parent")
    children = _runs(client, "hybridsweep")
    assert parent.info.status == "FAILED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    finished = [r for r in children if r.info.status == "FINISHED"]
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(finished) == 1 and len(failed) == 1
    # Only the swept key and the seed name a run; the sweep's axes are a tag of each point.
    assert finished[0].info.run_name == "bs=8,seed=0"
    assert json.loads(finished[0].data.tags[AXES_TAG]) == {"batch_size": "8"}
    traceback_text = client.download_artifacts(failed[0].info.run_id, "traceback.txt", str(tmp_path))
    assert "ValueError: batch_size=100 exceeds" in Path(traceback_text).read_text()
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.csv", "summary.png", "sweep.yaml"}
    assert len(_history(client, finished[0].info.run_id, "train/loss")) == 2 * _steps_per_epoch(finished[0])

    second = run_cli(tmp_path, *sweep)
    assert second.returncode != 0  # the failing point fails again
    children = _runs(client, "hybridsweep")
    # Trainings: still one run of the finished point (skipped, not retrained), a second failed attempt.
    assert sorted(r.info.status for r in children) == ["FAILED", "FAILED", "FINISHED"]
    again = [r for r in children if r.info.status == "FINISHED"][0]
    assert again.info.run_id == finished[0].info.run_id and again.info.end_time == finished[0].info.end_time
    assert [r.info.run_id for r in _runs(client, "hybridsweep", "parent")] == [parent.info.run_id]
    assert f"finished earlier in run {finished[0].info.run_id}, skipped" in second.stdout + second.stderr

    # Run again in the same directory without the failing point: job 1's directory, holding the
    # second attempt's failure.txt, is not run again, and the sweep succeeds.
    shrunk = run_cli(tmp_path, "-m", "batch_size=8", "hydra.sweep.dir=sweep")
    assert shrunk.returncode == 0, shrunk.stderr
    assert "failed" not in shrunk.stderr

    # Run again with the failing point's batch size fixed: job 1 reuses the directory, and the
    # sweep succeeds; both earlier tracebacks are kept, in the order of the attempts.
    third = run_cli(tmp_path, "-m", "batch_size=8,16", "hydra.sweep.dir=sweep")
    assert third.returncode == 0, third.stderr
    assert "failed" not in third.stderr
    job = tmp_path / "sweep" / "1"
    assert sorted(p.name for p in job.glob("failure*.txt")) == ["failure.1.txt", "failure.2.txt"]
    assert all("batch_size=100 exceeds" in (job / name).read_text() for name in ("failure.1.txt", "failure.2.txt"))


@pytest.mark.slow
def test_killed_point_resumes_into_its_run_with_the_uninterrupted_metrics(tmp_path):
    check_killed_point_resumes(tmp_path, cli_env(tmp_path)["MLFLOW_TRACKING_URI"])


def check_killed_point_resumes(tmp_path: Path, uri: str) -> None:
    """A point SIGKILLed mid-epoch, then run again: resumed into its run, with every step logged
    once and the metrics of an uninterrupted run; against the tracking store ``uri``."""
    env = cli_env(tmp_path, uri)
    # Validation, hence a checkpoint, twice an epoch: the last one before the kill is mid-epoch.
    point = ("batch_size=8", "+trainer.val_check_interval=0.5")
    reference = run_cli(tmp_path, *point, "tracking.experiment=reference", env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    client = MlflowClient(uri)
    [ref] = _runs(client, "reference")
    steps = _steps_per_epoch(ref)
    kill_at = steps + steps // 2 + 2  # in the second epoch, after its mid-epoch checkpoint, before its end
    assert kill_at < 2 * steps
    killed = run_cli(tmp_path, *point, "tracking.experiment=resumed", script=REPO_ROOT / "tests" / "kill_during_training.py",
                     env=cli_env(tmp_path, uri, KILL_AT_STEP=str(kill_at)))
    assert killed.returncode == -9  # SIGKILL

    [crashed] = _runs(client, "resumed")
    assert crashed.info.status == "RUNNING"  # nobody closed it
    logged_before = _history(client, crashed.info.run_id, "train/loss")
    assert max(step for step, _ in logged_before) > steps  # steps past the checkpoint exist

    # The claim's process is gone: the next invocation resumes the point at once.
    resumed = run_cli(tmp_path, *point, "tracking.experiment=resumed", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [run] = _runs(client, "resumed")
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    # Its time/* cover the resuming process only, and it says so; the uninterrupted run says not.
    assert (run.data.tags[RESUMED_TAG], ref.data.tags[RESUMED_TAG]) == ("true", "false")
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout
    assert "dataloader is not resumable" not in resumed.stderr + resumed.stdout
    curve = _history(client, run.info.run_id, "train/loss")
    # Every step exactly once, none lost, and the values of the uninterrupted run.
    assert [step for step, _ in curve] == list(range(2 * steps))
    reference_curve = _history(client, ref.info.run_id, "train/loss")
    assert [value for _, value in curve] == pytest.approx([value for _, value in reference_curve], rel=1e-6)
    assert run.data.metrics.keys() == ref.data.metrics.keys()
    # Results equal the uninterrupted run's; the time/* metrics are wall-clock, not results.
    final, expected = ({k: v for k, v in r.data.metrics.items() if not k.startswith("time/")} for r in (run, ref))
    assert final == pytest.approx(expected, rel=1e-6)
    # A finished point's checkpoints are deleted (resume.keep_checkpoints=false).
    assert not any((tmp_path / "checkpoints").rglob("*.ckpt"))


@pytest.mark.slow
def test_parallel_joblib_jobs_against_one_server_lose_nothing(tmp_path, mlflow_server):
    done = run_cli(tmp_path, "-m", "batch_size=8", "seed=0,1", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                   "tracking.experiment=joblib", env=cli_env(tmp_path, mlflow_server))
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    children = _runs(client, "joblib")
    [parent] = _runs(client, "joblib", "parent")
    assert len(children) == 2 and {r.data.params["seed"] for r in children} == {"0", "1"}
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = [step for step, _ in _history(client, run.info.run_id, "train/loss")]
        assert steps == list(range(2 * _steps_per_epoch(run)))
        assert "map_full/multilingual" in run.data.metrics
    # Both points evaluated the same metric set: nothing dropped under concurrency.
    assert children[0].data.metrics.keys() == children[1].data.metrics.keys()
    # Each job got cores // n_jobs threads.
    cores = len(__import__("os").sched_getaffinity(0))
    assert {r.data.params.get("runtime.torch_threads") for r in children} == {str(max(1, cores // 2))}


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


def test_a_sweep_of_points_at_an_equal_budget_of_pairs_has_its_parent(tmp_path):
    """An override that only each point can resolve (the default batch, 128, does not divide 64
    pairs): the parent holds it as typed, and each point trains 64 / batch steps."""
    budget = "++trainer.max_steps='${steps_for_pairs:64,${batch_size}}'"
    done = run_cli(tmp_path, "-m", "batch_size=4,8", "trainer.max_epochs=-1", budget, "eval.before_training=false",
                   "hydra.sweep.dir=sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on_multirun_start raised" not in done.stderr
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [parent] = _runs(client, "hybridsweep", "parent")
    children = _runs(client, "hybridsweep")
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.metrics["compute/steps"]) for r in children) == [8, 16]
    sweep_yaml = Path(client.download_artifacts(parent.info.run_id, "sweep.yaml", str(tmp_path))).read_text()
    assert "steps_for_pairs:64" in sweep_yaml


@pytest.mark.parametrize("variable,cores,expected", [(None, 4, 4), ("1", 4, 1), ("2", 4, 2), ("8", 4, 4), ("", 4, 4)])
def test_a_point_takes_every_core_unless_omp_num_threads_caps_it(monkeypatch, variable, cores, expected):
    from hybridsweep import point

    monkeypatch.setattr(point.os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    if variable is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", variable)
    assert point.threads_per_job() == expected
