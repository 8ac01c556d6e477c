"""Seeds of one strategy (A/A): how often the two-level and the fixed-model test call them different.

Trains one strategy of the tiny profile, hybrid α=0.5 with the profile's settings (the
``strategies`` sweep of ``conf/paper/tiny.yaml`` with ``sampling=hybrid``), at seeds 0 .. N-1,
through the profile's sweep machinery (:func:`hybridsweep.paper.ensure_sweep`: ``python -m
hybridsweep.train -m ...`` into ``multirun/paper/tiny/null_seeds``, the working tree's MLflow
store). A point is known by its identity, so seeds 0-5 are the very runs of the ``strategies``
sweep's hybrid row (checked: their identities are asserted equal), and points already in the
store are not trained again.

The N runs are then split into two pseudo-arms of K runs, the runs of each arm in seed order and
paired by position, and every split is tested in every setting (monolingual, cross-lingual,
multilingual) by :mod:`hybridsweep.reports.significance`, as a table's comparison would be:

- ``1 vs 1`` (issue 29's check): every pair of seeds 0-5, 15 splits (one seed per arm: the
  seed level has nothing to resample, and the two-level test is the fixed-model test);
- ``2 vs 2``: seeds 0-5, every choice of two disjoint pairs of seeds, 45 splits;
- ``3 vs 3``: every split of seeds 0-5 into two arms of 3 (10), and of seeds 6-11 (10);
- ``6 vs 6``: every split of seeds 0-11 into two arms of 6, 462 splits: the tiny tables' 6 seeds.

Every run is one strategy, so every rejection is a false one. Rates, per setting and overall,
with p < 0.05 uncorrected (one comparison, no Holm): ``rejection_rate_two_level`` (the two-level
bootstrap's p alone), ``rejection_rate_strategy_claim`` (the full claim rule: two-level p, every
seed agreeing, exact sign-flip p over seeds) and ``rejection_rate_fixed_models`` (questions
resampled, models fixed: the baseline); every comparison's figures are in
``benchmarks/results/null_seeds_comparisons.csv``. The splits of one design share their runs, so their
rejections are far from independent: a rate is an average over the ways of splitting these N
runs, not over N independent experiments. Target (issue 29): two-level rate <= 0.10 over >= 20
pseudo-comparisons.

    HYBRIDSWEEP_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/null_seeds.py --seeds 12
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from common import RESULTS_DIR, ROOT, write_results
from omegaconf import OmegaConf

from hybridsweep import paper
from hybridsweep.reports.runs import per_question_ap
from hybridsweep.reports.significance import (
    ALPHA,
    N_BOOT_TESTS,
    compare_seeds,
    question_replicates,
    seed_draws,
)
from hybridsweep.reports.tables import SETTINGS, setting_column
from hybridsweep.schema import config_dir
from hybridsweep.tracking.store import HASH_TAG, tracking_uri

PROFILE = "tiny"
SWEEP = "null_seeds"
SOURCE_SWEEP = "strategies"
TARGET = 0.10
NUMBERS = ("difference", "low", "high", "p", "models_low", "models_high", "p_models", "seed_sd", "question_se", "p_seeds")
"""The figures of a comparison kept in ``results/null_seeds_comparisons.csv``."""


def null_sweep(profile, seeds: int) -> list[str]:
    """The source sweep's overrides with ``sampling=hybrid`` and ``seed=0,...,N-1``."""
    overrides = [o for o in profile.sweeps[SOURCE_SWEEP] if not o.startswith(("sampling=", "seed="))]
    return [*overrides, "sampling=hybrid", f"seed={','.join(map(str, range(seeds)))}"]


def splits(seeds: list[int], arm: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every unordered split of disjoint arms of ``arm`` seeds drawn from ``seeds`` (each arm in
    seed order): both arms from one set of 2 x arm seeds, every choice of that set."""
    found = []
    for chosen in itertools.combinations(seeds, 2 * arm):
        for first in itertools.combinations(chosen, arm):
            second = tuple(s for s in chosen if s not in first)
            if first < second:  # each unordered split once
                found.append((first, second))
    return found


def designs(n_seeds: int) -> dict[str, list]:
    """The pseudo-comparisons of the module doc, by design."""
    first, rest = list(range(min(6, n_seeds))), list(range(6, min(12, n_seeds)))
    found = {"1 vs 1": splits(first, 1), "2 vs 2": splits(first, 2),
             "3 vs 3": splits(first, 3) + (splits(rest, 3) if len(rest) == 6 else [])}
    if n_seeds >= 12:
        found["6 vs 6"] = splits(list(range(12)), 6)
    return found


def rates(records: list[dict], key: str) -> dict[str, float]:
    """The share of records with ``key`` true, per setting and overall."""
    by_setting = {s: float(np.mean([r[key] for r in records if r["setting"] == s])) for s in SETTINGS}
    return {**by_setting, "overall": float(np.mean([r[key] for r in records]))}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seeds", type=int, default=12, help="seeds of the strategy, 0 .. N-1 (at least 6)")
    args.add_argument("--n-boot", type=int, default=N_BOOT_TESTS, help="bootstrap replicates per test")
    args.add_argument("--build-only", action="store_true", help="never train; use the runs the store has")
    args = args.parse_args()
    if args.seeds < 6:
        raise SystemExit(f"--seeds {args.seeds}: the designs need at least 6 seeds")
    profile = paper.load_profile(PROFILE)
    profile.sweeps[SWEEP] = null_sweep(profile, args.seeds)
    mlflow.set_tracking_uri(tracking_uri(OmegaConf.load(Path(config_dir()) / "tracking" / "mlflow.yaml").tracking_uri))
    os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    points = paper.grid(tuple(paper.sweep_overrides(profile, SWEEP)))
    shared = {h for h, o in paper.grid(tuple(paper.sweep_overrides(profile, SOURCE_SWEEP))).points.items() if "sampling=hybrid" in o}
    if not shared <= set(points.points):
        raise SystemExit(f"the {SOURCE_SWEEP} sweep's hybrid points are not points of {SWEEP}: their configs differ")
    print(f"[null_seeds] {len(points.points)} points; {len(shared)} of them are the {SOURCE_SWEEP} sweep's hybrid row", flush=True)
    if not args.build_only:
        paper.ensure_sweep(PROFILE, profile, SWEEP, accept_stale=False)
    runs = paper.grid_runs(profile, SWEEP, accept_stale=False, sweep_tag=paper.sweep_dir(PROFILE, SWEEP))
    if len(runs) < len(points.points):
        raise SystemExit(f"{len(runs)} of {len(points.points)} points have a finished run; train them first")
    runs = runs.assign(seed=runs["params.seed"].astype(int)).sort_values("seed").set_index("seed")

    records, spread = [], {}
    for setting in SETTINGS:
        column = setting_column(setting)
        samples = {seed: column.sample(run, per_question_ap) for seed, run in runs.iterrows()}
        values = np.array([samples[s].value for s in runs.index])
        replicates = question_replicates({str(s): samples[s] for s in runs.index}, args.n_boot)
        questions = samples[0].questions["qid"].nunique()
        spread[setting] = {"values": dict(zip(map(str, runs.index), values.round(5).tolist())),
                           "seed_sd": float(values.std(ddof=1)), "range": float(values.max() - values.min()),
                           "question_se_of_one_run": float(np.mean([replicates[str(s)].std(ddof=1) for s in runs.index]))}
        for design, found in designs(args.seeds).items():
            counts = seed_draws(len(found[0][0]), args.n_boot)
            for first, second in found:
                observed = np.array([samples[a].value - samples[b].value for a, b in zip(first, second)])
                per_seed = np.stack([replicates[str(a)] - replicates[str(b)] for a, b in zip(first, second)], axis=1)
                result = compare_seeds(observed, per_seed, counts, questions)
                records.append({
                    "design": design, "setting": setting, "arm_a": list(first), "arm_b": list(second),
                    **{name: getattr(result, name) for name in NUMBERS}, "agreeing": result.agreeing,
                    "two_level": result.p < ALPHA, "fixed_models": result.p_models < ALPHA,
                    "strategy_claim": result.p < ALPHA and result.signs_agree and result.p_seeds < ALPHA,
                })

    figures = {"profile": PROFILE, "strategy": "hybrid α=0.5", "seeds": args.seeds, "n_boot": args.n_boot,
               "alpha": ALPHA, "runs": {str(s): run for s, run in runs["run_id"].items()},
               "identities": {str(s): h for s, h in runs[f"tags.{HASH_TAG}"].items()}, "spread": spread}
    for name, key in (("rejection_rate_two_level", "two_level"), ("rejection_rate_strategy_claim", "strategy_claim"),
                      ("rejection_rate_fixed_models", "fixed_models")):
        figures[name] = {design: rates([r for r in records if r["design"] == design], key) for design in designs(args.seeds)}
    figures["pseudo_comparisons"] = {design: len(found) for design, found in designs(args.seeds).items()}
    figures["median_seed_sd_over_question_se"] = {
        design: {s: float(np.median([r["seed_sd"] / r["question_se"] for r in records
                                     if r["design"] == design and r["setting"] == s])) for s in SETTINGS}
        for design in designs(args.seeds) if design != "1 vs 1"}
    # One row per pseudo-comparison: 1,600 of them would make the JSON a megabyte.
    table = RESULTS_DIR / "null_seeds_comparisons.csv"
    pd.DataFrame.from_records(records).to_csv(table, index=False, float_format="%.5g")
    figures["comparisons"] = {"count": len(records), "by_design": {d: 3 * n for d, n in figures["pseudo_comparisons"].items()},
                              "file": str(table.relative_to(ROOT))}
    print(f"seeds of hybrid α=0.5 (tiny profile): {args.seeds}; mAP seed SD / range / question SE of one run:")
    for setting, s in spread.items():
        print(f"  {setting:13s} {s['seed_sd']:.4f} / {s['range']:.4f} / {s['question_se_of_one_run']:.4f}")
    print("rejection rates at p < 0.05 (every rejection is false), per setting and overall:")
    for design, count in figures["pseudo_comparisons"].items():
        two, claim, fixed = (figures[k][design] for k in ("rejection_rate_two_level", "rejection_rate_strategy_claim",
                                                           "rejection_rate_fixed_models"))
        print(f"  {design} ({count} splits x 3 settings): two-level {two['overall']:.3f}, strategy claim "
              f"{claim['overall']:.3f}, fixed models {fixed['overall']:.3f} (two-level / fixed: "
              f"{two['overall'] / fixed['overall'] if fixed['overall'] else float('nan'):.2f})")
        ratios = figures["median_seed_sd_over_question_se"].get(design, {})
        for setting in SETTINGS:
            ratio = f", seed SD / question SE {ratios[setting]:.2f}" if setting in ratios else ""
            print(f"    {setting:13s} two-level {two[setting]:.3f}, claim {claim[setting]:.3f}, fixed {fixed[setting]:.3f}{ratio}")
    headline = "6 vs 6" if "6 vs 6" in figures["pseudo_comparisons"] else "3 vs 3"
    rate = figures["rejection_rate_two_level"][headline]["overall"]
    print(f"target: two-level rate <= {TARGET} ({headline}): {rate:.3f}, {'met' if rate <= TARGET else 'NOT met'}")
    write_results("null_seeds", figures)


if __name__ == "__main__":
    sys.exit(main())
