"""Paired significance tests and table rows, checked against simulations with a known truth
(questions and a run-level random effect), plain-loop and exact-enumeration bootstraps written out
here, and hand-computed Holm adjustments, sign-flip and bootstrap p-values."""

from __future__ import annotations

import itertools
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from hybridsweep.reports import significance
from hybridsweep.reports.significance import (
    bootstrap_p_value,
    holm,
    paired_difference,
    paired_tests,
    sign_flip_p_value,
)
from hybridsweep.reports.significance_tables import fewest_claimable_seeds, mark_strategy_claims, significance_note, write_tests
from hybridsweep.reports.stats import RunSample
from hybridsweep.reports.tables import bias_columns, build_table, row_label, setting_column, table_rows, write_table

ROLE = "tags.hybridsweep.role"
SETTINGS = ("monolingual", "crosslingual", "multilingual")
LANGS = ("en", "de")
NOISE = 0.2
"""Per-run, per-entry AP noise is uniform on ±NOISE around the question's difficulty (+ the row's
shift + the run's effect); difficulties in [0.25, 0.65], run effects within ±RUN_EFFECT and shifts
up to 0.1 keep every AP inside [0, 1], so a planted shift is the exact population difference."""
RUN_EFFECT = 0.05
"""Half-width of the uniform run-level random effect (SD 0.029): one draw per run, added to every
AP of the run, as a seed moves a whole trained model."""


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


def simulate_frame(rng: np.random.Generator, difficulty: np.ndarray, shift: float = 0.0, run_effect: float = 0.0) -> pd.DataFrame:
    """Per-question APs of one run: AP = difficulty of the question id + shift + the run's effect
    (one draw, uniform on ±run_effect) + independent noise."""
    frame = entries(len(difficulty))
    per_entry = np.tile(difficulty, len(frame) // len(difficulty))
    run = rng.uniform(-run_effect, run_effect) if run_effect else 0.0
    return frame.assign(ap=per_entry + shift + run + rng.uniform(-NOISE, NOISE, len(frame)))


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


def simulate_table(rng, shifts: dict[str, float], n_questions: int = 60, seeds=(0, 1), initializer: str = "m",
                   run_effect: float = 0.0):
    """Runs (as ``mlflow.search_runs`` returns them) of one initializer's rows, every seed, all
    evaluated on one question set, and the loader of their per-question APs."""
    difficulty = rng.uniform(0.25, 0.65, n_questions)
    records, frames = [], {}
    for label, seed in itertools.product(shifts, seeds):
        strategy, ratio = ROWS[label]
        run_id = f"{initializer}-{label}-{seed}"
        frame = frames[run_id] = simulate_frame(rng, difficulty, shifts[label], run_effect)
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


def simulate_pairs(rng, shift: float, n_questions: int = 60, n_seeds: int = 2, cells=("en-de", "de-en"),
                   run_effect: float = 0.0):
    """(treatment, baseline) samples, one pair per seed, each run's APs in two language-pair cells
    (the crosslingual setting of two languages); value = mean over cells of the cell's mean AP."""
    difficulty = np.tile(rng.uniform(0.25, 0.65, n_questions), len(cells))
    qids, cell = np.tile(np.arange(n_questions), len(cells)), np.repeat(cells, n_questions)

    def sample(run_shift: float) -> RunSample:
        run = rng.uniform(-run_effect, run_effect) if run_effect else 0.0
        ap = difficulty + run_shift + run + rng.uniform(-NOISE, NOISE, len(difficulty))
        value = float(ap.reshape(len(cells), n_questions).mean(axis=1).mean())
        return RunSample(value, pd.DataFrame({"qid": qids, "cell": cell, "ap": ap}))

    return [(sample(shift), sample(0.0)) for _ in range(n_seeds)]


def binomial_band(n: int, rate: float, level: float = 0.99) -> tuple[float, float]:
    """The central ``level`` interval of the share of successes among n Bernoulli(rate) trials."""
    tail = (1 - level) / 2
    return binom.ppf(tail, n, rate) / n, binom.ppf(1 - tail, n, rate) / n


def claimed(result) -> bool:
    """The strategy-claim rule for one comparison, uncorrected (significance module doc)."""
    return result.p < 0.05 and result.signs_agree and result.p_seeds < 0.05


# --- p-values and Holm, by hand ------------------------------------------------------------------

def test_bootstrap_p_value_by_hand():
    # 2 min(1 + #{<= 0}, 1 + #{>= 0}) / (B + 1)
    assert bootstrap_p_value([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 * 1 / 5)
    assert bootstrap_p_value([-0.5, 1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(2 * 2 / 10)
    assert bootstrap_p_value([-4.0, -3.0, -2.0, -1.0, 0.0]) == pytest.approx(2 * 2 / 6)  # a 0 counts in #{>= 0}
    assert bootstrap_p_value([-1.0, 0.0, 1.0, 2.0, 3.0]) == 1.0  # 2 * 3 / 6, capped at 1
    assert bootstrap_p_value(np.zeros(9)) == 1.0


def test_sign_flip_p_value_by_hand():
    # d = (1, 2, 3): |±1 ±2 ±3| over the 8 sign vectors is 6, 4, 2, 0, 0, 2, 4, 6; two reach 6.
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    # d = (1, -2, 3), observed |2|: 2, 0, 6, 4, 4, 6, 0, 2 -> six of eight reach 2.
    assert sign_flip_p_value([1.0, -2.0, 3.0]) == pytest.approx(6 / 8)
    # Every seed agreeing gives the smallest p, 2 / 2^K: below 0.05 from six seeds on.
    assert sign_flip_p_value([0.3, 0.1, 0.2, 0.5, 0.4]) == pytest.approx(2 / 32)
    assert sign_flip_p_value([0.1, 0.2, 0.3, 0.1, 0.2, 0.3]) == pytest.approx(2 / 64)  # ties among the sums counted once each
    assert sign_flip_p_value([0.1, 0.0]) == 1.0  # a zero difference flips to itself
    assert sign_flip_p_value([-0.2, -0.1]) == pytest.approx(2 / 4)
    assert (fewest_claimable_seeds(0.05), fewest_claimable_seeds(0.1), fewest_claimable_seeds(0.0625)) == (6, 5, 6)
    with pytest.raises(ValueError, match="1 to 16 seeds, got 17"):
        sign_flip_p_value(np.ones(17))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])  # untested: not in the family, so m stays 4
    assert holm([0.01, 0.02, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 = 1; capped, and monotone
    assert holm([]).shape == (0,)


# --- the two-level bootstrap against an exact enumeration and a plain loop -----------------------

def test_two_seeds_three_questions_against_the_exact_bootstrap_distribution():
    """One cell, 3 questions, 2 seeds. Per-question differences (hybrid minus baseline): seed 0
    (0.4, 0.0, -0.1), mean 0.1; seed 1 (-0.1, 0.1, 0.0), mean 0.0; so D = 0.05, the seed SD is
    0.1 / sqrt(2), one seed of two has D's sign and the sign-flip p is 1 (flipping 0 changes
    nothing, flipping 0.1 keeps |D|). The bootstrap distribution is enumerated exactly: 27 ordered
    question draws x 4 ordered seed draws, equally likely; 100,000 replicates must match its tails
    (the p-values) and the question-bootstrap SE of one seed's difference within Monte Carlo error."""
    hybrid = [(0.9, 0.6, 0.3), (0.7, 0.5, 0.2)]
    baseline = [(0.5, 0.6, 0.4), (0.8, 0.4, 0.2)]

    def sample(aps) -> RunSample:
        return RunSample(float(np.mean(aps)), pd.DataFrame({"qid": ["a", "b", "c"], "cell": "x", "ap": aps}))

    n_boot = 100_000
    result = paired_difference([(sample(h), sample(b)) for h, b in zip(hybrid, baseline)], n_boot=n_boot, seed=3)
    assert (result.difference, result.seeds, result.questions) == (pytest.approx(0.05), 2, 3)
    assert result.seed_sd == pytest.approx(0.1 / np.sqrt(2))
    assert (result.agreeing, result.signs_agree, result.p_seeds) == (1, False, 1.0)

    per_question = np.subtract(hybrid, baseline)  # (seeds, questions)
    two_level, fixed, per_seed_draws = [], [], []
    for draw in itertools.product(range(3), repeat=3):
        per_seed = per_question[:, list(draw)].mean(axis=1)
        per_seed_draws.append(per_seed)
        fixed.append(per_seed.mean())
        two_level += [per_seed[list(seeds)].mean() for seeds in itertools.product(range(2), repeat=2)]
    two_level, fixed = np.array(two_level), np.array(fixed)
    for p, exact in ((result.p, two_level), (result.p_models, fixed)):
        tail = 2 * min(np.mean(exact <= 1e-12), np.mean(exact >= -1e-12))
        assert p == pytest.approx(tail, abs=5 * np.sqrt(tail * (1 - tail) / n_boot) + 2 / n_boot)
    assert result.question_se == pytest.approx(np.sqrt(np.mean(np.var(per_seed_draws, axis=0))), rel=0.02)


def loop_paired_bootstrap(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], setting: str, n_boot: int, seed: int):
    """Two-level and fixed-model paired bootstrap of (treatment, baseline) per-question frames in
    one mono/cross setting, written out with loops (significance module doc): one
    ``default_rng(seed)`` drawing ``integers(0, |U|, (B, |U|))`` over the sorted union U of ids and
    one ``default_rng((seed, 1))`` drawing ``integers(0, K, (B, K))`` over the seeds; replicate b
    resamples every run with question row b, and the two-level replicate averages the paired
    differences of the seeds of seed row b; a run's value is the mean over its (query, pool)
    language cells of the mean AP of the drawn ids (with their multiplicity) present in that cell."""
    pairs = [tuple([(r.qid, (r.q_lang, r.c_lang), r.ap) for r in frame.itertuples() if r.setting == setting] for frame in pair)
             for pair in pairs]
    universe = sorted({qid for pair in pairs for rows in pair for qid, _, _ in rows})
    draws = np.random.default_rng(seed).integers(0, len(universe), size=(n_boot, len(universe)))
    seed_draws = np.random.default_rng((seed, 1)).integers(0, len(pairs), size=(n_boot, len(pairs)))

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

    def p_value(replicates):
        below = sum(1 for d in replicates if d <= 0)
        above = sum(1 for d in replicates if d >= 0)
        return min(1.0, 2 * min(1 + below, 1 + above) / (n_boot + 1))

    two_level, fixed, per_seed_draws = [], [], []
    for b in range(n_boot):
        ids = [universe[i] for i in draws[b]]
        per_seed = [value(t, ids) - value(m, ids) for t, m in pairs]
        fixed.append(sum(per_seed) / len(pairs))
        two_level.append(sum(per_seed[k] for k in seed_draws[b]) / len(pairs))
        per_seed_draws.append(per_seed)
    observed = [value(t, universe) - value(m, universe) for t, m in pairs]
    return {"difference": sum(observed) / len(pairs), "interval": np.percentile(two_level, [2.5, 97.5]),
            "p": p_value(two_level), "models_interval": np.percentile(fixed, [2.5, 97.5]), "p_models": p_value(fixed),
            "question_se": np.sqrt(np.mean(np.var(per_seed_draws, axis=0, ddof=1))), "seed_sd": np.std(observed, ddof=1)}


def test_interval_and_p_value_match_a_plain_loop(monkeypatch):
    """Same draws, so equal to rounding: the shared question draw, the seed draw, the per-cell
    means with a question missing from one cell, the seed mean, both intervals and p-values;
    blocks of 7 replicates give the numbers of one draw."""
    monkeypatch.setattr(significance, "BLOCK", 7)
    rng = np.random.default_rng(11)
    difficulty = rng.uniform(0.25, 0.65, 6)
    column = setting_column("crosslingual")
    frames, records = {}, {}
    seeds = (0, 1, 2)
    for label, seed in itertools.product(("mono-only", "cross-only", "hybrid α=0.5"), seeds):
        frame = simulate_frame(rng, difficulty, 0.03 if label.startswith("hybrid") else 0.0, RUN_EFFECT)
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
        keys = [(f"hybrid α=0.5-{s}", f"{baseline}-{s}") for s in seeds]
        loop = loop_paired_bootstrap([(frames[t], frames[m]) for t, m in keys], "crosslingual", n_boot, seed)
        direct = paired_difference([(sample(t), sample(m)) for t, m in keys], n_boot=n_boot, seed=seed)
        for result in (direct, tests.loc[baseline]):
            got = [result.difference, result.low, result.high, result.models_low, result.models_high,
                   result.question_se, result.seed_sd]
            expected = [loop["difference"], *loop["interval"], *loop["models_interval"], loop["question_se"], loop["seed_sd"]]
            assert got == pytest.approx(expected, abs=1e-12)
            assert (result.p, result.p_models) == (pytest.approx(loop["p"]), pytest.approx(loop["p_models"]))


# --- simulations with a known truth ---------------------------------------------------------------
# The percentile bootstrap is calibrated as the number of questions grows: at 60 questions the
# fixed-model test's false-positive rate at α = 0.05 measured 6.0% (3000 simulations), at 200
# questions 5.2%, at 400 5.1%. The calibration checks use 200 questions (XQuAD-R has 1190 ids).
CALIBRATION_QUESTIONS = 200


def test_fixed_model_test_is_calibrated_when_runs_do_not_vary():
    """No run-level effect (every run of a strategy is the same model up to per-question noise):
    the fixed-model test is then the right one. Hybrid better by a planted 0.08 is detected in
    (almost) every simulation and its interval covers 0.08 at the nominal rate; with no planted
    difference it rejects at the nominal rate (binomial 99% bands). The two-level test, which
    counts the within-run question noise once through the seeds and again through the questions,
    covers at least as often and rejects less."""
    rng = np.random.default_rng(2024)
    shift, n_sim = 0.08, 300
    results = [paired_difference(simulate_pairs(rng, shift, CALIBRATION_QUESTIONS), n_boot=400, seed=i) for i in range(n_sim)]
    assert np.mean([r.p_models < 0.05 and r.difference > 0 for r in results]) >= 0.99
    covered = np.mean([r.models_low <= shift <= r.models_high for r in results])
    low, high = binomial_band(n_sim, 0.95)
    assert low <= covered <= high, f"coverage {covered:.3f} outside [{low:.3f}, {high:.3f}]"
    assert np.mean([r.low <= shift <= r.high for r in results]) >= covered

    n_sim = 600
    null = [paired_difference(simulate_pairs(rng, 0.0, CALIBRATION_QUESTIONS), n_boot=300, seed=i) for i in range(n_sim)]
    rejected = np.mean([r.p_models < 0.05 for r in null])
    low, high = binomial_band(n_sim, 0.05)
    assert low <= rejected <= high, f"false-positive rate {rejected:.3f} outside [{low:.3f}, {high:.3f}]"
    assert np.mean([r.p < 0.05 for r in null]) <= rejected


def resample_counts(rng, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) counts: row b counts how often each of n items came up in n draws with replacement."""
    rows = np.repeat(np.arange(n_boot), n)
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (rows, rng.integers(0, n, n_boot * n)), 1.0)
    return counts


def simulate_comparisons(rng, n_sim: int, shift: float, n_seeds: int = 6, n_questions: int = CALIBRATION_QUESTIONS,
                         run_sd: float = RUN_EFFECT / np.sqrt(3), n_boot: int = 400):
    """``n_sim`` paired comparisons of one cell, vectorized: AP of run (arm, k) on question q =
    difficulty_q + shift (treatment arm only) + run effect (normal, SD ``run_sd``, one per run) +
    noise (uniform ±NOISE). The question draws (multinomial counts, one row per replicate, shared
    by every run) and the seed draws are made here, independently of the code under test, and
    fed to :func:`significance.compare_seeds`."""
    results = []
    for _ in range(n_sim):
        difficulty = rng.uniform(0.25, 0.65, n_questions)
        runs = difficulty + rng.normal(0.0, run_sd, (2, n_seeds, 1)) + rng.uniform(-NOISE, NOISE, (2, n_seeds, n_questions))
        per_question = runs[0] + shift - runs[1]  # (seeds, questions): treatment minus baseline
        weights = resample_counts(rng, n_questions, n_boot)
        seeds = resample_counts(rng, n_seeds, n_boot)
        results.append(significance.compare_seeds(per_question.mean(axis=1), weights @ per_question.T / n_questions,
                                                  seeds, n_questions))
    return results


def test_seeds_of_one_strategy_aa_check():
    """A/A with a run-level random effect: both arms from one distribution, 6 paired seeds, 200
    questions, 1000 simulated comparisons. The run effect (SD 0.029, so 0.041 on a paired
    difference) is several times the question-bootstrap SE of one seed's paired difference (0.012),
    as between seeds of the tiny profile. The fixed-model test calls most pairs of arms different.
    The strategy claim is made at no more than the nominal rate, and at its exact size here,
    2 / 2^6 = 0.031: six seeds of exchangeable runs all agree with probability 2 / 2^6, and the
    two-level test then rejects. The two-level test alone,
    whose seed level is a percentile bootstrap of 6 values (seed variance understated by 5/6,
    normal tails where the mean of 6 has t tails: about 0.13 by that account), rejects more often
    than nominal but far less than the fixed-model test. With a planted strategy effect of 0.06
    (1.5 seed SDs of the paired difference) the two-level test detects it, and the claim (every
    seed agreeing: 0.93^6 = 0.64 by the normal model) is made in most simulations. (Measured:
    claims 0.045, every seed agreeing 0.046, two-level alone 0.105, fixed models 0.601; planted:
    two-level 0.93, claim 0.64.)"""
    rng = np.random.default_rng(29)
    n_sim, seeds = 1000, 6
    null = simulate_comparisons(rng, n_sim, 0.0, seeds)
    claims = np.mean([claimed(r) for r in null])
    two_level, fixed = np.mean([r.p < 0.05 for r in null]), np.mean([r.p_models < 0.05 for r in null])
    assert claims <= binomial_band(n_sim, 0.05)[1]
    low, high = binomial_band(n_sim, 2 / 2 ** seeds, level=0.999)
    assert low <= claims <= high, f"claim rate {claims:.3f} outside [{low:.3f}, {high:.3f}] around 2/2^6"
    assert fixed >= 10 * 0.05, f"fixed-model rate {fixed:.3f}: the run effect should make it call most seed pairs different"
    assert two_level <= binomial_band(n_sim, 0.13)[1] and two_level < fixed / 4
    assert np.median([r.seed_sd / r.question_se for r in null]) > 2  # runs vary more than questions

    planted = simulate_comparisons(rng, 300, 0.06, seeds)
    assert np.mean([r.p < 0.05 and r.difference > 0 for r in planted]) >= 0.85
    assert np.mean([claimed(r) and r.difference > 0 for r in planted]) >= binomial_band(300, 0.6)[0]


def test_aa_tables_family_wise():
    """Whole A/A tables through :func:`paired_tests` (mono-only, cross-only and hybrid from one
    distribution, 6 seeds with a run effect, the multilingual setting: a family of 2): the share
    of tables with any strategy claim stays within the binomial 99% band of 5%, while the
    fixed-model test finds models that differ in most tables (measured: 0.04 and 0.61)."""
    rng = np.random.default_rng(99)
    n_tables = 100
    columns = [setting_column("multilingual")]
    any_claim, any_models = [], []
    for i in range(n_tables):
        runs, frames = simulate_table(rng, dict.fromkeys(("mono-only", "cross-only", "hybrid α=0.5"), 0.0), 60,
                                      seeds=range(6), run_effect=RUN_EFFECT)
        tests = paired_tests(runs, columns, frames.get, n_boot=1000, seed=i)
        assert tests.family_size == 2 and (tests.frame["seeds"] == 6).all()
        any_claim.append(tests.frame["strategy_claim"].any())
        any_models.append(tests.frame["models_differ"].any())
    assert np.mean(any_claim) <= binomial_band(n_tables, 0.05)[1], f"family-wise claim rate {np.mean(any_claim):.3f}"
    assert np.mean(any_models) >= 0.5


def test_table_marks_direction_and_family():
    """Hybrid planted 0.1 above mono-only and 0.05 below cross-only in every setting, 6 seeds with
    a run effect: its cells carry † and −‡, every comparison is a strategy claim with an estimate
    near the planted gap; with the first 3 seeds alone the same runs give no claim at all, and
    their verdict says the models differ and the strategies are not separated by 3 seeds."""
    rng = np.random.default_rng(5)
    shifts = {"mono-only": 0.0, "cross-only": 0.15, "hybrid α=0.5": 0.1}
    runs, frames = simulate_table(rng, shifts, n_questions=200, seeds=range(6), run_effect=0.01)
    columns = [setting_column(s) for s in SETTINGS]
    tests = paired_tests(runs, columns, frames.get, n_boot=2000)
    assert tests.family_size == 6 and tests.frame["strategy_claim"].all()
    assert (tests.frame["verdict"] == "strategies differ").all()
    truth = tests.frame["baseline"].map({"mono-only": 0.1, "cross-only": -0.05})
    assert ((tests.frame["difference"] - truth).abs() < tests.frame["high"] - tests.frame["low"]).all()
    assert (tests.frame["seeds"] == 6).all() and (tests.frame["questions"] == 200).all()
    table = mark_strategy_claims(build_table(runs, columns, frames.get, n_boot=200), tests)
    marks = table.set_index(["training", "column"])["marks"]
    assert all(marks["hybrid α=0.5", s] == "†−‡" for s in SETTINGS)
    assert (marks.drop("hybrid α=0.5", level="training") == "").all()

    few = paired_tests(runs[runs["params.seed"].astype(int) < 3], columns, frames.get, n_boot=2000)
    assert few.frame["models_differ"].all() and not few.frame["strategy_claim"].any()
    assert (few.frame["verdict"] == "these models differ; the strategies are not separated by 3 seeds").all()
    assert (few.frame["p_seeds"] == 0.25).all()  # every seed agrees: 2 / 2^3
    one = paired_tests(runs[runs["params.seed"].astype(int) == 0], columns, frames.get, n_boot=2000)
    assert (one.frame["verdict"] == "these models differ; the strategies are not separated by 1 seed").all()
    note = significance_note(few, "t_tests")
    assert "with fewer than 6 seeds the seed level alone cannot reach p < 0.05" in note
    assert "this table's comparisons have 3 seeds" in note


# --- untested comparisons, pairing and bad input --------------------------------------------------

def test_comparisons_that_cannot_be_paired_are_listed_untested():
    rng = np.random.default_rng(1)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "cross-only": 0.0, "hybrid α=0.5": 0.0}, n_questions=20)
    frames["m-cross-only-1"] = None  # an older run without per-question APs
    runs.loc[runs["run_id"].str.startswith("m-mono-only"), "params.seed"] = ["7", "8"]  # no seed in common with hybrid
    tests = paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=100)
    frame = tests.frame.set_index("baseline")
    assert frame.loc["mono-only", "note"] == "not tested: no seed in common (hybrid seeds ['0', '1'], baseline seeds ['7', '8'])"
    assert frame.loc["cross-only", "note"] == "not tested: run m-cross-only-1 has no per-question APs"
    assert frame["p"].isna().all() and frame["p_holm"].isna().all() and not frame["strategy_claim"].any()
    assert (frame["verdict"] == "not tested").all()
    assert tests.family_size == 0


def test_seeds_are_paired_on_the_seeds_both_rows_have():
    """Hybrid seeds 0-3, mono-only seeds 0, 1 and 9: the test pairs seeds 0 and 1 only, says so in
    the note and warns; its difference is the mean over those two seeds."""
    rng = np.random.default_rng(4)
    runs, frames = simulate_table(rng, {"mono-only": 0.0, "hybrid α=0.5": 0.05}, n_questions=30, seeds=range(4))
    runs = runs[runs["run_id"] != "m-mono-only-3"].copy()
    runs.loc[runs["run_id"] == "m-mono-only-2", "params.seed"] = "9"
    with pytest.warns(UserWarning, match=r"m / hybrid α=0.5 against mono-only: paired on the 2 seeds both rows have \(0, 1\)"):
        test = paired_tests(runs, [setting_column("multilingual")], frames.get, n_boot=100).frame.iloc[0]
    assert test["seeds"] == 2
    assert test["note"] == ("paired on the 2 seeds both rows have (0, 1); left out, without a partner: "
                            "hybrid α=0.5 seeds 2, 3; mono-only seeds 9")
    value = runs.set_index("run_id")["metrics.map_full/multilingual"]
    assert test["difference"] == pytest.approx(np.mean([value[f"m-hybrid α=0.5-{s}"] - value[f"m-mono-only-{s}"] for s in (0, 1)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same seeds in both rows: no warning
        paired_tests(*simulate_table(rng, {"mono-only": 0.0, "hybrid α=0.5": 0.0}, 20)[:1],
                     [setting_column("multilingual")], lambda _: None, n_boot=20)


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
    with pytest.warns(UserWarning, match=r"a / hybrid α=0.25 against mono-only: paired on the 1 seed both rows have \(0\)"):
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
    assert markdown.count("| not tested: run m-cross-only-0 has no per-question APs") == 3
    # Two seeds, hybrid 0.1 above mono-only: these models differ, the strategies cannot be separated.
    assert markdown.count("| these models differ; the strategies are not separated by 2 seeds |") == 3
    assert markdown.count("| 2 of 2 ") == 3 and "p (Holm)" in markdown and "seed SD / question SE" in markdown
    assert "Holm's correction over the 3 tested comparisons" in markdown
    # 200 replicates: the smallest p (2/201) times a family of 3 still clears 0.05, so no warning.
    assert "Warning" not in markdown
    assert r"2/2\textasciicircum{}K" in paths[2].read_text()  # LaTeX has no bare ^ in text
    few = paired_tests(runs, [setting_column(s) for s in SETTINGS], frames.get, n_boot=50)
    assert "no comparison of a family of 3 can reach" in write_tests(few, tmp_path / "few", "c")[1].read_text()
