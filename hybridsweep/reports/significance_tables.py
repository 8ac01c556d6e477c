"""The paired tests of a table written out (:mod:`hybridsweep.reports.significance` computes them):
the strategy-claim marks on the main table, the rule printed under it, and the companion table of
every comparison with the notes that say how it was computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hybridsweep.reports.significance import MODELS_DIFFER, STRATEGIES_DIFFER, Comparisons
from hybridsweep.reports.tables import BASELINE_MARKS, LOWER, latex_escape


def mark_strategy_claims(table: pd.DataFrame, comparisons: Comparisons) -> pd.DataFrame:
    """``table`` (:func:`hybridsweep.reports.tables.build_table`) with a ``marks`` column: on a
    hybrid row's cell, the mark of each baseline it differs from by a strategy claim (module doc),
    preceded by ``−`` where the hybrid row is the lower one; mono-only's mark first."""
    marks: dict[tuple[str, str, str], str] = {}
    claimed = comparisons.frame[comparisons.frame["strategy_claim"]]
    for baseline in BASELINE_MARKS:
        for test in claimed[claimed["baseline"] == baseline].itertuples():
            key = (test.initializer, test.hybrid, test.setting)
            marks[key] = marks.get(key, "") + (LOWER if test.difference < 0 else "") + BASELINE_MARKS[baseline]
    keys = zip(table["initializer"], table["training"], table["column"])
    return table.assign(marks=[marks.get(key, "") for key in keys])


def _seed_counts(comparisons: Comparisons) -> str:
    seeds = sorted({int(k) for k, p in zip(comparisons.frame["seeds"], comparisons.frame["p"]) if np.isfinite(p)})
    return " or ".join(map(str, seeds)) if seeds else "no"


def fewest_claimable_seeds(alpha: float) -> int:
    """The fewest seeds whose unanimous sign is significant at the seed level: 2 / 2^K < α."""
    return int(np.floor(np.log2(2 / alpha))) + 1


def significance_note(comparisons: Comparisons, tests_name: str) -> str:
    """The marking rule, printed under the main table."""
    mono, cross, alpha = BASELINE_MARKS["mono-only"], BASELINE_MARKS["cross-only"], comparisons.alpha
    fewest = fewest_claimable_seeds(alpha)
    return (
        f"{mono} / {cross}: a strategy claim against mono-only / cross-only of the same initializer in that column "
        f"({LOWER}{mono} / {LOWER}{cross}: the hybrid row is the lower one). A claim needs all three: the two-level "
        f"paired bootstrap over seeds and question ids puts the difference away from 0 (two-sided, Holm-adjusted "
        f"p < {alpha:g} over the {comparisons.family_size} comparisons of this table); every paired seed has the sign "
        f"of the difference; and that agreement is significant at the seed level (exact sign-flip p < {alpha:g}). "
        f"An exact sign-flip test's smallest two-sided p is 2/2^K for K seeds (0.5 with 2 seeds, 0.25 with 3, 0.0625 "
        f"with 5), so with fewer than {fewest} seeds the seed level alone cannot reach p < {alpha:g} and no strategy "
        f"claim is made; this table's comparisons have {_seed_counts(comparisons)} seeds. Where only the fixed-model "
        f"test (questions resampled, the trained models held fixed) separates two rows, {tests_name} says \"these "
        f"models differ\": a statement about these trained models, not about the strategies."
    )


def comparison_notes(comparisons: Comparisons) -> list[str]:
    """How the companion table was computed (printed under it)."""
    b, m, alpha = comparisons.n_boot, comparisons.family_size, comparisons.alpha
    notes = [
        "Pairs: the runs of one seed in both rows (same initialisation, validation split and sampler seed); a seed "
        "of one row alone is left out and named in the note. difference: hybrid minus baseline, the mean over the K "
        "paired seeds of the per-seed difference of the table's cell values.",
        f"two-level [95%], p: {b} paired bootstrap replicates, each resampling the K seeds (a drawn seed brings both "
        "of its runs) and the question ids (all language versions of an id together; one draw for every run) with "
        "replacement and recomputing every run's value and the mean paired difference D*; percentile interval; "
        "p = 2·min(1 + #{D* ≤ 0}, 1 + #{D* ≥ 0}) / (B + 1), two-sided; p_holm: Holm's correction over the "
        f"{m} tested comparisons of this table (every hybrid row × {{mono-only, cross-only}} × setting × initializer).",
        "seed SD / question SE: the standard deviation over seeds of the per-seed difference, against the question-"
        "bootstrap standard error of one seed's difference (root mean square over seeds): where the seed SD is "
        "several times the question SE, the seeds vary by more than question sampling explains. seeds agreeing: how "
        "many seeds have the sign of D. p seeds: exact two-sided sign-flip p over the K per-seed differences, at "
        "least 2/2^K.",
        "fixed models [95%], p (Holm): the same question draws with every seed once: the trained models are held "
        "fixed and questions are the random part, so it says whether these models differ, not whether the "
        "strategies do.",
        f"verdict: '{STRATEGIES_DIFFER}' when p_holm < {alpha:g}, every seed agrees and p seeds < {alpha:g} (needs "
        f"K ≥ {fewest_claimable_seeds(alpha)}); '{MODELS_DIFFER.format(seeds='K seeds')}' when only the fixed-model test "
        f"has p (Holm) < {alpha:g}.",
    ]
    smallest = 2 / (b + 1)
    if m and m * smallest >= alpha:
        notes.append(f"Warning: with {b} replicates the smallest p is {smallest:.2g}, so no comparison of a family of "
                     f"{m} can reach Holm-adjusted p < {alpha:g}; raise the number of replicates.")
    return notes


def _formatted(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    def interval(mean: float, low: float, high: float) -> str:
        if not np.isfinite(mean):
            return "n/a"
        return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"

    def number(p: float) -> str:
        return f"{p:.3g}" if np.isfinite(p) else "n/a"

    tested = frame["p"].map(np.isfinite)
    return pd.DataFrame({
        "initializer": frame["initializer"], "hybrid": frame["hybrid"], "baseline": frame["baseline"],
        "setting": frame["setting"], "seeds": frame["seeds"],
        "questions": frame["questions"].map(lambda n: f"{n:.0f}" if np.isfinite(n) else "n/a"),
        "two-level [95%]": [interval(t.difference, t.low, t.high) for t in frame.itertuples()],
        "p (Holm)": [f"{number(t.p)} ({number(t.p_holm)})" if ok else "n/a" for t, ok in zip(frame.itertuples(), tested)],
        "seed SD / question SE": [f"{t.seed_sd:.{digits}f} / {t.question_se:.{digits}f}" if ok and np.isfinite(t.seed_sd)
                                  else f"n/a / {t.question_se:.{digits}f}" if ok else "n/a"
                                  for t, ok in zip(frame.itertuples(), tested)],
        "seeds agreeing": [f"{t.agreeing:.0f} of {t.seeds}" if ok else "n/a" for t, ok in zip(frame.itertuples(), tested)],
        "p seeds": frame["p_seeds"].map(number),
        "fixed models [95%]": [interval(t.difference, t.models_low, t.models_high) for t in frame.itertuples()],
        "p fixed (Holm)": [f"{number(t.p_models)} ({number(t.p_models_holm)})" if ok else "n/a"
                           for t, ok in zip(frame.itertuples(), tested)],
        "verdict": frame["verdict"],
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
