"""Screenshot of a sweep in the MLflow UI: ``mlflow ui`` on 127.0.0.1 and headless Chromium.

    python pipelines/mlflow_screenshot.py --backend-store-uri sqlite:///mlflow.db --out reports/mlflow_sweep.png

Starts ``mlflow ui`` on a free local port, finds the newest parent run of the experiment (the
multirun's run, tagged ``hybridsweep.role=parent``) and opens the UI's compare view of its child
runs (params such as ``batch_size`` against the final metrics, and the UI's own charts), then
saves a full-page screenshot. ``--table`` also saves the experiment's runs table next to it.
Chromium is Debian's (``apt-get install chromium``) driven by playwright.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

from hybridsweep.sweep import sweep_children

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with status {server.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow ui did not answer at {url} within {timeout_s:.0f} s")


def sweep_runs(client: MlflowClient, experiment: str) -> tuple[str, str, list[str]]:
    """Experiment id, and name and child run ids of its newest parent run."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in this store: run a sweep first (python -m hybridsweep.train -m ...)")
    parents = client.search_runs([found.experiment_id], "tags.`hybridsweep.role` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit(f"experiment {experiment!r} has no sweep (no run tagged hybridsweep.role=parent)")
    children = sweep_children(client, found.experiment_id, parents[0].info.run_id)
    return found.experiment_id, parents[0].info.run_name, [run.info.run_id for run in children]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="hybridsweep")
    parser.add_argument("--out", type=Path, default=Path("reports/mlflow_sweep.png"))
    parser.add_argument("--table", action="store_true", help="also save the runs table as <out>_table.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    experiment_id, parent_name, children = sweep_runs(MlflowClient(args.backend_store_uri), args.experiment)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", args.backend_store_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(url, server)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        compare = f"{url}/#/compare-runs?" + urllib.parse.urlencode(
            {"runs": json.dumps(children), "experiments": json.dumps([experiment_id])}
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(compare)
            page.get_by_text("batch_size").first.wait_for(timeout=120_000)  # the params table has loaded
            page.wait_for_timeout(3000)  # let the charts draw
            page.screenshot(path=str(args.out), full_page=True)
            if args.table:
                page.goto(f"{url}/#/experiments/{experiment_id}/runs")
                page.get_by_text(parent_name).first.wait_for(timeout=120_000)
                page.wait_for_timeout(3000)
                page.screenshot(path=str(args.out.with_name(args.out.stem + "_table.png")), full_page=True)
            browser.close()
        print(f"saved {args.out} ({len(children)} runs compared)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
