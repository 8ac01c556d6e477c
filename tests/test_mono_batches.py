"""Monolingual batches in one language per batch (the paper's X-X), or mixed (LAReQA's X-X).

References are independent of the sampler: the languages of the pairs themselves, binomial
acceptance bands for the draw frequencies, and pool sizes counted by pyarrow from the shard files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import binom

from hybridsweep.data.parallel_qa import training_pairs
from hybridsweep.data.sampler import HybridBatchSampler
from hybridsweep.data.shards import ShardWriter, read_manifest
from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches
from hybridsweep.data.synthetic import generate

SIZES = {"en": 120, "de": 60, "ru": 30}
"""Question ids per language of the unequal pool: id i is asked and answered in every language
whose size exceeds i, so the monolingual pool holds SIZES[l] pairs of language l."""


def unequal_pool(sizes: dict[str, int] = SIZES) -> tuple[list, list, list, np.ndarray]:
    """ids, question languages, passage languages and is_mono of every pair of the unequal pool."""
    ids, q_langs, p_langs = [], [], []
    for i in range(max(sizes.values())):
        present = [language for language, n in sizes.items() if n > i]
        for q in present:
            for p in present:
                ids.append(f"q{i}")
                q_langs.append(q)
                p_langs.append(p)
    return ids, q_langs, p_langs, np.array([q == p for q, p in zip(q_langs, p_langs)])


def in_band(count: int, total: int, p: float, tail: float = 0.0005) -> bool:
    """Whether ``count`` lies in the two-sided (1 - 2 tail) binomial acceptance region of (total, p)."""
    return binom.ppf(tail, total, p) <= count <= binom.ppf(1 - tail, total, p)


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
def test_monolingual_batches_are_one_language_or_mixed_and_cross_pairs_differ(mono_batches):
    ids, q_langs, p_langs, is_mono = unequal_pool()
    mono_languages, cross_batches = [], 0
    for seed in range(10):
        sampler = HybridBatchSampler(ids, is_mono, 16, "hybrid", 0.5, seed=seed, languages=q_langs,
                                     mono_batches=mono_batches)
        for batch in sampler:
            assert len({ids[i] for i in batch}) == 16, "a question id repeats within a batch"
            if is_mono[batch[0]]:
                assert all(q_langs[i] == p_langs[i] for i in batch)
                mono_languages.append({q_langs[i] for i in batch})
            else:
                assert all(q_langs[i] != p_langs[i] for i in batch)
                cross_batches += 1
                # Cross-lingual batches stay per pair: their question languages mix.
                assert len({q_langs[i] for i in batch}) > 1
    assert mono_languages and cross_batches
    if mono_batches == "per_language":
        assert all(len(languages) == 1 for languages in mono_languages)
    else:
        # 16 pairs drawn from a pool of 120 en, 60 de and 30 ru pairs all share a language with
        # probability below (4/7)^15 < 1e-3 per batch: mixed batches mix languages.
        assert sum(len(languages) == 1 for languages in mono_languages) <= 1


@pytest.mark.parametrize("weights", ["uniform", "proportional"])
def test_language_frequencies_follow_the_weights(weights):
    ids, q_langs, _, is_mono = unequal_pool()
    counts: Counter = Counter()
    for seed in range(80):
        sampler = HybridBatchSampler(ids, is_mono, 8, "mono", seed=seed, languages=q_langs,
                                     mono_language_weights=weights)
        counts.update(q_langs[batch[0]] for batch in sampler)
    total = sum(counts.values())
    assert total == 80 * (sum(SIZES.values()) // 8)
    for language, n in SIZES.items():
        p = 1 / len(SIZES) if weights == "uniform" else n / sum(SIZES.values())
        assert in_band(counts[language], total, p), (language, counts[language], total, p)


def test_a_language_stream_uses_each_of_its_pairs_once_per_pass():
    """Within a language a question id occurs once, so a language's first n_l / B batches of an
    epoch are its first pass: they hold each of its pairs exactly once."""
    sizes = {"en": 32, "de": 32}
    ids, q_langs, _, is_mono = unequal_pool(sizes)
    passes_checked = 0
    for seed in range(5):
        sampler = HybridBatchSampler(ids, is_mono, 8, "mono", seed=seed, languages=q_langs)
        assert len(sampler) == 64 // 8  # the epoch length does not depend on the languages
        batches = list(sampler)
        for language, n in sizes.items():
            own = [b for b in batches if q_langs[b[0]] == language]
            if len(own) >= n // 8:  # each epoch, at least one of the two languages gets 4 of the 8 steps
                first_pass = sorted(i for b in own[:n // 8] for i in b)
                assert first_pass == [i for i in range(len(ids)) if is_mono[i] and q_langs[i] == language]
                passes_checked += 1
    assert passes_checked >= 5


def test_a_language_with_too_few_ids_is_named():
    ids, q_langs, _, is_mono = unequal_pool({"en": 40, "de": 40, "el": 5})
    with pytest.raises(ValueError, match="batch_size=8 exceeds the 5 distinct question ids in the monolingual pool "
                                         "of language 'el'"):
        HybridBatchSampler(ids, is_mono, 8, "hybrid", languages=q_langs)
    # The same pool serves mixed batches (40 distinct ids) and cross-lingual ones (no monolingual pool used).
    HybridBatchSampler(ids, is_mono, 8, "hybrid", languages=q_langs, mono_batches="mixed")
    HybridBatchSampler(ids, is_mono, 8, "cross")
    cross_only = ~is_mono
    with pytest.raises(ValueError, match="exceeds the 0 distinct question ids in the monolingual pool:"):
        HybridBatchSampler([i for i, c in zip(ids, cross_only) if c], is_mono[cross_only], 8, "hybrid", 0.5,
                           languages=[q for q, c in zip(q_langs, cross_only) if c])


def test_bad_arguments_are_named():
    ids, q_langs, _, is_mono = unequal_pool()
    with pytest.raises(ValueError, match="mono_batches='per_language' needs languages="):
        HybridBatchSampler(ids, is_mono, 8)
    with pytest.raises(ValueError, match=r"mono_batches='per_lang' is not allowed: expected one of \['per_language', "):
        HybridBatchSampler(ids, is_mono, 8, languages=q_langs, mono_batches="per_lang")
    with pytest.raises(ValueError, match="mono_language_weights='size' is not allowed"):
        HybridBatchSampler(ids, is_mono, 8, languages=q_langs, mono_language_weights="size")
    with pytest.raises(ValueError, match="one entry per pair: got 450, 450 and 3"):
        HybridBatchSampler(ids, is_mono, 8, languages=q_langs[:3])


# Streamed: shards whose blocks cover different languages, so the monolingual pool is unequal.
BLOCK_LANGUAGES = [["en", "de", "ru"], ["en", "de"], ["en"], ["en", "de", "ru"]]


def collate_rows(rows: list[dict]) -> dict:
    return {"rows": rows}


@pytest.fixture(scope="module")
def unequal_shards(tmp_path_factory) -> Path:
    writer = ShardWriter(tmp_path_factory.mktemp("unequal"), seed=5)
    for block, languages in enumerate(BLOCK_LANGUAGES):
        writer.append(training_pairs(generate(n_people=20, languages=languages, seed=block)).data.table)
    writer.close()
    return writer.root


def mono_language_rows(root: Path) -> Counter:
    """Monolingual pairs per question language, counted by pyarrow from the shard files."""
    counts: Counter = Counter()
    for shard in read_manifest(root)["pools"]["mono"]:
        counts.update(pq.read_table(root / shard["path"], columns=["q_lang"])["q_lang"].to_pylist())
    return counts


@pytest.mark.parametrize("weights", ["uniform", "proportional"])
def test_streamed_language_weights_and_frequencies(unequal_shards, weights):
    sizes = mono_language_rows(unequal_shards)
    assert sizes["en"] > sizes["de"] > sizes["ru"] > 0
    stream = StreamedPairBatches(unequal_shards, collate_rows, 8, "hybrid", 0.5, seed=2,
                                 mono_language_weights=weights)
    expected = {language: 1 / 3 if weights == "uniform" else n / sum(sizes.values()) for language, n in sizes.items()}
    assert stream.language_weights == pytest.approx(expected)
    loader = ResumableLoader(stream)
    counts: Counter = Counter()
    for _ in range(6):  # epochs: the steps (and their draws) go on from where the last epoch stopped
        for rows in (batch["rows"] for batch in loader):
            assert len({r["qid"] for r in rows}) == 8
            if rows[0]["is_mono"]:
                assert {(r["q_lang"], r["p_lang"]) for r in rows} == {(rows[0]["q_lang"],) * 2}
                counts[rows[0]["q_lang"]] += 1
            else:
                assert all(r["q_lang"] != r["p_lang"] for r in rows)
    total = sum(counts.values())
    assert total > 400
    for language, p in expected.items():
        assert in_band(counts[language], total, p), (language, counts[language], total, p)


def test_streamed_mixed_batches_mix_languages(tmp_path):
    writer = ShardWriter(tmp_path, seed=1)
    for block in range(2):
        writer.append(training_pairs(generate(n_people=20, languages=["en", "de", "ru"], seed=block)).data.table)
    writer.close()
    loader = ResumableLoader(StreamedPairBatches(tmp_path, collate_rows, 16, "mono", mono_batches="mixed"))
    languages = [{r["q_lang"] for r in batch["rows"]} for batch in loader]
    # A shard's rows are shuffled over its three languages: 16 of them share one with probability < 1e-6.
    assert len(languages) == 2 * 3 * 60 // 16 and all(len(s) > 1 for s in languages)


def test_streamed_language_with_too_few_ids_is_named_from_the_manifest(tmp_path):
    """The manifest's per-language counts refuse the language before any row is read."""
    pairs = training_pairs(generate(n_people=20, languages=["en", "de", "el"], seed=0)).data.table
    few = pc.unique(pairs["qid"])[:5]
    no_el = pc.and_(pc.not_equal(pairs["q_lang"], "el"), pc.not_equal(pairs["p_lang"], "el"))
    writer = ShardWriter(tmp_path, seed=0)
    writer.append(pairs.filter(pc.or_(no_el, pc.is_in(pairs["qid"], few))))
    writer.close()
    with pytest.raises(ValueError) as error:
        StreamedPairBatches(tmp_path, collate_rows, 8, "hybrid")
    message = str(error.value)
    assert "batch_size=8 (8 pairs per rank over 1 ranks) exceeds the 5 distinct question ids that reader lane 0 " \
           "holds in the monolingual pool of language 'el'" in message
    assert "mono_batches='mixed'" in message
    with pytest.raises(ValueError, match="2 pairs per rank over 4 ranks\\) exceeds the 0 distinct question ids that "
                                         "reader lane 1 holds"):
        StreamedPairBatches(tmp_path, collate_rows, 8, "hybrid", world_size=4, rank=1)
    StreamedPairBatches(tmp_path, collate_rows, 8, "hybrid", mono_batches="mixed")
