"""Monolingual, cross-lingual and hybrid batch sampling for in-batch-negative training.

A *monolingual* batch holds only pairs whose question and passage share a language; a
*cross-lingual* batch only pairs whose languages differ. The hybrid strategy of Elmahdy et al.
(2024) draws the type of every step independently:

    P(batch is monolingual) = mix_ratio,     mix_ratio_auto = |mono pool| / (|mono pool| + |cross pool|)

so that, with ``auto``, each pool is consumed in proportion to its size, as the paper sets it
from the two datasets' sizes. ``mono`` and ``cross`` are the two baselines (mix_ratio 1 and 0).

Within a batch no question id appears twice: two pairs of the same id carry translations of the
same answer, and each would be the other's false negative under the in-batch softmax.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Generic, Literal, TypeVar

import numpy as np
from torch.utils.data import Sampler

Strategy = Literal["mono", "cross", "hybrid"]
Item = TypeVar("Item")
_END = object()


def resolve_mix_ratio(strategy: Strategy, mix_ratio: float | str, n_mono: int, n_cross: int) -> float:
    """The probability of a monolingual batch implied by a strategy and a configured ratio."""
    if strategy == "mono":
        return 1.0
    if strategy == "cross":
        return 0.0
    if mix_ratio == "auto":
        return n_mono / (n_mono + n_cross)
    return float(mix_ratio)


class PoolBatches(Generic[Item]):
    """An endless stream of batches from one pool: passes over the pool, no repeated id in a batch.

    ``next_pass()`` returns the items of the pool's next pass, in the order to use them (a fresh
    permutation for in-memory data, the stored order for streamed shards). A pair whose id already
    sits in the batch being filled is deferred to a later batch, so every pair of a pass is used
    once. Only the pass iterator and the deferred pairs are held, never the pool itself.
    """

    def __init__(self, next_pass: Callable[[], Iterable[Item]], key: Callable[[Item], Hashable], batch_size: int):
        self.next_pass, self.key, self.batch_size = next_pass, key, batch_size
        self.order: Iterator[Item] = iter(())
        self.deferred: deque[Item] = deque()

    def _place(self, item: Item, batch: list[Item], seen: set) -> None:
        if self.key(item) in seen:
            self.deferred.append(item)
        else:
            seen.add(self.key(item))
            batch.append(item)

    def next_batch(self) -> list[Item]:
        batch: list[Item] = []
        seen: set = set()
        # Deferred pairs go first so that none waits for ever; then the pass in order.
        for _ in range(len(self.deferred)):
            if len(batch) == self.batch_size:
                return batch
            self._place(self.deferred.popleft(), batch, seen)
        while len(batch) < self.batch_size:
            item = next(self.order, _END)
            if item is _END:
                self.order = iter(self.next_pass())
                continue
            self._place(item, batch, seen)
        return batch


def step_types(mix_ratio: float, rng: np.random.Generator, start: int = 0, stride: int = 1) -> Iterator[bool]:
    """Whether steps ``start``, ``start + stride``, ... are monolingual.

    Step s is monolingual when the s-th uniform draw of ``rng`` is below ``mix_ratio``. Draws of
    steps that are skipped are jumped over (PCG64 ``advance``: one 64-bit output per double), so a
    process that serves every ``stride``-th step, or resumes at step ``start``, sees exactly the
    types of one sequential stream.
    """
    position = 0
    step = start
    while True:
        rng.bit_generator.advance(step - position)
        yield bool(rng.random() < mix_ratio)
        position, step = step + 1, step + stride


class HybridBatches:
    """The batch-type logic shared by in-memory and streamed data.

    For each step it takes the step's type from ``types`` (see :func:`step_types`) and returns the
    next batch of the ``mono`` or the ``cross`` pool stream.
    """

    def __init__(self, mono: PoolBatches, cross: PoolBatches, types: Iterator[bool]):
        self.streams = {True: mono, False: cross}
        self.types = types

    def next_batch(self) -> tuple[bool, list]:
        is_mono = next(self.types)
        return is_mono, self.streams[is_mono].next_batch()


def rank_slice(global_batch: list[Item], rank: int, world_size: int) -> list[Item]:
    """Rank ``rank``'s share of a global batch: contiguous, disjoint, in rank order."""
    share = len(global_batch) // world_size
    return global_batch[rank * share:(rank + 1) * share]


def check_divisible(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {world_size} training processes")


class HybridBatchSampler(Sampler[list[int]]):
    """Yields batches of pair indices, each wholly monolingual or wholly cross-lingual.

    Args:
        ids: question id of every pair (pairs sharing an id never share a batch).
        is_mono: whether each pair is monolingual.
        batch_size: pairs per global batch (the number of in-batch negatives plus one).
        strategy: ``mono``, ``cross`` or ``hybrid``.
        mix_ratio: probability of a monolingual batch for ``hybrid``; a float in [0, 1] or ``auto``.
        seed: with the epoch, fixes every draw: the same (seed, epoch) yields the same batches.
        rank, world_size: under DDP every rank draws the same global batch and yields its
            ``batch_size / world_size`` slice, so all ranks share the type and hold disjoint pairs.

    An epoch has ``(pairs in the pools used) // batch_size`` steps: the pool of the strategy for
    ``mono``/``cross``, both pools for ``hybrid``.
    """

    def __init__(
        self,
        ids: Sequence,
        is_mono: Sequence[bool],
        batch_size: int,
        strategy: Strategy = "hybrid",
        mix_ratio: float | str = "auto",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        check_divisible(batch_size, world_size)
        is_mono = np.asarray(is_mono, dtype=bool)
        self.ids = list(ids)
        self.mono = np.flatnonzero(is_mono)
        self.cross = np.flatnonzero(~is_mono)
        self.batch_size, self.strategy, self.seed, self.epoch = batch_size, strategy, seed, 0
        self.rank, self.world_size = rank, world_size
        self.mix_ratio = resolve_mix_ratio(strategy, mix_ratio, len(self.mono), len(self.cross))
        used = {"mono": len(self.mono), "cross": len(self.cross)}
        if strategy == "hybrid":
            pools = [name for name, p in (("mono", self.mix_ratio), ("cross", 1 - self.mix_ratio)) if p > 0]
        else:
            pools = [strategy]
        for pool in pools:
            distinct = len({self.ids[i] for i in getattr(self, pool)})
            if distinct < batch_size:
                raise ValueError(
                    f"batch_size={batch_size} exceeds the {distinct} distinct question ids in the "
                    f"{pool}-lingual pool: a batch cannot avoid repeating a question id"
                )
        self.steps_per_epoch = sum(used[p] for p in pools) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the training pairs available")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        type_rng, mono_rng, cross_rng = rng.spawn(3)
        key = self.ids.__getitem__
        batches = HybridBatches(
            PoolBatches(lambda: mono_rng.permutation(self.mono).tolist(), key, self.batch_size),
            PoolBatches(lambda: cross_rng.permutation(self.cross).tolist(), key, self.batch_size),
            step_types(self.mix_ratio, type_rng),
        )
        for _ in range(self.steps_per_epoch):
            yield rank_slice(batches.next_batch()[1], self.rank, self.world_size)
