"""Streamed training pairs: sharded Parquet read through ``datasets`` streaming, resumable.

The batch logic is the in-memory sampler's (:class:`PoolBatches` per pool, :class:`HybridBatches`
for the type of each step); only the pass order differs: a streamed pool is read in stored order
(the shard writer shuffled it once), pass after pass, holding one read chunk and the deferred
pairs, never the pool, so memory does not grow with the data.

Work split. With W ranks and N dataloader workers per rank there are W*N *lanes*; lane l reads the
shards ``l, l + W*N, ...`` of each pool and serves the global steps s with ``s mod N`` equal to
its index within the rank. Each lane fills its rank's ``batch_size / W`` share, so the ranks hold
disjoint pairs (a question id lives in one shard) and, since every lane draws step s's type from
the same stream (:func:`step_types`), all ranks train on the same batch type at each step.

Resumption. Every batch carries its lane's position (the ``datasets`` state at the start of the
current read chunk, the offset in it, the deferred pairs) and the global step; the loader keeps
those of the batches the training loop has consumed and hands them to Lightning as its
``state_dict``. A resumed run restarts every lane exactly there: no shard before the position is
read again.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hybridsweep.data.datamodule import PairCollator, ValidationBatches, sampler_options
from hybridsweep.data.parallel_qa import ParallelQA, scale_count, split_question_ids
from hybridsweep.data.shards import POOLS, read_manifest
from hybridsweep.model import TextTokenizer
from hybridsweep.sampling import (
    HybridBatches, PoolBatches, Strategy, check_divisible, resolve_mix_ratio, step_types,
)

READ_CHUNK = 1024
"""Rows per read from a shard stream (the unit of the saved position)."""
COLUMNS = ["qid", "qid_pos", "question", "passage"]


def select_shards(root: str | Path, scale: float) -> tuple[int, dict[str, list[dict]]]:
    """The first ``scale`` of the question ids (a fraction, or a count) and each pool's shards for it.

    Returns ``(n_ids, {pool: [shard entry with 'rows' counted within the prefix]})``. Only the
    shards that hold a selected id are listed; a shard cut by the prefix is counted by reading its
    ``qid_pos`` column alone.
    """
    root = Path(root)
    manifest = read_manifest(root)
    n_ids = scale_count(manifest["question_ids"], scale)
    selected: dict[str, list[dict]] = {}
    for pool in POOLS:
        selected[pool] = []
        for shard in manifest["pools"][pool]:
            if shard["qid_start"] >= n_ids:
                break
            entry = dict(shard, path=str(root / shard["path"]))
            if shard["qid_start"] + shard["qid_count"] > n_ids:
                positions = pq.read_table(entry["path"], columns=["qid_pos"])["qid_pos"]
                entry["rows"] = pc.sum(pc.less(positions, n_ids)).as_py() or 0
            selected[pool].append(entry)
    return n_ids, selected


class StreamedPool:
    """One lane's rows of one pool: its shards through ``datasets`` streaming, pass after pass.

    ``position`` is ``{"dataset": datasets state at the start of the current chunk (None: start
    of a pass), "offset": rows of that chunk already yielded, "passes": passes completed}``.
    """

    def __init__(self, files: list[str], id_limit: int, position: dict | None = None):
        self.files, self.id_limit = files, id_limit
        self.position = position or {"dataset": None, "offset": 0, "passes": 0}

    def next_pass(self) -> Iterator[dict]:
        stream = datasets.load_dataset("parquet", data_files=self.files, split="train", streaming=True)
        stream = stream.select_columns(COLUMNS)
        chunk_start, skip = self.position["dataset"], self.position["offset"]
        if chunk_start is not None:
            stream.load_state_dict(chunk_start)
        for chunk in stream.iter(batch_size=READ_CHUNK):
            self.position["dataset"] = chunk_start
            for offset in range(skip, len(chunk["qid"])):
                self.position["offset"] = offset + 1
                # The shard cut by data.scale holds ids beyond the prefix: they are not read on.
                if chunk["qid_pos"][offset] < self.id_limit:
                    yield {"qid": chunk["qid"][offset], "question": chunk["question"][offset],
                           "passage": chunk["passage"][offset]}
            chunk_start, skip = stream.state_dict(), 0
            self.position = {"dataset": chunk_start, "offset": 0, "passes": self.position["passes"]}
        self.position = {"dataset": None, "offset": 0, "passes": self.position["passes"] + 1}


class StreamedPairBatches(IterableDataset):
    """Collated training batches of one rank, streamed from a shard directory.

    Yields ``len(self)`` batches per iteration (one epoch): each the rank's share of one global
    batch of ``batch_size`` pairs, all monolingual or all cross-lingual. ``start`` (set by
    :class:`ResumableLoader`) is the position to continue from.
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
    ):
        super().__init__()
        check_divisible(batch_size, world_size)
        self.collate, self.batch_size, self.seed = collate, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.n_ids, self.shards = select_shards(root, scale)
        self.rows = {pool: sum(s["rows"] for s in self.shards[pool]) for pool in POOLS}
        self.mix_ratio = resolve_mix_ratio(strategy, mix_ratio, self.rows["mono"], self.rows["cross"])
        used = [p for p, share in (("mono", self.mix_ratio), ("cross", 1 - self.mix_ratio)) if share > 0]
        self.steps_per_epoch = sum(self.rows[p] for p in used) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the {sum(self.rows.values())} streamed pairs")
        self.used_pools = used
        self.start: dict = {"step": 0, "lanes": {}}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def lane_files(self, pool: str, lane: int, lanes: int) -> list[str]:
        # Every reader needs a shard of each pool it draws from, or its rank's batches would stop.
        if len(self.shards[pool]) < lanes and pool in self.used_pools:
            raise ValueError(
                f"the {pool}-lingual pool has {len(self.shards[pool])} shards at this data.scale, fewer than "
                f"the {lanes} readers (ranks x dataloader workers): write smaller shards or use fewer workers"
            )
        return [s["path"] for s in self.shards[pool]][lane::lanes]

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        readers = [self.world_size, workers]
        if self.start.get("readers", readers) != readers:
            raise ValueError(
                f"the saved data position was written by {self.start['readers'][0]} ranks x "
                f"{self.start['readers'][1]} dataloader workers; resume with the same, not {readers[0]} x {readers[1]}"
            )
        first = self.start["step"]
        end = (first // self.steps_per_epoch + 1) * self.steps_per_epoch
        # The worker that serves step `first` is worker 0 (the loader asks workers in turn).
        lane = (first + worker_id) % workers
        global_lane, lanes = self.rank * workers + lane, self.world_size * workers
        saved = self.start["lanes"].get(str(lane), {})
        pools, streams = {}, {}
        for pool in POOLS:
            state = saved.get(pool, {})
            pools[pool] = StreamedPool(self.lane_files(pool, global_lane, lanes), self.n_ids, state.get("position"))
            streams[pool] = PoolBatches(pools[pool].next_pass, lambda row: row["qid"], self.batch_size // self.world_size)
            streams[pool].deferred = deque(state.get("deferred", []))
        batches = HybridBatches(
            streams["mono"], streams["cross"],
            step_types(self.mix_ratio, np.random.default_rng(self.seed), first + worker_id, workers),
        )
        for step in range(first + worker_id, end, workers):
            is_mono, rows = batches.next_batch()
            batch = self.collate([dict(row, is_mono=is_mono) for row in rows])
            batch["position"] = {"step": step + 1, "readers": readers, "lane": str(lane), "state": {
                pool: {"position": copy.deepcopy(pools[pool].position), "deferred": list(streams[pool].deferred)}
                for pool in POOLS
            }}
            yield batch


class ResumableLoader(DataLoader):
    """A loader of :class:`StreamedPairBatches` whose ``state_dict`` is the consumed data position.

    Lightning saves ``state_dict()`` in checkpoints and calls ``load_state_dict`` on resume. The
    loader has a length, so Lightning fetches no batch ahead of the step it runs: the position
    after the last batch handed out is the position after the last step trained.
    """

    def __init__(self, dataset: StreamedPairBatches, num_workers: int = 0):
        super().__init__(dataset, batch_size=None, num_workers=num_workers)
        self.position = copy.deepcopy(dataset.start)

    def __iter__(self) -> Iterator[dict]:
        self.dataset.start = self.position
        for batch in super().__iter__():
            position = batch.pop("position")
            lanes = dict(self.position["lanes"], **{position["lane"]: position["state"]})
            self.position = {"step": position["step"], "readers": position["readers"], "lanes": lanes}
            yield batch

    def state_dict(self) -> dict:
        return copy.deepcopy(self.position)

    def load_state_dict(self, state_dict: dict) -> None:
        self.position = copy.deepcopy(state_dict)


class StreamingDataModule(L.LightningDataModule):
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
        return ResumableLoader(self.batches, self.num_workers)

    def val_dataloader(self):
        if self.validation is None:
            return []
        return self.validation.loader(*((self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)))
