"""Multi-node DDP on one machine: a point trained as 2 nodes x 1 process (two torchrun agents on
127.0.0.1, gloo; pipelines/engines/ddp-2nodes.sh, `make ddp-2nodes`) is one run whose metrics equal
the one-process run at the same global batch, as tests/test_ddp_cli.py checks for 2 processes of
one node."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from test_ddp_cli import POINT, _points, _results

from conftest import REPO_ROOT, TINY, cli_env, free_port, run_cli
from hybridsweep.tracking.store import ROLE_TAG


@pytest.mark.slow
def test_a_point_on_two_nodes_is_one_run_with_the_metrics_of_one_process(tmp_path):
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    single = run_cli(tmp_path, *POINT, "tracking.experiment=single")
    assert single.returncode == 0, single.stderr[-3000:]
    nodes = subprocess.run(
        ["bash", str(REPO_ROOT / "pipelines" / "engines" / "ddp-2nodes.sh"), *TINY, *POINT, "tracking.experiment=nodes"],
        cwd=tmp_path, env=cli_env(tmp_path, PYTHON=sys.executable, DDP_PORT=str(free_port())),
        capture_output=True, text=True, timeout=900,
    )
    assert nodes.returncode == 0, nodes.stderr[-4000:]
    log = nodes.stdout + nodes.stderr
    # Two agents, one rank each: node 1's rank is global rank 1.
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    [one], [two] = _points(client, "single"), _points(client, "nodes")
    runs = client.search_runs([client.get_experiment_by_name("nodes").experiment_id])
    assert sorted(r.data.tags[ROLE_TAG] for r in runs) == ["point", "zero-shot"]
    assert two.info.status == "FINISHED" and two.data.params["runtime.world_size"] == "2"
    assert two.data.params["trainer.num_nodes"] == "2" and two.data.params["trainer.devices"] == "1"
    assert _results(two).keys() == _results(one).keys()
    assert _results(two) == pytest.approx(_results(one), rel=1e-4, abs=1e-4)
    steps = [m.step for m in client.get_metric_history(two.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 2 * int(two.data.params["sampling.steps_per_epoch"])
