"""Streamed shards: same batches as in-memory loading, nested data.scale, exact resumption."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hybridsweep.data.shards import read_manifest, write_shards
from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches, select_shards

SEED, BATCH = 7, 24


def collate_ids(rows: list[dict]) -> dict:
    """A collate that keeps what identifies a batch (module level: workers pickle it)."""
    return {"pairs": [[r["qid"], r["question"], r["passage"]] for r in rows], "is_mono": rows[0]["is_mono"]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, shards=4, people_per_shard=20, languages=["en", "de", "ru"], seed=3)
    return root


def naive_batches(mono_rows, cross_rows, batch_size, types):
    """Reference: per step, the step's pool in stored order, repeated ids deferred, deferred first."""
    pools = {True: (list(mono_rows), [], [0]), False: (list(cross_rows), [], [0])}
    for is_mono in types:
        rows, deferred, cursor = pools[is_mono]
        batch, ids = [], set()
        waiting, deferred[:] = list(deferred), []
        for row in waiting:
            if len(batch) == batch_size:
                deferred.append(row)
            elif row["qid"] in ids:
                deferred.append(row)
            else:
                ids.add(row["qid"])
                batch.append(row)
        while len(batch) < batch_size:
            row = rows[cursor[0] % len(rows)]
            cursor[0] += 1
            if row["qid"] in ids:
                deferred.append(row)
            else:
                ids.add(row["qid"])
                batch.append(row)
        yield is_mono, [[r["qid"], r["question"], r["passage"]] for r in batch]


def in_memory_rows(root, pool, lane=0, lanes=1, id_limit=None):
    """A pool's rows loaded wholly in memory by pyarrow (not datasets), shards of one lane, stored order."""
    files = [str(root / s["path"]) for s in read_manifest(root)["pools"][pool]][lane::lanes]
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    return [r for r in rows if id_limit is None or r["qid_pos"] < id_limit]


def naive_types(mix_ratio, steps):
    rng = np.random.default_rng(SEED)
    return [bool(rng.random() < mix_ratio) for _ in range(steps)]


def test_streamed_batches_equal_in_memory(shards):
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED)
    mono, cross = in_memory_rows(shards, "mono"), in_memory_rows(shards, "cross")
    assert stream.mix_ratio == len(mono) / (len(mono) + len(cross))
    assert len(stream) == (len(mono) + len(cross)) // BATCH
    steps = 2 * len(stream)  # two epochs: the pools wrap around into their next pass
    expected = list(naive_batches(mono, cross, BATCH, naive_types(stream.mix_ratio, steps)))
    loader = ResumableLoader(stream)
    got = [(b["is_mono"], b["pairs"]) for b in itertools.chain(loader, loader)]
    assert got == expected
    assert {m for m, _ in got} == {True, False}


@pytest.mark.parametrize("rank,world_size,workers", [(0, 1, 2), (1, 2, 1)])
def test_ranks_and_workers_read_disjoint_shards(shards, rank, world_size, workers):
    """Each rank/worker lane streams its own shards; step s keeps the global type sequence."""
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED,
                                 rank=rank, world_size=world_size)
    got = [(b["is_mono"], b["pairs"]) for b in ResumableLoader(stream, num_workers=workers)]
    types = naive_types(stream.mix_ratio, len(stream))
    lanes = world_size * workers
    expected = {}
    for lane in range(workers):
        global_lane = rank * workers + lane
        own = types[lane::workers]
        expected[lane] = list(naive_batches(in_memory_rows(shards, "mono", global_lane, lanes),
                                            in_memory_rows(shards, "cross", global_lane, lanes),
                                            BATCH // world_size, own))
    interleaved = [expected[s % workers][s // workers] for s in range(len(stream))]
    assert got == interleaved
    assert [m for m, _ in got] == types


def test_scale_selects_nested_prefixes_without_other_shards(shards):
    total = read_manifest(shards)["question_ids"]
    small, large = 0.3, 2 * total // 3
    n_small, selected_small = select_shards(shards, small)
    n_large, selected_large = select_shards(shards, large)
    assert (n_small, n_large) == (round(0.3 * total), large)
    for pool in ("mono", "cross"):
        # Shards wholly beyond the prefix are not even listed.
        assert all(s["qid_start"] < n_small for s in selected_small[pool])
        assert len(selected_small[pool]) < len(read_manifest(shards)["pools"][pool])
        expected = in_memory_rows(shards, pool, id_limit=n_small)
        assert sum(s["rows"] for s in selected_small[pool]) == len(expected)
    small_pairs = {p for b in ResumableLoader(StreamedPairBatches(shards, collate_ids, 8, "mono", seed=1, scale=small))
                   for p in map(tuple, b["pairs"])}
    large_pairs = {p for b in ResumableLoader(StreamedPairBatches(shards, collate_ids, 8, "mono", seed=1, scale=large))
                   for p in map(tuple, b["pairs"])}
    assert small_pairs < large_pairs
    allowed = {(r["qid"], r["question"], r["passage"]) for r in in_memory_rows(shards, "mono", id_limit=n_small)}
    assert small_pairs <= allowed


class _RecordBatches(L.LightningModule):
    """Trains a dummy parameter and records the pairs of every step it runs."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.global_step, batch["pairs"]))
        return (self.weight - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _run(shards, tmp_path, max_steps, workers, ckpt_path=None):
    module = _RecordBatches()
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED, scale=0.5)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)])
    trainer.fit(module, ResumableLoader(stream, num_workers=workers), ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_continues_where_it_stopped(shards, tmp_path, workers):
    stream_len = len(StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED, scale=0.5))
    total = stream_len + 3  # runs into the second epoch
    stop = stream_len - 2   # a checkpoint in the middle of the first epoch
    whole = _run(shards, tmp_path / "whole", total, workers)
    checkpoint = next((tmp_path / "whole").glob(f"*step={stop}.ckpt"))
    resumed = _run(shards, tmp_path / "resumed", total, workers, ckpt_path=str(checkpoint))
    assert [s for s, _ in whole] == list(range(total))
    assert resumed == whole[stop:]


def test_resuming_with_other_readers_is_refused(shards):
    loader = ResumableLoader(StreamedPairBatches(shards, collate_ids, BATCH, seed=SEED))
    next(iter(loader))
    other = ResumableLoader(StreamedPairBatches(shards, collate_ids, BATCH, seed=SEED), num_workers=2)
    other.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="written by 1 ranks x 1 dataloader workers"):
        next(iter(other))


def test_bad_shard_directory_and_too_many_readers_are_named(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        StreamedPairBatches(tmp_path, collate_ids, BATCH)
    stream = StreamedPairBatches(shards, collate_ids, BATCH, world_size=8)  # 4 shards per pool, 8 readers
    with pytest.raises(ValueError, match="fewer than the 8 readers"):
        next(iter(ResumableLoader(stream)))
    with pytest.raises(ValueError, match="multiple of the 5 training processes"):
        StreamedPairBatches(shards, collate_ids, BATCH, world_size=5)
