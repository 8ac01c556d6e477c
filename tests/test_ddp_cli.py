"""DDP from the command line (gloo, 2 CPU processes): one point is one run, equal to the
1-process run with the same global batch; a multirun leaves one run per point; a killed DDP
point resumes into its run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, cli_env, run_cli
from hybridsweep.sweep_runs import sweep_children
from hybridsweep.tracking.store import ROLE_TAG

# No dropout: ranks draw other masks than one process would; everything else is the same math.
# In fp32: under bf16-mixed (what trainer.precision=auto picks on a bf16 CPU) each rank's half
# batch rounds differently from the whole batch, and the metrics drift apart by ~3e-3.
POINT = ["batch_size=8", "model.dropout=0.0", "trainer.precision=32-true"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One working directory and store for the module: later tests reuse the earlier runs."""
    path = tmp_path_factory.mktemp("ddp")
    return path, MlflowClient(cli_env(path)["MLFLOW_TRACKING_URI"])


def _points(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if r.data.tags.get(ROLE_TAG) == "point"]


def _results(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not k.startswith("time/")}


@pytest.mark.slow
def test_a_ddp_point_is_one_run_with_the_metrics_of_one_process(store):
    path, client = store
    single = run_cli(path, *POINT, "tracking.experiment=single")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli(path, *POINT, "trainer=ddp_cpu", "tracking.experiment=ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1" in ddp.stdout + ddp.stderr
    [one], [two] = _points(client, "single"), _points(client, "ddp")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert sorted(r.data.tags[ROLE_TAG] for r in runs) == ["point", "zero-shot"]
    assert two.info.status == "FINISHED" and two.data.params["runtime.world_size"] == "2"
    assert one.data.params["runtime.world_size"] == "1"
    assert _results(two).keys() == _results(one).keys()
    assert _results(two) == pytest.approx(_results(one), rel=1e-4, abs=1e-4)
    # The training curve was logged once per step, by rank zero alone.
    steps = [m.step for m in client.get_metric_history(two.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 2 * int(two.data.params["sampling.steps_per_epoch"])


@pytest.mark.slow
def test_a_ddp_multirun_leaves_one_run_per_point(store):
    path, client = store
    done = run_cli(path, "-m", *POINT[1:], "batch_size=8,16", "trainer=ddp_cpu", "tracking.experiment=ddp",
                   "hydra.sweep.dir=ddp-sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    points = _points(client, "ddp")
    assert sorted(r.data.params["batch_size"] for r in points) == ["16", "8"]
    assert {r.info.status for r in points} == {"FINISHED"} and {r.data.params["runtime.world_size"] for r in points} == {"2"}
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
                if r.data.tags.get(ROLE_TAG) == "parent"]
    assert {r.info.run_id for r in sweep_children(cli_env(path)["MLFLOW_TRACKING_URI"], parent.info.run_id)} == \
        {r.info.run_id for r in points}
    [new] = [r for r in points if r.data.params["batch_size"] == "16"]
    assert new.info.run_name == "bs=16,seed=0"


@pytest.mark.slow
def test_a_killed_ddp_point_resumes_into_its_run(store):
    path, client = store
    [reference] = [r for r in _points(client, "ddp") if r.data.params["batch_size"] == "8"]
    steps = int(reference.data.params["sampling.steps_per_epoch"])
    killed = run_cli(path, *POINT, "trainer=ddp_cpu", "tracking.experiment=ddp-killed",
                     script=REPO_ROOT / "tests" / "kill_during_training.py",
                     env=cli_env(path, KILL_AT_STEP=str(steps + 3)))
    assert killed.returncode == -9
    [crashed] = _points(client, "ddp-killed")
    assert crashed.info.status == "RUNNING"
    resumed = run_cli(path, *POINT, "trainer=ddp_cpu", "tracking.experiment=ddp-killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [run] = _points(client, "ddp-killed")
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    curve = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [step for step, _ in curve] == list(range(2 * steps))
    assert _results(run) == pytest.approx(_results(reference), rel=1e-5, abs=1e-6)
