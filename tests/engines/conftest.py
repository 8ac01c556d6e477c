"""The engines the tests in this folder run against, each started by the script or command its
make target uses (pipelines/engines/*.sh, moto_server, ray start) in a temporary folder, on free
ports, and stopped afterwards. A test skips only where its engine cannot be installed here (no
root for the system daemons, no apt-get and no binaries, a Python package missing from .venv).

These tests are not part of `make test` (pyproject.toml: norecursedirs); `make test-engines`
installs what they need and runs them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, free_port

SCRIPTS = REPO_ROOT / "pipelines" / "engines"
# The server's job runner (a consumer pool for MLflow's GenAI jobs, six processes) has nothing to do here.
SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def can_run_as_root() -> str | None:
    """Why the system daemons (SLURM, PostgreSQL) cannot be started here, or None when they can."""
    if os.geteuid() == 0:
        return None
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return None
    return "needs root or password-less sudo to install and start the daemons"


def open_folder(engine: str) -> Path:
    """A new folder for an engine's files that its daemons' own users (postgres, mysql) can reach:
    not under pytest's temporary folders, which are closed to every user but the one running."""
    root = Path(tempfile.mkdtemp(prefix=f"hybridsweep-{engine}-"))
    root.chmod(0o755)
    return root


def require_module(name: str, extra: str) -> None:
    try:
        __import__(name)
    except ImportError as error:
        pytest.skip(f"{name} is not installed ({error}): pip install -e '.[{extra}]' (make test-engines does)")


def script(name: str, action: str, env: dict[str, str], timeout: float = 600) -> str:
    """Run pipelines/engines/<name> <action> (through sudo when not root); its stdout."""
    command = ["bash", str(SCRIPTS / name), action]
    if os.geteuid() != 0:
        command = ["sudo", "-n", "--preserve-env", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{name} {action} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def wait_for_server(uri: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {uri} exited with status {process.returncode}")
        try:
            MlflowClient(uri).search_experiments()
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"no tracking server answered at {uri} within {seconds}s")


def mlflow_server(backend: str, root: Path, workers: int = 2) -> tuple[str, subprocess.Popen]:
    """`mlflow server` over ``backend`` on a free loopback port, as `make mlflow-server` starts it."""
    port = free_port()
    log = open(root / f"mlflow-server-{port}.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts"), "--workers", str(workers)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env=SERVER_ENV,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_for_server(uri, process)
    return uri, process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def system_daemons(engine: str, module: str, extra: str, **settings: str):
    """pipelines/engines/<engine>.sh up in a folder of its own, ``down`` afterwards: yields the
    environment it ran in and the last line it printed. Skips where it cannot be installed."""
    reason = can_run_as_root()
    if reason:
        pytest.skip(f"{engine}: {reason}")
    require_module(module, extra)
    root = open_folder(engine)
    env = {**os.environ, "ENGINES_DIR": str(root), **settings}
    printed = script(f"{engine}.sh", "up", env).strip().splitlines()[-1]
    try:
        yield env, printed
    finally:
        script(f"{engine}.sh", "down", env)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of its own (pipelines/engines/postgres.sh): its SQLAlchemy URI."""
    with system_daemons("postgres", "psycopg", "postgres", POSTGRES_PORT=str(free_port())) as (_, uri):
        yield uri


@pytest.fixture(scope="session")
def postgres_server(postgres, tmp_path_factory):
    """An MLflow tracking server whose backend store is the PostgreSQL cluster: its URL."""
    uri, process = mlflow_server(postgres, tmp_path_factory.mktemp("postgres-server"))
    try:
        yield uri
    finally:
        stop(process)


@pytest.fixture(scope="module")
def slurm():
    """A one-host SLURM cluster of its own (pipelines/engines/slurm.sh): the environment to submit in."""
    # Ports of its own, away from a cluster that `make slurm-up` may be running (6817-6820).
    base = str(17817 + os.getpid() % 1000 * 4)
    with system_daemons("slurm", "hydra_plugins.hydra_submitit_launcher", "slurm", SLURM_PORT_BASE=base) as (env, exported):
        yield {**env, "SLURM_CONF": exported.split("=", 1)[1]}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free loopback port (as `make s3-server` starts it), with a bucket
    ``pairs``: the environment that points boto3/s3fs at it (credentials and endpoint)."""
    require_module("s3fs", "s3")
    require_module("moto.server", "engines")
    port = free_port()
    root = tmp_path_factory.mktemp("s3")
    log = open(root / "moto.log", "w")
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "hybridsweep", "AWS_SECRET_ACCESS_KEY": "hybridsweep", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        import s3fs

        deadline = time.time() + 60
        while True:
            try:
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir("pairs")
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop(process)


RAY_VENV = REPO_ROOT / ".venv-ray"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster (`ray start --head`, from .venv-ray: `make ray-venv`), started in the
    folder the sweeps run in (Ray's workers run there): ``(address, folder)``."""
    ray = RAY_VENV / "bin" / "ray"
    if not ray.exists():
        pytest.skip(f"{ray} is missing: the Ray launcher lives in its own environment (make ray-venv)")
    root = tmp_path_factory.mktemp("ray")
    # Ray's sockets live in its temporary folder, whose paths must stay within AF_UNIX's 107 bytes.
    sessions = Path(tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    log = open(root / "ray-head.log", "w")
    # --block: the command holds the cluster and stops every process of it when terminated.
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--object-store-memory=100000000",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={sessions}"],
        cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}, stdout=log, stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while subprocess.run([str(ray), "status", f"--address={address}"], capture_output=True).returncode != 0:
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the Ray head did not come up: {(root / 'ray-head.log').read_text()[-3000:]}")
            time.sleep(1)
        yield address, root
    finally:
        stop(head)
        shutil.rmtree(sessions, ignore_errors=True)
