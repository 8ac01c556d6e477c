"""Under DDP every rank takes a disjoint slice of the same global batch, of one type per step."""

from __future__ import annotations

import numpy as np

from hybridsweep.sampling import HybridBatchSampler


def test_rank_slices_partition_the_global_batch():
    rng = np.random.default_rng(4)
    ids = [f"q{i // 6}" for i in range(1200)]
    is_mono = rng.random(1200) < 0.25
    whole = list(HybridBatchSampler(ids, is_mono, 32, "hybrid", "auto", seed=9))
    ranks = [list(HybridBatchSampler(ids, is_mono, 32, "hybrid", "auto", seed=9, rank=r, world_size=4))
             for r in range(4)]
    for step, global_batch in enumerate(whole):
        slices = [ranks[r][step] for r in range(4)]
        assert all(len(s) == 8 for s in slices)
        assert sum(slices, []) == global_batch
        union = sum(slices, [])
        assert len({ids[i] for i in union}) == 32  # no question id twice across devices
        assert len({bool(is_mono[i]) for i in union}) == 1  # one batch type for all ranks
