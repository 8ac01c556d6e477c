"""A wheel carries the package and its configs: built without warnings about packages, installed
into a fresh environment without the source tree, it trains a point from an empty folder."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, TINY


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_trains_a_point_from_an_empty_folder(tmp_path):
    built = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "wheels"), str(REPO_ROOT)], timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "absent from the packages configuration" not in built.stdout + built.stderr
    [wheel] = (tmp_path / "wheels").glob("hybridsweep-*.whl")
    configs = {f"hybridsweep/conf/{p.relative_to(REPO_ROOT / 'conf')}" for p in (REPO_ROOT / "conf").rglob("*.yaml")}
    modules = {f"{p.relative_to(REPO_ROOT)}" for p in (REPO_ROOT / "hybridsweep").rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    assert configs <= members and modules <= members

    # A fresh environment whose only hybridsweep is the wheel; its dependencies are this
    # environment's (a path line, so that environment's editable install is not activated).
    environment = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(environment)], timeout=120).returncode == 0
    python = environment / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        check=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps",
                      str(wheel)], timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["OMP_NUM_THREADS"] = "1"
    located = _run([str(python), "-c", "import hybridsweep.schema as s; print(s.__file__); print(s.config_dir())"],
                   cwd=empty, env=env, check=True)
    assert all(line.startswith(str(purelib)) for line in located.stdout.split()), located.stdout
    store = f"sqlite:///{tmp_path / 'store.db'}"
    trained = _run([str(python), "-m", "hybridsweep.train", *TINY, "trainer.max_epochs=1", "batch_size=8",
                    f"tracking.tracking_uri={store}", f"cache_dir={tmp_path / 'cache'}", "hydra.run.dir=point"],
                   cwd=empty, env=env, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads((empty / "point" / "result.json").read_text())
    client = MlflowClient(store)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["hybridsweep.role"] == "point"
    assert 0 < run.data.metrics["map_full/multilingual"] == result["map_full/multilingual"] <= 1
    assert (environment / "bin" / "hybridsweep-train").is_file()
