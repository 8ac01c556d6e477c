"""The paper's tables and scaling curves for one profile, rebuilt from MLflow.

    python pipelines/paper.py table-xquad table-bias --profile tiny
    python pipelines/paper.py paper --profile cpu           # every target of the profile
    python pipelines/paper.py scaling-data --build-only     # no training, only the outputs

For each target, first its sweep (``conf/paper/<profile>.yaml``): when any of the sweep's points
has no finished run in MLflow, the sweep's ``python -m hybridsweep.train -m ...`` command runs
(once sweeps resume, that trains only the missing points); when all are there, nothing trains.
A point is known by its config hash, so a point that two sweeps share is trained once and serves
both.
Then the outputs are built from MLflow alone into ``reports/<profile>/<output>.{md,csv,tex[,png]}``
and logged to a report run ``report:<output>`` of the profile's experiment and to the parent run
of the target's sweep (artifacts ``report/<output>/``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import mlflow
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hybridsweep.reports.runs import per_question_ap
from hybridsweep.reports.runs import runs_by_identity as point_runs
from hybridsweep.reports.scaling import fit_lines, plot_scaling, scaling_points, write_scaling
from hybridsweep.reports.significance import N_BOOT_TESTS, mark_significant, paired_tests, significance_note, write_tests
from hybridsweep.reports.tables import (
    SETTINGS,
    bias_columns,
    build_table,
    language_column,
    metric_column,
    multilingual_languages,
    setting_column,
    write_table,
)
from hybridsweep.tracking import config_hash, log_report, tracking_uri
from hybridsweep.train import config_dir

PROFILES = Path(config_dir()) / "paper"
KINDS = ("settings", "bias", "scaling")


def load_profile(name: str) -> DictConfig:
    """``conf/paper/<name>.yaml`` (or a path to a ``.yaml``), checked for the keys targets need."""
    path = Path(name) if name.endswith(".yaml") else PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"no profile {name!r}: {path} does not exist (known: {known})")
    profile = OmegaConf.load(path)
    for key in ("experiment", "sweeps", "targets"):
        if key not in profile:
            raise SystemExit(f"{path}: missing key {key!r}")
    for target, spec in profile.targets.items():
        if spec.get("kind") not in KINDS:
            raise SystemExit(f"{path}: targets.{target}.kind must be one of {KINDS}, got {spec.get('kind')!r}")
        if spec.get("sweep") not in profile.sweeps:
            raise SystemExit(f"{path}: targets.{target}.sweep={spec.get('sweep')!r} is not under sweeps: {list(profile.sweeps)}")
    return profile


def sweep_dir(profile_name: str, sweep: str) -> str:
    """Hydra's sweep dir of a profile's sweep, which train.py records as the runs' ``sweep`` tag."""
    return f"multirun/paper/{profile_name}/{sweep}"


def sweep_overrides(profile: DictConfig, sweep: str) -> list[str]:
    """The sweep's command-line overrides: its own, the profile's common ones, the experiment."""
    return [*str(profile.sweeps[sweep]).split(), *str(profile.get("common", "")).split(),
            f"tracking.experiment={profile.experiment}"]


def expected_points(overrides: list[str]) -> set[frozenset[str]]:
    """Every point of a Hydra grid sweep as the set of its ``key=value`` overrides, expanded by
    Hydra's own basic sweeper, so each point reads exactly as the job's ``overrides`` tag (list
    values such as ``languages=[de,en]`` stay one value; ``~key`` becomes ``~key=null``)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    (points,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return {frozenset(point) for point in points}


@cache
def grid_hashes(overrides: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """Config hash -> point for every point of the grid, each composed as ``train`` composes it,
    so a point is recognised by what it computes, whichever sweep or command trained it. Cached:
    a sweep's grid is needed to train it and again by each target built from it."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return {config_hash(compose("train", overrides=sorted(point))): point for point in expected_points(list(overrides))}


def ensure_sweep(profile_name: str, profile: DictConfig, sweep: str) -> None:
    """Run the sweep's command unless every one of its points already has a finished run."""
    overrides = sweep_overrides(profile, sweep)
    grid = grid_hashes(tuple(overrides))
    finished = point_runs(profile.experiment, grid)
    missing = len(grid) - len(finished)
    if not missing:
        print(f"[paper] sweep {sweep}: all {len(grid)} points are in MLflow; nothing to train", flush=True)
        return
    print(f"[paper] sweep {sweep}: {missing} of {len(grid)} points missing; running the sweep", flush=True)
    command = [sys.executable, "-m", "hybridsweep.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir(profile_name, sweep)}"]
    # One intra-op thread unless the caller chose otherwise: small models crawl with spinning threads.
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    if subprocess.run(command, env=env).returncode != 0:
        raise SystemExit(f"sweep {sweep} of profile {profile_name} failed (its error is above): {' '.join(command)}")


def present_metrics(runs: pd.DataFrame, wanted: dict[str, str]) -> dict[str, str]:
    found = {m: d for m, d in wanted.items() if f"metrics.{m}" in runs and runs[f"metrics.{m}"].notna().any()}
    for metric in set(wanted) - set(found):
        print(f"[paper] warning: no run logs metric {metric!r}; it is left out", file=sys.stderr)
    return found


def build(profile_name: str, profile: DictConfig, target: str, out: Path) -> list[Path]:
    """Build one target's outputs from MLflow and log them to a report run."""
    spec = profile.targets[target]
    source = sweep_dir(profile_name, spec.sweep)
    grid = grid_hashes(tuple(sweep_overrides(profile, spec.sweep)))
    # Only the profile's grid: runs of an earlier, different grid stay out; shared points come in.
    runs = point_runs(profile.experiment, grid, source)
    if runs.empty:
        raise SystemExit(f"no finished run of sweep {source!r} matches the grid of profile {profile_name}; train it first")
    if len(runs) < len(grid):
        print(f"[paper] warning: {target} is built from {len(runs)} of the {len(grid)} points of sweep {spec.sweep}",
              file=sys.stderr)
    n_boot = int(profile.get("n_boot", 1000))
    bias = dict(profile.get("bias_metrics", {}))
    out.mkdir(parents=True, exist_ok=True)
    stem = out / spec.output
    if spec.kind == "settings":
        columns = [setting_column(s) for s in SETTINGS]
        comparisons = paired_tests(runs, columns, per_question_ap, n_boot=max(n_boot, N_BOOT_TESTS))
        table = mark_significant(build_table(runs, columns, per_question_ap, n_boot=n_boot), comparisons)
        tests = out / f"{spec.output}_tests"
        paths = write_table(table, stem, spec.caption, [significance_note(comparisons, tests.name)])
        paths += write_tests(comparisons, tests, f"{spec.caption}: hybrid rows against mono-only and cross-only, paired tests")
        languages = [language_column(lang) for lang in multilingual_languages(runs, per_question_ap)]
        if languages:
            per_language = build_table(runs, languages, per_question_ap, n_boot=n_boot)
            paths += write_table(per_language, out / f"{spec.output}_languages", f"{spec.caption}: multilingual setting by query language")
    elif spec.kind == "bias":
        if not bias:
            raise SystemExit(f"profile {profile_name}: bias_metrics is empty; table-bias needs at least one")
        try:
            columns = bias_columns(bias)
        except ValueError as error:
            raise SystemExit(f"profile {profile_name}: {error}") from None
        present_metrics(runs, dict.fromkeys(c.name for c in columns))
        paths = write_table(build_table(runs, columns, per_question_ap, n_boot=n_boot), stem, spec.caption)
    else:
        lines = list(spec.lines)
        columns = [setting_column(s) for s in SETTINGS]
        columns += [metric_column(m, d == "higher") for m, d in present_metrics(runs, bias).items()]
        points = scaling_points(runs, spec.x, lines, columns, per_question_ap, n_boot=n_boot)
        fits = fit_lines(points, lines)
        figure = plot_scaling(points, fits, lines, spec.x_label, float(profile.get("extrapolate", 4.0)))
        paths = write_scaling(points, fits, figure, stem, spec.caption)
    run_id = log_report(profile.experiment, spec.output, paths, {"profile": profile_name, "source_sweep": source}, source)
    print(f"[paper] {target}: wrote {', '.join(p.name for p in paths)} (report run {run_id})", flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="targets of the profile, or `paper` for all")
    parser.add_argument("--profile", default="tiny", help="conf/paper/<profile>.yaml")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports/<profile>/ is written")
    parser.add_argument("--build-only", action="store_true", help="never train; build from what MLflow has")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    profile_name = Path(args.profile).stem
    targets = list(profile.targets) if "paper" in args.targets else args.targets
    unknown = [t for t in targets if t not in profile.targets]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; profile {args.profile!r} has {list(profile.targets)}")
    mlflow.set_tracking_uri(tracking_uri(OmegaConf.load(Path(config_dir()) / "tracking" / "mlflow.yaml").tracking_uri))
    os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    if not args.build_only:
        for sweep in dict.fromkeys(profile.targets[t].sweep for t in targets):
            ensure_sweep(profile_name, profile, sweep)
    for target in targets:
        build(profile_name, profile, target, args.out / profile_name)


if __name__ == "__main__":
    main()
