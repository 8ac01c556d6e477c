"""The report commands read the store that training writes to, whatever the runs logged, and make
forwards every target a paper profile names."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import REPO_ROOT, sqlite_store
from hybridsweep.tracking.store import ROLE_TAG, SWEEP_TAG


def _command(*args: str, cwd, env_uri: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **({"MLFLOW_TRACKING_URI": env_uri} if env_uri else {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_sweep_table_reads_runs_without_an_initial_evaluation_from_the_training_store(tmp_path):
    """Points trained with ``eval.before_training=false`` log no ``init/`` metrics; the store is
    named as training names it (an override of ``tracking.tracking_uri``, or MLFLOW_TRACKING_URI),
    never ``./mlflow.db`` of the working directory."""
    uri = sqlite_store(tmp_path / "elsewhere.db")
    store = MlflowClient(uri)
    experiment = store.create_experiment("e")
    expected = {8: (0.25, 0.5, 0.125), 16: (0.75, 0.25, 0.375)}
    for batch_size, values in expected.items():
        run = store.create_run(experiment, tags={ROLE_TAG: "point", SWEEP_TAG: "s"}).info.run_id
        store.log_param(run, "batch_size", str(batch_size))
        for setting, value in zip(("monolingual", "crosslingual", "multilingual"), values):
            store.log_metric(run, f"map_full/{setting}", value)
        store.set_terminated(run, "FINISHED")
    work = tmp_path / "work"
    work.mkdir()
    script = str(REPO_ROOT / "pipelines" / "sweep_table.py")
    for arguments, env_uri in (([f"tracking.tracking_uri={uri}"], None), ([], uri)):
        out = tmp_path / f"out{len(arguments)}"
        done = _command(script, "--experiment", "e", "--sweep", "s", "--out", str(out), *arguments, cwd=work, env_uri=env_uri)
        assert done.returncode == 0, done.stderr[-3000:]
        table = pd.read_csv(out / "sweep_table.csv")
        assert list(table.columns) == ["batch_size", "monolingual", "crosslingual", "multilingual"]
        assert {row.batch_size: (row.monolingual, row.crosslingual, row.multilingual) for row in table.itertuples()} == expected
        assert (out / "sweep_table.png").stat().st_size > 0
    assert not (work / "mlflow.db").exists()
    refused = _command(script, "seed=3", cwd=work, env_uri=uri)
    assert refused.returncode != 0 and "'seed' is part of it" in refused.stderr


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("profile", ["tiny", "cpu", "gpu"])
def test_make_forwards_every_target_a_profile_names(profile):
    """Each target of ``conf/paper/<profile>.yaml`` is a make target of that profile (a dry run
    prints the command it forwards to), and ``make help`` lists them."""
    targets = list(OmegaConf.load(REPO_ROOT / "conf" / "paper" / f"{profile}.yaml").targets)
    listed = _make("help", f"PROFILE={profile}")
    assert listed.returncode == 0, listed.stderr
    for target in targets:
        dry = _make("-n", "-o", ".venv/.installed-cpu", target, f"PROFILE={profile}")
        assert dry.returncode == 0, dry.stderr
        assert f"-m hybridsweep.paper {target} --profile {profile}" in dry.stdout
        assert f"\n  {target} " in listed.stdout


def test_a_target_the_profile_lacks_is_refused_with_the_profiles_targets(tmp_path):
    done = _command("-m", "hybridsweep.paper", "table-tatoeba", "--profile", "tiny", cwd=tmp_path)
    assert done.returncode != 0
    assert "profile tiny has no target table-tatoeba: its targets are table-xquad, table-mlqa, table-mixed" in done.stderr
