"""The MLflow UI really shows a sweep: a screenshot of its compare view in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_screenshot_of_the_sweep_compare_view(tmp_path):
    if not Path("/usr/bin/chromium").exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    import numpy as np
    from matplotlib.image import imread
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("hybridsweep")
    parent = client.create_run(experiment, run_name="sweep batch_size", tags={"hybridsweep.role": "parent"})
    for batch_size, score in ((32, 0.41), (128, 0.52), (512, 0.58)):
        child = client.create_run(experiment, run_name=f"bs={batch_size}",
                                  tags={"mlflow.parentRunId": parent.info.run_id})
        client.log_param(child.info.run_id, "batch_size", batch_size)
        client.log_metric(child.info.run_id, "map_full/multilingual", score)
        client.set_terminated(child.info.run_id)
    out = tmp_path / "reports" / "mlflow_sweep.png"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "mlflow_screenshot.py"), "--backend-store-uri", uri,
         "--out", str(out)], capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 runs compared" in done.stdout
    image = imread(out)
    assert image.shape[0] >= 600 and image.shape[1] >= 1200
    assert np.std(image[..., :3]) > 0.05  # not a blank page
