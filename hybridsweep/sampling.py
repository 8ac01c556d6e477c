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
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

Strategy = Literal["mono", "cross", "hybrid"]


def resolve_mix_ratio(strategy: Strategy, mix_ratio: float | str, n_mono: int, n_cross: int) -> float:
    """The probability of a monolingual batch implied by a strategy and a configured ratio."""
    if strategy == "mono":
        return 1.0
    if strategy == "cross":
        return 0.0
    if mix_ratio == "auto":
        return n_mono / (n_mono + n_cross)
    return float(mix_ratio)


class _PoolBatches:
    """An endless stream of batches from one pool: shuffled passes, no repeated id in a batch.

    Each pass visits a fresh permutation of the pool. A pair whose id already sits in the batch
    being filled is deferred to a later batch, so every pair of a pass is used once.
    """

    def __init__(self, indices: np.ndarray, ids: Sequence, batch_size: int, rng: np.random.Generator):
        self.indices, self.ids, self.batch_size, self.rng = indices, ids, batch_size, rng
        self.order: deque[int] = deque()
        self.deferred: deque[int] = deque()

    def next_batch(self) -> list[int]:
        batch: list[int] = []
        seen: set = set()
        # Deferred pairs go first so that none waits for ever; then the pass in order.
        for queue in (self.deferred, self.order):
            for _ in range(len(queue)):
                if len(batch) == self.batch_size:
                    return batch
                index = queue.popleft()
                if self.ids[index] in seen:
                    self.deferred.append(index)
                else:
                    seen.add(self.ids[index])
                    batch.append(index)
        while len(batch) < self.batch_size:
            if not self.order:
                self.order.extend(self.rng.permutation(self.indices).tolist())
            index = self.order.popleft()
            if self.ids[index] in seen:
                self.deferred.append(index)
            else:
                seen.add(self.ids[index])
                batch.append(index)
        return batch


class HybridBatchSampler(Sampler[list[int]]):
    """Yields batches of pair indices, each wholly monolingual or wholly cross-lingual.

    Args:
        ids: question id of every pair (pairs sharing an id never share a batch).
        is_mono: whether each pair is monolingual.
        batch_size: pairs per batch (the number of in-batch negatives plus one).
        strategy: ``mono``, ``cross`` or ``hybrid``.
        mix_ratio: probability of a monolingual batch for ``hybrid``; a float in [0, 1] or ``auto``.
        seed: with the epoch, fixes every draw: the same (seed, epoch) yields the same batches.

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
    ):
        super().__init__()
        is_mono = np.asarray(is_mono, dtype=bool)
        self.ids = list(ids)
        self.mono = np.flatnonzero(is_mono)
        self.cross = np.flatnonzero(~is_mono)
        self.batch_size, self.strategy, self.seed, self.epoch = batch_size, strategy, seed, 0
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
        streams = {
            True: _PoolBatches(self.mono, self.ids, self.batch_size, mono_rng),
            False: _PoolBatches(self.cross, self.ids, self.batch_size, cross_rng),
        }
        for _ in range(self.steps_per_epoch):
            yield streams[bool(type_rng.random() < self.mix_ratio)].next_batch()
