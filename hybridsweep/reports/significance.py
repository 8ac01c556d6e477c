"""Paired tests of a table: each hybrid row against mono-only and cross-only of its initializer.

Pairs. A comparison is (initializer, hybrid row H, baseline row M, column s). The runs of H and
M are paired by seed: run ``H_k`` and run ``M_k`` share seed ``k``, which ``hybridsweep.train``
gives to ``seed_everything`` before the model is built and to the batch sampler, so both start
from the same initialisation, the same validation split and the same sampler streams (the
batches differ where the strategies draw different pools). Only seeds both rows have are paired;
a seed of one row alone is left out, with a warning and a note in the comparison's row.
A run's value is the table cell's, ``v = mean_cells mean_{q in cell} AP_q`` (cells: language
pairs for mono/cross, one pool for multilingual; :func:`hybridsweep.reports.tables.setting_column`).
Per seed ``d_k = v(H_k) - v(M_k)``; the observed difference is ``D = (1/K) sum_k d_k``.

Question ids. Per-question APs are keyed by the corpus's question id, which every language version
of a parallel question shares: a mono/cross cell holds one AP per (id, query language, pool
language), the multilingual pool one per (id, query language). Resampling an id therefore moves
every language version of it, in every cell and setting, together. ``U`` is the sorted union of
the column's ids over the runs of the table.

Two-level paired bootstrap (the Multi-Bootstrap of MultiBERTs, Sellam et al. 2022, arXiv
2106.16163). Replicate ``b`` draws

- ``|U|`` ids with replacement from ``U``, as draw counts ``w_bq``, shared by both arms, by every
  seed and by every run of the table (one evaluation set: independent draws per seed would treat
  one sample of questions as K samples), and
- ``K`` seed indices with replacement from the K paired seeds, as draw counts ``c_bk``, shared by
  both arms (a drawn seed brings its pair),

recomputes every run under the question weights,
``v_b = mean_cells (sum_q w_bq AP_qc / sum_q w_bq n_qc)`` (:func:`hybridsweep.reports.stats.cell_means`),
``d_bk = v_b(H_k) - v_b(M_k)``, and the mean paired difference over the drawn seeds,
``D*_b = (1/K) sum_k c_bk d_bk``. Random: the training seeds, as draws from each strategy's
distribution of trained models, and the questions, as draws from a population of questions. The
null hypothesis is that the two strategies have the same expected value over seeds and questions.
The interval is the 2.5th and 97.5th percentile of ``D*``.

Fixed-model test: the same question draws with every seed once, ``Q*_b = (1/K) sum_k d_bk``,
interval and p-value as below. Only questions are random: it asks whether these 2K trained
models differ on new questions, and separates two seeds of one strategy as readily as two
strategies (the A/A check, BENCHMARKS.md "Seeds of one strategy").

p-value (two-sided), of either test: ``p = min(1, 2 min(1 + #{b: D*_b <= 0}, 1 + #{b: D*_b >= 0}) / (B + 1))``,
twice the smaller bootstrap tail beyond zero. It is the percentile interval's dual: p < α
exactly when 0 lies outside the equal-tailed (1 - α) percentile interval (up to the +1 and the
percentile interpolation), so a verdict and the interval printed beside it say the same. The +1
counts the observed sample among the replicates (Davison & Hinkley 1997, eq. 4.11), so p is never
0 with finite B; the smallest attainable p is ``2 / (B + 1)``.

Seed level, beside each comparison: the seed SD of the paired difference ``s = sd_k(d_k)`` (ddof
1) against the question-bootstrap SE of one seed's paired difference,
``se_q = sqrt((1/K) sum_k var_b(d_bk))``: where runs of a strategy differ by no more than the noise
of the questions, s is about se_q, and where s is several times se_q the seeds carry variance that
no question resampling sees; how many seeds have the sign of D; and the
exact sign-flip p-value ``p_seeds = #{e in {-1, 1}^K: |sum_k e_k d_k| >= |sum_k d_k|} / 2^K``, exact
under the null that the two runs of a seed are exchangeable (then, given the questions, each
``d_k`` is symmetric about 0 and the K signs are independent fair coins). Its smallest value,
reached when every seed agrees, is ``2 / 2^K``: 0.5 for 2 seeds, 0.25 for 3, 0.125 for 4, 0.0625
for 5, 0.031 for 6. So with five seeds or fewer the seed level alone cannot reach p < 0.05.

What few seeds can show. Resampling K seeds with replacement understates the seed variance of a
mean by the factor (K - 1) / K and has normal tails where a mean of K values has Student's t
tails, so where runs vary more than questions the two-level test alone rejects a true null more
often than α at small K: in the limit where questions add nothing, at the rate
``P(|t_{K-1}| > 1.96 sqrt((K-1)/K))``, 0.40 for 2 seeds, 0.25 for 3, 0.13 for 6, 0.10 for 10
(tests/test_significance.py's A/A simulation, 6 seeds and a run SD 3.5 times the question SE:
0.105; on 12 real seeds of one strategy, BENCHMARKS.md "Seeds of one strategy": 0.19 with 2 seeds
per arm, 0.13 with 3, 0.064 with 6). Where runs vary no more than questions it errs the other
way: the within-run question noise enters both through the seeds and through the questions, and
it rejects far less than α.
Hence the strategy claim (the † / ‡ of the main table) is made only when all three hold:

1. the two-level test puts the difference away from 0: Holm-adjusted ``p < α`` over the table;
2. the sign agrees on every seed: ``d_k`` has the sign of D for every k;
3. that agreement is significant at the seed level: ``p_seeds < α`` (with 2 / 2^K < α: K >= 6 at α = 0.05).

Under the exchangeable-runs null, condition 3 alone caps each claim's false-positive rate at α
whatever the bootstrap's calibration; conditions 1 and 2 add that the difference generalises over
questions and holds on every seed. Condition 3 is per comparison (not Holm-adjusted: with a
family of m it would need ``2 m / 2^K < α``, 9 seeds for m = 12). Where the fixed-model test
alone separates two rows, the verdict reads "these models differ; the strategies are not
separated by K seeds".

Holm. Family: every tested comparison of one table (initializers x hybrid rows x {mono-only,
cross-only} x columns), separately for the two-level and the fixed-model p-values. With
``p_(1) <= ... <= p_(m)``, the adjusted value is ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``;
this controls the family-wise error rate at α under any dependence between the tests.

Untested comparisons are listed with their reason and no p-value, and are not in the family: rows
without a seed in common, a run without the column's value, or a run without per-question APs.

Draw order, per column: question draws from ``numpy.random.default_rng(seed)``, the rows of
``integers(0, |U|, (B, |U|))`` (indices into ``U``) in consecutive blocks of at most :data:`BLOCK`
rows (the same numbers as one draw of shape ``(B, |U|)``); seed draws of a comparison of K seeds
from ``numpy.random.default_rng((seed, SEED_STREAM))``, ``integers(0, K, (B, K))`` (indices into
the pairs in seed order), the same for every comparison of K seeds. The fixed-model test uses the
question draws alone, so adding the seed level left its numbers as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybridsweep.reports.stats import RunSample, cell_means, draw_counts, question_matrix
from hybridsweep.reports.tables import (
    BASELINE_MARKS,
    Column,
    QuestionLoader,
    Row,
    table_rows,
)

N_BOOT_TESTS = 10_000
"""Replicates of a test: enough for p-values near 0.05 (Monte Carlo error about 0.002) and for a
smallest attainable Holm-adjusted p of ``2 m / (B + 1)`` well below 0.05 for m up to about 100."""
ALPHA = 0.05
BLOCK = 1000
"""Replicates computed at once, which bounds memory at about BLOCK x |U| floats per array."""
SEED_STREAM = 1
"""Second entropy word of the seed draws' generator: apart from the question draws' stream."""
MAX_SIGN_FLIP_SEEDS = 16
"""The exact sign-flip test enumerates 2^K sign vectors: 65,536 at 16 seeds."""
STRATEGIES_DIFFER = "strategies differ"
MODELS_DIFFER = "these models differ; the strategies are not separated by {seeds}"
NO_DIFFERENCE = "no difference shown"
NOT_TESTED = "not tested"
TEST_COLUMNS = (
    "initializer", "hybrid", "baseline", "setting", "seeds", "questions",
    "difference", "low", "high", "p", "p_holm",
    "seed_sd", "question_se", "agreeing", "p_seeds", "strategy_claim",
    "models_low", "models_high", "p_models", "p_models_holm", "models_differ",
    "verdict", "note",
)


@dataclass(frozen=True)
class PairedDifference:
    """One comparison (module doc): the mean paired difference D (treatment minus baseline) with
    the two-level interval and p-value, the seed level beside it, and the fixed-model test."""

    difference: float
    low: float
    high: float
    p: float
    seeds: int
    questions: int
    seed_sd: float
    """sd_k(d_k), ddof 1; NaN for one seed."""
    question_se: float
    """sqrt((1/K) sum_k var_b(d_bk)): the question-bootstrap SE of one seed's paired difference."""
    agreeing: int
    """Seeds whose difference has the sign of D (0 when D is 0)."""
    p_seeds: float
    models_low: float
    models_high: float
    p_models: float

    @property
    def signs_agree(self) -> bool:
        return self.agreeing == self.seeds


@dataclass(frozen=True)
class Comparisons:
    """The paired tests of one table: one row per comparison (columns :data:`TEST_COLUMNS`)."""

    frame: pd.DataFrame
    n_boot: int
    alpha: float

    @property
    def family_size(self) -> int:
        """Number of tested comparisons, the family of the Holm correction."""
        return int(self.frame["p"].notna().sum())


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """``min(1, 2 min(1 + #{D* <= 0}, 1 + #{D* >= 0}) / (B + 1))`` over the B replicates of a
    difference (module doc)."""
    replicates = np.asarray(replicates, dtype=float)
    below, above = np.sum(replicates <= 0), np.sum(replicates >= 0)
    return float(min(1.0, 2 * min(1 + below, 1 + above) / (len(replicates) + 1)))


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip p-value of K per-seed differences,
    ``#{e in {-1, 1}^K: |sum_k e_k d_k| >= |sum_k d_k|} / 2^K`` (module doc); 2 / 2^K at the least."""
    d = np.asarray(differences, dtype=float)
    if not 0 < len(d) <= MAX_SIGN_FLIP_SEEDS:
        raise ValueError(f"the exact sign-flip test takes 1 to {MAX_SIGN_FLIP_SEEDS} seeds, got {len(d)}")
    signs = 1.0 - 2.0 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)  # row 0: all +1
    sums = np.abs(signs @ d)
    # Relative slack for sums that equal the observed one but were added in another order.
    return float(np.mean(sums >= sums[0] * (1 - 1e-12)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: for ``p_(1) <= ... <= p_(m)``,
    ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, in the input order. NaN entries (untested
    comparisons) stay NaN and are not counted in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return adjusted


def question_replicates(samples: Mapping[str, RunSample], n_boot: int = N_BOOT_TESTS, seed: int = 0) -> dict[str, np.ndarray]:
    """Every sample's value under the same B question draws (module doc), shape (B,) each; the
    samples must all have per-question APs. All runs' cells stand side by side in one matrix, so
    each block of draws costs one product of (block x |U|) by (|U| x all cells)."""
    lacking = [key for key, s in samples.items() if s.questions is None or s.questions.empty]
    if lacking:
        raise ValueError(f"samples {lacking} have no per-question APs to resample")
    if not samples:
        return {}
    ids = np.unique(np.concatenate([s.questions["qid"].to_numpy() for s in samples.values()]))
    matrices = [question_matrix(s.questions, ids) for s in samples.values()]
    ap_sum, count = np.hstack([m[0] for m in matrices]), np.hstack([m[1] for m in matrices])
    edges = np.cumsum([0, *(m[0].shape[1] for m in matrices)])
    rng = np.random.default_rng(seed)
    values = np.empty((len(samples), n_boot))
    for start in range(0, n_boot, BLOCK):
        means = cell_means(draw_counts(rng, len(ids), min(BLOCK, n_boot - start)), ap_sum, count)
        for i, (first, last) in enumerate(zip(edges[:-1], edges[1:])):
            values[i, start:start + len(means)] = np.nanmean(means[:, first:last], axis=1)
    return dict(zip(samples, values))


def seed_draws(n_seeds: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """The (B, K) seed draw counts ``c_bk`` of every comparison of K seeds (module doc)."""
    return draw_counts(np.random.default_rng((seed, SEED_STREAM)), n_seeds, n_boot)


def compare_seeds(observed: np.ndarray, replicates: np.ndarray, seed_counts: np.ndarray, questions: int) -> PairedDifference:
    """A comparison from its K per-seed differences ``d_k`` (``observed``), their (B, K) values
    under the question draws ``d_bk`` (``replicates``) and the (B, K) seed draw counts ``c_bk``:
    ``D*_b = (1/K) sum_k c_bk d_bk`` and ``Q*_b = (1/K) sum_k d_bk`` (module doc)."""
    observed = np.asarray(observed, dtype=float)
    k = len(observed)
    two_level = np.einsum("bk,bk->b", seed_counts, replicates) / k
    fixed = replicates.mean(axis=1)
    difference = float(observed.mean())
    low, high = np.nanpercentile(two_level, [2.5, 97.5])
    models_low, models_high = np.nanpercentile(fixed, [2.5, 97.5])
    return PairedDifference(
        difference=difference, low=float(low), high=float(high), p=bootstrap_p_value(two_level), seeds=k,
        questions=questions, seed_sd=float(np.std(observed, ddof=1)) if k > 1 else np.nan,
        question_se=float(np.sqrt(np.mean(np.var(replicates, axis=0, ddof=1)))),
        agreeing=int(np.sum(np.sign(observed) == np.sign(difference))) if difference != 0 else 0,
        p_seeds=sign_flip_p_value(observed), models_low=float(models_low), models_high=float(models_high),
        p_models=bootstrap_p_value(fixed),
    )


def paired_difference(
    pairs: Sequence[tuple[RunSample, RunSample]], n_boot: int = N_BOOT_TESTS, seed: int = 0,
) -> PairedDifference:
    """The paired tests of (treatment, baseline) samples, one pair per seed in seed order (module
    doc; ``U`` is the union of these samples' question ids)."""
    if not pairs:
        raise ValueError("no (treatment, baseline) pair to compare")
    samples = {f"{side}{k}": s for k, pair in enumerate(pairs) for side, s in zip("tb", pair)}
    replicates = question_replicates(samples, n_boot, seed)
    observed = np.array([t.value - b.value for t, b in pairs])
    per_seed = np.stack([replicates[f"t{k}"] - replicates[f"b{k}"] for k in range(len(pairs))], axis=1)
    n_ids = len(np.unique(np.concatenate([s.questions["qid"].to_numpy() for s in samples.values()])))
    return compare_seeds(observed, per_seed, seed_draws(len(pairs), n_boot, seed), n_ids)


def _seeds(row: Row) -> dict[str, str]:
    """seed -> run id of a row; a row must hold one run per seed."""
    seeds = row.runs["params.seed"].astype(str) if "params.seed" in row.runs else pd.Series("", index=row.runs.index)
    repeated = seeds[seeds.duplicated(keep=False)]
    if not repeated.empty:
        ids = row.runs.loc[repeated.index, "run_id"].tolist()
        raise ValueError(
            f"row {row.initializer} / {row.training} has several runs of seed {repeated.iloc[0]!r} ({ids}); "
            "a table row must differ from the others only in the training strategy and the seed"
        )
    return dict(zip(seeds, row.runs["run_id"]))


def _seed_count(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def seed_pairs(hybrid: Row, baseline: Row) -> tuple[list[tuple[str, str, str]], str]:
    """(seed, hybrid run id, baseline run id) for every seed both rows have, in the hybrid row's
    (seed) order, and a note naming the seeds of one row alone, which are left out (module doc:
    a pair must share its seed); the note is empty when both rows have the same seeds."""
    mine, theirs = _seeds(hybrid), _seeds(baseline)
    pairs = [(seed, run_id, theirs[seed]) for seed, run_id in mine.items() if seed in theirs]
    alone = {row.training: [s for s in seeds if s not in other]
             for row, seeds, other in ((hybrid, mine, theirs), (baseline, theirs, mine))}
    if not any(alone.values()) or not pairs:
        return pairs, ""
    note = (f"paired on the {_seed_count(len(pairs))} both rows have "
            f"({', '.join(s for s, _, _ in pairs)}); left out, "
            f"without a partner: " + "; ".join(f"{row} seeds {', '.join(seeds)}" for row, seeds in alone.items() if seeds))
    warnings.warn(f"{hybrid.initializer} / {hybrid.training} against {baseline.training}: {note}", stacklevel=2)
    return pairs, note


def _untested_reason(pairs, samples: Mapping[str, RunSample | None], hybrid: Row, baseline: Row) -> str | None:
    if not pairs:
        seeds = [sorted(r.runs.get("params.seed", pd.Series(dtype=str)).astype(str)) for r in (hybrid, baseline)]
        return f"not tested: no seed in common (hybrid seeds {seeds[0]}, baseline seeds {seeds[1]})"
    for run_id in (run_id for _, *run_ids in pairs for run_id in run_ids):
        if samples[run_id] is None:
            return f"not tested: run {run_id} has no value in this column"
        if samples[run_id].questions is None or samples[run_id].questions.empty:
            return f"not tested: run {run_id} has no per-question APs"
    return None


def _question_count(column: str, pairs, ids: Mapping[str, np.ndarray]) -> int:
    """The number of question ids of the paired runs, which must be the same ids within a seed."""
    for seed, hybrid, baseline in pairs:
        differing = np.setxor1d(ids[hybrid], ids[baseline])
        if len(differing):
            raise ValueError(
                f"column {column}, seed {seed}: runs {hybrid} and {baseline} were evaluated on different questions "
                f"({len(differing)} ids differ); a paired test needs one evaluation set"
            )
    return max(len(ids[hybrid]) for _, hybrid, _ in pairs)


def verdicts(frame: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """``frame`` (one row per comparison, with ``p``, ``p_models``, ``agreeing``, ``seeds`` and
    ``p_seeds``) with the Holm-adjusted p-values, the strategy claim and the verdict (module doc)."""
    frame = frame.assign(p_holm=holm(frame["p"]), p_models_holm=holm(frame["p_models"]))
    frame["strategy_claim"] = (frame["p_holm"] < alpha) & (frame["agreeing"] == frame["seeds"]) & (frame["p_seeds"] < alpha)
    frame["models_differ"] = frame["p_models_holm"] < alpha
    frame["verdict"] = [
        NOT_TESTED if not np.isfinite(test.p) else STRATEGIES_DIFFER if test.strategy_claim
        else MODELS_DIFFER.format(seeds=_seed_count(test.seeds)) if test.models_differ
        else NO_DIFFERENCE
        for test in frame.itertuples()
    ]
    return frame


def paired_tests(
    runs: pd.DataFrame, columns: Sequence[Column], questions: QuestionLoader,
    n_boot: int = N_BOOT_TESTS, seed: int = 0, alpha: float = ALPHA,
) -> Comparisons:
    """Every hybrid row against the mono-only and cross-only rows of its initializer, in every
    column (rows: :func:`hybridsweep.reports.tables.table_rows`): the two-level and the
    fixed-model test, the seed level, Holm over the table and the verdicts (module doc)."""
    rows = [row for row in table_rows(runs) if row.is_hybrid or row.training in BASELINE_MARKS]
    compared = [
        (hybrid, baseline, *seed_pairs(hybrid, baseline)) for hybrid in rows if hybrid.is_hybrid
        for baseline in rows if baseline.initializer == hybrid.initializer and baseline.training in BASELINE_MARKS
    ]
    records = []
    for column in columns:
        samples = {run["run_id"]: column.sample(run, questions) for row in rows for _, run in row.runs.iterrows()}
        with_questions = {k: s for k, s in samples.items() if s is not None and s.questions is not None and not s.questions.empty}
        ids = {k: np.unique(s.questions["qid"].to_numpy()) for k, s in with_questions.items()}
        replicates = question_replicates(with_questions, n_boot, seed)
        for hybrid, baseline, pairs, pairing in compared:
            record = {"initializer": hybrid.initializer, "hybrid": hybrid.training, "baseline": baseline.training,
                      "setting": column.name, "seeds": len(pairs)}
            reason = _untested_reason(pairs, samples, hybrid, baseline)
            if reason is None:
                observed = np.array([samples[h].value - samples[b].value for _, h, b in pairs])
                per_seed = np.stack([replicates[h] - replicates[b] for _, h, b in pairs], axis=1)
                result = compare_seeds(observed, per_seed, seed_draws(len(pairs), n_boot, seed),
                                       _question_count(column.name, pairs, ids))
                record.update({key: getattr(result, key) for key in TEST_COLUMNS if hasattr(result, key)}, note=pairing)
            else:
                record["note"] = reason
            records.append(record)
    frame = pd.DataFrame.from_records(records, columns=[c for c in TEST_COLUMNS if c not in (
        "p_holm", "strategy_claim", "p_models_holm", "models_differ", "verdict")])
    numeric = ["questions", "difference", "low", "high", "p", "seed_sd", "question_se", "agreeing", "p_seeds",
               "models_low", "models_high", "p_models"]
    frame[numeric] = frame[numeric].astype(float)
    return Comparisons(verdicts(frame, alpha)[list(TEST_COLUMNS)], n_boot, alpha)
