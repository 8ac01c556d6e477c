"""The configs ship inside the package: a non-editable install runs from any directory."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(REPO_ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "hybridsweep.train", "--cfg", "job", "batch_size=64"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "batch_size: 64" in done.stdout and "strategy: hybrid" in done.stdout
    located = subprocess.run(
        [sys.executable, "-c", "import hybridsweep.train as t; print(t.config_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )
    assert located.stdout.strip().startswith(str(site))
