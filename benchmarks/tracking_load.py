"""Tracking load of N concurrent jobs on the MLflow server with a PostgreSQL backend store.

    PYTHONPATH=. python benchmarks/tracking_load.py --jobs 8 16 [--workers 4] [--threads 16 --seconds 20]

For each N: a fresh MLflow server (PostgreSQL cluster from pipelines/engines/postgres.sh, --workers
W) with MLflow's Prometheus exporter (``--expose-prometheus``), and one multirun of N tiny points
(seeds 0..N-1) run as N parallel joblib jobs (``hydra/launcher=parallel``, ``n_jobs=N``): each a
real ``python -m hybridsweep.train`` point that claims its run, renews its heartbeat, logs its
params, its training curve (every step), its evaluation and its model. The server's ``/metrics``
is read every second: requests per second over the busy window and over its busiest 10 s, the
server-side latency (p50/p95/p99 from the exporter's histogram, Prometheus's interpolation), and
the requests that failed (5xx). Then the ceiling, on the same server: T client threads send the
requests jobs send most (a metric batch, a heartbeat tag, a claim's search) as fast as they can for
S seconds. Printed: each N's demand against that ceiling (the headroom ratio). Figures go to
``benchmarks/results/tracking_load.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import write_results
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import TINY, free_port  # noqa: E402  (the tests' tiny point)

DURATION = "mlflow_http_request_duration_seconds"


def scrape(url: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(requests, failed requests, cumulative histogram [(upper bound, count)]) over every path."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    total = failed = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != DURATION:
            continue
        for sample in family.samples:
            if sample.name == f"{DURATION}_count":
                total += sample.value
                failed += sample.value if str(sample.labels.get("status", "")).startswith("5") else 0.0
            elif sample.name == f"{DURATION}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return total, failed, sorted(buckets.items())


def quantile(q: float, before: list, after: list) -> float:
    """The q-quantile of the requests between two scrapes, interpolated within histogram buckets
    as Prometheus's histogram_quantile does."""
    start = dict(before)
    counts = [(bound, value - start.get(bound, 0.0)) for bound, value in after]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower


class Server:
    """PostgreSQL cluster + MLflow server with the Prometheus exporter, in a folder of its own."""

    def __init__(self, workers: int):
        self.root = Path(tempfile.mkdtemp(prefix="hybridsweep-tracking-load-"))
        self.root.chmod(0o755)  # the postgres user reaches its data folder through it
        self.env = {**os.environ, "ENGINES_DIR": str(self.root), "POSTGRES_PORT": str(free_port())}
        backend = subprocess.run(["bash", str(REPO / "pipelines" / "engines" / "postgres.sh"), "up"], env=self.env,
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend, "--artifacts-destination", str(self.root / "artifacts"),
             "--workers", str(workers), "--expose-prometheus", str(self.root / "prometheus")],
            cwd=self.root, stdout=open(self.root / "server.log", "w"), stderr=subprocess.STDOUT,
            # Without the job runner (MLflow's GenAI jobs, six processes): the tracking API alone.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.time() + 180
        while True:
            try:
                scrape(self.url)
                MlflowClient(self.url).search_experiments()
                return
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"no server: {(self.root / 'server.log').read_text()[-2000:]}") from None
                time.sleep(1)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        subprocess.run(["bash", str(REPO / "pipelines" / "engines" / "postgres.sh"), "down"], env=self.env, check=True)
        shutil.rmtree(self.root, ignore_errors=True)


def busy_figures(samples: list[tuple[float, float, float, list]]) -> dict:
    """Rates and latency between the first and the last scrape in which requests arrived."""
    moving = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    first, last = samples[moving[0] - 1], samples[moving[-1]]
    seconds = last[0] - first[0]
    window = 10.0
    peak = max((samples[j][1] - samples[i][1]) / (samples[j][0] - samples[i][0])
               for i in range(len(samples)) for j in range(i + 1, len(samples))
               if samples[j][0] - samples[i][0] >= window and samples[j - 1][0] - samples[i][0] < window)
    return {
        "requests": last[1] - first[1], "failed": last[2] - first[2], "busy_s": round(seconds, 1),
        "requests_per_s": (last[1] - first[1]) / seconds, "peak_10s_requests_per_s": peak,
        "latency_ms": {f"p{int(q * 100)}": 1000 * quantile(q, first[3], last[3]) for q in (0.5, 0.95, 0.99)},
    }


def jobs_load(server: Server, jobs: int, workdir: Path) -> dict:
    """N tiny points at once (one joblib job each) against the server, its /metrics read each second."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYBRIDSWEEP_CACHE": str(workdir / "cache"),
           "MLFLOW_TRACKING_URI": server.url}
    command = [sys.executable, "-m", "hybridsweep.train", "-m", *TINY, f"seed=range(0,{jobs})", "batch_size=8",
               "hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir=sweep-{jobs}",
               f"tracking.experiment=load-{jobs}"]
    samples = [(time.time(), *scrape(server.url))]
    started = time.time()
    with open(workdir / f"jobs-{jobs}.log", "w") as log:
        sweep = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        while sweep.poll() is None:
            time.sleep(1)
            samples.append((time.time(), *scrape(server.url)))
    samples.append((time.time(), *scrape(server.url)))
    if sweep.returncode != 0:
        raise SystemExit(f"the sweep of {jobs} jobs failed: {(workdir / f'jobs-{jobs}.log').read_text()[-3000:]}")
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name(f"load-{jobs}").experiment_id])
    finished = sum(r.info.status == "FINISHED" and r.data.tags.get("hybridsweep.role") == "point" for r in runs)
    return {"jobs": jobs, "points_finished": finished, "wall_s": round(time.time() - started, 1), **busy_figures(samples),
            "requests_per_job_s": busy_figures(samples)["requests_per_s"] / jobs}


def ceiling(server: Server, threads: int, seconds: float) -> dict:
    """Requests/s the server holds when T threads send the jobs' commonest requests back to back."""
    client = MlflowClient(server.url)
    experiment = client.create_experiment("ceiling")
    runs = [client.create_run(experiment, tags={"hybridsweep.config_hash": f"h{i}"}).info.run_id for i in range(threads)]
    stop, errors = threading.Event(), []

    def hammer(index: int) -> None:
        own, step = MlflowClient(server.url), 0
        while not stop.is_set():
            try:
                own.log_batch(runs[index], metrics=[Metric("train/loss", 1.0 / (step + 1), int(time.time() * 1000), step)])
                own.set_tag(runs[index], "hybridsweep.heartbeat", f"{time.time():.3f}")
                if step % 10 == 0:
                    own.search_runs([experiment], f"tags.`hybridsweep.config_hash` = 'h{index}'")
                step += 1
            except Exception as error:  # counted, not raised: a saturated server is what is measured
                errors.append(repr(error))

    before = (time.time(), *scrape(server.url))
    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    after = (time.time(), *scrape(server.url))
    figures = busy_figures([before, after, after])
    figures.pop("peak_10s_requests_per_s")
    return {"threads": threads, **figures, "client_errors": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--workers", type=int, default=4, help="the MLflow server's worker processes")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    results = {"server_workers": args.workers, "load": []}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in args.jobs:
            server = Server(args.workers)
            try:
                load = jobs_load(server, jobs, Path(tmp))
                top = ceiling(server, args.threads, args.seconds)
            finally:
                server.close()
            load["ceiling"] = top
            load["headroom"] = top["requests_per_s"] / load["peak_10s_requests_per_s"]
            results["load"].append(load)
            print(f"N={jobs:3d} jobs: {load['points_finished']}/{jobs} points finished in {load['wall_s']} s; "
                  f"{load['requests_per_s']:.1f} requests/s (busiest 10 s: {load['peak_10s_requests_per_s']:.1f}), "
                  f"{load['requests_per_job_s']:.2f} per job; latency p50/p95/p99 "
                  + "/".join(f"{v:.0f}" for v in load["latency_ms"].values()) + f" ms; {load['failed']:.0f} failed")
            print(f"       ceiling ({args.threads} threads): {top['requests_per_s']:.0f} requests/s, p50/p95/p99 "
                  + "/".join(f"{v:.0f}" for v in top["latency_ms"].values())
                  + f" ms, {top['failed']:.0f} failed; headroom over the busiest 10 s: {load['headroom']:.1f}x")
    write_results("tracking_load", results)


if __name__ == "__main__":
    main()
