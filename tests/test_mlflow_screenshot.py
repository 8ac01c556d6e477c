"""The MLflow UI shows a sweep's scaling curve: the compare view's scatter plot, in real headless Chromium.

A small sweep is logged with MLflow directly (two sweeps, so that ``--sweep`` has to choose), the
real ``mlflow ui`` serves it, and the page is read back from the DOM: the axis menus hold the
param and the metric, the plot's axis titles name them, and the plotted points are exactly the
logged (x, y) pairs. Chromium is Debian's (``make chromium`` installs it; CI runs it).
"""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, sqlite_store

# (batch_size, data.scale, seed) -> map_full/multilingual of the sweep under test.
POINTS = {(32, 0.5, 0): 0.41, (128, 0.5, 1): 0.47, (128, 1.0, 0): 0.52, (512, 1.0, 0): 0.58}


@pytest.fixture(scope="module")
def pipeline():
    """pipelines/mlflow_screenshot.py as a module."""
    spec = importlib.util.spec_from_file_location("mlflow_screenshot", REPO_ROOT / "pipelines" / "mlflow_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def log_sweep(client: MlflowClient, experiment: str, sweep_dir: str, points: dict) -> tuple[str, dict[str, str]]:
    """A parent run and one nested point per entry of ``points``, as the training sweeps log them."""
    parent = client.create_run(experiment, run_name=f"sweep {sweep_dir}",
                               tags={"hybridsweep.role": "parent", "hybridsweep.sweep_dir": sweep_dir})
    names = {}
    for (batch_size, scale, seed), score in points.items():
        name = f"bs={batch_size},scale={scale},seed={seed}"
        run = client.create_run(experiment, run_name=name,
                                tags={"mlflow.parentRunId": parent.info.run_id, "hybridsweep.role": "point"})
        now = int(time.time() * 1000)
        params = {"batch_size": batch_size, "data.scale": scale, "seed": seed, "sampling.strategy": "hybrid"}
        metrics = {"map_full/multilingual": score, "map_full/monolingual": score + 0.1}
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                         metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id)
        names[run.info.run_id] = name
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id, names


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps in one experiment: the one under test (``multirun/a``) is the older."""
    uri = sqlite_store(tmp_path_factory.mktemp("store") / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("hybridsweep")
    parent, names = log_sweep(client, experiment, "multirun/a", POINTS)
    log_sweep(client, experiment, "multirun/b", {(64, 1.0, 0): 0.3})
    return uri, experiment, parent, names


def plotted_points(page) -> list[tuple[float, float]]:
    """The (x, y) pairs the page's plotly chart draws, from the chart element's own data."""
    data = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => [t.x, t.y])")
    return sorted((float(x), float(y)) for xs, ys in data for x, y in zip(xs, ys))


def assert_not_blank(path, shape=(1200, 1600)) -> None:
    image = imread(path)
    assert image.shape[:2] == shape
    assert np.std(image[..., :3]) > 0.05


def test_sweep_is_chosen_by_directory_name_or_id_and_defaults_to_the_newest(pipeline, store):
    uri, experiment, parent, names = store
    client = MlflowClient(uri)
    for sweep in ("multirun/a", parent, "sweep multirun/a"):
        experiment_id, found, children = pipeline.find_sweep(client, "hybridsweep", sweep)
        assert (experiment_id, found.info.run_id) == (experiment, parent)
        assert {run.info.run_id for run in children} == set(names)
    assert pipeline.find_sweep(client, "hybridsweep")[1].data.tags["hybridsweep.sweep_dir"] == "multirun/b"


def test_bad_sweeps_and_axes_are_refused_by_name(pipeline, store):
    uri = store[0]
    with pytest.raises(SystemExit, match="no experiment 'elsewhere'"):
        pipeline.main(["--backend-store-uri", uri, "--experiment", "elsewhere"])
    with pytest.raises(SystemExit, match="no sweep matching --sweep 'multirun/c'"):
        pipeline.main(["--backend-store-uri", uri, "--sweep", "multirun/c"])
    with pytest.raises(SystemExit, match=r"no point of the sweep logged the param 'data\.question_ids'.*batch_size, data\.scale"):
        pipeline.main(["--backend-store-uri", uri, "--sweep", "multirun/a", "--x", "data.question_ids"])
    assert pipeline.Axis.parse("metrics.time/fit_s", "param") == pipeline.Axis("metric", "time/fit_s")
    assert pipeline.Axis.parse("batch_size", "param") == pipeline.Axis("param", "batch_size")


@pytest.mark.slow
def test_compare_view_plots_the_logged_scaling_curve_chosen_in_its_menus(pipeline, store, tmp_path):
    uri, experiment, parent, names = store
    run_ids = list(names)
    batch, scale, score = (pipeline.Axis("param", "batch_size"), pipeline.Axis("param", "data.scale"),
                           pipeline.Axis("metric", "map_full/multilingual"))
    with pipeline.mlflow_ui(uri) as url, pipeline.chromium_page() as page:
        pipeline.show_scatter(page, url, experiment, run_ids, batch, score)
        assert page.locator("#x-axis-selector").get_attribute("value") == "param-batch_size"
        assert page.locator("#y-axis-selector").get_attribute("value") == "metric-map_full/multilingual"
        assert page.locator(".js-plotly-plot .xtitle").text_content() == "batch_size"
        assert page.locator(".js-plotly-plot .ytitle").text_content() == "map_full/multilingual"
        assert plotted_points(page) == sorted((b, y) for (b, _, _), y in POINTS.items())
        page.screenshot(path=str(tmp_path / "batch.png"))

        pipeline.show_scatter(page, url, experiment, run_ids, scale, score)
        assert page.locator(".js-plotly-plot .xtitle").text_content() == "data.scale"
        assert plotted_points(page) == sorted((s, y) for (_, s, _), y in POINTS.items())

        pipeline.show_table(page, url, experiment, parent, list(names.values()))
        for name in names.values():
            assert page.get_by_role("link", name=name, exact=True).is_visible()
        assert page.get_by_role("link", name="bs=64,scale=1.0,seed=0").count() == 0  # the other sweep
        page.screenshot(path=str(tmp_path / "table.png"))
    assert_not_blank(tmp_path / "batch.png")
    assert_not_blank(tmp_path / "table.png")
