"""Scaling points over a partial sweep: a line whose levels hold different seeds is named in the
report's notes, a line whose levels hold the same seeds is not."""

from __future__ import annotations

import pandas as pd

from hybridsweep.reports.scaling import scaling_points
from hybridsweep.reports.tables import metric_column


def _runs(design):
    """One run per (strategy, batch size, seed), its validation loss the batch size over 100."""
    return pd.DataFrame.from_records([
        {"run_id": f"{strategy}-{batch}-{seed}", "params.sampling.strategy": strategy, "params.batch_size": str(batch),
         "params.seed": str(seed), "metrics.compute/steps": 4096 / batch, "metrics.compute/pairs_seen": 4096.0,
         "metrics.val/loss_best": batch / 100}
        for strategy, batch, seed in design
    ])


def test_a_line_whose_levels_hold_different_seeds_is_named():
    runs = _runs([("hybrid", b, s) for b in (16, 32) for s in (0, 1)] + [("mono", 16, 0), ("mono", 16, 1), ("mono", 32, 1)])
    points = scaling_points(runs, ["batch_size"], ["sampling.strategy"], [metric_column("val/loss_best", False)],
                            lambda run_id: None, n_boot=20)
    mono_16 = points.table[(points.table["sampling.strategy"] == "mono") & (points.table["batch_size"] == 16)]
    assert mono_16["n_runs"].tolist() == [2] and mono_16["mean"].tolist() == [0.16]
    seed_notes = [n for n in points.notes if "different seeds" in n]
    assert seed_notes == ["mono: its levels hold different seeds (batch_size 16: seeds 0, 1; 32: seeds 1), "
                          "so a step between two of them includes the variation between seeds."]


def test_lines_whose_levels_hold_the_same_seeds_have_no_seed_note():
    runs = _runs([(strategy, b, s) for strategy in ("hybrid", "mono") for b in (16, 32, 64) for s in (0, 2)])
    points = scaling_points(runs, ["batch_size"], ["sampling.strategy"], [metric_column("val/loss_best", False)],
                            lambda run_id: None, n_boot=20)
    assert len(points.table) == 6 and set(points.table["n_runs"]) == {2}
    assert not [n for n in points.notes if "different seeds" in n]
