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
from functools import lru_cache
from pathlib import Path

import mlflow
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hybridsweep.reports.runs import log_report, per_question_ap, point_runs
from hybridsweep.reports.fits import FitSettings
from hybridsweep.reports.scaling import (
    COMPUTE_AXES, LOSS_COLUMN, fit_lines, plot_scaling, scaling_points, write_scaling,
)
from hybridsweep.reports.tables import (
    SETTINGS, build_table, language_column, metric_column, multilingual_languages, setting_column, write_table,
)
from hybridsweep.resume import config_hash
from hybridsweep.tracking import tracking_uri
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


@lru_cache(maxsize=None)
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


def build_scaling(
    profile_name: str, profile: DictConfig, target: str, runs: pd.DataFrame, stem: Path, n_boot: int, bias: dict,
) -> list[Path]:
    """A ``kind: scaling`` target: the law over ``x`` (and ``x2``: the joint law) per line of
    ``lines``, fitted as ``fit`` says (the target's, else the profile's: ``loss: l2|huber``,
    ``huber_delta``, ``level``); ``with_sweeps`` adds the grid points of other sweeps (a joint
    law over a batch-size sweep and a data-scale sweep); ``compute_x`` (optimizer_steps or
    pairs_seen) adds panels against compute. Columns: mAP per setting, the bias metrics and
    ``val/loss_best``, each where the runs log it."""
    spec = profile.targets[target]
    where = f"profile {profile_name}: targets.{target}"
    for sweep in spec.get("with_sweeps", []):
        if sweep not in profile.sweeps:
            raise SystemExit(f"{where}.with_sweeps: {sweep!r} is not under sweeps: {list(profile.sweeps)}")
        extra = point_runs(profile.experiment, grid_hashes(tuple(sweep_overrides(profile, sweep))), sweep_dir(profile_name, sweep))
        if extra.empty:
            print(f"[paper] warning: {target}: sweep {sweep} has no finished run yet; its points are left out", file=sys.stderr)
            continue
        runs = pd.concat([runs, extra[~extra["run_id"].isin(runs["run_id"])]], ignore_index=True)
    compute_x = spec.get("compute_x")
    if compute_x is not None and compute_x not in COMPUTE_AXES:
        raise SystemExit(f"{where}.compute_x={compute_x!r}: expected one of {list(COMPUTE_AXES)}")
    fit = spec.get("fit", profile.get("fit"))
    if fit is not None and not isinstance(fit, DictConfig):
        raise SystemExit(f"{where}.fit={fit!r}: expected a mapping such as {{loss: huber, huber_delta: 2}}")
    try:
        settings = FitSettings.from_config(OmegaConf.to_container(fit) if fit is not None else {}, f"{where}.fit")
    except ValueError as error:
        raise SystemExit(str(error)) from None
    axes = [spec.x, *([spec.x2] if spec.get("x2") else [])]
    labels = [spec.x_label, *([spec.get("x2_label", spec.x2)] if spec.get("x2") else [])]
    columns = [setting_column(s) for s in SETTINGS]
    columns += [metric_column(m, d == "higher") for m, d in present_metrics(runs, bias).items()]
    notes = []
    if present_metrics(runs, {LOSS_COLUMN: "lower"}):
        columns.append(metric_column(LOSS_COLUMN, higher_is_better=False))
        notes.append(f"{LOSS_COLUMN}: the lowest validation InfoNCE of a run (a contrastive entropy at a fixed number "
                     "of negatives; lower is better); a per-run value, so its intervals cover seeds only, or come from "
                     "the residual bootstrap where a point has one run.")
    else:
        notes.append(f"{LOSS_COLUMN}: not logged by these runs; the continuous target is left out.")
    points = scaling_points(runs, axes, list(spec.lines), columns, per_question_ap, n_boot=n_boot)
    line_fits = fit_lines(points, settings, n_boot=n_boot)
    figure = plot_scaling(points, line_fits, labels, compute_x, float(profile.get("extrapolate", 4.0)))
    return write_scaling(points, line_fits, figure, stem, spec.caption, settings, notes)


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
        table = build_table(runs, [setting_column(s) for s in SETTINGS], per_question_ap, n_boot=n_boot)
        paths = write_table(table, stem, spec.caption)
        languages = [language_column(lang) for lang in multilingual_languages(runs, per_question_ap)]
        if languages:
            per_language = build_table(runs, languages, per_question_ap, n_boot=n_boot)
            paths += write_table(per_language, out / f"{spec.output}_languages", f"{spec.caption}: multilingual setting by query language")
    elif spec.kind == "bias":
        metrics = bias or {}
        columns = [metric_column(m, direction == "higher") for m, direction in metrics.items()]
        if not columns:
            raise SystemExit(f"profile {profile_name}: bias_metrics is empty; table-bias needs at least one")
        present_metrics(runs, metrics)
        paths = write_table(build_table(runs, columns, per_question_ap, n_boot=n_boot), stem, spec.caption)
    else:
        paths = build_scaling(profile_name, profile, target, runs, stem, n_boot, bias)
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
