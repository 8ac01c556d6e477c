import numpy as np
import pytest
import pytrec_eval
from sklearn.metrics import average_precision_score

from hybridsweep.evaluation.metrics import average_precision, relevant_ranks


def test_hand_worked_ranking():
    # Pool of 6; scores rank the candidates as c3 > c0 > c5 > c1 > c4 > c2.
    scores = np.array([[0.8, 0.4, 0.1, 0.9, 0.3, 0.5]])
    relevant = [np.array([0, 4])]  # c0 at rank 2, c4 at rank 5
    (ranks,) = relevant_ranks(scores, relevant)
    assert ranks.tolist() == [2, 5]
    # AP = (1/2) * (1/2 + 2/5) = 0.45
    assert average_precision(ranks) == pytest.approx(0.45)
    # AP@3 (XTREME-R): only rank 2 counts, divided by min(3, 2) = 2 -> 0.25
    assert average_precision(ranks, k=3) == pytest.approx(0.25)
    # AP@1: nothing in the top 1 -> 0
    assert average_precision(ranks, k=1) == 0.0


def test_agrees_with_sklearn_and_pytrec_eval_on_random_rankings():
    rng = np.random.default_rng(0)
    n_queries, pool = 40, 300
    scores = rng.normal(size=(n_queries, pool))
    relevant = [rng.choice(pool, size=rng.integers(1, 6), replace=False) for _ in range(n_queries)]
    ranks = relevant_ranks(scores, relevant)
    ours = [average_precision(r) for r in ranks]

    for q in range(n_queries):
        labels = np.zeros(pool, dtype=int)
        labels[relevant[q]] = 1
        assert ours[q] == pytest.approx(average_precision_score(labels, scores[q]), abs=1e-9)

    qrels = {f"q{q}": {f"d{d}": 1 for d in relevant[q]} for q in range(n_queries)}
    run = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in range(pool)} for q in range(n_queries)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(run)
    for q in range(n_queries):
        assert ours[q] == pytest.approx(trec[f"q{q}"]["map"], abs=1e-6)


def test_average_precision_needs_a_relevant_candidate():
    with pytest.raises(ValueError, match="without relevant"):
        average_precision(np.array([], dtype=int))
