"""Shared fixtures: small corpora, an isolated MLflow store and the real benchmark data folder."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or ``$HYBRIDSWEEP_SHARED_DATA``); skips if absent."""
    path = Path(os.environ.get("HYBRIDSWEEP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real benchmark data not found at {path} (set HYBRIDSWEEP_SHARED_DATA)")
    return path


@pytest.fixture
def isolated_env(tmp_path, monkeypatch) -> Path:
    """A temporary working directory with its own MLflow store and model cache."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A URI set by an earlier test in this process would win over the variable.
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("HYBRIDSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path
