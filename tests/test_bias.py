"""Language-bias measures on hand-built rankings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question
from hybridsweep.evaluation.bias import rank_distance, same_language_rank_gap, same_language_share
from hybridsweep.evaluation.retrieval import evaluate_embeddings

LANGS = ["de", "en", "fr"]
N_FACTS = 4


def _corpus() -> ParallelQA:
    questions = [Question(f"q{i}", lang, f"question {i} {lang}") for i in range(N_FACTS) for lang in LANGS]
    candidates = [Candidate(lang, f"answer {i} {lang}", (f"q{i}",)) for i in range(N_FACTS) for lang in LANGS]
    return ParallelQA("hand", questions, candidates)


def _embed(language_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Fact i in language X -> e_i + w * l_X (normalised); questions and answers alike."""
    basis = np.eye(N_FACTS + len(LANGS), dtype=np.float32)
    rows = np.stack([basis[i] + language_weight * basis[N_FACTS + j]
                     for i in range(N_FACTS) for j in range(len(LANGS))])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows, rows.copy()


def test_language_agnostic_embeddings_show_no_bias():
    # w = 0: translations are identical vectors, so all parallel answers tie at rank 1.
    metrics = evaluate_embeddings(_corpus(), *_embed(0.0), top_k=3).metrics
    assert metrics["bias/rank_distance"] == 0
    assert metrics["bias/same_lang_rank_gap"] == 0
    # The top 3 are the three parallel answers, one per language: share 1/3 = the pool's share.
    assert metrics["bias/same_lang_share_at_3"] == pytest.approx(1 / 3)
    assert metrics["bias/same_lang_pool_share"] == pytest.approx(1 / 3)
    assert metrics["bias/same_lang_excess_at_3"] == pytest.approx(0, abs=1e-12)
    assert metrics["map_full/multilingual"] == 1


def test_same_language_first_scores_the_maximum():
    # w = 3: scores are 10 (own language, relevant), 9 (own language), 1 (translation), 0 (other):
    # the own-language answer is rank 1, the other 3 own-language sentences ranks 2-4, and both
    # translations tie at rank 5 (N_FACTS + 1).
    metrics = evaluate_embeddings(_corpus(), *_embed(3.0), top_k=3).metrics
    assert metrics["bias/rank_distance"] == N_FACTS
    assert metrics["bias/same_lang_rank_gap"] == N_FACTS
    assert metrics["bias/same_lang_share_at_3"] == 1
    assert metrics["bias/same_lang_excess_at_3"] == pytest.approx(1 - 1 / 3)
    # The tied translations take positions 5 and 6: AP = (1/1 + 2/5 + 3/6) / 3 for every question.
    assert metrics["map_full/multilingual"] == pytest.approx((1 + 2 / 5 + 3 / 6) / 3)


def test_measures_on_explicit_ranks():
    ranks = [np.array([1, 7, 4]), np.array([2, 3]), np.array([5])]
    langs = [np.array(["en", "de", "fr"]), np.array(["de", "en"]), np.array(["en"])]
    query_langs = np.array(["en", "en", "en"])
    # Spreads 6 and 1; a single relevant candidate has no spread.
    assert rank_distance(ranks) == pytest.approx((6 + 1) / 2)
    # Gaps: mean(7, 4) - 1 = 4.5 and 2 - 3 = -1 (a translation ahead); the third has no translation.
    assert same_language_rank_gap(ranks, langs, query_langs) == pytest.approx((4.5 - 1) / 2)
    hits = np.array([[0, 1], [2, 3]])
    share, pool = same_language_share(hits, np.array(["en", "de", "en", "en", "fr"]), np.array(["en", "de"]))
    assert share == pytest.approx((1 / 2 + 0 / 2) / 2)
    assert pool == pytest.approx((3 / 5 + 1 / 5) / 2)
