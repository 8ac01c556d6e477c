"""Screenshots of a sweep in the MLflow UI: its scaling curve as the compare view's scatter plot.

    python pipelines/mlflow_screenshot.py --out reports/mlflow_sweep.png --table
    python pipelines/mlflow_screenshot.py --experiment paper-tiny --sweep multirun/paper/tiny/data_scale \\
        --x data.scale --out reports/mlflow_sweep_data.png

Finds a sweep's parent run (``--sweep``: its run id, its run name, or its sweep directory; the
newest sweep of ``--experiment`` by default) and its points, starts ``mlflow ui`` on a free
loopback port (or uses the UI at ``--url``), and drives Debian's Chromium through playwright the
way a user would: opens the compare view of the points, picks the *Scatter Plot* tab, selects
X = ``--x`` (a param by default, e.g. ``batch_size``) and Y = ``--y`` (a metric by default,
``map_full/multilingual``) in its axis menus, waits until the plot's axis titles name them, and
saves the window as ``--out``. A ``params.``/``metrics.`` prefix picks the other kind (``--x
metrics.time/fit_s``). ``--table`` also saves the experiment's runs table, filtered to the sweep
with its parent expanded (the point names), as ``<out stem>_table.png``.

Chromium runs headless with a fresh profile and no network use of its own (``CHROMIUM_FLAGS``);
playwright comes from the ``ui`` extra, Chromium from the OS (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hybridsweep.sweep_runs import sweep_children
from hybridsweep.tracking.store import PARENT_ROLE, ROLE_TAG, SWEEP_DIR_TAG

if TYPE_CHECKING:  # playwright is imported where a browser starts, so that --help and errors need none
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1200}
# Generous: a cold UI on a loaded machine takes tens of seconds to serve its first page.
LOAD_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class Axis:
    """A scatter-plot axis: a run's param or metric, as the UI's axis menus list it."""

    kind: str  # "param" or "metric"
    name: str

    @classmethod
    def parse(cls, text: str, default_kind: str) -> Axis:
        """``batch_size`` (of ``default_kind``), ``params.batch_size`` or ``metrics.map_full/multilingual``."""
        for prefix, kind in (("params.", "param"), ("metrics.", "metric")):
            if text.startswith(prefix):
                return cls(kind, text[len(prefix):])
        return cls(default_kind, text)

    def of(self, run: Run) -> object:
        return (run.data.params if self.kind == "param" else run.data.metrics).get(self.name)

    @property
    def menu_group(self) -> str:
        """The heading the UI's axis menu lists this kind under."""
        return {"param": "Parameter", "metric": "Metric"}[self.kind]

    @property
    def selector_value(self) -> str:
        """The axis menu's ``value`` once this axis is selected (``param-batch_size``)."""
        return f"{self.kind}-{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


def find_sweep(client: MlflowClient, experiment: str, sweep: str | None = None) -> tuple[str, Run, list[Run]]:
    """The experiment id, the parent run and the point runs of a sweep.

    ``sweep`` is the parent's run id, run name or sweep directory (``hybridsweep.sweep_dir`` tag);
    the newest match wins, and without ``sweep`` the newest sweep of the experiment.
    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {client.tracking_uri}: run a sweep first (python -m hybridsweep.train -m ...)")
    parents = client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'", order_by=["attributes.start_time DESC"])
    if sweep is not None:
        parents = [p for p in parents if sweep in (p.info.run_id, p.info.run_name, p.data.tags.get(SWEEP_DIR_TAG))]
    if not parents:
        wanted = f"--sweep {sweep!r} (a parent's run id, run name or sweep directory)" if sweep else "any"
        raise SystemExit(f"experiment {experiment!r} has no sweep matching {wanted}: no such run tagged {ROLE_TAG}={PARENT_ROLE}")
    children = sweep_children(client.tracking_uri, parents[0].info.run_id)
    if not children:
        raise SystemExit(f"sweep {parents[0].info.run_name!r} ({parents[0].info.run_id}) has no point runs yet")
    return found.experiment_id, parents[0], children


def check_axes(children: list[Run], axes: Sequence[Axis]) -> None:
    """Every axis must be logged by some point, else the UI could not plot it."""
    for axis in axes:
        if all(axis.of(run) is None for run in children):
            logged = sorted({k for run in children for k in (run.data.params if axis.kind == "param" else run.data.metrics)})
            raise SystemExit(f"no point of the sweep logged the {axis}; its {axis.kind}s are: {', '.join(logged[:40])}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_ui(backend_store_uri: str, timeout_s: float = 180) -> Iterator[str]:
    """``mlflow ui`` over ``backend_store_uri`` on a free loopback port; yields its URL and stops
    its whole process group on exit. Its job executor (background workers the UI pages here never
    use) is switched off."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", backend_store_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow ui exited with status {server.returncode}: {server.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow ui did not answer at {url} within {timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stderr.close()


@contextmanager
def chromium_page(executable: str = CHROMIUM) -> Iterator[Page]:
    """A page of headless Chromium with a fresh profile (removed afterwards)."""
    from playwright.sync_api import sync_playwright

    if not Path(executable).is_file():
        raise SystemExit(f"--chromium {executable} does not exist: install Debian's chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS, viewport=VIEWPORT,
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _close_side_panels(page) -> None:
    """Close the assistant panel MLflow 3 opens beside every page, so the charts get the width."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def _select(page, selector: str, axis: Axis) -> None:
    """Pick ``axis`` in the axis menu ``selector`` (a combobox whose listbox groups params and metrics)."""
    page.locator(selector).click()
    listbox = page.get_by_role("listbox")
    listbox.wait_for(timeout=LOAD_TIMEOUT_MS)
    # The menu is a flat list: a group heading, then its options; find the option under the heading.
    index = listbox.evaluate(
        """(box, [group, name]) => {
            let heading = null, index = -1, found = -1;
            for (const node of box.querySelectorAll('[role=option], [data-combobox-option-list] > :not([role=option])')) {
                if (node.getAttribute('role') !== 'option') { heading = node.textContent.trim(); continue; }
                index += 1;
                if (heading === group && node.textContent.trim() === name && found < 0) found = index;
            }
            return found;
        }""",
        [axis.menu_group, axis.name],
    )
    if index < 0:
        raise RuntimeError(f"the scatter plot's axis menu ({selector}) lists no {axis}")
    listbox.get_by_role("option").nth(index).click()
    page.wait_for_function(
        "([selector, value]) => document.querySelector(selector)?.getAttribute('value') === value",
        arg=[selector, axis.selector_value], timeout=LOAD_TIMEOUT_MS,
    )


def show_scatter(page, url: str, experiment_id: str, run_ids: Sequence[str], x: Axis, y: Axis) -> None:
    """Open the compare view of ``run_ids`` on its scatter plot of ``y`` against ``x``, and wait
    until the plot's axis titles name them."""
    query = urllib.parse.urlencode({"runs": json.dumps(list(run_ids)), "experiments": json.dumps([experiment_id])})
    page.goto(f"{url}/#/compare-runs?{query}")
    page.get_by_role("tab", name="Scatter Plot").click(timeout=LOAD_TIMEOUT_MS)
    _close_side_panels(page)
    _select(page, "#x-axis-selector", x)
    _select(page, "#y-axis-selector", y)
    page.wait_for_function(
        """([x, y]) => {
            const title = (cls) => document.querySelector(`.js-plotly-plot .${cls}`)?.textContent;
            return title('xtitle') === x && title('ytitle') === y;
        }""",
        arg=[x.name, y.name], timeout=LOAD_TIMEOUT_MS,
    )
    page.mouse.move(0, 0)  # no hover label over the points


def show_table(page, url: str, experiment_id: str, parent_id: str, point_names: Sequence[str]) -> None:
    """Open the experiment's runs table filtered to the sweep's nested points (``point_names``),
    with the parent expanded so that their names show, and wait until they all do."""
    search = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'"
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?" + urllib.parse.urlencode({"searchFilter": search}))
    parent_cell = page.locator(f"[role=gridcell]:has(a[href$='/runs/{parent_id}'])")
    parent_cell.wait_for(timeout=LOAD_TIMEOUT_MS)
    _close_side_panels(page)
    parent_cell.get_by_role("button").first.click()  # the row's expander
    for name in point_names:
        page.get_by_role("link", name=name, exact=True).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.evaluate("() => document.activeElement?.blur()")  # no focus frame around the expanded row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="the MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="hybridsweep")
    parser.add_argument("--sweep", help="the parent run's id, name or sweep directory (default: the newest sweep)")
    parser.add_argument("--x", default="batch_size", help="X axis: a param, or metrics.NAME (default: batch_size)")
    parser.add_argument("--y", default="map_full/multilingual", help="Y axis: a metric, or params.NAME (default: map_full/multilingual)")
    parser.add_argument("--out", type=Path, default=Path("reports/mlflow_sweep.png"))
    parser.add_argument("--table", action="store_true", help="also save the sweep's runs table as <out stem>_table.png")
    parser.add_argument("--url", help="an MLflow UI already serving this store (default: start one)")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)

    x, y = Axis.parse(args.x, "param"), Axis.parse(args.y, "metric")
    experiment_id, parent, children = find_sweep(MlflowClient(args.backend_store_uri), args.experiment, args.sweep)
    check_axes(children, (x, y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table_out = args.out.with_name(f"{args.out.stem}_table{args.out.suffix}")
    server = mlflow_ui(args.backend_store_uri) if args.url is None else nullcontext(args.url.rstrip("/"))
    with server as url, chromium_page(args.chromium) as page:
        show_scatter(page, url, experiment_id, [run.info.run_id for run in children], x, y)
        page.screenshot(path=str(args.out))
        if args.table:
            nested = [run.info.run_name for run in children if run.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id]
            show_table(page, url, experiment_id, parent.info.run_id, nested)
            page.screenshot(path=str(table_out))
    saved = f"{args.out}" + (f" and {table_out}" if args.table else "")
    print(f"saved {saved}: sweep {parent.info.run_name!r}, {len(children)} runs, scatter of {y} against {x}")


if __name__ == "__main__":
    main()
