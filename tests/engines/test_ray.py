"""Ray: a sweep through Hydra's Ray launcher (`hydra/launcher=ray_cluster`, from its own
environment .venv-ray) on a one-node Ray cluster, each point a Ray task, into a tracking server on
PostgreSQL."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, cli_env
from hybridsweep.tracking.store import ROLE_TAG

from .conftest import RAY_VENV


@pytest.mark.slow
def test_a_sweep_runs_as_ray_tasks_into_the_tracking_server(ray_cluster, postgres_server):
    address, folder = ray_cluster
    done = subprocess.run(
        [str(RAY_VENV / "bin" / "python"), "-m", "hybridsweep.train", "-m", *TINY, "hydra/launcher=ray_cluster",
         "batch_size=4,8", "hydra.sweep.dir=sweep", "tracking.experiment=ray"],
        cwd=folder, env=cli_env(folder, postgres_server, RAY_ADDRESS=address), capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # Each point ran in a Ray worker, which prefixes its output with the task's name.
    assert done.stdout.count("(_run_job pid=") + done.stderr.count("(_run_job pid=") > 0
    client = MlflowClient(postgres_server)
    runs = client.search_runs([client.get_experiment_by_name("ray").experiment_id])
    points = [r for r in runs if r.data.tags.get(ROLE_TAG) == "point"]
    [parent] = [r for r in runs if r.data.tags.get(ROLE_TAG) == "parent"]
    assert sorted(r.data.params["batch_size"] for r in points) == ["4", "8"]
    assert {r.info.status for r in points} == {"FINISHED"} and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in points} == {parent.info.run_id}
    assert all("map_full/multilingual" in r.data.metrics for r in points)
    assert sorted((folder / "sweep").glob("*/result.json"))  # the jobs wrote into the sweep folder
