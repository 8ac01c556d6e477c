"""Under DDP every rank takes a disjoint slice of the same global batch: one type per step and, for
a monolingual step under per-language batches, one language, in memory and streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridsweep.data.sampler import HybridBatchSampler
from hybridsweep.data.shards import write_shards
from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches

LANGUAGES = ["en", "de", "ru"]


def check_global_batch(pairs: list[tuple[str, str, str]], size: int, mono_batches: str) -> bool:
    """Assert what the ranks' slices of one step make together; returns whether it is monolingual.

    ``pairs``: (question id, question language, passage language) of every pair of every rank.
    """
    assert len(pairs) == size
    assert len({qid for qid, _, _ in pairs}) == size, "a question id twice in the global batch"
    kinds = {q == p for _, q, p in pairs}
    assert len(kinds) == 1, "the ranks' slices mix monolingual and cross-lingual pairs"
    is_mono = kinds.pop()
    if is_mono and mono_batches == "per_language":
        assert len({q for _, q, _ in pairs}) == 1, "the ranks' slices of a monolingual step mix languages"
    return is_mono


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_partition_the_global_batch(world_size, mono_batches):
    rng = np.random.default_rng(4)
    n = 1200
    ids = [f"q{i // 6}" for i in range(n)]
    q_langs = rng.choice(LANGUAGES, n).tolist()
    is_mono = rng.random(n) < 0.25
    p_langs = [q if m else next(x for x in LANGUAGES if x != q) for q, m in zip(q_langs, is_mono)]
    arguments = dict(languages=q_langs, mono_batches=mono_batches)
    whole = list(HybridBatchSampler(ids, is_mono, 32, "hybrid", "auto", seed=9, **arguments))
    ranks = [list(HybridBatchSampler(ids, is_mono, 32, "hybrid", "auto", seed=9, rank=r, world_size=world_size,
                                     **arguments)) for r in range(world_size)]
    types = set()
    for step, global_batch in enumerate(whole):
        slices = [ranks[r][step] for r in range(world_size)]
        assert all(len(s) == 32 // world_size for s in slices)
        assert sum(slices, []) == global_batch
        types.add(check_global_batch([(ids[i], q_langs[i], p_langs[i]) for i in global_batch], 32, mono_batches))
    assert types == {True, False}


def collate_pairs(rows: list[dict]) -> dict:
    return {"pairs": [(r["qid"], r["q_lang"], r["p_lang"]) for r in rows]}


@pytest.fixture(scope="module")
def eight_shards(tmp_path_factory) -> Path:
    """8 shards per pool: one per reader lane for 4 ranks x 2 dataloader workers."""
    root = tmp_path_factory.mktemp("eight")
    write_shards(root, shards=8, people_per_shard=10, languages=LANGUAGES, seed=11)
    return root


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
@pytest.mark.parametrize("world_size,workers", [(2, 0), (2, 2), (4, 2)])
def test_streamed_rank_slices_form_one_global_batch(eight_shards, world_size, workers, mono_batches):
    batch = 24
    streams = [StreamedPairBatches(eight_shards, collate_pairs, batch, "hybrid", 0.5, seed=5, rank=r,
                                   world_size=world_size, mono_batches=mono_batches) for r in range(world_size)]
    per_rank = [[b["pairs"] for b in ResumableLoader(s, num_workers=workers)] for s in streams]
    steps = len(streams[0])
    assert all(len(batches) == steps for batches in per_rank)
    types = [check_global_batch(sum((per_rank[r][step] for r in range(world_size)), []), batch, mono_batches)
             for step in range(steps)]
    assert set(types) == {True, False}
