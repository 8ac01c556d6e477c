"""Streamed shards: same batches as in-memory loading, nested data.scale; exact resumption of both loaders."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hybridsweep.data.datamodule import EpochResumableLoader
from hybridsweep.data.sampler import HybridBatchSampler
from hybridsweep.data.shards import read_manifest, write_shards
from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches, select_shards

SEED, BATCH = 7, 24


def collate_ids(rows: list[dict]) -> dict:
    """A collate that keeps what identifies a batch (module level: workers pickle it)."""
    return {"pairs": [pair(r) for r in rows], "is_mono": rows[0]["is_mono"]}


def pair(row: dict) -> list:
    return [row["qid"], row["q_lang"], row["p_lang"], row["question"], row["passage"]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, shards=4, people_per_shard=20, languages=["en", "de", "ru"], seed=3)
    return root


def naive_batches(streams: dict[str, list[dict]], batch_size: int, keys: list[str]):
    """Reference: per step, the step's stream in stored order, repeated ids deferred, deferred first."""
    state = {name: (list(rows), [], [0]) for name, rows in streams.items()}
    for key in keys:
        rows, deferred, cursor = state[key]
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
        yield key != "cross", [pair(r) for r in batch]


def reference_streams(mono_rows: list[dict], cross_rows: list[dict], mono_batches: str) -> dict[str, list[dict]]:
    """The rows of each stream, in stored order: one monolingual stream, or one per question language."""
    if mono_batches == "mixed":
        return {"mono": mono_rows, "cross": cross_rows}
    languages = {r["q_lang"] for r in mono_rows}
    per_language = {f"mono/{lang}": [r for r in mono_rows if r["q_lang"] == lang] for lang in languages}
    return {"cross": cross_rows, **per_language}


def reference_keys(types: list[bool], got: list[tuple[bool, list]], mono_batches: str) -> list[str]:
    """The stream of each step: the type from the reference draws, and for per-language batches the
    language the batch is in (its draw is tested for frequency elsewhere, not replayed here)."""
    if mono_batches == "mixed":
        return ["mono" if t else "cross" for t in types]
    return [f"mono/{pairs[0][1]}" if t else "cross" for t, (_, pairs) in zip(types, got)]


def in_memory_rows(root, pool, lane=0, lanes=1, id_limit=None):
    """A pool's rows loaded wholly in memory by pyarrow (not datasets), shards of one lane, stored order."""
    files = [str(root / s["path"]) for s in read_manifest(root)["pools"][pool]][lane::lanes]
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    return [r for r in rows if id_limit is None or r["qid_pos"] < id_limit]


def naive_types(mix_ratio, steps):
    rng = np.random.default_rng(SEED)
    return [bool(rng.random() < mix_ratio) for _ in range(steps)]


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
def test_streamed_batches_equal_in_memory(shards, mono_batches):
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED, mono_batches=mono_batches)
    mono, cross = in_memory_rows(shards, "mono"), in_memory_rows(shards, "cross")
    assert stream.mix_ratio == len(mono) / (len(mono) + len(cross))
    assert len(stream) == (len(mono) + len(cross)) // BATCH
    steps = 2 * len(stream)  # two epochs: the pools wrap around into their next pass
    loader = ResumableLoader(stream)
    got = [(b["is_mono"], b["pairs"]) for b in itertools.chain(loader, loader)]
    keys = reference_keys(naive_types(stream.mix_ratio, steps), got, mono_batches)
    assert got == list(naive_batches(reference_streams(mono, cross, mono_batches), BATCH, keys))
    assert {m for m, _ in got} == {True, False}


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
@pytest.mark.parametrize("rank,world_size,workers", [(0, 1, 2), (1, 2, 1)])
def test_ranks_and_workers_read_disjoint_shards(shards, rank, world_size, workers, mono_batches):
    """Each rank/worker lane streams its own shards; step s keeps the global type sequence."""
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED,
                                 rank=rank, world_size=world_size, mono_batches=mono_batches)
    got = [(b["is_mono"], b["pairs"]) for b in ResumableLoader(stream, num_workers=workers)]
    types = naive_types(stream.mix_ratio, len(stream))
    keys = reference_keys(types, got, mono_batches)
    lanes = world_size * workers
    expected = {}
    for lane in range(workers):
        global_lane = rank * workers + lane
        lane_streams = reference_streams(in_memory_rows(shards, "mono", global_lane, lanes),
                                         in_memory_rows(shards, "cross", global_lane, lanes), mono_batches)
        expected[lane] = list(naive_batches(lane_streams, BATCH // world_size, keys[lane::workers]))
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
        assert sum(s["ids"] for s in selected_small[pool]) == len({r["qid"] for r in expected})
        for language in ("en", "de", "ru"):
            own = [r for r in expected if r["q_lang"] == language]
            assert sum(s["languages"][language]["rows"] for s in selected_small[pool]) == len(own)
            assert sum(s["languages"][language]["ids"] for s in selected_small[pool]) == len({r["qid"] for r in own})
    small_pairs = {p for b in ResumableLoader(StreamedPairBatches(shards, collate_ids, 8, "mono", seed=1, scale=small))
                   for p in map(tuple, b["pairs"])}
    large_pairs = {p for b in ResumableLoader(StreamedPairBatches(shards, collate_ids, 8, "mono", seed=1, scale=large))
                   for p in map(tuple, b["pairs"])}
    assert small_pairs < large_pairs
    allowed = {tuple(pair(r)) for r in in_memory_rows(shards, "mono", id_limit=n_small)}
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


def _streamed_loader(shards, workers, mono_batches):
    stream = StreamedPairBatches(shards, collate_ids, BATCH, "hybrid", "auto", seed=SEED, scale=0.5,
                                 mono_batches=mono_batches)
    return ResumableLoader(stream, num_workers=workers)


def _in_memory_sampler(shards, mono_batches):
    """The same pairs loaded whole and their :class:`HybridBatchSampler` (the default data path)."""
    rows = [dict(r, is_mono=pool == "mono") for pool in ("mono", "cross") for r in in_memory_rows(shards, pool)]
    sampler = HybridBatchSampler([r["qid"] for r in rows], [r["is_mono"] for r in rows], BATCH, "hybrid", "auto",
                                 seed=SEED, languages=[r["q_lang"] for r in rows], mono_batches=mono_batches)
    return rows, sampler


def _in_memory_loader(shards, workers, mono_batches):
    return EpochResumableLoader(*_in_memory_sampler(shards, mono_batches), collate_ids, num_workers=workers)


LOADERS = {"streamed": _streamed_loader, "in_memory": _in_memory_loader}


def _run(shards, tmp_path, max_steps, workers, mono_batches, source, save_at, ckpt_path=None):
    module = _RecordBatches()
    loader = LOADERS[source](shards, workers, mono_batches)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=save_at, save_top_k=-1)])
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module.seen


def test_in_memory_training_draws_each_epoch_from_its_own_seed(shards, tmp_path):
    # Lightning sets the epoch only on a loader's sampler, never on a batch sampler: the loader
    # must, or every epoch repeats epoch 0. Reference: the sampler iterated by hand per epoch.
    rows, sampler = _in_memory_sampler(shards, "per_language")
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append([[pair(rows[i]) for i in batch] for batch in sampler])
    assert epochs[0] != epochs[1] != epochs[2]
    seen = _run(shards, tmp_path, 3 * len(sampler), 0, "per_language", "in_memory", len(sampler))
    assert [pairs for _, pairs in seen] == epochs[0] + epochs[1] + epochs[2]


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(LOADERS))
@pytest.mark.parametrize("mono_batches,workers", [("per_language", 0), ("per_language", 2), ("mixed", 0)])
def test_resumed_run_continues_where_it_stopped(shards, tmp_path, mono_batches, workers, source):
    epoch = len(LOADERS[source](shards, 0, mono_batches))
    total = epoch + 6  # runs into the second epoch
    stop = epoch - 6   # a checkpoint in the middle of the first epoch
    whole = _run(shards, tmp_path / "whole", total, workers, mono_batches, source, stop)
    checkpoint = next((tmp_path / "whole").glob(f"*step={stop}.ckpt"))
    resumed = _run(shards, tmp_path / "resumed", total, workers, mono_batches, source, stop, ckpt_path=str(checkpoint))
    assert [s for s, _ in whole] == list(range(total))
    # The second epoch's batches differ from the first's, so a resume that restarted the epoch
    # (and trained its first batches again) could not match.
    assert whole[epoch][1] != whole[0][1]
    assert resumed == whole[stop:]
    if mono_batches == "per_language":
        # The resumed steps include monolingual batches, each in one language.
        resumed_mono = [{p[1] for p in pairs} for _, pairs in resumed if pairs[0][1] == pairs[0][2]]
        assert resumed_mono and all(len(languages) == 1 for languages in resumed_mono)


def test_resuming_with_other_readers_or_mono_batches_is_refused(shards):
    loader = ResumableLoader(StreamedPairBatches(shards, collate_ids, BATCH, seed=SEED))
    next(iter(loader))
    other = ResumableLoader(StreamedPairBatches(shards, collate_ids, BATCH, seed=SEED), num_workers=2)
    other.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="written by 1 ranks x 1 dataloader workers"):
        next(iter(other))
    mixed = ResumableLoader(StreamedPairBatches(shards, collate_ids, BATCH, seed=SEED, mono_batches="mixed"))
    mixed.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="written with mono_batches='per_language'; resume with the same, not 'mixed'"):
        next(iter(mixed))


def test_bad_shard_directory_and_too_many_readers_are_named(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        StreamedPairBatches(tmp_path, collate_ids, BATCH)
    # 4 shards per pool, 8 readers: lane 4 has no shard at all.
    with pytest.raises(ValueError, match="0 distinct question ids that reader lane 4 holds in the cross-lingual "
                                         "pool at this data.scale: 8 ranks x 1 dataloader workers = 8 reader lanes "
                                         "split the pool's 4 shards"):
        StreamedPairBatches(shards, collate_ids, BATCH, world_size=8)
    with pytest.raises(ValueError, match="multiple of the 5 training processes"):
        StreamedPairBatches(shards, collate_ids, BATCH, world_size=5)


def test_shard_directory_without_languages_is_refused_with_how_to_rewrite(shards, tmp_path):
    """A directory written before shards stored q_lang (manifest without a format) is named."""
    manifest = json.loads((shards / "manifest.json").read_text())
    del manifest["format"]
    for pool in manifest["pools"].values():
        for shard in pool:
            del shard["ids"], shard["languages"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as error:
        StreamedPairBatches(tmp_path, collate_ids, BATCH)
    message = str(error.value)
    assert str(tmp_path / "manifest.json") in message and "q_lang" in message
    assert "python -m hybridsweep.data.shards --out NEW_DIR --shards 4 --languages de en ru --seed 3" in message


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail, rather than hang, when the block runs past ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("rank,world_size,workers,batch", [(1, 2, 0, 48), (0, 1, 2, 24)])
def test_a_lane_with_too_few_distinct_ids_is_refused_not_hung(shards, rank, world_size, workers, batch):
    """72 question ids: shard 0 holds 60, shard 1 is cut to 12. With 2 reader lanes, lane 1 holds
    12 distinct ids and cannot fill a rank's 24 pairs: this used to defer rows for ever."""
    share = batch // world_size
    with deadline(60), pytest.raises(ValueError) as error:
        stream = StreamedPairBatches(shards, collate_ids, batch, "hybrid", "auto", seed=SEED, scale=72,
                                     rank=rank, world_size=world_size, mono_batches="mixed")
        next(iter(ResumableLoader(stream, num_workers=workers)))
    message = str(error.value)
    assert f"batch_size={batch} ({share} pairs per rank over {world_size} ranks)" in message
    assert "12 distinct question ids that reader lane 1 holds" in message
    assert f"{world_size} ranks x {max(workers, 1)} dataloader workers = 2 reader lanes" in message
