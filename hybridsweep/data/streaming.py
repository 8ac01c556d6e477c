"""Streamed training pairs: sharded Parquet read through ``datasets`` streaming, resumable.

The batch logic is the in-memory sampler's (:class:`PoolBatches` per stream, :class:`HybridBatches`
and :func:`step_streams` for the stream of each step, see :mod:`hybridsweep.sampling`); only the
pass order differs: a streamed stream is read in stored order (the shard writer shuffled it
once), pass after pass, holding one read chunk and the deferred pairs, never the pool, so memory
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
from hybridsweep.data.datamodule import PairCollator, ResumableTrainingData, ValidationBatches, sampler_options
from hybridsweep.data.parallel_qa import ParallelQA, scale_count, split_question_ids
from hybridsweep.data.shards import POOLS, pair_counts, read_manifest, shard_path
from hybridsweep.model import TextTokenizer
from hybridsweep.sampling import (
    CROSS,
    LANGUAGE_WEIGHTS,
    MONO,
    MONO_BATCHES,
    HybridBatches,
    LanguageWeights,
    MonoBatches,
    PoolBatches,
    Strategy,
    check_choice,
    check_divisible,
    describe_stream,
    drawn_streams,
    language_weights,
    mono_stream,
    resolve_mix_ratio,
    step_streams,
    stream_parts,
    used_pools,
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
        check_divisible(batch_size, world_size)
        check_choice("mono_batches", mono_batches, MONO_BATCHES)
        check_choice("mono_language_weights", mono_language_weights, LANGUAGE_WEIGHTS)
        self.collate, self.batch_size, self.seed = collate, batch_size, seed
        self.rank, self.world_size, self.mono_batches = rank, world_size, mono_batches
        self.n_ids, self.shards = select_shards(root, scale)
        self.rows = {pool: sum(s["rows"] for s in self.shards[pool]) for pool in POOLS}
        self.mix_ratio = resolve_mix_ratio(strategy, mix_ratio, self.rows["mono"], self.rows["cross"])
        self.steps_per_epoch = sum(self.rows[p] for p in used_pools(self.mix_ratio)) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the {sum(self.rows.values())} streamed pairs")
        # The streams a lane holds, by name (see hybridsweep.sampling.step_streams).
        self.streams = [CROSS]
        self.language_weights: dict[str, float] | None = None
        if mono_batches == "mixed":
            self.streams.append(MONO)
        else:
            sizes: dict[str, int] = {}
            for shard in self.shards["mono"]:
                for language, counts in shard["languages"].items():
                    sizes[language] = sizes.get(language, 0) + counts["rows"]
            sizes = {language: rows for language, rows in sizes.items() if rows}
            self.streams += [mono_stream(language) for language in sorted(sizes)]
            if sizes:
                self.language_weights = language_weights(sizes, mono_language_weights)
        self.check_lanes(workers=1)
        self.start: dict = {"step": 0, "lanes": {}}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def check_lanes(self, workers: int) -> None:
        """Refuse reader lanes that cannot fill their share of a batch without repeating an id.

        With ``world_size`` ranks x ``workers`` dataloader workers, lane l reads the shards
        ``l, l + lanes, ...`` of a pool and fills ``batch_size / world_size`` pairs of every
        batch it serves, of whichever stream the step draws; so each drawn stream needs at least
        that many distinct question ids in every lane's shards (ids never span shards).
        """
        lanes, share = self.world_size * workers, self.batch_size // self.world_size
        for stream in drawn_streams(self.mix_ratio, self.streams):
            pool, language = stream_parts(stream)
            shards = self.shards[pool]
            per_lane = [distinct_ids(shards[lane::lanes], language) for lane in range(lanes)]
            lane = int(np.argmin(per_lane))
            if per_lane[lane] < share:
                raise ValueError(
                    f"batch_size={self.batch_size} ({share} pairs per rank over {self.world_size} ranks) exceeds the "
                    f"{per_lane[lane]} distinct question ids that reader lane {lane} holds in the "
                    f"{describe_stream(stream)} at this data.scale: {self.world_size} ranks x {workers} dataloader "
                    f"workers = {lanes} reader lanes split the pool's {len(shards)} shards, and each lane fills its "
                    f"rank's share of a batch from its own shards, so it cannot avoid repeating a question id; "
                    f"lower batch_size or the readers (ranks, data.num_workers), raise data.scale, or write shards "
                    f"with more question ids each"
                    + ("; or use mono_batches='mixed'" if language is not None else "")
                )

    def lane_files(self, pool: str, lane: int, lanes: int) -> list[str]:
        return [s["path"] for s in self.shards[pool]][lane::lanes]

    def plan(self, start: int, stride: int) -> Iterator[str]:
        """The streams of steps ``start, start + stride, ...``: the same in every rank and lane."""
        type_rng = np.random.default_rng(self.seed)
        return step_streams(self.mix_ratio, self.language_weights, type_rng, type_rng.spawn(1)[0], start, stride)

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
        end = (first // self.steps_per_epoch + 1) * self.steps_per_epoch
        # The worker that serves step `first` is worker 0 (the loader asks workers in turn).
        lane = (first + worker_id) % workers
        global_lane, lanes = self.rank * workers + lane, self.world_size * workers
        saved = self.start["lanes"].get(str(lane), {})
        pools, streams, share = {}, {}, self.batch_size // self.world_size
        for name in self.streams:
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
                          for n in self.streams},
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


class StreamingDataModule(ResumableTrainingData):
    """Serves the training pairs of a shard directory (``data.shards``) to each rank, streamed.

    ``corpus`` (a small in-memory corpus, which also trains the tokenizer) provides the
    validation batches: its first ``validation`` question ids, as :class:`PairDataModule` holds
    them out; the shards are never validated on.
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
        super().__init__()
        self.arguments = dict(root=shards, collate=PairCollator(tokenizer), batch_size=batch_size,
                              scale=scale, seed=seed, **sampler_options(sampling))
        self.num_workers = num_workers
        self.batches = StreamedPairBatches(**self.arguments)
        _, validation_ids = split_question_ids(corpus.question_ids, 1.0, subset_seed, validation)
        self.validation = (ValidationBatches(corpus, validation_ids, validation_batch_size, tokenizer)
                           if validation_ids else None)

    @property
    def stats(self) -> dict[str, float]:
        return {
            "data.pairs_mono": self.batches.rows["mono"],
            "data.pairs_cross": self.batches.rows["cross"],
            "data.question_ids": self.batches.n_ids,
            "data.validation_pairs": len(self.validation.pairs) if self.validation else 0,
            "sampling.mix_ratio_effective": self.batches.mix_ratio,
            "sampling.steps_per_epoch": len(self.batches),
        }

    def train_dataloader(self) -> ResumableLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            self.batches = StreamedPairBatches(
                **self.arguments, rank=self.trainer.global_rank, world_size=self.trainer.world_size
            )
        return self.resumable(ResumableLoader(self.batches, self.num_workers))

    def val_dataloader(self):
        if self.validation is None:
            return []
        return self.validation.loader(*((self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)))
