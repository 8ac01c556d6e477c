"""A sweep's grid seen from the store: every point by identity, and the finished runs that hold it.

A point is known by its identity (:func:`~hybridsweep.tracking.identity.config_hash` of the config
``train`` composes for it), so a point that two sweeps share is trained once and serves both, and
the untrained initializer of the points is the zero-shot run their ``init/`` metrics came from.

A point has more than one identity a run can carry:

- **older results versions** (:attr:`Grid.older`): runs of code that computed something else;
  used only when asked (``--accept-stale``), and named in the reports then;
- **other resolutions of** ``auto`` (:attr:`Grid.aliases`): ``trainer.precision`` and
  ``eval.precision: auto`` are resolved for the machine that trains (its identity holds what ran),
  so a point trained where bf16 is native has another identity than the same point trained where
  it is not. Either run is the point's, so tables rebuild on any machine from the runs in the
  store; a point that has neither is trained here, resolved for this machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from hybridsweep import RESULTS_VERSION
from hybridsweep.reports.runs import runs_by_identity
from hybridsweep.schema import auto_resolutions, config_dir
from hybridsweep.tracking.identity import config_hash, zero_shot_hash
from hybridsweep.tracking.store import HASH_TAG, RESULTS_VERSION_TAG


def expand(overrides: list[str]) -> list[list[str]]:
    """Every point of a grid sweep as its list of overrides: the cartesian product of the swept
    values (Hydra's override grammar: ``a=1,2``, ``range(...)``, ``choice(...)``), fixed ones kept."""
    options = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            prefix = override.input_line[:len(override.input_line) - len(override.input_line.lstrip("+~"))]
            options.append([f"{prefix}{override.get_key_element()}={v}" for v in override.sweep_string_iterator()])
        else:
            options.append([override.input_line])
    return [list(point) for point in itertools.product(*options)]


@dataclass(frozen=True)
class Grid:
    """A sweep's points by identity (as this machine resolves them), and their other identities."""

    points: dict[str, tuple[str, ...]]
    """config hash -> the point's overrides."""
    older: dict[str, str]
    """hash under an older results version -> the current one, of points and zero-shot runs."""
    aliases: dict[str, str]
    """hash under another resolution of ``auto`` -> this machine's, of points and zero-shot runs."""
    zero_shot: frozenset[str]
    """zero-shot identities of the points that evaluate their initializer."""

    def current(self, digest: str) -> str:
        """The identity, as this machine resolves it, that a run's ``digest`` stands for."""
        return self.aliases.get(digest, self.older.get(digest, digest))


@cache
def grid(overrides: tuple[str, ...]) -> Grid:
    """The identities of every point of the grid, each composed as ``train`` composes it, so a
    point is recognised by what it computes, whichever sweep, command or machine trained it.
    Cached: a sweep's grid is needed to train it and again by each target built from it."""
    points, older, aliases, zero_shot = {}, {}, {}, set()
    versions = range(1, RESULTS_VERSION)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for point in expand(list(overrides)):
            local, *others = auto_resolutions(compose("train", overrides=point))
            digest = config_hash(local)
            points[digest] = tuple(point)
            for cfg in (local, *others):
                if cfg is not local:
                    aliases[config_hash(cfg)] = digest
                older |= {config_hash(cfg, version): digest for version in versions}
                if not cfg.eval.before_training:
                    continue
                for suite in cfg.eval.suites:
                    own = zero_shot_hash(local, suite)
                    if cfg is local:
                        zero_shot.add(own)
                    else:
                        aliases[zero_shot_hash(cfg, suite)] = own
                    older |= {zero_shot_hash(cfg, suite, version): own for version in versions}
    # An identity of the grid's own (two points, one with auto and one with what it resolves to)
    # is never an alias of another.
    aliases = {alias: own for alias, own in aliases.items() if alias not in points and alias not in zero_shot}
    return Grid(points, older, aliases, frozenset(zero_shot))


def union(grids: Iterable[Grid]) -> Grid:
    """The grids of several sweeps as one (a target built from more than one sweep)."""
    grids = list(grids)
    merged = Grid({}, {}, {}, frozenset())
    for part in grids:
        merged.points.update(part.points)
        merged.older.update(part.older)
        merged.aliases.update(part.aliases)
    return Grid(merged.points, merged.older, merged.aliases, frozenset().union(*(g.zero_shot for g in grids)))


def one_per_identity(runs: pd.DataFrame, grid_: Grid) -> pd.DataFrame:
    """``runs`` (one per hash) with one run per identity of this machine: a run of this machine's
    resolution before a run of another's."""
    column = f"tags.{HASH_TAG}"
    if runs.empty or not runs[column].isin(set(grid_.aliases)).any():
        return runs
    ranked = runs.assign(_current=runs[column].map(grid_.current), _alias=runs[column].isin(set(grid_.aliases)))
    ranked = ranked.sort_values("_alias", kind="stable").drop_duplicates("_current")
    return ranked.drop(columns=["_current", "_alias"]).reset_index(drop=True)


def identity_runs(experiment: str, grid_: Grid, identities: Iterable[str], role: str, accept_stale: bool,
                  sweep_tag: str | None = None) -> pd.DataFrame:
    """One finished run of ``role`` per identity in ``identities`` (this machine's), under any
    resolution of ``auto``; with ``accept_stale``, a run of an older results version where an
    identity has no current one (the newest version's)."""
    identities = set(identities)
    hashes = identities | {alias for alias, own in grid_.aliases.items() if own in identities}
    runs = one_per_identity(runs_by_identity(experiment, hashes, sweep_tag, roles=(role,)), grid_)
    if accept_stale:
        runs = pd.concat([runs, stale_runs(experiment, grid_, runs, identities, sweep_tag, role)], ignore_index=True)
    return runs


def stale_runs(experiment: str, grid_: Grid, runs: pd.DataFrame, identities: Iterable[str], sweep_tag: str | None,
               role: str) -> pd.DataFrame:
    """The finished runs of older results versions of the ``identities`` that ``runs`` lacks, the
    newest version's for each."""
    identities = set(identities)
    older = {old: new for old, new in grid_.older.items() if new in identities}
    stale = runs_by_identity(experiment, older, sweep_tag, roles=(role,))
    if stale.empty:
        return stale
    present = {grid_.current(digest) for digest in runs.get(f"tags.{HASH_TAG}", [])}
    version = pd.to_numeric(stale[f"tags.{RESULTS_VERSION_TAG}"], errors="coerce")
    newest_first = stale.assign(current=stale[f"tags.{HASH_TAG}"].map(older), version=version)
    newest_first = newest_first.sort_values("version", ascending=False)
    newest_first = newest_first[~newest_first["current"].isin(present)]
    return newest_first.drop_duplicates("current").drop(columns=["current", "version"]).reset_index(drop=True)
