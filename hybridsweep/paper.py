"""The paper's tables and scaling curves for one profile, rebuilt from MLflow.

    python -m hybridsweep.paper table-xquad table-bias --profile tiny     (or hybridsweep-paper ...)
    python -m hybridsweep.paper paper --profile cpu           # every target of the profile
    python -m hybridsweep.paper scaling-data --build-only     # no training, only the outputs

For each target, first its sweeps (``conf/paper/<profile>.yaml``: ``sweep`` and any
``with_sweeps``): when any of a sweep's points has no finished run in MLflow, the sweep's
``python -m hybridsweep.train -m ...`` command runs (sweeps resume, so that trains only the missing
points); when all are there, nothing trains. A point is known by its identity (the config hash
of :mod:`hybridsweep.tracking.identity`), so a point that two sweeps share is trained once and serves both,
and the untrained initializer of the points is the zero-shot run their ``init/`` metrics came
from: the zero-shot rows of the tables. Runs of an older results version are listed as stale
and not used, unless ``--accept-stale``.
Then the outputs are built from MLflow alone into ``reports/<profile>/<output>.{md,csv,tex[,png]}``
and logged to a report run ``report:<output>`` of the profile's experiment and to the parent run
of the target's sweep (artifacts ``report/<output>/``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from hybridsweep import RESULTS_VERSION
from hybridsweep.archive import RUNS_FILE, export_runs, import_runs
from hybridsweep.point import MAIN_METRIC
from hybridsweep.reports.fits import FitSettings
from hybridsweep.reports.grid import Grid, grid, identity_runs, stale_runs, union
from hybridsweep.reports.runs import location_overrides, log_report, per_question_ap, store_uri
from hybridsweep.reports.scaling import COMPUTE_AXES, LOSS_COLUMN, fit_lines, scaling_points, write_scaling
from hybridsweep.reports.scaling_figure import plot_scaling
from hybridsweep.reports.significance import N_BOOT_TESTS, paired_tests
from hybridsweep.reports.significance_tables import mark_strategy_claims, significance_note, write_tests
from hybridsweep.reports.tables import (
    SETTINGS,
    bias_columns,
    build_table,
    language_column,
    metric_column,
    metric_columns,
    multilingual_languages,
    setting_column,
    write_table,
)
from hybridsweep.schema import config_dir, register_configs
from hybridsweep.tracking.store import HASH_TAG, POINT_ROLE, RESULTS_VERSION_TAG, ZERO_SHOT_ROLE

register_configs()
PROFILES = Path(config_dir()) / "paper"
KINDS = ("settings", "bias", "metrics", "scaling")
ARCHIVE = "archive"
"""A profile's key naming its run archive, ``reports/<profile>/<archive>/`` (:mod:`hybridsweep.archive`):
imported into the store before anything trains, rewritten from it at the end. Also the verb that
only does that."""


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
    for sweep, overrides in profile.sweeps.items():
        if not isinstance(overrides, ListConfig):
            raise SystemExit(f"{path}: sweeps.{sweep} must be a list of overrides, e.g. [sampling=mono,cross, seed=0,1]")
    if profile.get("common") is not None and not isinstance(profile.common, ListConfig):
        raise SystemExit(f"{path}: common must be a list of overrides")
    for target, spec in profile.targets.items():
        if spec.get("kind") not in KINDS:
            raise SystemExit(f"{path}: targets.{target}.kind must be one of {KINDS}, got {spec.get('kind')!r}")
        if spec.kind == "metrics" and not (isinstance(spec.get("metrics"), DictConfig) and spec.metrics):
            raise SystemExit(f"{path}: targets.{target}.metrics must map each metric to lower|higher, "
                             "e.g. {tatoeba/accuracy/mean: higher}")
        for sweep in target_sweeps(spec):
            if sweep not in profile.sweeps:
                raise SystemExit(f"{path}: targets.{target} names sweep {sweep!r}, not under sweeps: {list(profile.sweeps)}")
    return profile


def target_sweeps(spec: DictConfig) -> list[str]:
    """The sweeps a target is built from: ``sweep`` first, then ``with_sweeps``."""
    return [spec.get("sweep"), *spec.get("with_sweeps", [])]


def sweep_dir(profile_name: str, sweep: str) -> str:
    """Hydra's sweep dir of a profile's sweep, which train.py records as the runs' ``sweep`` tag."""
    return f"multirun/paper/{profile_name}/{sweep}"


def sweep_overrides(profile: DictConfig, sweep: str) -> list[str]:
    """The sweep's command-line overrides: the profile's common ones, its own, the experiment."""
    return [*profile.get("common", []), *profile.sweeps[sweep], f"tracking.experiment={profile.experiment}"]


def sweep_grid(profile: DictConfig, sweep: str) -> Grid:
    return grid(tuple(sweep_overrides(profile, sweep)))


def grid_runs(profile: DictConfig, sweep: str, accept_stale: bool, sweep_tag: str | None = None) -> pd.DataFrame:
    """The finished runs of a sweep's points (stale ones too with ``accept_stale``), one per point."""
    points = sweep_grid(profile, sweep)
    return identity_runs(profile.experiment, points, points.points, POINT_ROLE, accept_stale, sweep_tag)


def report_stale(profile: DictConfig, sweep: str, accept_stale: bool) -> int:
    """List the points whose only finished runs are of an older results version; their count."""
    points = sweep_grid(profile, sweep)
    current = identity_runs(profile.experiment, points, points.points, POINT_ROLE, accept_stale=False)
    stale = stale_runs(profile.experiment, points, current, points.points, None, POINT_ROLE)
    for _, run in stale.iterrows():
        print(f"[paper] sweep {sweep}: stale run {run['run_id']} ({run.get('tags.mlflow.runName')}) of results version "
              f"{run.get(f'tags.{RESULTS_VERSION_TAG}')} (now {RESULTS_VERSION}): "
              f"{'used (--accept-stale)' if accept_stale else 'not used without --accept-stale'}",
              file=sys.stderr)
    return len(stale)


def ensure_sweep(profile_name: str, profile: DictConfig, sweep: str, accept_stale: bool) -> None:
    """Run the sweep's command unless every one of its points already has a finished run. With
    ``accept_stale``, a point with only a stale run counts as done, and so does a point trained on
    a machine that resolves ``auto`` otherwise (:mod:`hybridsweep.reports.grid`): the command then
    runs for the missing points alone, one point each, since a whole sweep would train those again
    under this machine's identity."""
    overrides = sweep_overrides(profile, sweep)
    points = sweep_grid(profile, sweep)
    stale = report_stale(profile, sweep, accept_stale)
    finished = list(grid_runs(profile, sweep, accept_stale).get(f"tags.{HASH_TAG}", []))
    done = {points.current(digest) for digest in finished}
    other_identity = any(digest not in points.points for digest in finished)
    missing = [point for digest, point in points.points.items() if digest not in done]
    if not missing:
        print(f"[paper] sweep {sweep}: all {len(points.points)} points are in MLflow; nothing to train", flush=True)
        return
    print(f"[paper] sweep {sweep}: {len(missing)} of {len(points.points)} points missing"
          f"{f' ({stale} with only stale runs)' if stale and not accept_stale else ''}; running the sweep", flush=True)
    for point_overrides in (missing if other_identity else [overrides]):
        run_sweep(profile_name, sweep, list(point_overrides), int(profile.get("threads", 1)))


def run_sweep(profile_name: str, sweep: str, overrides: list[str], threads: int = 1) -> None:
    """``python -m hybridsweep.train -m <overrides>`` into the sweep's directory (its runs' tag),
    with ``threads`` intra-op threads per point (the profile's ``threads``) unless the caller set
    ``OMP_NUM_THREADS``: small models crawl with spinning threads, and on a machine shared with
    other busy processes so does any model."""
    command = [sys.executable, "-m", "hybridsweep.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir(profile_name, sweep)}"]
    env = {"OMP_NUM_THREADS": str(threads), **os.environ}
    if subprocess.run(command, env=env).returncode != 0:
        raise SystemExit(f"sweep {sweep} of profile {profile_name} failed (its error is above): {' '.join(command)}")


def shown_metrics(spec: DictConfig) -> list[str]:
    """The metrics a table target shows: its ``metrics`` for ``kind: metrics``, else the mAP of
    the retrieval suite (settings and bias tables describe that suite's runs)."""
    return list(spec.metrics) if spec.kind == "metrics" else [MAIN_METRIC]


def logging_any(runs: pd.DataFrame, metrics: list[str]) -> pd.Series:
    """Which runs log at least one of ``metrics``."""
    present = [runs[f"metrics.{m}"].notna() for m in metrics if f"metrics.{m}" in runs]
    return pd.concat(present, axis=1).any(axis=1) if present else pd.Series(False, index=runs.index)


def target_runs(profile_name: str, profile: DictConfig, target: str, accept_stale: bool) -> pd.DataFrame:
    """The runs a target is built from: the points of its sweeps and, for tables, the zero-shot
    runs of their initializers (one per initializer and evaluation) that log what the table shows
    (each suite's zero-shot evaluation is a run of its own)."""
    spec = profile.targets[target]
    parts = [grid_runs(profile, sweep, accept_stale, sweep_dir(profile_name, sweep)) for sweep in target_sweeps(spec)]
    runs = pd.concat(parts, ignore_index=True).drop_duplicates("run_id") if parts else pd.DataFrame()
    grids = union(sweep_grid(profile, sweep) for sweep in target_sweeps(spec))
    points = grids.points
    where = {str(key): str(value) for key, value in (spec.get("where") or {}).items()}
    if where and not runs.empty:
        runs = runs[_matches(runs, where, f"profile {profile_name}: targets.{target}.where")].reset_index(drop=True)
        points = {h: p for h, p in points.items() if all(f"{key}={value}" in p for key, value in where.items())}
    expected = len(points)
    if runs.empty:
        raise SystemExit(f"no finished run matches the grid of target {target} of profile {profile_name}; train it first")
    if len(runs) < expected:
        print(f"[paper] warning: {target} is built from {len(runs)} of its {expected} grid points", file=sys.stderr)
    if spec.kind != "scaling":
        zero_shot = identity_runs(profile.experiment, grids, grids.zero_shot, ZERO_SHOT_ROLE, accept_stale)
        shown = shown_metrics(spec)
        runs = pd.concat([runs, zero_shot], ignore_index=True)
        runs = runs[logging_any(runs, shown)].reset_index(drop=True)
        if runs.empty:
            raise SystemExit(f"no run of target {target} of profile {profile_name} logs any of {shown}")
    return runs


def _matches(runs: pd.DataFrame, where: dict[str, str], name: str) -> pd.Series:
    """Which runs log every ``where`` param with its value (a target's ``where``: the points of
    its sweeps it is built from, e.g. ``{batch_size: 16}``)."""
    missing = [key for key in where if f"params.{key}" not in runs]
    if missing:
        raise SystemExit(f"{name}: no run logs the params {missing}; expected swept keys of the target's sweeps")
    keep = pd.Series(True, index=runs.index)
    for key, value in where.items():
        keep &= runs[f"params.{key}"].astype(str) == value
    return keep


def present_metrics(runs: pd.DataFrame, wanted: dict[str, str]) -> dict[str, str]:
    found = {m: d for m, d in wanted.items() if f"metrics.{m}" in runs and runs[f"metrics.{m}"].notna().any()}
    for metric in set(wanted) - set(found):
        print(f"[paper] warning: no run logs metric {metric!r}; it is left out", file=sys.stderr)
    return found


def build_scaling(
    profile_name: str, profile: DictConfig, target: str, runs: pd.DataFrame, stem: Path, n_boot: int, bias: dict,
    notes: list[str],
) -> list[Path]:
    """A ``kind: scaling`` target: the law over ``x`` (and ``x2``: the joint law) per line of
    ``lines``, fitted as ``fit`` says (the target's, else the profile's: ``loss: l2|huber``,
    ``huber_delta``, ``level``); ``runs`` hold the points of every sweep of the target (a joint
    law over a batch-size sweep and a data-scale sweep); ``compute_x`` (optimizer_steps or
    pairs_seen) adds panels against compute. Columns: mAP per setting, the bias metrics and
    ``val/loss_best``, each where the runs log it."""
    spec = profile.targets[target]
    where = f"profile {profile_name}: targets.{target}"
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
    notes = list(notes)
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


def stale_note(runs: pd.DataFrame) -> list[str]:
    """The note a report built with stale runs carries: which runs, of which results version."""
    versions = pd.to_numeric(runs.get(f"tags.{RESULTS_VERSION_TAG}", pd.Series(index=runs.index)), errors="coerce")
    old = runs[versions != RESULTS_VERSION]
    if old.empty:
        return []
    names = ", ".join(sorted(old.get("tags.mlflow.runName", old["run_id"]).astype(str)))
    found = ", ".join(str(v) for v in sorted(set(versions[old.index].dropna().astype(int))))
    return [f"Stale runs (`--accept-stale`): {len(old)} of the {len(runs)} runs are of results version {found or 'unknown'} "
            f"(the code is at {RESULTS_VERSION}): {names}."]


def build(profile_name: str, profile: DictConfig, target: str, out: Path, accept_stale: bool = False) -> list[Path]:
    """Build one target's outputs from MLflow and log them to a report run."""
    spec = profile.targets[target]
    source = sweep_dir(profile_name, spec.sweep)
    # Only the profile's grid: runs of an earlier, different grid stay out; shared points come in.
    runs = target_runs(profile_name, profile, target, accept_stale)
    n_boot = int(profile.get("n_boot", 1000))
    bias = dict(profile.get("bias_metrics", {}))
    stale = stale_note(runs)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / spec.output
    if spec.kind == "settings":
        columns = [setting_column(s) for s in SETTINGS]
        comparisons = paired_tests(runs, columns, per_question_ap, n_boot=max(n_boot, N_BOOT_TESTS))
        table = mark_strategy_claims(build_table(runs, columns, per_question_ap, n_boot=n_boot), comparisons)
        tests = out / f"{spec.output}_tests"
        paths = write_table(table, stem, spec.caption, [significance_note(comparisons, tests.name), *stale])
        paths += write_tests(comparisons, tests, f"{spec.caption}: hybrid rows against mono-only and cross-only, paired tests")
        languages = [language_column(lang) for lang in multilingual_languages(runs, per_question_ap)]
        if languages:
            per_language = build_table(runs, languages, per_question_ap, n_boot=n_boot)
            paths += write_table(per_language, out / f"{spec.output}_languages",
                                 f"{spec.caption}: multilingual setting by query language", stale)
    elif spec.kind == "bias":
        if not bias:
            raise SystemExit(f"profile {profile_name}: bias_metrics is empty; table-bias needs at least one")
        try:
            columns = bias_columns(bias)
        except ValueError as error:
            raise SystemExit(f"profile {profile_name}: {error}") from None
        present_metrics(runs, dict.fromkeys(c.name for c in columns))
        paths = write_table(build_table(runs, columns, per_question_ap, n_boot=n_boot), stem, spec.caption, stale)
    elif spec.kind == "metrics":
        try:
            columns = metric_columns(dict(spec.metrics))
        except ValueError as error:
            raise SystemExit(f"profile {profile_name}: targets.{target}: {error}") from None
        paths = write_table(build_table(runs, columns, per_question_ap, n_boot=n_boot), stem, spec.caption, stale)
    else:
        paths = build_scaling(profile_name, profile, target, runs, stem, n_boot, bias, stale)
    run_id = log_report(profile.experiment, spec.output, paths, {"profile": profile_name, "source_sweep": source}, source)
    print(f"[paper] {target}: wrote {', '.join(p.name for p in paths)} (report run {run_id})", flush=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="TARGET|KEY=VALUE",
                        help="targets of the profile, `paper` for all, or `archive` to only import and export the "
                             "profile's run archive; then overrides of keys outside a point's identity, given to every "
                             "sweep and used to find the store (tracking.tracking_uri=...)")
    parser.add_argument("--profile", default="tiny", help="conf/paper/<profile>.yaml")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports/<profile>/ is written")
    parser.add_argument("--build-only", action="store_true", help="never train; build from what MLflow has")
    parser.add_argument("--accept-stale", action="store_true",
                        help="count and use runs of an older results version where a point has no current one")
    parser.add_argument("--list", action="store_true", help="print the profile's targets and exit")
    args = parser.parse_intermixed_args(argv)  # targets and overrides may come after the options
    profile = load_profile(args.profile)
    profile_name = Path(args.profile).stem
    if args.list:
        for target, spec in profile.targets.items():
            print(f"{target:<20} {spec.get('caption', '')}")
        return
    overrides = location_overrides([token for token in args.targets if "=" in token])
    # `paper`: the profile's own list (its key `paper`), else every target.
    named = [token for token in args.targets if "=" not in token]
    if not named:
        parser.error(f"name a target of profile {profile_name}: {', '.join(profile.targets)}, or paper for all")
    targets = [t for t in (list(profile.get("paper", profile.targets)) if "paper" in named else named) if t != ARCHIVE]
    unknown = [t for t in targets if t not in profile.targets]
    if unknown:
        raise SystemExit(f"profile {profile_name} has no target {', '.join(unknown)}: its targets are "
                         f"{', '.join(profile.targets)} (and paper, for {', '.join(profile.get('paper', profile.targets))})")
    if ARCHIVE in named and not profile.get(ARCHIVE):
        raise SystemExit(f"profile {profile_name} keeps no run archive: add `{ARCHIVE}: runs` to it")
    if any(override.split("=", 1)[0].lstrip("+~") == "tracking.experiment" for override in overrides):
        raise SystemExit(f"tracking.experiment: the profile's key `experiment` names it ({profile.experiment})")
    # Every sweep gets the overrides, and the store is the one its training writes to.
    profile.common = [*profile.get("common", []), *overrides]
    mlflow.set_tracking_uri(store_uri(profile.common))
    os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    folder = args.out / profile_name / str(profile.get(ARCHIVE)) if profile.get(ARCHIVE) else None
    try:
        if folder is not None and (folder / RUNS_FILE).is_file():
            imported = import_runs(mlflow.get_tracking_uri(), profile.experiment, folder)
            print(f"[paper] {folder}: {len(imported)} run(s) imported (the others were in the store)", flush=True)
        if not args.build_only:
            for sweep in dict.fromkeys(s for t in targets for s in target_sweeps(profile.targets[t])):
                ensure_sweep(profile_name, profile, sweep, args.accept_stale)
        for target in targets:
            build(profile_name, profile, target, args.out / profile_name, args.accept_stale)
    finally:
        # Also after a failed sweep: the points that finished are kept for the next store.
        if folder is not None:
            count = export_runs(mlflow.get_tracking_uri(), profile.experiment, folder)
            print(f"[paper] {folder}: {count} finished run(s) exported", flush=True)


if __name__ == "__main__":
    main()
