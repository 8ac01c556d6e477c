"""A point seen from its job: what it reports in ``result.json`` whether it trained or not, and how
many processes its Trainer runs on."""

from __future__ import annotations

import json
import math
import time

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import TINY, cli_env, run_cli
from hybridsweep.builders import prepare
from hybridsweep.point import training_processes
from hybridsweep.schema import config_dir, register_configs
from hybridsweep.tracking.identity import config_hash
from hybridsweep.tracking.store import CLAIM_TAG, HASH_TAG, HEARTBEAT_TAG, ROLE_TAG

register_configs()


def _identity(*overrides: str) -> str:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return config_hash(prepare(compose("train", overrides=[*TINY, *overrides])))


@pytest.mark.slow
def test_skipped_and_busy_points_write_their_result(tmp_path):
    """The multirun job that starts a point in its own processes relays the point's ``result.json``:
    a point finished earlier reports that run and its metric, a point another process is training
    reports that run and NaN, each in its own output directory."""
    uri = cli_env(tmp_path)["MLFLOW_TRACKING_URI"]
    store = MlflowClient(uri)
    experiment = store.create_experiment("hybridsweep")
    finished = store.create_run(experiment, tags={HASH_TAG: _identity("batch_size=8"), ROLE_TAG: "point"}).info.run_id
    store.log_batch(finished, metrics=[Metric("map_full/multilingual", 0.375, 0, 3)])
    store.set_terminated(finished, "FINISHED")
    busy = store.create_run(experiment, tags={
        HASH_TAG: _identity("batch_size=16"), ROLE_TAG: "point", CLAIM_TAG: "elsewhere:1:token",
        HEARTBEAT_TAG: f"{time.time() + 3600:.3f}",  # renewed in the future: live for the whole test
    }).info.run_id

    for batch_size, expected_run, expected_metric in ((8, finished, 0.375), (16, busy, math.nan)):
        output = tmp_path / f"bs{batch_size}"
        (output).mkdir()
        (output / "result.json").write_text(json.dumps({"run_id": "an earlier invocation's", "map_full/multilingual": 0.9}))
        done = run_cli(tmp_path, f"batch_size={batch_size}", f"hydra.run.dir={output}")
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads((output / "result.json").read_text())
        assert result["run_id"] == expected_run
        metric = result["map_full/multilingual"]
        assert (math.isnan(metric) and math.isnan(expected_metric)) or metric == expected_metric
    assert store.get_run(busy).info.status == "RUNNING", "a busy point is left to its process"


@pytest.mark.parametrize(("trainer", "visible", "expected"), [
    ({"accelerator": "auto", "devices": "auto"}, 4, 4),  # Lightning takes every visible GPU
    ({"accelerator": "gpu", "devices": "auto"}, 4, 4),
    ({"accelerator": "auto", "devices": -1}, 4, 4),
    ({"accelerator": "auto", "devices": "auto", "num_nodes": 2}, 4, 8),
    ({"accelerator": "auto", "devices": "auto"}, 0, 1),  # no GPU: one CPU process
    ({"accelerator": "cpu", "devices": "auto"}, 4, 1),
    ({"accelerator": "cpu", "devices": 2}, 0, 2),
    ({"accelerator": "gpu", "devices": "0,2"}, 4, 2),
    ({"accelerator": "gpu", "devices": [1, 3, 5]}, 8, 3),
])
def test_training_processes_counts_what_lightning_runs_on(monkeypatch, trainer, visible, expected):
    monkeypatch.setattr("torch.cuda.is_available", lambda: visible > 0)
    monkeypatch.setattr("torch.cuda.device_count", lambda: visible)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    assert training_processes(OmegaConf.create(trainer)) == expected
