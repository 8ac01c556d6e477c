"""Claims: a point is trained by one process at a time, a live run is never taken over, a dead
process's point is resumed — against SQLite and against a tracking server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import cli_env, run_cli, sqlite_store
from hybridsweep.tracking.claims import ClaimSettings, Decision, claim_run
from hybridsweep.tracking.store import CLAIM_TAG, HEARTBEAT_TAG, ROLE_TAG
from hybridsweep.tracking.tracker import RunTracker

FAST = ClaimSettings(heartbeat_s=0.5, claim_expiry_s=3.0, claim_settle_s=1.0)


def _claim(uri, digest="p1", settings=FAST):
    return claim_run(uri, "e", "point", digest, "name", {}, settings)


def test_the_decision_follows_the_state_of_the_points_runs(tmp_path):
    uri = sqlite_store(tmp_path / "mlflow.db")
    store = MlflowClient(uri)
    first = _claim(uri)
    assert first.state == "claimed" and not first.resumed
    # Live (fresh heartbeat, our own process alive): another attempt leaves it alone.
    assert (_claim(uri).state, _claim(uri).run_id) == ("busy", first.run_id)
    store.set_terminated(first.run_id, "KILLED")  # Ctrl-C: resumable at once
    again = _claim(uri)
    assert (again.state, again.run_id, again.resumed) == ("claimed", first.run_id, True)
    store.set_terminated(first.run_id, "FAILED")  # a failure stays on record; a new run starts
    fresh = _claim(uri)
    assert fresh.state == "claimed" and fresh.run_id != first.run_id and not fresh.resumed
    store.set_terminated(fresh.run_id, "FINISHED")
    assert (_claim(uri).state, _claim(uri).run_id) == ("done", fresh.run_id)
    assert _claim(uri, "p2").run_id not in (first.run_id, fresh.run_id)  # another identity, another run


def test_a_resumed_run_keeps_the_params_it_logged_first(tmp_path):
    """Resuming from another data or cache location (outside the identity) must not fail on
    MLflow's refusal to change a param: the first values stay, new keys are added."""
    uri = sqlite_store(tmp_path / "mlflow.db")
    first = _claim(uri)
    RunTracker(uri, first.run_id).log_params({"data.corpus.root": "../shared/data", "batch_size": 8})
    MlflowClient(uri).set_terminated(first.run_id, "KILLED")
    again = _claim(uri)
    assert again.resumed
    RunTracker(uri, again.run_id, resumed=True).log_params(
        {"data.corpus.root": "/elsewhere/data", "batch_size": 8, "runtime.torch_threads": 2})
    params = MlflowClient(uri).get_run(first.run_id).data.params
    assert params == {"data.corpus.root": "../shared/data", "batch_size": "8", "runtime.torch_threads": "2"}


def test_a_claim_goes_stale_when_its_heartbeat_stops_or_its_process_is_gone(tmp_path):
    uri = sqlite_store(tmp_path / "mlflow.db")
    store = MlflowClient(uri)
    # A claim made on another host: only its heartbeat tells whether it lives.
    run_id = _claim(uri).run_id
    store.set_tag(run_id, CLAIM_TAG, "elsewhere:1:token")
    assert _claim(uri).state == "busy"
    store.set_tag(run_id, HEARTBEAT_TAG, f"{time.time() - FAST.claim_expiry_s - 1:.3f}")
    resumed = _claim(uri)
    assert (resumed.state, resumed.run_id, resumed.resumed) == ("claimed", run_id, True)
    # A claim of this host whose process has exited is stale at once, heartbeat or not.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.set_tag(run_id, CLAIM_TAG, f"{__import__('socket').gethostname()}:{dead.stdout.strip()}:token")
    store.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
    assert _claim(uri).state == "claimed"


def test_the_heartbeat_keeps_a_claim_alive_past_its_expiry(tmp_path):
    uri = sqlite_store(tmp_path / "mlflow.db")
    decision = _claim(uri)
    tracker = RunTracker(uri, decision.run_id, heartbeat_s=FAST.heartbeat_s)
    store = MlflowClient(uri)
    store.set_tag(decision.run_id, CLAIM_TAG, "elsewhere:1:token")  # judged by heartbeat alone
    time.sleep(FAST.claim_expiry_s + 1.5)
    assert _claim(uri).state == "busy"
    tracker.finish("KILLED")
    assert _claim(uri).state == "claimed"


@pytest.mark.slow
def test_racing_claims_on_a_tracking_server_elect_one_process(mlflow_server):
    """No lock is shared with a server: contenders write, wait, read back; one goes on."""
    decisions, start = [], threading.Barrier(4)
    # No heartbeat renews the winner's claim here (a RunTracker would): the expiry is set far
    # beyond the race, so that a loser slowed by a loaded machine cannot find it stale.
    race = ClaimSettings(heartbeat_s=FAST.heartbeat_s, claim_expiry_s=120.0, claim_settle_s=FAST.claim_settle_s)

    def contend():
        start.wait()
        try:
            decisions.append(claim_run(mlflow_server, "race", "point", "shared", "n", {}, race))
        except Exception as error:  # a failure must show in the assertion, not vanish with its thread
            decisions.append(error)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(d, Decision) for d in decisions), decisions
    claimed = [d for d in decisions if d.state == "claimed"]
    assert len(claimed) == 1, decisions
    assert [d.state for d in decisions].count("busy") == 3
    store = MlflowClient(mlflow_server)
    live = store.search_runs([store.get_experiment_by_name("race").experiment_id])
    assert [r.info.run_id for r in live] == [claimed[0].run_id]  # the losers withdrew their runs


def _concurrent_sweeps(tmp_path, uri: str, experiment: str) -> list[subprocess.CompletedProcess]:
    """Two invocations of one 3-point sweep, started together."""
    env = cli_env(tmp_path, uri)
    sweep = ["-m", "batch_size=4,8,16", "trainer.max_epochs=1", "hydra.sweep.dir=sweep", f"tracking.experiment={experiment}",
             "resume.heartbeat_s=1", "resume.claim_expiry_s=20", "resume.claim_settle_s=1"]
    processes = [run_cli(tmp_path, *sweep, env=env, background=True) for _ in range(2)]
    for process in processes:
        process.wait(timeout=900)
    return processes


def _trained_once(tmp_path, uri: str, experiment: str) -> None:
    processes = _concurrent_sweeps(tmp_path, uri, experiment)
    logs = "\n".join(log.read_text() for log in sorted(tmp_path.glob("cli-*.log")))
    assert all(p.returncode == 0 for p in processes), logs[-4000:]
    store = MlflowClient(uri)
    runs = store.search_runs([store.get_experiment_by_name(experiment).experiment_id])
    points = [r for r in runs if r.data.tags.get(ROLE_TAG) == "point"]
    assert sorted(r.data.params["batch_size"] for r in points) == ["16", "4", "8"]
    assert {r.info.status for r in points} == {"FINISHED"}
    # Each point was trained once: one Trainer.fit per point over both invocations.
    assert logs.count("`Trainer.fit` stopped") == 3, logs[-4000:]
    # And the initializer was evaluated once, for all of them.
    assert len([r for r in runs if r.data.tags.get(ROLE_TAG) == "zero-shot"]) == 1


@pytest.mark.slow
def test_two_invocations_of_one_sweep_train_each_point_once_with_sqlite(tmp_path):
    _trained_once(tmp_path, sqlite_store(tmp_path / "mlflow.db"), "concurrent-sqlite")


@pytest.mark.slow
def test_two_invocations_of_one_sweep_train_each_point_once_with_a_server(tmp_path, mlflow_server):
    _trained_once(tmp_path, mlflow_server, "concurrent-server")
