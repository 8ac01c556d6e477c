import numpy as np
import pytest
from scipy.stats import binom

from hybridsweep.data.sampler import HybridBatchSampler


def _pool(n_ids: int = 60, langs: int = 4):
    """Every (question lang, passage lang) pair of n_ids parallel questions, and the question languages."""
    ids, is_mono, q_langs = [], [], []
    for i in range(n_ids):
        for a in range(langs):
            for b in range(langs):
                ids.append(f"id{i}")
                is_mono.append(a == b)
                q_langs.append(f"l{a}")
    return ids, np.array(is_mono), q_langs


@pytest.mark.parametrize("strategy,ratio", [("hybrid", 0.3), ("hybrid", "auto"), ("mono", "auto"), ("cross", 0.9)])
def test_batch_invariants_over_many_seeds(strategy, ratio):
    ids, is_mono, langs = _pool()
    mono_batches = total = 0
    for seed in range(30):
        sampler = HybridBatchSampler(ids, is_mono, batch_size=16, strategy=strategy, mix_ratio=ratio, seed=seed,
                                     languages=langs)
        for batch in sampler:
            assert len(batch) == 16
            assert len({ids[i] for i in batch}) == 16, "a question id repeats within a batch"
            kinds = {bool(is_mono[i]) for i in batch}
            assert len(kinds) == 1, "a batch mixes monolingual and cross-lingual pairs"
            mono_batches += kinds.pop()
            total += 1
    p = {"mono": 1.0, "cross": 0.0}.get(strategy, 0.25 if ratio == "auto" else ratio)
    if p in (0.0, 1.0):
        assert mono_batches == p * total
    else:
        # Two-sided 99.9% binomial acceptance region for the number of monolingual batches.
        low, high = binom.ppf(0.0005, total, p), binom.ppf(0.9995, total, p)
        assert low <= mono_batches <= high


def test_auto_ratio_is_the_monolingual_share_of_pairs():
    ids, is_mono, langs = _pool(langs=4)
    sampler = HybridBatchSampler(ids, is_mono, batch_size=8, mix_ratio="auto", languages=langs)
    assert sampler.mix_ratio == pytest.approx(is_mono.mean())  # 4 of 16 pairs per id
    assert len(sampler) == len(ids) // 8


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
def test_deterministic_from_seed_and_epoch(mono_batches):
    """A restarted run redraws an epoch's batches from (seed, epoch) alone."""
    ids, is_mono, langs = _pool()
    a = HybridBatchSampler(ids, is_mono, batch_size=8, seed=3, languages=langs, mono_batches=mono_batches)
    b = HybridBatchSampler(ids, is_mono, batch_size=8, seed=3, languages=langs, mono_batches=mono_batches)
    a.set_epoch(2)
    first = list(a)
    b.set_epoch(2)
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first


def test_a_pass_uses_every_pair_of_the_pool_once():
    # One language: a question id occurs once in the pool, so no pair is ever deferred past the pass.
    ids, is_mono, _ = _pool(n_ids=32, langs=1)
    sampler = HybridBatchSampler(ids, is_mono, batch_size=8, strategy="mono", mono_batches="mixed")
    used = [i for batch in sampler for i in batch]
    assert sorted(used) == sorted(np.flatnonzero(is_mono).tolist())


def test_batch_larger_than_distinct_ids_is_refused():
    ids, is_mono, langs = _pool(n_ids=10)
    for mono_batches in ("per_language", "mixed"):
        with pytest.raises(ValueError, match="batch_size=11 exceeds the 10 distinct question ids in the "):
            HybridBatchSampler(ids, is_mono, batch_size=11, languages=langs, mono_batches=mono_batches)
