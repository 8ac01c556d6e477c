"""Paper tables and scaling curves built from a small MLflow store of synthetic runs whose
numbers are known; intervals are checked against a bootstrap written out here with plain loops."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from conftest import sqlite_store
from hybridsweep import RESULTS_VERSION
from hybridsweep.evaluation.retrieval import PER_QUESTION_ARTIFACT
from hybridsweep.reports.grid import expand
from hybridsweep.reports.stats import Estimate, separated_best
from hybridsweep.schema import resolve_auto
from hybridsweep.tracking.identity import config_hash, zero_shot_hash
from hybridsweep.tracking.store import HASH_TAG, RESULTS_VERSION_TAG, ROLE_TAG, SWEEP_DIR_TAG
from hybridsweep.train import config_dir

N_BOOT = 200
LANGS = ("en", "de")
QIDS = [f"q{i}" for i in range(8)]
STRATEGIES = ("mono", "cross", "hybrid")
# Multilingual AP offset per strategy: hybrid is far ahead, mono and cross close together.
MULTI_SHIFT = {"mono": 0.0, "cross": 0.02, "hybrid": 0.5}
COMMON = "trainer.max_epochs=1 tracking.experiment=paper-test"
SCALES = ("0.1", "0.2", "0.4", "0.8", "1.0")
QUESTION_IDS = (20, 40, 80, 160, 200)  # what each scale's runs log as data.question_ids
BATCHES = (8, 16, 32, 64)
# Joint law per strategy: mAP = E - A (N/20)^-alpha - B (S/8)^-beta; val/loss_best falls with the
# same form (negative amplitudes).
MAP_LAW = {"mono": (0.6, 0.3, 0.7, 0.1, 0.9), "hybrid": (0.8, 0.4, 0.5, 0.15, 0.6)}
LOSS_LAW = {"mono": (2.0, -3.0, 0.5, -0.5, 1.0), "hybrid": (1.8, -2.5, 0.6, -0.4, 0.8)}
EPOCHS = 2
BIAS = {"mono": (9.0, 10.0), "cross": (5.0, 6.0), "hybrid": (1.0, 1.5)}  # by seed 0, 1
POOL = len(QIDS) * len(LANGS)  # candidates in the multilingual pool
# Row labels the tables must print (the sweep's hybrid runs keep the default mix ratio, auto).
LABELS = {"mono": "mono-only", "cross": "cross-only", "hybrid": "hybrid α=auto"}


def _load_paper_module():
    import hybridsweep.paper

    return hybridsweep.paper


def per_question_frame(strategy: str, seed: int) -> pd.DataFrame:
    """Known APs: mono/cross settings identical for every strategy, multilingual shifted."""
    rng = np.random.default_rng(100 + seed)
    rows = []
    for qid, x in itertools.product(QIDS, LANGS):
        for y in LANGS:
            rows.append((qid, x, "monolingual" if x == y else "crosslingual", y, rng.uniform(0.2, 0.6)))
        rows.append((qid, x, "multilingual", "all", min(1.0, rng.uniform(0.1, 0.4) + MULTI_SHIFT[strategy])))
    return pd.DataFrame(rows, columns=["qid", "q_lang", "setting", "c_lang", "ap"])


def value_by_loop(frame: pd.DataFrame, setting: str) -> float:
    """The setting's mAP: mean over (query, pool) language cells of the cells' mean AP."""
    rows = frame[frame["setting"] == setting]
    cells = {}
    for _, row in rows.iterrows():
        cells.setdefault((row["q_lang"], row["c_lang"]), []).append(row["ap"])
    return float(np.mean([np.mean(v) for v in cells.values()]))


def bootstrap_by_loop(frames: list[pd.DataFrame], setting: str, n_boot: int, seed: int = 0):
    """Two-level percentile bootstrap with explicit loops, same draws as documented in stats."""
    rng = np.random.default_rng(seed)
    per_run = []
    for frame in frames:
        rows = frame[frame["setting"] == setting]
        qids = sorted(rows["qid"].unique())
        cells = sorted({(r.q_lang, r.c_lang) for r in rows.itertuples()})
        aps = {(r.qid, r.q_lang, r.c_lang): r.ap for r in rows.itertuples()}
        draws = rng.integers(0, len(qids), size=(n_boot, len(qids)))
        replicate = []
        for b in range(n_boot):
            cell_means = []
            for x, y in cells:
                values = [aps[(qids[i], x, y)] for i in draws[b] if (qids[i], x, y) in aps]
                cell_means.append(np.mean(values))
            replicate.append(np.mean(cell_means))
        per_run.append(replicate)
    picks = rng.integers(0, len(frames), size=(n_boot, len(frames)))
    combined = [np.mean([per_run[j][b] for j in picks[b]]) for b in range(n_boot)]
    return np.percentile(combined, [2.5, 97.5])


def point_hash(overrides: str, version: int = RESULTS_VERSION) -> str:
    """The config hash train.py (of results ``version``) tags a run with, for a point given by its overrides."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return config_hash(resolve_auto(compose("train", overrides=overrides.split())), version)


def suite_zero_shot_hash(overrides: str, suite: str) -> str:
    """The identity train.py tags the zero-shot evaluation of a point's initializer on one suite with."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return zero_shot_hash(resolve_auto(compose("train", overrides=overrides.split())), suite)


def log_run(client, experiment_id, sweep, params, metrics, per_question=None, tmp_path=None, overrides="", tags=None,
            version=RESULTS_VERSION):
    """One finished run as train.py of results ``version`` logs it: ``overrides`` is its
    command-line overrides tag, and the config hash tag is that of the point they compose."""
    tags = {"sweep": sweep, "overrides": overrides, HASH_TAG: point_hash(overrides, version),
            RESULTS_VERSION_TAG: str(version), **(tags or {})}
    run = client.create_run(experiment_id, tags=tags)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    if per_question is not None:
        path = tmp_path / PER_QUESTION_ARTIFACT
        per_question.to_csv(path, index=False)
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.fixture
def strategy_store(isolated_env):
    """3 strategies x 2 seeds of one initializer, with per-question APs and a bias metric."""
    client = MlflowClient()
    experiment_id = client.create_experiment("paper-test")
    # The multirun's parent run, as the sweep callback opens it.
    client.create_run(experiment_id, run_name="sweep", tags={ROLE_TAG: "parent", SWEEP_DIR_TAG: "multirun/paper/test/strategies"})
    frames = {}
    for strategy, seed in itertools.product(STRATEGIES, (0, 1)):
        frame = per_question_frame(strategy, seed)
        frames[strategy, seed] = frame
        metrics = {f"map_full/{s}": value_by_loop(frame, s) for s in ("monolingual", "crosslingual", "multilingual")}
        metrics["bias/rank_distance"] = BIAS[strategy][seed]
        metrics["eval/candidates"] = POOL
        params = {"model.name": "m1", "sampling.strategy": strategy, "sampling.mix_ratio": "auto", "seed": str(seed)}
        overrides = f"sampling={strategy} seed={seed} {COMMON}"
        log_run(client, experiment_id, "multirun/paper/test/strategies", params, metrics, frame, isolated_env, overrides,
                tags={ROLE_TAG: "point"})
    # A run of the same sweep dir outside the profile's grid (an earlier grid) stays out of the tables.
    log_run(client, experiment_id, "multirun/paper/test/strategies", {"model.name": "m1", "sampling.strategy": "mono", "seed": "5"},
            {"map_full/monolingual": 0.0, "map_full/crosslingual": 0.0, "map_full/multilingual": 0.0},
            overrides=f"sampling=mono seed=5 {COMMON}")
    # A run of another sweep with the same config as a grid point: the grid's own run wins.
    log_run(client, experiment_id, "other", {"model.name": "m1", "sampling.strategy": "mono", "seed": "0"},
            {"map_full/monolingual": 0.0, "map_full/crosslingual": 0.0, "map_full/multilingual": 0.0},
            overrides=f"sampling=mono seed=0 {COMMON}")
    return frames


def _profile(tmp_path, extra: str = "") -> str:
    path = tmp_path / "test.yaml"
    path.write_text(f"""
experiment: paper-test
n_boot: {N_BOOT}
common: [trainer.max_epochs=1]
sweeps:
  strategies:
    - sampling=mono,cross,hybrid
    - seed=0,1
  scale:
    - sampling=mono,hybrid
    - batch_size=8,32
    - data.scale={",".join(SCALES)}
  batch:
    - sampling=mono,hybrid
    - batch_size={",".join(map(str, BATCHES))}
bias_metrics:
  bias/rank_distance: lower
  bias/not_logged: lower
targets:
  table-xquad: {{kind: settings, sweep: strategies, output: table_xquad, caption: "XQuAD-R"}}
  table-bias: {{kind: bias, sweep: strategies, output: table_bias, caption: "bias"}}
  scaling-data:
    kind: scaling
    sweep: scale
    output: scaling_data
    x: data.question_ids
    x_label: "N"
    lines: [batch_size, sampling.strategy]
    compute_x: optimizer_steps
    caption: "data scaling"
  scaling-joint:
    kind: scaling
    sweep: scale
    with_sweeps: [batch]
    output: scaling_joint
    x: data.question_ids
    x_label: "N"
    x2: batch_size
    x2_label: "batch size"
    lines: [sampling.strategy]
    compute_x: pairs_seen
    caption: "joint scaling"
{extra}""")
    return str(path)


def test_settings_table_cells_intervals_and_best_marking(strategy_store, isolated_env):
    paper = _load_paper_module()
    profile = paper.load_profile(_profile(isolated_env))
    paper.build("test", profile, "table-xquad", isolated_env / "reports")

    table = pd.read_csv(isolated_env / "reports" / "table_xquad.csv")
    assert len(table) == 3 * 3
    for strategy, setting in itertools.product(STRATEGIES, ("monolingual", "crosslingual", "multilingual")):
        row = table[(table["training"] == LABELS[strategy]) & (table["column"] == setting)].iloc[0]
        frames = [strategy_store[strategy, 0], strategy_store[strategy, 1]]
        assert row["mean"] == pytest.approx(np.mean([value_by_loop(f, setting) for f in frames]), abs=1e-5)
        low, high = bootstrap_by_loop(frames, setting, N_BOOT)
        assert (row["low"], row["high"]) == (pytest.approx(low, abs=1e-5), pytest.approx(high, abs=1e-5))
        assert row["n_runs"] == 2
    best = table[table["best"]]
    assert list(zip(best["training"], best["column"])) == [("hybrid α=auto", "multilingual")]

    markdown = (isolated_env / "reports" / "table_xquad.md").read_text()
    assert markdown.count("**") == 2 and "| hybrid α=auto" in markdown
    assert markdown.index("mono-only") < markdown.index("cross-only") < markdown.index("| hybrid")
    assert r"\textbf{" in (isolated_env / "reports" / "table_xquad.tex").read_text()

    # Paired tests, hybrid against each baseline in each setting. Every strategy of a seed draws the
    # same APs (per_question_frame): mono and cross settings differ by 0 in every replicate (p = 1),
    # and every multilingual question by the shift (no AP reaches 1), so every replicate is > 0.
    tests = pd.read_csv(isolated_env / "reports" / "table_xquad_tests.csv")
    assert sorted(zip(tests["baseline"], tests["setting"])) == sorted(
        itertools.product(("mono-only", "cross-only"), ("monolingual", "crosslingual", "multilingual")))
    for test in tests.itertuples():
        baseline = {"mono-only": "mono", "cross-only": "cross"}[test.baseline]
        expected = np.mean([value_by_loop(strategy_store["hybrid", seed], test.setting)
                            - value_by_loop(strategy_store[baseline, seed], test.setting) for seed in (0, 1)])
        assert test.difference == pytest.approx(expected, abs=1e-5)
        assert (test.hybrid, test.seeds, test.questions) == ("hybrid α=auto", 2, len(QIDS))
        if test.setting == "multilingual":
            shift = MULTI_SHIFT["hybrid"] - MULTI_SHIFT[baseline]
            assert (test.difference, test.low, test.high) == (pytest.approx(shift), pytest.approx(shift), pytest.approx(shift))
            # The two smallest p of a family of 6 (the other four are 1): Holm multiplies them by 6.
            # Both seeds agree, but two seeds cannot separate strategies (sign-flip p = 2/2^2).
            for p, p_holm in ((test.p, test.p_holm), (test.p_models, test.p_models_holm)):
                assert p < 0.001 and p_holm == pytest.approx(6 * p)
            assert (test.agreeing, test.p_seeds, test.models_differ, test.strategy_claim) == (2, 0.5, True, False)
            assert test.verdict == "these models differ; the strategies are not separated by 2 seeds"
        else:
            assert (test.difference, test.low, test.high, test.p, test.p_holm) == (0, 0, 0, 1, 1)
            assert (test.models_differ, test.strategy_claim, test.verdict) == (False, False, "no difference shown")
    # No strategy claim from two seeds: the main table marks no cell, and states the rule.
    assert not [line for line in markdown.splitlines() if line.startswith("| m1") and ("†" in line or "‡" in line)]
    assert "Holm-adjusted p < 0.05 over the 6 comparisons" in markdown
    assert "with fewer than 6 seeds the seed level alone cannot reach p < 0.05" in markdown
    assert "these models differ; the strategies are not separated by 2 seeds" in (
        isolated_env / "reports" / "table_xquad_tests.md").read_text()

    # Per-language table of the multilingual setting: the mean AP of each query language.
    languages = pd.read_csv(isolated_env / "reports" / "table_xquad_languages.csv")
    assert sorted(languages["column"].unique()) == sorted(LANGS)
    for strategy, lang in itertools.product(STRATEGIES, LANGS):
        row = languages[(languages["training"] == LABELS[strategy]) & (languages["column"] == lang)].iloc[0]
        expected = np.mean([
            f[(f["setting"] == "multilingual") & (f["q_lang"] == lang)]["ap"].mean()
            for f in (strategy_store[strategy, 0], strategy_store[strategy, 1])
        ])
        assert row["mean"] == pytest.approx(expected, abs=1e-5)

    # The files were logged to a report run of the experiment.
    reports = mlflow.search_runs(experiment_names=["paper-test"], filter_string="tags.report = 'table_xquad'")
    assert len(reports) == 1
    logged = {a.path for a in MlflowClient().list_artifacts(reports["run_id"].iloc[0])}
    assert {"table_xquad.md", "table_xquad.csv", "table_xquad.tex", "table_xquad_languages.md",
            "table_xquad_tests.md", "table_xquad_tests.csv", "table_xquad_tests.tex"} <= logged
    # ... and to the parent run of the sweep the table was built from.
    parent = mlflow.search_runs(experiment_names=["paper-test"], filter_string=f"tags.`{ROLE_TAG}` = 'parent'")
    in_parent = {a.path for a in MlflowClient().list_artifacts(parent["run_id"].iloc[0], "report/table_xquad")}
    assert {"report/table_xquad/table_xquad.md", "report/table_xquad/table_xquad.csv"} <= in_parent


def test_multilingual_interval_is_over_questions_when_languages_are_unbalanced():
    """MLQA-R has more English questions than others: the multilingual value is the mean over
    questions, and its interval must be the bootstrap of that mean (plain loop here), not of the
    mean of per-language means."""
    from hybridsweep.reports.stats import bootstrap_estimate
    from hybridsweep.reports.tables import setting_column

    rng = np.random.default_rng(3)
    rows = [(f"e{i}", "en", "multilingual", "all", rng.uniform(0.6, 1.0)) for i in range(30)]
    rows += [(f"d{i}", "de", "multilingual", "all", rng.uniform(0.0, 0.2)) for i in range(6)]
    frame = pd.DataFrame(rows, columns=["qid", "q_lang", "setting", "c_lang", "ap"])
    value = frame["ap"].mean()
    run = pd.Series({"run_id": "r", "metrics.map_full/multilingual": value})
    sample = setting_column("multilingual").sample(run, lambda _: frame)
    estimate = bootstrap_estimate([sample], n_boot=N_BOOT, seed=0)

    draws_rng = np.random.default_rng(0)
    qids = sorted(frame["qid"].unique())
    ap = dict(zip(frame["qid"], frame["ap"]))
    draws = draws_rng.integers(0, len(qids), size=(N_BOOT, len(qids)))
    replicates = [np.mean([ap[qids[i]] for i in draws[b]]) for b in range(N_BOOT)]
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert estimate.mean == pytest.approx(value)
    assert (estimate.low, estimate.high) == (pytest.approx(low), pytest.approx(high))
    assert estimate.low < value < estimate.high


def test_bias_table_over_seeds_with_lower_is_better(strategy_store, isolated_env):
    paper = _load_paper_module()
    paper.build("test", paper.load_profile(_profile(isolated_env)), "table-bias", isolated_env / "reports")
    table = pd.read_csv(isolated_env / "reports" / "table_bias.csv")
    measured = table[table["column"] == "bias/rank_distance"].set_index("training")
    for strategy in STRATEGIES:
        values = np.array(BIAS[strategy])
        rng = np.random.default_rng(0)  # no per-question data: only the seed level draws
        picks = rng.integers(0, 2, size=(N_BOOT, 2))
        low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
        measured_row = measured.loc[LABELS[strategy]]
        assert measured_row["mean"] == pytest.approx(values.mean(), abs=1e-5)
        assert (measured_row["low"], measured_row["high"]) == (pytest.approx(low, abs=1e-5), pytest.approx(high, abs=1e-5))
    assert measured["best"].to_dict() == {"mono-only": False, "cross-only": False, "hybrid α=auto": True}
    # A configured metric no run logs stays in the table as n/a instead of failing the build.
    assert table[table["column"] == "bias/not_logged"]["mean"].isna().all()
    markdown = (isolated_env / "reports" / "table_bias.md").read_text()
    assert "n/a" in markdown
    # The pool size stands right after the rank distance: a whole number, never a best cell.
    assert list(dict.fromkeys(table["column"])) == ["bias/rank_distance", "eval/candidates", "bias/not_logged"]
    pool = table[table["column"] == "eval/candidates"]
    assert (pool["mean"] == POOL).all() and not pool["best"].any()
    header, _, *lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in header.strip("|").split("|")][2:4] == ["bias/rank_distance", "eval/candidates"]
    assert all(line.strip("|").split("|")[3].strip() == str(POOL) for line in lines)


def joint_law(n: float, s: float, e: float, a: float, alpha: float, b: float, beta: float) -> float:
    return e - a * (n / QUESTION_IDS[0]) ** -alpha - b * (s / BATCHES[0]) ** -beta


def steps_per_epoch(n: int, batch: int) -> int:
    return 4 * n // batch


def logged_steps(strategy: str, n: int, batch: int) -> int | None:
    """Hybrid runs log compute/steps (one short of the derivation, as if stopped early); mono
    runs do not, so theirs is derived from the params."""
    return steps_per_epoch(n, batch) * EPOCHS - 1 if strategy == "hybrid" else None


def per_question_multilingual(value: float, rng: np.random.Generator) -> pd.DataFrame:
    """Eight questions at value ± 0.01 in a per-run order (mean exactly ``value``): the
    multilingual points get a question bootstrap; the other settings have no per-question rows."""
    offsets = rng.permutation(np.tile([0.01, -0.01], len(QIDS) // 2))
    return pd.DataFrame({"qid": QIDS, "q_lang": "en", "setting": "multilingual", "c_lang": "all", "ap": value + offsets})


@pytest.fixture(scope="module")
def scaling_store_dir(tmp_path_factory):
    """Runs of the data-scale sweep (batch 8, 32 x five scales) and of the batch sweep's points
    it does not share (batch 16, 64 at full scale), for mono and hybrid, on the joint law. Logged
    once for the module (composing each run's config hash is slow); tests enter it with
    ``scaling_store``."""
    root = tmp_path_factory.mktemp("scaling")
    with pytest.MonkeyPatch.context() as patch:
        _enter_store(patch, root)
        _log_scaling_runs(root)
    return root


def _enter_store(patch: pytest.MonkeyPatch, root) -> None:
    patch.chdir(root)
    uri = sqlite_store(root / "mlflow.db")
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    patch.setenv("HYBRIDSWEEP_CACHE", str(root / "cache"))


@pytest.fixture
def scaling_store(scaling_store_dir, tmp_path, monkeypatch):
    """The module's scaling store as the working MLflow store; reports go to ``tmp_path``."""
    _enter_store(monkeypatch, scaling_store_dir)
    return tmp_path


def _log_scaling_runs(root) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment("paper-test")
    rng = np.random.default_rng(0)
    points = [("scale", n, scale, batch) for n, scale in zip(QUESTION_IDS, SCALES) for batch in (8, 32)]
    points += [("batch", QUESTION_IDS[-1], None, batch) for batch in (16, 64)]
    for strategy in MAP_LAW:
        for sweep, n, scale, batch in points:
            value = joint_law(n, batch, *MAP_LAW[strategy])
            metrics = {f"map_full/{s}": value for s in ("monolingual", "crosslingual", "multilingual")}
            metrics["val/loss_best"] = joint_law(n, batch, *LOSS_LAW[strategy])
            if logged_steps(strategy, n, batch) is not None:
                metrics["compute/steps"] = logged_steps(strategy, n, batch)
            params = {"sampling.strategy": strategy, "data.question_ids": str(n), "batch_size": str(batch), "seed": "0",
                      "sampling.steps_per_epoch": str(steps_per_epoch(n, batch)), "trainer.max_epochs": str(EPOCHS)}
            overrides = f"sampling={strategy} batch_size={batch}" + (f" data.scale={scale}" if scale else "") + f" {COMMON}"
            log_run(client, experiment_id, f"multirun/paper/test/{sweep}", params, metrics,
                    per_question_multilingual(value, rng), root, overrides)


def test_data_scaling_recovers_each_lines_law_and_checks_the_largest_size(scaling_store):
    paper = _load_paper_module()
    paths = paper.build("test", paper.load_profile(_profile(scaling_store)), "scaling-data", scaling_store / "reports")
    reports = scaling_store / "reports"
    assert {p.name for p in paths} == {f"scaling_data{s}" for s in (".csv", ".md", ".tex", ".png", "_fits.csv", "_extrapolation.csv")}
    assert (reports / "scaling_data.png").stat().st_size > 10_000

    points = pd.read_csv(reports / "scaling_data.csv")
    assert len(points) == 2 * 2 * len(SCALES) * 4  # strategies x batch sizes x scales x (3 settings + loss)
    for _, row in points.iterrows():
        n, batch, strategy = int(row["data.question_ids"]), int(row["batch_size"]), row["sampling.strategy"]
        law = LOSS_LAW if row["column"] == "val/loss_best" else MAP_LAW
        assert row["mean"] == pytest.approx(joint_law(n, batch, *law[strategy]), abs=1e-6)
        steps = logged_steps(strategy, n, batch) or steps_per_epoch(n, batch) * EPOCHS
        assert (row["optimizer_steps"], row["pairs_seen"]) == (steps, steps * batch)

    # Along the data axis at a fixed batch size the joint law is y = E' - A (N/20)^-alpha with
    # E' = E - B (S/8)^-beta.
    fits = pd.read_csv(reports / "scaling_data_fits.csv")
    for strategy, batch, column in itertools.product(MAP_LAW, (8, 32), ("monolingual", "multilingual", "val/loss_best")):
        e, a, alpha, b, beta = (LOSS_LAW if column == "val/loss_best" else MAP_LAW)[strategy]
        fit = fits[(fits["sampling.strategy"] == strategy) & (fits["batch_size"] == batch) & (fits["column"] == column)].iloc[0]
        assert fit["status"] == "fitted" and fit["n_points"] == len(SCALES)
        assert fit["resampling"] == ("points" if column == "multilingual" else "residuals")
        expected = {"E": e - b * (batch / 8) ** -beta, "A[data.question_ids]": a, "alpha[data.question_ids]": alpha}
        for name, value in expected.items():
            assert fit[name] == pytest.approx(value, rel=1e-4, abs=1e-6)
            assert fit[f"{name}_low"] - 1e-6 <= value <= fit[f"{name}_high"] + 1e-6
        # The log-linear trend: numpy's least-squares line through the points in log2(question ids).
        line = points[(points["sampling.strategy"] == strategy) & (points["batch_size"] == batch) & (points["column"] == column)]
        slope = np.polyfit(np.log2(line["data.question_ids"]), line["mean"], 1)[0]
        assert fit["per_doubling[data.question_ids]"] == pytest.approx(slope, abs=1e-6)

    checks = pd.read_csv(reports / "scaling_data_extrapolation.csv")
    assert len(checks) == 2 * 2 * 4 and (checks["status"] == "checked").all()
    assert (checks["data.question_ids"] == QUESTION_IDS[-1]).all() and (checks["held_out"] == "data.question_ids").all()
    assert checks["error"].abs().max() < 1e-4
    assert checks[checks["column"] == "multilingual"]["inside"].all()

    markdown = (reports / "scaling_data.md").read_text()
    assert "## Fitted law and log-linear trend" in markdown and "## Extrapolation to the largest level" in markdown
    assert "by least squares" in markdown
    assert "compute/steps is not logged by every run" in markdown  # the mono runs' steps are derived


def test_joint_law_over_the_batch_and_data_sweeps(scaling_store):
    paper = _load_paper_module()
    paper.build("test", paper.load_profile(_profile(scaling_store)), "scaling-joint", scaling_store / "reports")
    reports = scaling_store / "reports"
    points = pd.read_csv(reports / "scaling_joint.csv")
    # Five scales x batch 8, 32 plus batch 16, 64 at full scale: the batch sweep's batch 8 and 32
    # points are the data sweep's full-scale ones, counted once.
    per_strategy = points[(points["column"] == "multilingual")].groupby("sampling.strategy").size()
    assert per_strategy.to_dict() == {"hybrid": 12, "mono": 12}

    fits = pd.read_csv(reports / "scaling_joint_fits.csv")
    names = ["E", "A[data.question_ids]", "alpha[data.question_ids]", "A[batch_size]", "alpha[batch_size]"]
    for strategy, column in itertools.product(MAP_LAW, ("monolingual", "multilingual", "val/loss_best")):
        truth = (LOSS_LAW if column == "val/loss_best" else MAP_LAW)[strategy]
        fit = fits[(fits["sampling.strategy"] == strategy) & (fits["column"] == column)].iloc[0]
        assert fit["status"] == "fitted" and fit["n_points"] == 12
        for name, value in zip(names, truth):
            assert fit[name] == pytest.approx(value, rel=1e-4, abs=1e-6)
            assert fit[f"{name}_low"] - 1e-6 <= value <= fit[f"{name}_high"] + 1e-6

    checks = pd.read_csv(reports / "scaling_joint_extrapolation.csv")
    batch_checks = checks[checks["held_out"] == "batch_size"]
    assert (batch_checks["status"] == "checked").all() and (batch_checks["batch_size"] == 64).all()
    assert batch_checks["error"].abs().max() < 1e-4
    # Without the full scale only batch 8 and 32 would remain: the data-axis check says why not.
    data_checks = checks[checks["held_out"] == "data.question_ids"]
    assert set(data_checks["status"]) == {"cannot hold out the largest data.question_ids: too few levels of batch_size (2 < 3) without it"}
    assert "A[batch_size] (batch_size / min batch_size)^-alpha[batch_size]" in (reports / "scaling_joint.md").read_text()


def test_huber_choice_is_stated_and_a_bad_fit_setting_is_named(scaling_store):
    paper = _load_paper_module()
    profile = paper.load_profile(_profile(scaling_store, "fit: {loss: huber, huber_delta: 1.5}\n"))
    paper.build("test", profile, "scaling-data", scaling_store / "reports")
    markdown = (scaling_store / "reports" / "scaling_data.md").read_text()
    assert "by Huber loss (delta = 1.5 standard errors of a point)" in markdown
    assert set(pd.read_csv(scaling_store / "reports" / "scaling_data_fits.csv")["loss"]) == {"huber"}

    bad = paper.load_profile(_profile(scaling_store, "fit: {loss: cauchy}\n"))
    with pytest.raises(SystemExit, match=r"targets\.scaling-data\.fit: fit\.loss='cauchy': expected one of"):
        paper.build("test", bad, "scaling-data", scaling_store / "reports")


def test_missing_validation_loss_is_stated(isolated_env):
    """Runs that log no val/loss_best (older runs): the column is left out and the report says so."""
    client = MlflowClient()
    experiment_id = client.create_experiment("paper-test")
    for (n, scale), batch in itertools.product(zip(QUESTION_IDS, SCALES), (8,)):
        value = joint_law(n, batch, *MAP_LAW["mono"])
        log_run(client, experiment_id, "multirun/paper/test/scale",
                {"sampling.strategy": "mono", "data.question_ids": str(n), "batch_size": str(batch), "seed": "0"},
                {f"map_full/{s}": value for s in ("monolingual", "crosslingual", "multilingual")},
                overrides=f"sampling=mono batch_size={batch} data.scale={scale} {COMMON}")
    paper = _load_paper_module()
    paper.build("test", paper.load_profile(_profile(isolated_env)), "scaling-data", isolated_env / "reports")
    points = pd.read_csv(isolated_env / "reports" / "scaling_data.csv")
    assert set(points["column"]) == {"monolingual", "crosslingual", "multilingual"}
    assert points["optimizer_steps"].isna().all()  # neither compute/steps nor the params to derive it
    assert "val/loss_best: not logged by these runs" in (isolated_env / "reports" / "scaling_data.md").read_text()


def test_best_cell_only_when_intervals_separate():
    a = Estimate(0.50, 0.45, 0.55, 2)
    b = Estimate(0.60, 0.56, 0.64, 2)
    overlapping = Estimate(0.60, 0.54, 0.66, 2)
    assert separated_best([a, b]) == 1
    assert separated_best([a, overlapping]) is None
    assert separated_best([a, b], higher_is_better=False) == 0
    assert separated_best([a, None]) is None
    single_run = Estimate(0.70, 0.70, 0.70, 1)  # no interval: a lone number beats nothing
    assert separated_best([a, single_run]) is None
    assert separated_best([single_run, Estimate(0.40, 0.40, 0.40, 1)]) is None
    assert separated_best([a, b, Estimate(0.30, 0.30, 0.30, 1)]) == 1  # a point below the best's interval


def test_complete_sweep_trains_nothing(isolated_env, monkeypatch):
    """Expected points come from the grid; a sweep whose points all finished launches nothing,
    also when another sweep trained one of them (the resume logic skips it in this sweep)."""
    paper = _load_paper_module()
    profile = paper.load_profile(_profile(isolated_env))
    overrides = paper.sweep_overrides(profile, "strategies")
    points = {frozenset(point) for point in expand(overrides)}
    assert len(points) == 6
    assert frozenset({"sampling=hybrid", "seed=1", "trainer.max_epochs=1", "tracking.experiment=paper-test"}) in points

    launched = []
    monkeypatch.setattr(
        paper.subprocess, "run", lambda command, **_: launched.append(command) or subprocess.CompletedProcess(command, 0)
    )
    client = MlflowClient()
    experiment_id = client.create_experiment("paper-test")
    last = frozenset({"sampling=mono", "seed=0", "trainer.max_epochs=1", "tracking.experiment=paper-test"})
    for point in points - {last}:
        log_run(client, experiment_id, "multirun/paper/test/strategies", {}, {}, overrides=" ".join(sorted(point)))
    paper.ensure_sweep("test", profile, "strategies", accept_stale=False)
    assert len(launched) == 1 and "hydra.sweep.dir=multirun/paper/test/strategies" in launched[0]

    # The same point trained by another sweep, written without the default seed=0.
    log_run(client, experiment_id, "multirun/paper/test/other", {}, {}, overrides=" ".join(sorted(last - {"seed=0"})))
    paper.ensure_sweep("test", profile, "strategies", accept_stale=False)
    assert len(launched) == 1, "every point finished: the sweep command must not run again"


def test_stale_points_count_only_when_accepted(strategy_store, isolated_env, monkeypatch):
    """A point whose only run is of an older results version is trained again, by the whole
    sweep; with ``accept_stale`` it counts as done, only the missing points are launched (one
    command each, the sweep would retrain the stale ones) and the tables name the stale run."""
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("paper-test").experiment_id
    current = mlflow.search_runs(experiment_names=["paper-test"], filter_string=f"tags.`{ROLE_TAG}` = 'point'")
    by_overrides = dict(zip(current["tags.overrides"], current["run_id"]))
    old_point, missing_point = f"sampling=mono seed=1 {COMMON}", f"sampling=cross seed=1 {COMMON}"
    for overrides in (old_point, missing_point):
        client.delete_run(by_overrides[overrides])
    frame = strategy_store["mono", 1]
    metrics = {f"map_full/{s}": value_by_loop(frame, s) for s in ("monolingual", "crosslingual", "multilingual")}
    params = {"model.name": "m1", "sampling.strategy": "mono", "sampling.mix_ratio": "auto", "seed": "1"}
    stale_id = log_run(client, experiment_id, "multirun/paper/test/strategies", params, metrics, frame, isolated_env,
                       old_point, tags={ROLE_TAG: "point", "mlflow.runName": "old-mono-1"}, version=RESULTS_VERSION - 1)
    launched = []
    paper_module = _load_paper_module()
    monkeypatch.setattr(
        paper_module.subprocess, "run", lambda command, **_: launched.append(command) or subprocess.CompletedProcess(command, 0)
    )
    profile = paper_module.load_profile(_profile(isolated_env))
    paper_module.ensure_sweep("test", profile, "strategies", accept_stale=False)
    assert len(launched) == 1 and any("," in part for part in launched[0]), "the whole sweep, comma lists and all"
    launched.clear()
    paper_module.ensure_sweep("test", profile, "strategies", accept_stale=True)
    assert len(launched) == 1
    swept = {part for part in launched[0] if "=" in part and not part.startswith("hydra.")}
    assert swept == set(missing_point.split()) | {"tracking.experiment=paper-test"}
    monkeypatch.undo()

    out = isolated_env / "reports"
    paper_module.build("test", profile, "table-xquad", out, accept_stale=True)
    table = pd.read_csv(out / "table_xquad.csv")
    mono = table[(table["training"] == "mono-only") & (table["column"] == "multilingual")].iloc[0]
    assert mono["n_runs"] == 2
    note = (out / "table_xquad.md").read_text()
    assert f"results version {RESULTS_VERSION - 1} (the code is at {RESULTS_VERSION}): old-mono-1" in note
    assert client.get_run(stale_id).info.status == "FINISHED"
    paper_module.build("test", profile, "table-xquad", out)
    table = pd.read_csv(out / "table_xquad.csv")
    assert table[(table["training"] == "mono-only") & (table["column"] == "multilingual")].iloc[0]["n_runs"] == 1
    assert "Stale runs" not in (out / "table_xquad.md").read_text()


def test_points_trained_by_another_sweep_are_in_the_table(strategy_store, isolated_env):
    """A grid point whose run came from another sweep (same config) is built in; an other-config
    run of that sweep is not."""
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("paper-test").experiment_id
    hybrid0 = mlflow.search_runs(experiment_names=["paper-test"], filter_string=
                                 "tags.overrides = 'sampling=hybrid seed=0 trainer.max_epochs=1 tracking.experiment=paper-test'")
    client.delete_run(hybrid0["run_id"].iloc[0])
    frame = strategy_store["hybrid", 0]
    metrics = {f"map_full/{s}": value_by_loop(frame, s) for s in ("monolingual", "crosslingual", "multilingual")}
    params = {"model.name": "m1", "sampling.strategy": "hybrid", "sampling.mix_ratio": "auto", "seed": "0"}
    log_run(client, experiment_id, "multirun/paper/test/batch", params, metrics, frame, isolated_env, overrides=f"sampling=hybrid {COMMON}")
    log_run(client, experiment_id, "multirun/paper/test/batch", params, {"map_full/multilingual": 0.0},
            overrides=f"sampling=hybrid batch_size=7 {COMMON}")
    paper = _load_paper_module()
    paper.build("test", paper.load_profile(_profile(isolated_env)), "table-xquad", isolated_env / "reports")
    table = pd.read_csv(isolated_env / "reports" / "table_xquad.csv")
    row = table[(table["training"] == "hybrid α=auto") & (table["column"] == "multilingual")].iloc[0]
    assert row["n_runs"] == 2
    expected = np.mean([value_by_loop(strategy_store["hybrid", seed], "multilingual") for seed in (0, 1)])
    assert row["mean"] == pytest.approx(expected, abs=1e-5)


def test_grid_points_expand_as_hydra_sweeps():
    """Swept keys give one point per value (ranges too); list values are one value; deletions and
    additions keep their prefix."""
    points = expand(["sampling=mono,hybrid", "data.corpus.languages=[de,en]", "~eval.suites.tatoeba",
                     "seed=range(0,2)", "+trainer.deterministic=true"])
    assert sorted(points) == sorted(
        [f"sampling={s}", "data.corpus.languages=[de,en]", "~eval.suites.tatoeba", f"seed={seed}", "+trainer.deterministic=true"]
        for s in ("mono", "hybrid") for seed in (0, 1)
    )


@pytest.mark.parametrize(("target", "message"), [
    ("{kind: table, sweep: a}", r"bad.yaml: targets.t.kind must be one of"),
    ("{kind: metrics, sweep: a}", r"bad.yaml: targets.t.metrics must map each metric to lower\|higher"),
])
def test_bad_profile_key_is_named(tmp_path, target, message):
    paper = _load_paper_module()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"experiment: x\nsweeps: {{a: [seed=0]}}\ntargets: {{t: {target}}}\n")
    with pytest.raises(SystemExit, match=message):
        paper.load_profile(str(bad))


def test_metrics_table_shows_the_runs_that_log_its_metrics(isolated_env):
    """A ``kind: metrics`` table (Tatoeba's accuracies): the hybrid points that ran the suite, and
    the initializer's zero-shot run *of that suite*, not its newer retrieval-suite run; a point
    without the suite stays out."""
    client = MlflowClient()
    experiment_id = client.create_experiment("paper-test")
    common = "trainer.max_epochs=1 eval=xquad_r"
    mean = {0: 0.62, 1: 0.70}
    xx_en = {0: 0.55, 1: 0.81}
    for seed in (0, 1):
        log_run(client, experiment_id, "multirun/paper/test/tatoeba",
                {"model.name": "m1", "sampling.strategy": "hybrid", "sampling.mix_ratio": "0.5", "seed": str(seed)},
                {"map_full/multilingual": 0.5, "tatoeba/accuracy/mean": mean[seed], "tatoeba/accuracy/xx-en": xx_en[seed]},
                overrides=f"{common} sampling=hybrid seed={seed} tracking.experiment=paper-test", tags={ROLE_TAG: "point"})
    log_run(client, experiment_id, "multirun/paper/test/plain",
            {"model.name": "m1", "sampling.strategy": "mono", "seed": "0"}, {"map_full/multilingual": 0.3},
            overrides=f"{common} sampling=mono seed=0 ~eval.suites.tatoeba tracking.experiment=paper-test",
            tags={ROLE_TAG: "point"})
    point = f"{common} sampling=hybrid seed=0 tracking.experiment=paper-test"
    log_run(client, experiment_id, "multirun/paper/test/tatoeba", {"model.name": "m1"},
            {"tatoeba/accuracy/mean": 0.41, "tatoeba/accuracy/xx-en": 0.38}, overrides=point,
            tags={ROLE_TAG: "zero-shot", HASH_TAG: suite_zero_shot_hash(point, "tatoeba")})
    log_run(client, experiment_id, "multirun/paper/test/tatoeba", {"model.name": "m1"}, {"map_full/multilingual": 0.2},
            overrides=point, tags={ROLE_TAG: "zero-shot", HASH_TAG: suite_zero_shot_hash(point, "retrieval")})
    profile = isolated_env / "metrics.yaml"
    profile.write_text(f"""
experiment: paper-test
n_boot: {N_BOOT}
common: [trainer.max_epochs=1, eval=xquad_r]
sweeps:
  tatoeba: [sampling=hybrid, "seed=0,1"]
  plain: [sampling=mono, seed=0, ~eval.suites.tatoeba]
targets:
  table-tatoeba:
    kind: metrics
    sweep: tatoeba
    with_sweeps: [plain]
    metrics: {{tatoeba/accuracy/mean: higher, tatoeba/accuracy/xx-en: higher}}
    output: table_tatoeba
    caption: Tatoeba
""")
    paper = _load_paper_module()
    paper.build("test", paper.load_profile(str(profile)), "table-tatoeba", isolated_env / "reports")
    table = pd.read_csv(isolated_env / "reports" / "table_tatoeba.csv")
    assert sorted(set(table["training"])) == ["hybrid α=0.5", "zero-shot"]
    cells = table.set_index(["training", "column"])
    assert cells.loc[("zero-shot", "tatoeba/accuracy/mean"), "mean"] == pytest.approx(0.41)
    assert cells.loc[("zero-shot", "tatoeba/accuracy/xx-en"), "n_runs"] == 1
    for metric, values in (("tatoeba/accuracy/mean", mean), ("tatoeba/accuracy/xx-en", xx_en)):
        seeds = np.array([values[0], values[1]])
        picks = np.random.default_rng(0).integers(0, 2, size=(N_BOOT, 2))  # the seed-level bootstrap, by hand
        low, high = np.percentile(seeds[picks].mean(axis=1), [2.5, 97.5])
        hybrid = cells.loc[("hybrid α=0.5", metric)]
        assert hybrid["mean"] == pytest.approx(seeds.mean())
        assert (hybrid["low"], hybrid["high"]) == (pytest.approx(low), pytest.approx(high))
        assert bool(hybrid["best"]) == bool(low > cells.loc[("zero-shot", metric), "mean"])


def test_a_target_restricted_by_where_is_built_from_those_points_only(strategy_store, isolated_env):
    paper = _load_paper_module()
    profile = paper.load_profile(_profile(isolated_env, """  table-seed1: {kind: settings, sweep: strategies, where: {seed: 1},
                 output: table_seed1, caption: "seed 1"}
  table-typo: {kind: settings, sweep: strategies, where: {sed: 1}, output: table_typo, caption: "typo"}
"""))
    runs = paper.target_runs("test", profile, "table-seed1", accept_stale=False)
    assert sorted(runs["params.sampling.strategy"]) == sorted(STRATEGIES)
    assert set(runs["params.seed"]) == {"1"}
    for _, run in runs.iterrows():  # each run's metrics are those of its seed-1 frame
        frame = strategy_store[run["params.sampling.strategy"], 1]
        assert run["metrics.map_full/multilingual"] == pytest.approx(value_by_loop(frame, "multilingual"))
    with pytest.raises(SystemExit, match=r"targets.table-typo.where: no run logs the params \['sed'\]"):
        paper.target_runs("test", profile, "table-typo", accept_stale=False)


def test_tables_rebuild_on_a_machine_that_resolves_auto_otherwise(strategy_store, isolated_env, monkeypatch):
    """The store's points were trained where ``trainer.precision: auto`` resolved one way, and
    their identities hold what ran. On a machine that resolves it the other way (simulated: the
    bf16 probe answers the opposite), the tables still find every point, and nothing trains."""
    import hybridsweep.precision as precision

    paper = _load_paper_module()
    here = precision.has_fast_bf16(torch.device("cpu"))
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: not here)
    launched = []
    monkeypatch.setattr(paper, "run_sweep", lambda *arguments: launched.append(arguments))
    paper.grid.cache_clear()  # identities are computed as the other machine resolves them
    try:
        paper.main(["table-xquad", "--profile", _profile(isolated_env), "--out", str(isolated_env / "reports")])
    finally:
        paper.grid.cache_clear()
    assert launched == []
    table = pd.read_csv(isolated_env / "reports" / "test" / "table_xquad.csv")
    multilingual = table[table["column"] == "multilingual"].set_index("training")
    assert sorted(multilingual.index) == sorted(LABELS.values())
    assert (multilingual["n_runs"] == 2).all()
    for strategy, label in LABELS.items():
        expected = np.mean([value_by_loop(strategy_store[strategy, seed], "multilingual") for seed in (0, 1)])
        assert multilingual.loc[label, "mean"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("where", ["profile", "command line"])
def test_paper_reads_the_store_its_training_writes_to(strategy_store, isolated_env, monkeypatch, where):
    """A store named by ``tracking.tracking_uri`` in the profile's ``common`` overrides, or on the
    command line, is the one the tables are read from (and every sweep trains into), as it is
    for training: not ``./mlflow.db`` of the working directory."""
    store = sqlite_store(isolated_env / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    elsewhere = isolated_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    paper = _load_paper_module()
    common = f"[trainer.max_epochs=1{', tracking.tracking_uri=' + store if where == 'profile' else ''}]"
    text = Path(_profile(isolated_env)).read_text().replace("common: [trainer.max_epochs=1]", f"common: {common}")
    profile = isolated_env / "located.yaml"
    profile.write_text(text)
    launched = []
    monkeypatch.setattr(paper, "run_sweep", lambda *arguments: launched.append(arguments))
    arguments = ["table-xquad", "--profile", str(profile), "--out", str(elsewhere / "reports")]
    paper.main(arguments + ([f"tracking.tracking_uri={store}"] if where == "command line" else []))
    assert launched == []
    table = pd.read_csv(elsewhere / "reports" / "located" / "table_xquad.csv")
    assert (table[table["column"] == "multilingual"]["n_runs"] == 2).all()
    assert not (elsewhere / "mlflow.db").exists()
