"""Every LAReQA metric against pytrec_eval on real XQuAD-R rankings, and XTREME-R's divisor by hand."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from hybridsweep.data.lareqa import load_lareqa
from hybridsweep.data.parallel_qa import Candidate, ParallelQA
from hybridsweep.evaluation.metrics import average_precision
from hybridsweep.evaluation.retrieval import evaluate_embeddings

LANGS = ["de", "en", "es"]
N_IDS = 40


@pytest.fixture(scope="module")
def real_rankings(shared_data_dir):
    """XQuAD-R (de, en, es): 40 question ids against every candidate, embedded by char TF-IDF + SVD."""
    full = load_lareqa("xquad-r", languages=LANGS, root=shared_data_dir)
    keep = set(full.question_ids[:N_IDS])
    corpus = ParallelQA(
        full.name, [q for q in full.questions if q.id in keep],
        [Candidate(c.lang, c.text, tuple(i for i in c.answer_ids if i in keep)) for c in full.candidates],
    )
    texts = [q.text for q in corpus.questions] + [c.text for c in corpus.candidates]
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2).fit_transform(texts)
    vectors = TruncatedSVD(96, random_state=0).fit_transform(tfidf).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return corpus, vectors[: len(corpus.questions)], vectors[len(corpus.questions) :]


def _trec(corpus, question_emb, candidate_emb, q_lang=None, c_lang=None):
    """pytrec_eval's per-query map, map_cut_20 and recall_20 over the full pool (every candidate retrieved)."""
    pool = [i for i, c in enumerate(corpus.candidates) if c_lang in (None, c.lang)]
    qrels, run = {}, {}
    for q, question in enumerate(corpus.questions):
        if q_lang not in (None, question.lang):
            continue
        relevant = {f"c{i}": 1 for i in pool if question.id in corpus.candidates[i].answer_ids}
        if relevant:
            key = f"q{q}"
            qrels[key] = relevant
            scores = candidate_emb[pool] @ question_emb[q]
            run[key] = {f"c{i}": float(s) for i, s in zip(pool, scores)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"map", "map_cut", "recall"}).evaluate(run)
    return {m: np.mean([v[m] for v in per_query.values()]) for m in ("map", "map_cut_20", "recall_20")}


def test_multilingual_metrics_agree_with_pytrec_eval(real_rankings):
    corpus, question_emb, candidate_emb = real_rankings
    metrics = evaluate_embeddings(corpus, question_emb, candidate_emb, top_k=20).metrics
    reference = _trec(corpus, question_emb, candidate_emb)
    assert metrics["map_full/multilingual"] == pytest.approx(reference["map"], abs=1e-6)
    # Every question has at most 3 relevant candidates here, so min(20, R) = R, trec's divisor.
    assert metrics["map_at_20/multilingual"] == pytest.approx(reference["map_cut_20"], abs=1e-6)
    assert metrics["recall_at_20/multilingual"] == pytest.approx(reference["recall_20"], abs=1e-6)
    assert 0.05 < metrics["map_full/multilingual"] < 0.95  # a real ranking: neither trivial nor random


def test_pair_matrix_and_settings_agree_with_pytrec_eval(real_rankings):
    corpus, question_emb, candidate_emb = real_rankings
    result = evaluate_embeddings(corpus, question_emb, candidate_emb, top_k=20)
    reference = {(x, y): _trec(corpus, question_emb, candidate_emb, x, y)["map"] for x in LANGS for y in LANGS}
    for (x, y), value in reference.items():
        assert result.pair_map.loc[x, y] == pytest.approx(value, abs=1e-6)
    assert result.metrics["map_full/monolingual"] == pytest.approx(np.mean([reference[x, x] for x in LANGS]), abs=1e-6)
    assert result.metrics["map_full/crosslingual"] == pytest.approx(
        np.mean([v for (x, y), v in reference.items() if x != y]), abs=1e-6)


def test_map_at_k_divides_by_min_of_k_and_relevant_count():
    # 3 relevant at ranks 1, 4, 9; k = 2 keeps only rank 1: AP@2 = (1/1) / min(2, 3).
    assert average_precision(np.array([1, 4, 9]), k=2) == pytest.approx(1 / 2)
    # trec_eval's map_cut_2 would divide by R = 3 instead.
    assert average_precision(np.array([1, 4, 9]), k=2) != pytest.approx(1 / 3)
    assert average_precision(np.array([1, 4, 9])) == pytest.approx((1 + 2 / 4 + 3 / 9) / 3)
