"""Streamed training pairs: sharded Parquet read through ``datasets`` streaming, resumable.

The batch logic is the in-memory sampler's (:class:`SamplingRule` for the checks, the mixing
ratio and the language weights, :class:`PoolBatches` per stream, :class:`HybridBatches` and the
step plan, see :mod:`hybridsweep.sampling`); only the pass order and the random layout differ
(that module's docstring says how and why): a streamed stream is read in stored order (the shard
writer shuffled it once), pass after pass, holding one read chunk and the deferred pairs, never the pool, so memory
does not grow with the data. Under ``mono_batches="per_language"`` each language's stream reads
the monolingual shards and keeps the rows of its question language (``q_lang``), so a
monolingual batch is in one language while the shards stay shared by all languages.

Work split. With W ranks and N dataloader workers per rank there are W*N *lanes*; lane l reads the
shards ``l, l + W*N, ...`` of each pool and serves the global steps s with ``s mod N`` equal to
its index within the rank. Each lane fills its rank's ``batch_size / W`` share of every batch
alone, from its own shards: the ranks hold disjoint pairs (a question id lives in one shard), and
since every lane draws step s's type and language from the same streams (:func:`step_streams`),
all ranks train on the same batch type, and for a monolingual step the same language, at each
step. So every stream drawn from must hold at least ``batch_size / W`` distinct question ids in
the shards of *every* lane (:meth:`StreamedPairBatches.check_lanes`), or a lane could never fill
its share.

Resumption. Every batch carries its lane's position (per stream: the ``datasets`` state at the
start of the current read chunk, the offset in it, the deferred pairs) and the global step; the
loader keeps those of the batches the training loop has consumed and hands them to Lightning as
its ``state_dict``. A resumed run restarts every lane's streams exactly there: no shard before
the position is read again, and the steps' types and languages, functions of the seed and the
step, are those of the uninterrupted run.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import datasets
import fsspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hybridsweep.callbacks import loader_generator
from hybridsweep.data.datamodule import PairCollator, TrainingPairsModule, sampler_options
from hybridsweep.data.parallel_qa import ParallelQA, scale_count
from hybridsweep.data.shards import POOLS, pair_counts, read_manifest, shard_path
from hybridsweep.model import TextTokenizer
from hybridsweep.sampling import (
    CROSS,
    HybridBatches,
    LanguageWeights,
    MonoBatches,
    PoolBatches,
    SamplingRule,
    Strategy,
    describe_stream,
    run_generators,
    stream_parts,
)

READ_CHUNK = 1024
"""Rows per read from a shard stream (the unit of the saved position)."""
ROW_COLUMNS = ["qid", "q_lang", "p_lang", "question", "passage"]
"""The columns of a pair handed to the collate function."""


def select_shards(root: str | Path, scale: float) -> tuple[int, dict[str, list[dict]]]:
    """The first ``scale`` of the question ids (a fraction, or a count) and each pool's shards for it.

    Returns ``(n_ids, {pool: [shard entry]})`` with the entry's counts (``rows``, ``ids``,
    ``languages``, see :mod:`hybridsweep.data.shards`) taken within the prefix. Only the shards
    that hold a selected id are listed; a shard cut by the prefix is counted by reading its
    ``qid_pos``, ``qid`` and ``q_lang`` columns alone. ``root`` is a path or an fsspec URL.
    """
    manifest = read_manifest(root)
    n_ids = scale_count(manifest["question_ids"], scale)
    selected: dict[str, list[dict]] = {}
    for pool in POOLS:
        selected[pool] = []
        for shard in manifest["pools"][pool]:
            if shard["qid_start"] >= n_ids:
                break
            entry = dict(shard, path=shard_path(root, shard["path"]))
            if shard["qid_start"] + shard["qid_count"] > n_ids:
                with fsspec.open(entry["path"], "rb") as file:
                    table = pq.read_table(file, columns=["qid_pos", "qid", "q_lang"])
                entry.update(pair_counts(table.filter(pc.less(table["qid_pos"], n_ids))))
            selected[pool].append(entry)
    return n_ids, selected


def distinct_ids(shards: list[dict], language: str | None) -> int:
    """Distinct question ids of shards (ids never span shards), of one question language or all."""
    return sum((s if language is None else s["languages"].get(language, {"ids": 0}))["ids"] for s in shards)


class StreamedPool:
    """One lane's rows of one stream: its shards through ``datasets`` streaming, pass after pass.

    ``language`` keeps only the rows of that question language (None: all rows). ``position`` is
    ``{"dataset": datasets state at the start of the current chunk (None: start of a pass),
    "offset": rows of that chunk already read, "passes": passes completed}``.
    """

    def __init__(self, files: list[str], id_limit: int, position: dict | None = None, language: str | None = None):
        self.files, self.id_limit, self.language = files, id_limit, language
        self.position = position or {"dataset": None, "offset": 0, "passes": 0}

    def _kept(self, chunk) -> np.ndarray:
        """Offsets of a chunk's rows to use: within the id prefix, in the stream's language."""
        # The shard cut by data.scale holds ids beyond the prefix: they are not read on.
        keep = pc.less(chunk["qid_pos"], self.id_limit)
        if self.language is not None:
            keep = pc.and_(keep, pc.equal(chunk["q_lang"], self.language))
        return np.flatnonzero(keep.to_numpy())

    def next_pass(self) -> Iterator[dict]:
        stream = datasets.load_dataset("parquet", data_files=self.files, split="train", streaming=True)
        stream = stream.select_columns(ROW_COLUMNS + ["qid_pos"]).with_format("arrow")
        chunk_start, skip = self.position["dataset"], self.position["offset"]
        if chunk_start is not None:
            stream.load_state_dict(chunk_start)
        for chunk in stream.iter(batch_size=READ_CHUNK):
            self.position["dataset"] = chunk_start
            offsets = self._kept(chunk)
            offsets = offsets[offsets >= skip]
            # Only the kept rows become Python objects: a language's stream skips the others cheaply.
            for offset, row in zip(offsets.tolist(), chunk.select(ROW_COLUMNS).take(offsets).to_pylist()):
                self.position["offset"] = offset + 1
                yield row
            chunk_start, skip = stream.state_dict(), 0
            self.position = {"dataset": chunk_start, "offset": 0, "passes": self.position["passes"]}
        self.position = {"dataset": None, "offset": 0, "passes": self.position["passes"] + 1}


class StreamedPairBatches(IterableDataset):
    """Collated training batches of one rank, streamed from a shard directory.

    Yields ``len(self)`` batches per iteration (one epoch of ``(pairs of the pools used) //
    batch_size`` steps): each the rank's share of one global batch of ``batch_size`` pairs, all
    monolingual or all cross-lingual, under the rules of :mod:`hybridsweep.sampling`:
    ``mono_batches="per_language"`` (default; the paper's X-X) puts every monolingual batch in
    one language drawn per step with ``mono_language_weights`` (``uniform`` or ``proportional``
    to the language's monolingual pairs within ``scale``), ``"mixed"`` (LAReQA's X-X) mixes
    languages within it; cross-lingual batches mix language pairs (question in X, passage in
    Y != X, per pair). Streams that run out start a new pass. ``start`` (set by
    :class:`ResumableLoader`) is the position to continue from.

    Every stream drawn from must hold, in each reader lane's shards, at least ``batch_size /
    world_size`` distinct question ids (:meth:`check_lanes`): checked for ``world_size`` lanes
    here, for ranks x dataloader workers by :class:`ResumableLoader` and when iterating.
    """

    def __init__(
        self,
        root: str | Path,
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        strategy: Strategy = "hybrid",
        mix_ratio: float | str = "auto",
        scale: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        *,
        mono_batches: MonoBatches = "per_language",
        mono_language_weights: LanguageWeights = "uniform",
    ):
        super().__init__()
        self.collate, self.batch_size, self.seed = collate, batch_size, seed
        self.rank, self.world_size, self.mono_batches = rank, world_size, mono_batches
        self.n_ids, self.shards = select_shards(root, scale)
        self.rows = {pool: sum(s["rows"] for s in self.shards[pool]) for pool in POOLS}
        sizes: dict[str, int] = {}
        for shard in self.shards["mono"]:
            for language, counts in shard["languages"].items():
                sizes[language] = sizes.get(language, 0) + counts["rows"]
        self.rule = SamplingRule.build(batch_size, world_size, strategy, mix_ratio, mono_batches, mono_language_weights,
                                       self.rows, sizes)
        self.check_lanes(workers=1)
        self.start: dict = {"step": 0, "lanes": {}}

    @property
    def mix_ratio(self) -> float:
        return self.rule.mix_ratio

    @property
    def language_weights(self) -> dict[str, float] | None:
        return self.rule.language_weights

    def __len__(self) -> int:
        return self.rule.steps_per_epoch

    def lane_ids(self, stream: str, lanes: int) -> list[int]:
        """Distinct question ids of ``stream`` in the shards of each of ``lanes`` reader lanes."""
        pool, language = stream_parts(stream)
        return [distinct_ids(self.shards[pool][lane::lanes], language) for lane in range(lanes)]

    def check_lanes(self, workers: int) -> None:
        """Refuse reader lanes that cannot fill their share of a batch without repeating an id.

        With ``world_size`` ranks x ``workers`` dataloader workers, lane l reads the shards
        ``l, l + lanes, ...`` of a pool and fills ``batch_size / world_size`` pairs of every
        batch it serves, of whichever stream the step draws; so each drawn stream needs at least
        that many distinct question ids in every lane's shards (ids never span shards).
        """
        lanes, share = self.world_size * workers, self.batch_size // self.world_size

        def refusal(stream: str, fewest: int) -> str:
            lane = self.lane_ids(stream, lanes).index(fewest)
            return (
                f"batch_size={self.batch_size} ({share} pairs per rank over {self.world_size} ranks) exceeds the "
                f"{fewest} distinct question ids that reader lane {lane} holds in the "
                f"{describe_stream(stream)} at this data.scale: {self.world_size} ranks x {workers} dataloader "
                f"workers = {lanes} reader lanes split the pool's {len(self.shards[stream_parts(stream)[0]])} shards, "
                f"and each lane fills its rank's share of a batch from its own shards, so it cannot avoid repeating a "
                f"question id; lower batch_size or the readers (ranks, data.num_workers), raise data.scale, or write "
                f"shards with more question ids each"
                + ("; or use mono_batches='mixed'" if stream_parts(stream)[1] is not None else "")
            )

        self.rule.check(share, lambda stream: min(self.lane_ids(stream, lanes)), refusal)

    def lane_files(self, pool: str, lane: int, lanes: int) -> list[str]:
        return [s["path"] for s in self.shards[pool]][lane::lanes]

    def plan(self, start: int, stride: int) -> Iterator[str]:
        """The streams of steps ``start, start + stride, ...``: the same in every rank and lane."""
        return self.rule.plan(*run_generators(self.seed), start, stride)

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        readers = [self.world_size, workers]
        if self.start.get("readers", readers) != readers:
            raise ValueError(
                f"the saved data position was written by {self.start['readers'][0]} ranks x "
                f"{self.start['readers'][1]} dataloader workers; resume with the same, not {readers[0]} x {readers[1]}"
            )
        if self.start.get("mono_batches", self.mono_batches) != self.mono_batches:
            raise ValueError(f"the saved data position was written with mono_batches={self.start['mono_batches']!r}; "
                             f"resume with the same, not {self.mono_batches!r}")
        self.check_lanes(workers)
        first = self.start["step"]
        end = (first // len(self) + 1) * len(self)
        # The worker that serves step `first` is worker 0 (the loader asks workers in turn).
        lane = (first + worker_id) % workers
        global_lane, lanes = self.rank * workers + lane, self.world_size * workers
        saved = self.start["lanes"].get(str(lane), {})
        pools, streams, share = {}, {}, self.batch_size // self.world_size
        for name in self.rule.streams:
            pool, language = stream_parts(name)
            state = saved.get(name, {})
            files = self.lane_files(pool, global_lane, lanes)
            pools[name] = StreamedPool(files, self.n_ids, state.get("position"), language)
            streams[name] = PoolBatches(pools[name].next_pass, lambda row: row["qid"], share)
            streams[name].deferred = deque(state.get("deferred", []))
        batches = HybridBatches(streams, self.plan(first + worker_id, workers))
        for step in range(first + worker_id, end, workers):
            name, rows = batches.next_batch()
            batch = self.collate([dict(row, is_mono=name != CROSS) for row in rows])
            batch["position"] = {
                "step": step + 1, "readers": readers, "mono_batches": self.mono_batches, "lane": str(lane),
                "state": {n: {"position": copy.deepcopy(pools[n].position), "deferred": list(streams[n].deferred)}
                          for n in self.rule.streams},
            }
            yield batch


class ResumableLoader(DataLoader):
    """A loader of :class:`StreamedPairBatches` whose ``state_dict`` is the consumed data position.

    Checkpoints keep ``state_dict()`` (see :class:`~hybridsweep.data.datamodule.ResumableTrainingData`),
    restored by ``load_state_dict``. The
    loader has a length, so Lightning fetches no batch ahead of the step it runs: the position
    after the last batch handed out is the position after the last step trained. The readers'
    distinct-id check (:meth:`StreamedPairBatches.check_lanes`) runs here, before any worker starts.
    """

    def __init__(self, dataset: StreamedPairBatches, num_workers: int = 0):
        dataset.check_lanes(max(num_workers, 1))
        super().__init__(dataset, batch_size=None, num_workers=num_workers, generator=loader_generator())
        self.position = copy.deepcopy(dataset.start)

    def __iter__(self) -> Iterator[dict]:
        self.dataset.start = self.position
        for batch in super().__iter__():
            position = batch.pop("position")
            lanes = dict(self.position["lanes"], **{position["lane"]: position["state"]})
            self.position = {"step": position["step"], "readers": position["readers"],
                             "mono_batches": position["mono_batches"], "lanes": lanes}
            yield batch

    def state_dict(self) -> dict:
        return copy.deepcopy(self.position)

    def load_state_dict(self, state_dict: dict) -> None:
        self.position = copy.deepcopy(state_dict)


class StreamingDataModule(TrainingPairsModule):
    """Serves the training pairs of a shard directory (``data.shards``) to each rank, streamed.

    ``corpus`` (a small in-memory corpus, which also trains the tokenizer) provides the
    validation batches (:class:`TrainingPairsModule`); the shards are never validated on.
    """

    def __init__(
        self,
        shards: str,
        corpus: ParallelQA,
        tokenizer: TextTokenizer,
        batch_size: int,
        sampling: Mapping,
        scale: float = 1.0,
        seed: int = 0,
        subset_seed: int = 0,
        validation: float = 0.0,
        validation_batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__(corpus, tokenizer, subset_seed, validation, validation_batch_size, num_workers)
        self.arguments = dict(root=shards, collate=PairCollator(tokenizer), batch_size=batch_size,
                              scale=scale, seed=seed, **sampler_options(sampling))
        self.batches = StreamedPairBatches(**self.arguments)
        self.rule, self.question_ids = self.batches.rule, self.batches.n_ids

    def train_dataloader(self) -> ResumableLoader:
        rank, world_size = self.rank()
        if world_size > 1:
            self.batches = StreamedPairBatches(**self.arguments, rank=rank, world_size=world_size)
        return self.resumable(ResumableLoader(self.batches, self.num_workers))
