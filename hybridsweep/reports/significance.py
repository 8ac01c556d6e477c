"""Paired significance tests: each hybrid row against mono-only and cross-only of its initializer.

Statistic. A comparison is (initializer, hybrid row H, baseline row M, column s). The runs of H
and M are paired by seed (the K seeds both rows have). A run's value is the table cell's,
``v = mean_cells mean_{q in cell} AP_q`` (cells: language pairs for mono/cross, one pool for
multilingual; :func:`hybridsweep.reports.tables.setting_column`), and the observed difference is
the mean of the per-seed differences, ``D = (1/K) sum_k (v(H_k) - v(M_k))``.

Bootstrap over questions. Replicate ``b`` draws ``|U|`` question ids with replacement from ``U``,
the sorted union of the column's question ids over every run of the compared rows (so all
language versions of a question id move together), weights each id by its draw count ``w_bq`` and recomputes every run under the
same weights, ``v_b = mean_cells (sum_q w_bq AP_qc / sum_q w_bq n_qc)``
(:func:`hybridsweep.reports.stats.weighted_value`); then ``D*_b = (1/K) sum_k (v_b(H_k) - v_b(M_k))``.
Both runs of a seed see the same draw (the pairing), and so do the K seeds: every seed was
evaluated on the same questions, so independent draws per seed would treat one sample of
questions as K samples and understate the variance. The interval is the 2.5th and 97.5th
percentile of ``D*``.

p-value (two-sided): ``p = min(1, 2 min(1 + #{b: D*_b <= 0}, 1 + #{b: D*_b >= 0}) / (B + 1))``,
twice the smaller bootstrap tail beyond zero. It is the percentile interval's dual: p < α
exactly when 0 lies outside the equal-tailed (1 - α) percentile interval (up to the +1 and the
percentile interpolation), so a marked cell and the companion table's interval say the same.
(The centred alternative, the share of ``|D*_b - D| >= |D|``, is the dual of the basic interval,
not of the percentile interval printed.) The +1 counts the observed sample among the
replicates (Davison & Hinkley 1997, eq. 4.11), so p is never 0 with finite B; the smallest
attainable p is ``2 / (B + 1)``.

What is random: the questions, as a sample from a population of questions; the trained models
are held fixed. The null hypothesis is that the two rows' models, at these seeds, have the same
expected value on new questions. Seed-to-seed training variance is not in the p-value (the
table's cell intervals hold it; a test over 2-3 seeds alone has no power, see below).

Holm. Family: every tested comparison of one table (initializers x hybrid rows x {mono-only,
cross-only} x columns). With ``p_(1) <= ... <= p_(m)``, the adjusted value is
``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; a comparison is significant when
``p~ < α``. This controls the family-wise error rate at α under any dependence between the tests.

Untested comparisons are listed with their reason and no p-value, and are not in the family:
rows without a seed in common, a run without the column's value, or a run without per-question
APs. There is no seeds-only fallback: with the 2-3 seeds of these sweeps no seeds-only paired
test can reach α = 0.05 (an exact sign-flip test's smallest p is ``2 / 2^K``: 0.5 for K = 2,
0.25 for K = 3), and a bootstrap over 2-3 seed differences would claim certainty it lacks.

Draw order: per column, one ``numpy.random.default_rng(seed)``; the rows of
``integers(0, |U|, (B, |U|))`` (indices into ``U``) are drawn in consecutive blocks of at most
:data:`BLOCK` rows, which gives the same numbers as one draw of shape ``(B, |U|)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hybridsweep.reports.stats import RunSample, draw_counts, question_matrix, weighted_value
from hybridsweep.reports.tables import (
    BASELINE_MARKS,
    LOWER,
    Column,
    QuestionLoader,
    Row,
    latex_escape,
    table_rows,
)

N_BOOT_TESTS = 10_000
"""Replicates of a test: enough for p-values near 0.05 (Monte Carlo error about 0.002) and for a
smallest attainable Holm-adjusted p of ``2 m / (B + 1)`` well below 0.05 for m up to about 100."""
ALPHA = 0.05
BLOCK = 1000
"""Replicates computed at once, which bounds memory at about BLOCK x |U| floats per array."""
TEST_COLUMNS = (
    "initializer", "hybrid", "baseline", "setting", "seeds", "questions",
    "difference", "low", "high", "p", "p_holm", "significant", "note",
)


@dataclass(frozen=True)
class PairedDifference:
    """Mean over seeds of the paired difference (treatment minus baseline), its 95% percentile
    interval and two-sided p-value (module doc)."""

    difference: float
    low: float
    high: float
    p: float
    seeds: int
    questions: int


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
    samples must all have per-question APs."""
    lacking = [key for key, s in samples.items() if s.questions is None or s.questions.empty]
    if lacking:
        raise ValueError(f"samples {lacking} have no per-question APs to resample")
    if not samples:
        return {}
    ids = np.unique(np.concatenate([s.questions["qid"].to_numpy() for s in samples.values()]))
    matrices = {key: question_matrix(s.questions, ids) for key, s in samples.items()}
    rng = np.random.default_rng(seed)
    replicates = {key: np.empty(n_boot) for key in samples}
    for start in range(0, n_boot, BLOCK):
        weights = draw_counts(rng, len(ids), min(BLOCK, n_boot - start))
        for key, (ap_sum, count) in matrices.items():
            replicates[key][start:start + len(weights)] = weighted_value(weights, ap_sum, count)
    return replicates


def _difference(
    pairs: Sequence[tuple[str, str]], values: Mapping[str, float], replicates: Mapping[str, np.ndarray], questions: int,
) -> PairedDifference:
    """The paired difference of (treatment key, baseline key) pairs from their values and their
    replicates under shared draws."""
    observed = np.mean([values[t] - values[b] for t, b in pairs])
    differences = np.mean([replicates[t] - replicates[b] for t, b in pairs], axis=0)
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    return PairedDifference(float(observed), float(low), float(high), bootstrap_p_value(differences), len(pairs), questions)


def paired_difference(
    pairs: Sequence[tuple[RunSample, RunSample]], n_boot: int = N_BOOT_TESTS, seed: int = 0,
) -> PairedDifference:
    """The paired bootstrap test of (treatment, baseline) samples, one pair per seed (module doc;
    ``U`` is the union of these samples' question ids)."""
    if not pairs:
        raise ValueError("no (treatment, baseline) pair to compare")
    samples = {f"{side}{k}": s for k, pair in enumerate(pairs) for side, s in zip("tb", pair)}
    replicates = question_replicates(samples, n_boot, seed)
    values = {key: s.value for key, s in samples.items()}
    keys = [(f"t{k}", f"b{k}") for k in range(len(pairs))]
    n_ids = len(np.unique(np.concatenate([s.questions["qid"].to_numpy() for s in samples.values()])))
    return _difference(keys, values, replicates, n_ids)


def _seed_pairs(hybrid: Row, baseline: Row) -> list[tuple[str, str, str]]:
    """(seed, hybrid run id, baseline run id) for every seed both rows have, in the hybrid row's order."""

    def by_seed(row: Row) -> dict[str, str]:
        seeds = row.runs["params.seed"].astype(str) if "params.seed" in row.runs else pd.Series("", index=row.runs.index)
        repeated = seeds[seeds.duplicated(keep=False)]
        if not repeated.empty:
            ids = row.runs.loc[repeated.index, "run_id"].tolist()
            raise ValueError(
                f"row {row.initializer} / {row.training} has several runs of seed {repeated.iloc[0]!r} ({ids}); "
                "a table row must differ from the others only in the training strategy and the seed"
            )
        return dict(zip(seeds, row.runs["run_id"]))

    base = by_seed(baseline)
    return [(seed, run_id, base[seed]) for seed, run_id in by_seed(hybrid).items() if seed in base]


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


def paired_tests(
    runs: pd.DataFrame, columns: Sequence[Column], questions: QuestionLoader,
    n_boot: int = N_BOOT_TESTS, seed: int = 0, alpha: float = ALPHA,
) -> Comparisons:
    """Every hybrid row against the mono-only and cross-only rows of its initializer, in every
    column (rows: :func:`hybridsweep.reports.tables.table_rows`), with Holm's correction over all
    tested comparisons of the table (module doc)."""
    rows = [row for row in table_rows(runs) if row.is_hybrid or row.training in BASELINE_MARKS]
    compared = [
        (hybrid, baseline, _seed_pairs(hybrid, baseline)) for hybrid in rows if hybrid.is_hybrid
        for baseline in rows if baseline.initializer == hybrid.initializer and baseline.training in BASELINE_MARKS
    ]
    records = []
    for column in columns:
        samples = {run["run_id"]: column.sample(run, questions) for row in rows for _, run in row.runs.iterrows()}
        with_questions = {k: s for k, s in samples.items() if s is not None and s.questions is not None and not s.questions.empty}
        ids = {k: np.unique(s.questions["qid"].to_numpy()) for k, s in with_questions.items()}
        replicates = question_replicates(with_questions, n_boot, seed)
        for hybrid, baseline, pairs in compared:
            record = {"initializer": hybrid.initializer, "hybrid": hybrid.training, "baseline": baseline.training,
                      "setting": column.name, "seeds": len(pairs)}
            reason = _untested_reason(pairs, samples, hybrid, baseline)
            if reason is None:
                n_ids = _question_count(column.name, pairs, ids)
                keys = [(h, b) for _, h, b in pairs]
                values = {key: samples[key].value for pair in keys for key in pair}
                result = _difference(keys, values, replicates, n_ids)
                record.update(questions=n_ids, difference=result.difference, low=result.low, high=result.high, p=result.p, note="")
            else:
                record["note"] = reason
            records.append(record)
    frame = pd.DataFrame.from_records(records, columns=[c for c in TEST_COLUMNS if c not in ("p_holm", "significant")])
    frame["p"] = frame["p"].astype(float)
    frame["p_holm"] = holm(frame["p"])
    frame["significant"] = frame["p_holm"] < alpha
    return Comparisons(frame[list(TEST_COLUMNS)], n_boot, alpha)


def mark_significant(table: pd.DataFrame, comparisons: Comparisons) -> pd.DataFrame:
    """``table`` (:func:`hybridsweep.reports.tables.build_table`) with a ``marks`` column: on a
    hybrid row's cell, the mark of each baseline it differs from significantly (Holm), preceded
    by ``−`` where the hybrid row is the lower one; mono-only's mark first."""
    marks: dict[tuple[str, str, str], str] = {}
    significant = comparisons.frame[comparisons.frame["significant"]]
    for baseline in BASELINE_MARKS:
        for test in significant[significant["baseline"] == baseline].itertuples():
            key = (test.initializer, test.hybrid, test.setting)
            marks[key] = marks.get(key, "") + (LOWER if test.difference < 0 else "") + BASELINE_MARKS[baseline]
    keys = zip(table["initializer"], table["training"], table["column"])
    return table.assign(marks=[marks.get(key, "") for key in keys])


def significance_note(comparisons: Comparisons, tests_name: str) -> str:
    """The marking rule, printed under the main table."""
    mono, cross = BASELINE_MARKS["mono-only"], BASELINE_MARKS["cross-only"]
    return (
        f"{mono} / {cross}: the hybrid row differs significantly from mono-only / cross-only of the same initializer "
        f"in that column ({LOWER}{mono} / {LOWER}{cross}: it is the lower one): paired bootstrap over question ids, "
        f"two-sided, Holm-adjusted p < {comparisons.alpha:g} over the {comparisons.family_size} comparisons of this "
        f"table; differences, intervals and p-values in {tests_name}."
    )


def comparison_notes(comparisons: Comparisons) -> list[str]:
    """How the companion table was computed (printed under it)."""
    b, m, alpha = comparisons.n_boot, comparisons.family_size, comparisons.alpha
    notes = [
        "difference: hybrid minus baseline, mean over the seeds both rows have of the per-seed difference of the "
        f"table's cell values [95% percentile interval]; {b} paired bootstrap replicates over question ids (all "
        "language versions of an id together), one draw shared by both runs of every seed.",
        "p: two-sided, 2·min(1 + #{D* ≤ 0}, 1 + #{D* ≥ 0}) / (B + 1); p_holm: Holm's correction over the "
        f"{m} tested comparisons of this table (every hybrid row × {{mono-only, cross-only}} × setting × "
        f"initializer); significant: p_holm < {alpha:g}. The trained models are held fixed: questions are the "
        "random part.",
    ]
    smallest = 2 / (b + 1)
    if m and m * smallest >= alpha:
        notes.append(f"Warning: with {b} replicates the smallest p is {smallest:.2g}, so no comparison of a family of "
                     f"{m} can reach Holm-adjusted p < {alpha:g}; raise the number of replicates.")
    return notes


def _formatted(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    def interval(test) -> str:
        if not np.isfinite(test.difference):
            return "n/a"
        return f"{test.difference:+.{digits}f} [{test.low:+.{digits}f}, {test.high:+.{digits}f}]"

    def number(p: float) -> str:
        return f"{p:.3g}" if np.isfinite(p) else "n/a"

    return pd.DataFrame({
        "initializer": frame["initializer"], "hybrid": frame["hybrid"], "baseline": frame["baseline"],
        "setting": frame["setting"], "seeds": frame["seeds"],
        "questions": frame["questions"].map(lambda n: f"{n:.0f}" if np.isfinite(n) else "n/a"),
        "difference [95% interval]": [interval(t) for t in frame.itertuples()],
        "p": frame["p"].map(number), "p (Holm)": frame["p_holm"].map(number),
        "significant": [("yes" if s else "no") if np.isfinite(p) else "not tested" for s, p in zip(frame["significant"], frame["p"])],
        "note": frame["note"],
    })


def write_tests(comparisons: Comparisons, stem: Path, caption: str) -> list[Path]:
    """``<stem>.csv`` (one row per comparison, numeric), ``<stem>.md`` and ``<stem>.tex``."""
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    comparisons.frame.to_csv(paths[0], index=False, float_format="%.6g")
    formatted = _formatted(comparisons.frame)
    notes = comparison_notes(comparisons)
    paths[1].write_text(f"{caption}\n\n{formatted.to_markdown(index=False)}\n\n" + "\n".join(notes) + "\n")
    latex = formatted.rename(columns=latex_escape).map(lambda v: latex_escape(v) if isinstance(v, str) else v)
    paths[2].write_text(latex.to_latex(index=False, escape=False, caption=latex_escape(" ".join([caption + ".", *notes]))))
    return paths
