"""The in-memory sampler: :mod:`hybridsweep.sampling`'s rule over the indices of a corpus's pairs,
in its in-memory random layout (a fresh permutation of each stream per pass, every epoch drawn from
``(seed, epoch)`` alone)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from hybridsweep.sampling import (
    CROSS,
    MONO,
    HybridBatches,
    LanguageWeights,
    MonoBatches,
    PoolBatches,
    SamplingRule,
    Strategy,
    describe_stream,
    epoch_generators,
    mono_stream,
    rank_slice,
    used_pools,
)


class HybridBatchSampler(Sampler[list[int]]):
    """Yields batches of pair indices, each wholly monolingual or wholly cross-lingual.

    Args:
        ids: question id of every pair (pairs sharing an id never share a batch).
        is_mono: whether each pair is monolingual.
        batch_size: pairs per global batch (the number of in-batch negatives plus one).
        strategy: ``mono``, ``cross`` or ``hybrid``.
        mix_ratio: probability of a monolingual batch for ``hybrid``; a float in [0, 1] or ``auto``.
        seed: with the epoch, fixes every draw: the same (seed, epoch) yields the same batches,
            which is how a restarted run resumes an epoch: ``start`` (set before iterating) is
            the number of the epoch's batches already trained, which are drawn and not yielded.
        rank, world_size: under DDP every rank draws the same global batch and yields its
            ``batch_size / world_size`` slice, so all ranks share the type and, for a monolingual
            step, the language, and hold disjoint pairs.
        languages: the question language of every pair (a monolingual pair's passage shares it);
            needed when ``mono_batches="per_language"`` draws monolingual batches.
        mono_batches: ``per_language`` (the paper's X-X: each monolingual batch in one language
            drawn per step) or ``mixed`` (LAReQA's X-X: languages mixed within a batch).
        mono_language_weights: ``uniform`` (P(l) = 1/K) or ``proportional`` (P(l) = n_l / sum n).

    Each stream starts a fresh permutation per pass. Every stream drawn from must hold at least
    ``batch_size`` distinct question ids, since the global batch is filled before it is sliced.
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
        *,
        languages: Sequence[str] | None = None,
        mono_batches: MonoBatches = "per_language",
        mono_language_weights: LanguageWeights = "uniform",
    ):
        super().__init__()
        is_mono = np.asarray(is_mono, dtype=bool)
        self.ids = list(ids)
        if len(is_mono) != len(self.ids) or (languages is not None and len(languages) != len(self.ids)):
            raise ValueError(f"ids, is_mono and languages must have one entry per pair: got {len(self.ids)}, "
                             f"{len(is_mono)} and {'none' if languages is None else len(languages)}")
        self.mono, self.cross = np.flatnonzero(is_mono), np.flatnonzero(~is_mono)
        mono_languages = np.asarray(list(languages), dtype=object)[self.mono] if languages is not None else None
        by_language = {} if mono_languages is None else \
            {language: self.mono[mono_languages == language] for language in sorted(set(mono_languages))}
        self.rule = SamplingRule.build(batch_size, world_size, strategy, mix_ratio, mono_batches, mono_language_weights,
                                       {MONO: len(self.mono), CROSS: len(self.cross)},
                                       {language: len(rows) for language, rows in by_language.items()})
        if mono_batches == "per_language" and MONO in used_pools(self.rule.mix_ratio) and languages is None:
            raise ValueError(
                "mono_batches='per_language' needs languages= (the question language of every pair) to "
                "draw one language per monolingual batch; mono_batches='mixed' mixes languages instead"
            )
        pools = {CROSS: self.cross, MONO: self.mono, **{mono_stream(lang): rows for lang, rows in by_language.items()}}
        self.streams = {name: pools[name] for name in self.rule.streams}
        self.batch_size, self.seed, self.epoch, self.start = batch_size, seed, 0, 0
        self.rank, self.world_size = rank, world_size
        self.rule.check(batch_size, lambda stream: len({self.ids[i] for i in self.streams.get(stream, ())}), lambda stream, n: (
            f"batch_size={batch_size} exceeds the {n} distinct question ids in the {describe_stream(stream)}: a batch "
            "cannot avoid repeating a question id"
            + ("" if stream in (MONO, CROSS) else "; lower batch_size, leave the language out, or use mono_batches='mixed'")
        ))

    @property
    def mix_ratio(self) -> float:
        return self.rule.mix_ratio

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.rule.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        type_rng, language_rng, stream_rngs = epoch_generators(self.seed, self.epoch, self.streams)
        key = self.ids.__getitem__
        streams = {
            name: PoolBatches(lambda r=stream_rngs[name], p=pool: r.permutation(p).tolist(), key, self.batch_size)
            for name, pool in self.streams.items()
        }
        batches = HybridBatches(streams, self.rule.plan(type_rng, language_rng))
        for step in range(len(self)):
            # A skipped batch is still drawn: each batch's pairs depend on what the earlier ones took.
            batch = batches.next_batch()[1]
            if step >= self.start:
                yield rank_slice(batch, self.rank, self.world_size)
