"""Monolingual, cross-lingual and hybrid batch sampling for in-batch-negative training.

**Batch types.** A *monolingual* (X-X) batch holds only pairs whose question and passage share a
language; a *cross-lingual* (X-Y) batch only pairs whose languages differ. The hybrid strategy of
Elmahdy et al. (2024) draws the type of every step independently:

    P(step is monolingual) = mix_ratio,     mix_ratio_auto = |mono pool| / (|mono pool| + |cross pool|)

so that, with ``auto``, each pool is consumed in proportion to its size. ``mono`` and ``cross``
are the two baselines (mix_ratio 1 and 0).

**Languages of a monolingual batch** (``mono_batches``):

- ``per_language`` (the default; the paper's X-X, LAReQA's "X-X-mono"): every pair of a
  monolingual batch is in one language l, drawn per step from the K languages of the
  monolingual pool with, for ``mono_language_weights``,

      uniform:        P(l) = 1 / K
      proportional:   P(l) = n_l / sum_k n_k      (n_l: monolingual pairs in language l)

  so a question's in-batch negatives are all in its own language and the language cannot tell
  the positive apart.
- ``mixed`` (LAReQA's plain "X-X"): one pool over all languages, so a batch mixes languages and
  every same-language positive competes with other-language negatives, which teaches the model
  to prefer its own language (LAReQA, mBERT on XQuAD-R: multilingual mAP 0.23, against 0.52 for
  X-X-mono).

Cross-lingual batches are drawn per pair from one pool of all language pairs: each pair's
question is in X and its passage in Y != X, and languages mix within a batch.

**Streams and epochs.** Every batch comes from one *stream*: ``cross``, ``mono`` (mixed) or
``mono/<l>`` (per language). A stream makes passes over its pairs, each pair once per pass; a
stream that runs out starts its next pass. An epoch is ``(pairs of the pools used) // batch_size``
steps under either rule, so under ``per_language`` it is a number of steps, not one pass per
language: with ``proportional`` weights and ``mix_ratio=auto`` each language's stream is used
for one pass per epoch in expectation; with ``uniform`` weights every language gets 1/K of the
monolingual steps whatever its size, so a small language's stream starts more passes per epoch
than a large one's. No language runs dry (its stream starts a new pass), so the languages drawn
from are all those of the monolingual pool, each of which must be able to fill a batch (below).

**Shared draws.** The type and the language of step s are the s-th draws of two random streams
fixed by the seed (:func:`step_streams`) and never depend on the data a process reads, so every
DDP rank and every dataloader worker agrees on both without communicating.

**Random layout.** The two samplers lay their generators out differently, on purpose, and each
keeps its own layout (changing either would change the batches, and so the results, of every
point trained with it):

- in memory (:class:`hybridsweep.data.sampler.HybridBatchSampler`, :func:`epoch_generators`): epoch e is drawn from
  ``default_rng([seed, e]).spawn(4)`` = (types, monolingual permutations, cross-lingual
  permutations, languages), each monolingual stream permuted by its own child of the second, in
  sorted order of stream names, so a language's permutations do not depend on how often the others
  are drawn; steps are counted from 0 in every epoch. An epoch is a function of (seed, epoch)
  alone: each stream starts a fresh permutation per pass, and a resumed run needs only the epoch
  and its position in it.
- streamed (:class:`hybridsweep.data.streaming.StreamedPairBatches`, :func:`run_generators`): the
  types from ``default_rng(seed)`` and the languages from its first spawned child; steps are
  counted over the whole run. Its streams are read in stored order and carry their read position
  from one epoch into the next, so there is nothing to permute, and the step plan must continue
  across epochs rather than restart with them.

**No repeated question id** within a batch: two pairs of the same id carry translations of the
same answer, and each would be the other's false negative under the in-batch softmax. A stream
with fewer distinct question ids than the pairs it must place in one batch is refused
(:meth:`SamplingRule.check`), before any batch is drawn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np

Strategy = Literal["mono", "cross", "hybrid"]
MonoBatches = Literal["per_language", "mixed"]
LanguageWeights = Literal["uniform", "proportional"]
MONO_BATCHES = ("per_language", "mixed")
LANGUAGE_WEIGHTS = ("uniform", "proportional")
CROSS, MONO = "cross", "mono"
Item = TypeVar("Item")
_END = object()


def mono_stream(language: str) -> str:
    """The name of the monolingual stream of one language."""
    return f"{MONO}/{language}"


def used_pools(mix_ratio: float) -> list[str]:
    """The pools a run draws batches from: those with a positive probability."""
    return [pool for pool, p in ((MONO, mix_ratio), (CROSS, 1 - mix_ratio)) if p > 0]


def stream_parts(stream: str) -> tuple[str, str | None]:
    """``(pool, language)`` of a stream name: ``("mono", "en")`` for ``mono/en``, language None otherwise."""
    pool, _, language = stream.partition("/")
    return pool, language or None


def describe_stream(stream: str) -> str:
    """A stream's name in words, for error messages."""
    pool, language = stream_parts(stream)
    words = "cross-lingual pool" if pool == CROSS else "monolingual pool"
    return words if language is None else f"{words} of language {language!r}"


def drawn_streams(mix_ratio: float, streams: Iterable[str]) -> list[str]:
    """The streams a run draws batches from, among ``streams``: ``cross`` when mix_ratio < 1, and
    the monolingual ones when mix_ratio > 0 (``mono`` itself when there is none: an empty pool)."""
    pools = used_pools(mix_ratio)
    drawn = [CROSS] if CROSS in pools else []
    if MONO in pools:
        drawn += [s for s in streams if s != CROSS] or [MONO]
    return drawn


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: expected one of {list(allowed)}")


def resolve_mix_ratio(strategy: Strategy, mix_ratio: float | str, n_mono: int, n_cross: int) -> float:
    """The probability of a monolingual batch implied by a strategy and a configured ratio."""
    if strategy == "mono":
        return 1.0
    if strategy == "cross":
        return 0.0
    if mix_ratio == "auto":
        return n_mono / (n_mono + n_cross)
    return float(mix_ratio)


def language_weights(sizes: Mapping[str, int], rule: LanguageWeights) -> dict[str, float]:
    """P(language) of a monolingual step: ``1/K`` (uniform) or ``n_l / sum n`` (proportional).

    ``sizes`` maps each language of the monolingual pool to its number of pairs.
    """
    check_choice("mono_language_weights", rule, LANGUAGE_WEIGHTS)
    languages = sorted(sizes)
    if rule == "uniform":
        return {language: 1 / len(languages) for language in languages}
    total = sum(sizes.values())
    return {language: sizes[language] / total for language in languages}


@dataclass(frozen=True)
class SamplingRule:
    """What both samplers derive from the ``sampling`` settings and the pools' sizes, checked once.

    ``streams``: the streams a sampler holds: ``cross``, and ``mono`` (mixed batches) or one
    ``mono/<l>`` per language of the monolingual pool (per-language batches, where monolingual
    steps are drawn at all); ``language_weights``: P(l) of a per-language monolingual step, else
    None; ``steps_per_epoch``: ``(pairs of the pools used) // batch_size``.
    """

    batch_size: int
    mix_ratio: float
    streams: tuple[str, ...]
    language_weights: dict[str, float] | None
    pool_sizes: dict[str, int]
    """Pairs of each pool (``mono``, ``cross``)."""
    steps_per_epoch: int

    @classmethod
    def build(cls, batch_size: int, world_size: int, strategy: Strategy, mix_ratio: float | str,
              mono_batches: MonoBatches, mono_language_weights: LanguageWeights, pool_sizes: Mapping[str, int],
              language_sizes: Mapping[str, int]) -> SamplingRule:
        """``pool_sizes``: pairs per pool; ``language_sizes``: monolingual pairs per language."""
        check_divisible(batch_size, world_size)
        check_choice("mono_batches", mono_batches, MONO_BATCHES)
        check_choice("mono_language_weights", mono_language_weights, LANGUAGE_WEIGHTS)
        ratio = resolve_mix_ratio(strategy, mix_ratio, pool_sizes[MONO], pool_sizes[CROSS])
        pools = used_pools(ratio)
        streams, weights = [CROSS], None
        if mono_batches == "mixed":
            streams.append(MONO)
        elif MONO in pools:
            sizes = {language: n for language, n in language_sizes.items() if n}
            streams += [mono_stream(language) for language in sorted(sizes)]
            if sizes:  # else the monolingual pool is empty, and refused by check()
                weights = language_weights(sizes, mono_language_weights)
        steps = sum(pool_sizes[pool] for pool in pools) // batch_size
        return cls(batch_size, ratio, tuple(streams), weights, dict(pool_sizes), steps)

    def check(self, needed: int, distinct: Callable[[str], int], refusal: Callable[[str, int], str]) -> None:
        """Refuse to sample when a stream drawn from holds fewer ``distinct(stream)`` question ids
        than the ``needed`` pairs one reader places in one batch (the error is ``refusal(stream,
        count)``: a batch could not avoid repeating an id), or when an epoch has no step."""
        for stream in drawn_streams(self.mix_ratio, self.streams):
            count = distinct(stream)
            if count < needed:
                raise ValueError(refusal(stream, count))
        if self.steps_per_epoch == 0:
            pairs = sum(self.pool_sizes[pool] for pool in used_pools(self.mix_ratio))
            raise ValueError(f"batch_size={self.batch_size} is larger than the {pairs} training pairs of the pools drawn from")

    def plan(self, type_rng: np.random.Generator, language_rng: np.random.Generator, start: int = 0,
             stride: int = 1) -> Iterator[str]:
        """The stream of each of steps ``start``, ``start + stride``, ... (:func:`step_streams`)."""
        return step_streams(self.mix_ratio, self.language_weights, type_rng, language_rng, start, stride)


class PoolBatches(Generic[Item]):
    """An endless stream of batches from one pool: passes over the pool, no repeated id in a batch.

    ``next_pass()`` returns the items of the pool's next pass, in the order to use them (a fresh
    permutation for in-memory data, the stored order for streamed shards). A pair whose id already
    sits in the batch being filled is deferred to a later batch, so every pair of a pass is used
    once. Only the pass iterator and the deferred pairs are held, never the pool itself. The pool
    must hold at least ``batch_size`` distinct ids, or a batch can never be filled.
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


def step_draws(rng: np.random.Generator, start: int = 0, stride: int = 1) -> Iterator[float]:
    """The uniform draws of steps ``start``, ``start + stride``, ... of one sequential stream.

    Step s gets the s-th uniform double of ``rng``. Draws of steps that are skipped are jumped
    over (PCG64 ``advance``: one 64-bit output per double), so a process that serves every
    ``stride``-th step, or resumes at step ``start``, sees exactly the draws of one sequential
    stream.
    """
    position = 0
    step = start
    while True:
        rng.bit_generator.advance(step - position)
        yield float(rng.random())
        position, step = step + 1, step + stride


def step_types(mix_ratio: float, rng: np.random.Generator, start: int = 0, stride: int = 1) -> Iterator[bool]:
    """Whether steps ``start``, ``start + stride``, ... are monolingual: draw u_s < mix_ratio."""
    return (u < mix_ratio for u in step_draws(rng, start, stride))


def step_streams(
    mix_ratio: float,
    weights: Mapping[str, float] | None,
    type_rng: np.random.Generator,
    language_rng: np.random.Generator,
    start: int = 0,
    stride: int = 1,
) -> Iterator[str]:
    """The stream that serves each of steps ``start``, ``start + stride``, ...

    Step s is monolingual when u_s < mix_ratio (u_s: the s-th draw of ``type_rng``). A
    monolingual step is served by ``mono`` when ``weights`` is None (mixed batches), otherwise
    by ``mono/<l>`` with l the language whose cumulative-weight interval holds v_s, the s-th draw
    of ``language_rng`` (languages in sorted order): P(l) = weights[l]. A cross-lingual step is
    served by ``cross``. Both draws are indexed by step (:func:`step_draws`), so any subset of
    steps sees the languages and types of the one sequential stream.
    """
    languages = sorted(weights or ())
    cumulative = np.cumsum([weights[language] for language in languages]) if weights else np.zeros(0)
    types = step_types(mix_ratio, type_rng, start, stride)
    for is_mono, v in zip(types, step_draws(language_rng, start, stride)):
        if not is_mono:
            yield CROSS
        elif weights is None:
            yield MONO
        else:
            # min(): v * total can round up to total itself, which belongs to the last language.
            index = min(int(np.searchsorted(cumulative, v * cumulative[-1], side="right")), len(languages) - 1)
            yield mono_stream(languages[index])


class HybridBatches:
    """The batch logic shared by in-memory and streamed data.

    For each step it takes the step's stream from ``plan`` (see :func:`step_streams`) and returns
    that stream's next batch.
    """

    def __init__(self, streams: Mapping[str, PoolBatches], plan: Iterator[str]):
        self.streams, self.plan = streams, plan

    def next_batch(self) -> tuple[str, list]:
        stream = next(self.plan)
        return stream, self.streams[stream].next_batch()


def rank_slice(global_batch: list[Item], rank: int, world_size: int) -> list[Item]:
    """Rank ``rank``'s share of a global batch: contiguous, disjoint, in rank order."""
    share = len(global_batch) // world_size
    return global_batch[rank * share:(rank + 1) * share]


def check_divisible(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {world_size} training processes")


def epoch_generators(seed: int, epoch: int, streams: Iterable[str]) -> tuple[np.random.Generator, ...]:
    """The in-memory layout (module docstring): ``(types, languages, {stream: permutations})`` of one epoch."""
    type_rng, mono_rng, cross_rng, language_rng = np.random.default_rng([seed, epoch]).spawn(4)
    mono_names = sorted(s for s in streams if s != CROSS)
    return type_rng, language_rng, {CROSS: cross_rng, **dict(zip(mono_names, mono_rng.spawn(len(mono_names))))}


def run_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The streamed layout (module docstring): ``(types, languages)`` of the whole run."""
    type_rng = np.random.default_rng(seed)
    return type_rng, type_rng.spawn(1)[0]
