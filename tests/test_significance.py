"""Paired significance tests and table rows, checked against simulations with a known truth, a
plain-loop bootstrap written out here, and hand-computed Holm adjustments and p-values."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from hybridsweep.reports import significance
from hybridsweep.reports.significance import (
    bootstrap_p_value,
    holm,
    mark_significant,
    paired_difference,
    paired_tests,
    write_tests,
)
from hybridsweep.reports.stats import RunSample
from hybridsweep.reports.tables import bias_columns, build_table, row_label, setting_column, table_rows, write_table

ROLE = "tags.hybridsweep.role"
SETTINGS = ("monolingual", "crosslingual", "multilingual")
LANGS = ("en", "de")
NOISE = 0.2
"""Per-run, per-entry AP noise is uniform on ±NOISE around the question's difficulty (+ the row's
shift); difficulties in [0.25, 0.65] and shifts up to 0.15 keep every AP inside [0, 1], so a
planted shift is the exact population difference."""


@cache
def entries(n_questions: int, languages=LANGS) -> pd.DataFrame:
    """The rows of an evaluation's per-question APs without the APs: every (question, query
    language, pool language) pair and every question in the multilingual pool (built once per
    size: string columns are the slow part of a simulated run)."""
    pools = [(x, pool) for x in languages for pool in (*languages, "all")]
    q_lang = np.repeat([x for x, _ in pools], n_questions)
    c_lang = np.repeat([pool for _, pool in pools], n_questions)
    setting = np.where(c_lang == "all", "multilingual", np.where(c_lang == q_lang, "monolingual", "crosslingual"))
    qids = np.tile([f"q{i:03d}" for i in range(n_questions)], len(pools))
    return pd.DataFrame({"qid": qids, "q_lang": q_lang, "setting": setting, "c_lang": c_lang})


def simulate_frame(rng: np.random.Generator, difficulty: np.ndarray, shift: float = 0.0) -> pd.DataFrame:
    """Per-question APs of one run: AP = difficulty of the question id + shift + independent noise."""
    frame = entries(len(difficulty))
    per_entry = np.tile(difficulty, len(frame) // len(difficulty))
    return frame.assign(ap=per_entry + shift + rng.uniform(-NOISE, NOISE, len(frame)))


def value_of(frame: pd.DataFrame, setting: str) -> float:
    """The table cell's run value: mean over language cells of the cell's mean AP (mono/cross),
    mean over questions (multilingual)."""
    rows = frame[frame["setting"] == setting]
    if setting == "multilingual":
        return float(rows["ap"].mean())
    return float(rows.groupby(["q_lang", "c_lang"])["ap"].mean().mean())


# Rows of a simulated table: (strategy, mix ratio) per row label.
ROWS = {"mono-only": ("mono", "auto"), "cross-only": ("cross", "auto"),
        "hybrid α=0.5": ("hybrid", "0.5"), "hybrid α=auto": ("hybrid", "auto")}


def simulate_table(rng, shifts: dict[str, float], n_questions: int = 60, seeds=(0, 1), initializer: str = "m"):
    """Runs (as ``mlflow.search_runs`` returns them) of one initializer's rows, every seed, all
    evaluated on one question set, and the loader of their per-question APs."""
    difficulty = rng.uniform(0.25, 0.65, n_questions)
    records, frames = [], {}
    for label, seed in itertools.product(shifts, seeds):
        strategy, ratio = ROWS[label]
        run_id = f"{initializer}-{label}-{seed}"
        frame = frames[run_id] = simulate_frame(rng, difficulty, shifts[label])
        records.append({
            "run_id": run_id, "params.model.name": initializer, "params.sampling.strategy": strategy,
            "params.sampling.mix_ratio": ratio, "params.seed": str(seed), ROLE: "point",
            **{f"metrics.map_full/{s}": value for s, value in block_values(frame, n_questions).items()},
        })
    return pd.DataFrame(records), frames


def block_values(frame: pd.DataFrame, n_questions: int) -> dict[str, float]:
    """:func:`value_of` for a simulated run, faster: each (query, pool) language block of
    :func:`entries` holds every question once, so a cell's mean is its block's mean, and the
    multilingual mean over questions is the mean of its (equal-sized) blocks' means."""
    means = frame["ap"].to_numpy().reshape(-1, n_questions).mean(axis=1)
    kinds = entries(n_questions)["setting"].to_numpy()[::n_questions]
    return {s: float(means[kinds == s].mean()) for s in SETTINGS}


def simulate_pairs(rng, shift: float, n_questions: int = 60, n_seeds: int = 2, cells=("en-de", "de-en")):
    """(treatment, baseline) samples, one pair per seed, each run's APs in two language-pair cells
    (the crosslingual setting of two languages); value = mean over cells of the cell's mean AP."""
    difficulty = np.tile(rng.uniform(0.25, 0.65, n_questions), len(cells))
    qids, cell = np.tile(np.arange(n_questions), len(cells)), np.repeat(cells, n_questions)

    def sample(run_shift: float) -> RunSample:
        ap = difficulty + run_shift + rng.uniform(-NOISE, NOISE, len(difficulty))
        value = float(ap.reshape(len(cells), n_questions).mean(axis=1).mean())
        return RunSample(value, pd.DataFrame({"qid": qids, "cell": cell, "ap": ap}))

    return [(sample(shift), sample(0.0)) for _ in range(n_seeds)]


def binomial_band(n: int, rate: float, level: float = 0.99) -> tuple[float, float]:
    """The central ``level`` interval of the share of successes among n Bernoulli(rate) trials."""
    tail = (1 - level) / 2
    return binom.ppf(tail, n, rate) / n, binom.ppf(1 - tail, n, rate) / n


# --- p-value and Holm, by hand ------------------------------------------------------------------

def test_bootstrap_p_value_by_hand():
    # 2 min(1 + #{<= 0}, 1 + #{>= 0}) / (B + 1)
    assert bootstrap_p_value([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 * 1 / 5)
    assert bootstrap_p_value([-0.5, 1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(2 * 2 / 10)
    assert bootstrap_p_value([-4.0, -3.0, -2.0, -1.0, 0.0]) == pytest.approx(2 * 2 / 6)  # a 0 counts in #{>= 0}
    assert bootstrap_p_value([-1.0, 0.0, 1.0, 2.0, 3.0]) == 1.0  # 2 * 3 / 6, capped at 1
    assert bootstrap_p_value(np.zeros(9)) == 1.0


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])  # untested: not in the family, so m stays 4
    assert holm([0.01, 0.02, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 = 1; capped, and monotone
    assert holm([]).shape == (0,)


# --- the bootstrap against a plain loop ---------------------------------------------------------

def loop_paired_bootstrap(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], setting: str, n_boot: int, seed: int):
    """Paired bootstrap of (treatment, baseline) per-question frames in one mono/cross setting,
    written out with loops (significance module doc): one ``default_rng(seed)`` drawing
    ``integers(0, |U|, (B, |U|))`` over the sorted union U of ids; replicate b resamples every run
    with row b; a run's value is the mean over its (query, pool) language cells of the mean AP of
    the drawn ids (with their multiplicity) present in that cell."""
    pairs = [tuple([(r.qid, (r.q_lang, r.c_lang), r.ap) for r in frame.itertuples() if r.setting == setting] for frame in pair)
             for pair in pairs]
    universe = sorted({qid for pair in pairs for rows in pair for qid, _, _ in rows})
    draws = np.random.default_rng(seed).integers(0, len(universe), size=(n_boot, len(universe)))

    def value(rows: list[tuple], ids: list[str]) -> float:
        cell_means = []
        for cell in sorted({c for _, c, _ in rows}):
            aps = []
            for qid in ids:
                for row_qid, row_cell, ap in rows:
                    if row_cell == cell and row_qid == qid:
                        aps.append(ap)
            if aps:
                cell_means.append(sum(aps) / len(aps))
        return sum(cell_means) / len(cell_means)

    replicates = []
    for b in range(n_boot):
        ids = [universe[i] for i in draws[b]]
        replicates.append(sum(value(t, ids) - value(m, ids) for t, m in pairs) / len(pairs))
    below = sum(1 for d in replicates if d <= 0)
    above = sum(1 for d in replicates if d >= 0)
    p = min(1.0, 2 * min(1 + below, 1 + above) / (n_boot + 1))
    observed = sum(value(t, universe) - value(m, universe) for t, m in pairs) / len(pairs)
    return observed, np.percentile(replicates, [2.5, 97.5]), p


def test_interval_and_p_value_match_a_plain_loop(monkeypatch):
    """Same draws, so equal to rounding: the shared draw, the per-cell means with a question
    missing from one cell, the seed mean, the percentile interval and the p-value; blocks of 7
    replicates give the numbers of one draw."""
    monkeypatch.setattr(significance, "BLOCK", 7)
    rng = np.random.default_rng(11)
    difficulty = rng.uniform(0.25, 0.65, 6)
    column = setting_column("crosslingual")
    frames, records = {}, {}
    for label, seed in itertools.product(("mono-only", "cross-only", "hybrid α=0.5"), (0, 1)):
        frame = simulate_frame(rng, difficulty, 0.03 if label.startswith("hybrid") else 0.0)
        frame = frame.drop(index=frame.index[(frame["qid"] == "q002") & (frame["c_lang"] == "de") & (frame["setting"] == "crosslingual")])
        run_id = f"{label}-{seed}"
        frames[run_id] = frame
        strategy, ratio = ROWS[label]
        records[run_id] = pd.Series({
            "run_id": run_id, "params.model.name": "m", "params.sampling.strategy": strategy,
            "params.sampling.mix_ratio": ratio, "params.seed": str(seed), ROLE: "point",
            "metrics.map_full/crosslingual": value_of(frame, "crosslingual"),
        })
    runs = pd.DataFrame(list(records.values()))

    def sample(run_id: str) -> RunSample:
        return column.sample(records[run_id], frames.get)

    n_boot, seed = 40, 5
    tests = paired_tests(runs, [column], frames.get, n_boot=n_boot, seed=seed).frame.set_index("baseline")
    for baseline in ("mono-only", "cross-only"):
        keys = [(f"hybrid α=0.5-{s}", f"{baseline}-{s}") for s in (0, 1)]
        observed, (low, high), p = loop_paired_bootstrap([(frames[t], frames[m]) for t, m in keys], "crosslingual", n_boot, seed)
        direct = paired_difference([(sample(t), sample(m)) for t, m in keys], n_boot=n_boot, seed=seed)
        for result in (direct, tests.loc[baseline]):
            assert (result.difference, result.low, result.high, result.p) == (
                pytest.approx(observed, abs=1e-12), pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12), pytest.approx(p))


# --- simulations with a known truth ---------------------------------------------------------------
# The percentile bootstrap is calibrated as the number of questions grows: at 60 questions its
# false-positive rate at α = 0.05 measured 6.0% (3000 simulations), at 200 questions 5.2%, at 400
# 5.1%. The calibration checks use 200 questions (XQuAD-R has 1190 question ids).
CALIBRATION_QUESTIONS = 200


def test_planted_difference_is_detected_and_covered():
    """Hybrid better by a planted 0.08 on every entry: detected in (almost) every simulation,
    and the 95% interval covers 0.08 at its nominal rate (binomial 99% band)."""
    rng = np.random.default_rng(2024)
    shift, n_sim = 0.08, 300
    results = [paired_difference(simulate_pairs(rng, shift, CALIBRATION_QUESTIONS), n_boot=400, seed=i) for i in range(n_sim)]
    detected = np.mean([r.p < 0.05 and r.difference > 0 for r in results])
    covered = np.mean([r.low <= shift <= r.high for r in results])
    low, high = binomial_band(n_sim, 0.95)
    assert detected >= 0.99
    assert low <= covered <= high, f"coverage {covered:.3f} outside [{low:.3f}, {high:.3f}]"


def test_null_false_positive_rate_is_nominal():
    """Treatment and baseline APs from one distribution: uncorrected single comparisons reject at
    α = 0.05 at a rate inside the binomial 99% band around 5%."""
    rng = np.random.default_rng(7)
    n_sim = 600
    rejected = np.mean([
        paired_difference(simulate_pairs(rng, 0.0, CALIBRATION_QUESTIONS), n_boot=300, seed=i).p < 0.05 for i in range(n_sim)
    ])
    low, high = binomial_band(n_sim, 0.05)
    assert low <= rejected <= high, f"false-positive rate {rejected:.3f} outside [{low:.3f}, {high:.3f}]"


def test_null_family_wise_rate_with_holm():
    """Whole tables under the null (four rows, two seeds, three settings: a family of 12): the
    share of tables with any Holm-significant comparison stays within the binomial 99% band of
    5% (Holm allows less), and one comparison's uncorrected rate is nominal."""
    rng = np.random.default_rng(99)
    n_tables = 200
    columns = [setting_column(s) for s in SETTINGS]
    any_significant, first_rejected = [], []
    for i in range(n_tables):
        runs, frames = simulate_table(rng, dict.fromkeys(ROWS, 0.0), CALIBRATION_QUESTIONS)
        tests = paired_tests(runs, columns, frames.get, n_boot=300, seed=i)
        assert tests.family_size == 12
        any_significant.append(tests.frame["significant"].any())
        first_rejected.append(tests.frame["p"].iloc[0] < 0.05)
    low, high = binomial_band(n_tables, 0.05)
    assert np.mean(any_significant) <= high, f"family-wise rate {np.mean(any_significant):.3f} above {high:.3f}"
    assert low <= np.mean(first_rejected) <= high


def test_table_marks_direction_and_family():
    """Hybrid planted 0.1 above mono-only and 0.05 below cross-only in every setting: its cells
    carry † and −‡, and every comparison is significant with an estimate near the planted gap
    (interval coverage is checked over many simulations above)."""
    rng = np.random.default_rng(5)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "cross-only": 0.15, "hybrid α=0.5": 0.1}, n_questions=200, seeds=(0, 1, 2))
    columns = [setting_column(s) for s in SETTINGS]
    tests = paired_tests(runs, columns, frames.get, n_boot=2000)
    assert tests.family_size == 6 and tests.frame["significant"].all()
    truth = tests.frame["baseline"].map({"mono-only": 0.1, "cross-only": -0.05})
    assert ((tests.frame["difference"] - truth).abs() < tests.frame["high"] - tests.frame["low"]).all()
    assert (tests.frame["seeds"] == 3).all() and (tests.frame["questions"] == 200).all()
    table = mark_significant(build_table(runs, columns, frames.get, n_boot=200), tests)
    marks = table.set_index(["training", "column"])["marks"]
    assert all(marks["hybrid α=0.5", s] == "†−‡" for s in SETTINGS)
    assert (marks.drop("hybrid α=0.5", level="training") == "").all()


# --- untested comparisons and bad input -----------------------------------------------------------

def test_comparisons_that_cannot_be_paired_are_listed_untested():
    rng = np.random.default_rng(1)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "cross-only": 0.0, "hybrid α=0.5": 0.0}, n_questions=20)
    frames["m-cross-only-1"] = None  # an older run without per-question APs
    runs.loc[runs["run_id"].str.startswith("m-mono-only"), "params.seed"] = ["7", "8"]  # no seed in common with hybrid
    tests = paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=100)
    frame = tests.frame.set_index("baseline")
    assert frame.loc["mono-only", "note"] == "not tested: no seed in common (hybrid seeds ['0', '1'], baseline seeds ['7', '8'])"
    assert frame.loc["cross-only", "note"] == "not tested: run m-cross-only-1 has no per-question APs"
    assert frame["p"].isna().all() and frame["p_holm"].isna().all() and not frame["significant"].any()
    assert tests.family_size == 0


def test_pairs_on_different_questions_or_repeated_seeds_are_refused():
    rng = np.random.default_rng(2)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "hybrid α=0.5": 0.0}, n_questions=20)
    frames["m-mono-only-0"] = frames["m-mono-only-0"].query("qid != 'q003'")
    with pytest.raises(ValueError, match=r"m-hybrid α=0.5-0 and m-mono-only-0 were evaluated on different questions \(1 ids differ\)"):
        paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=50)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "hybrid α=0.5": 0.0}, n_questions=20)
    runs.loc[runs["run_id"] == "m-mono-only-1", "params.seed"] = "0"
    with pytest.raises(ValueError, match=r"row m / mono-only has several runs of seed '0'"):
        paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=50)


# --- table rows -----------------------------------------------------------------------------------

def _run(run_id, initializer, strategy=None, ratio=None, seed=None, role=None, value=0.5, start=0):
    return {"run_id": run_id, "params.model.name": initializer, "params.sampling.strategy": strategy,
            "params.sampling.mix_ratio": ratio, "params.seed": seed, ROLE: role, "start_time": start,
            **{f"metrics.map_full/{s}": value for s in SETTINGS}}


def test_rows_zero_shot_once_per_initializer_and_mix_ratios_apart(tmp_path):
    runs = pd.DataFrame([
        _run("zb-old", "b", role="zero-shot", value=0.1, start=1), _run("zb", "b", role="zero-shot", value=0.2, start=2),
        _run("za", "a", role="zero-shot", value=0.3),
        *[_run(f"{i}-{r}-{s}", i, "hybrid", r, str(s), "point") for i in "ab" for r in ("auto", "0.5") for s in (0, 1)],
        _run("a-half-2", "a", "hybrid", "0.50", "2", "point"),  # 0.50 is the ratio 0.5
        *[_run(f"{i}-{st}-{s}", i, st, "auto", str(s)) for i in "ab" for st in ("cross", "mono") for s in (0, 1)],  # no role tag
        _run("a-h10", "a", "hybrid", "10", "0", "point"), _run("a-h0.25", "a", "hybrid", "0.25", "0", "point"),
    ]).sample(frac=1.0, random_state=0)
    rows = [(row.initializer, row.training, len(row.runs)) for row in table_rows(runs)]
    assert rows == [
        ("a", "zero-shot", 1), ("a", "mono-only", 2), ("a", "cross-only", 2), ("a", "hybrid α=0.25", 1),
        ("a", "hybrid α=0.5", 3), ("a", "hybrid α=10", 1), ("a", "hybrid α=auto", 2),
        ("b", "zero-shot", 1), ("b", "mono-only", 2), ("b", "cross-only", 2), ("b", "hybrid α=0.5", 2), ("b", "hybrid α=auto", 2),
    ]
    seeds = next(row.runs["params.seed"].tolist() for row in table_rows(runs) if row.training == "hybrid α=0.5")
    assert seeds == ["0", "1", "2"]  # seed order, whatever the order of the runs

    table = build_table(runs, [setting_column("multilingual")], lambda _: None, n_boot=50)
    zero = table[table["training"] == "zero-shot"].set_index("initializer")
    assert zero["mean"].to_dict() == {"a": 0.3, "b": 0.2}  # b's newest evaluation, not a mean with the older one
    assert (zero["n_runs"] == 1).all()
    write_table(table, tmp_path / "t", "caption")
    markdown = (tmp_path / "t.md").read_text()
    assert markdown.count("| zero-shot") == 2 and "zero-shot: the initializer evaluated without training" in markdown
    assert r"hybrid $\alpha$=0.5" in (tmp_path / "t.tex").read_text()

    # Only hybrid rows are tested, each against both baselines of its own initializer.
    frames = {run_id: None for run_id in runs["run_id"]}
    tests = paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=50).frame
    assert sorted(set(zip(tests["initializer"], tests["hybrid"]))) == [
        ("a", "hybrid α=0.25"), ("a", "hybrid α=0.5"), ("a", "hybrid α=10"), ("a", "hybrid α=auto"),
        ("b", "hybrid α=0.5"), ("b", "hybrid α=auto")]
    assert tests.groupby(["initializer", "hybrid"])["baseline"].apply(sorted).tolist() == [["cross-only", "mono-only"]] * 6


def test_row_label_of_each_kind_of_run():
    assert row_label(pd.Series(_run("z", "m", role="zero-shot"))) == "zero-shot"
    assert row_label(pd.Series(_run("h", "m", "hybrid", "auto", "0", "point"))) == "hybrid α=auto"
    assert row_label(pd.Series(_run("h", "m", "hybrid", " 0.500", "0"))) == "hybrid α=0.5"
    assert row_label(pd.Series(_run("h", "m", "hybrid", None, "0"))) == "hybrid"  # a run from before the mix ratio
    assert row_label(pd.Series(_run("c", "m", "cross", "auto", "0"))) == "cross-only"
    with pytest.raises(ValueError, match=r"run p: tag hybridsweep.role='parent'"):
        row_label(pd.Series(_run("p", "m", role="parent")))
    with pytest.raises(ValueError, match=r"run x: params.sampling.strategy='both'; expected one of \['mono', 'cross', 'hybrid'\]"):
        row_label(pd.Series(_run("x", "m", "both", "auto", "0", "point")))


def test_bias_columns_put_the_pool_size_beside_the_rank_distance():
    names = [c.name for c in bias_columns({"bias/same_lang_rank_gap": "lower", "bias/rank_distance": "lower"})]
    assert names == ["bias/same_lang_rank_gap", "bias/rank_distance", "eval/candidates"]
    assert [c.name for c in bias_columns({"bias/x": "higher"})] == ["eval/candidates", "bias/x"]
    assert bias_columns({"bias/rank_distance": "lower"})[1].higher_is_better is None
    with pytest.raises(ValueError, match=r"\{'bias/rank_distance': 'smaller'\}: expected 'lower' or 'higher'"):
        bias_columns({"bias/rank_distance": "smaller"})


def test_companion_table_files(tmp_path):
    rng = np.random.default_rng(3)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "cross-only": 0.0, "hybrid α=0.5": 0.1}, n_questions=40)
    frames["m-cross-only-0"] = None
    tests = paired_tests(runs, [setting_column(s) for s in SETTINGS], frames.get, n_boot=200)
    paths = write_tests(tests, tmp_path / "t_tests", "caption")
    assert [p.name for p in paths] == ["t_tests.csv", "t_tests.md", "t_tests.tex"]
    csv = pd.read_csv(paths[0])
    assert list(csv.columns) == list(significance.TEST_COLUMNS) and len(csv) == 6
    markdown = paths[1].read_text()
    assert markdown.count("| not tested: run m-cross-only-0 has no per-question APs") == 3 and markdown.count("| yes") == 3
    assert "Holm's correction over the 3 tested comparisons" in markdown
    # 200 replicates: the smallest p (2/201) times a family of 3 still clears 0.05, so no warning.
    assert "Warning" not in markdown
    few = paired_tests(runs, [setting_column(s) for s in SETTINGS], frames.get, n_boot=50)
    assert "no comparison of a family of 3 can reach" in write_tests(few, tmp_path / "few", "c")[1].read_text()
