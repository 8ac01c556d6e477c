import numpy as np
import pytest

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question
from hybridsweep.evaluation.retrieval import evaluate_embeddings

LANGS = ["de", "en", "ru"]


def _corpus(n_ids: int = 12, distractors: int = 2) -> ParallelQA:
    questions = [Question(f"q{i}", lang, f"{lang} question {i}") for i in range(n_ids) for lang in LANGS]
    candidates = [Candidate(lang, f"{lang} answer {i}", (f"q{i}",)) for i in range(n_ids) for lang in LANGS]
    candidates += [Candidate(lang, f"{lang} noise {j}", ()) for j in range(distractors) for lang in LANGS]
    return ParallelQA("toy", questions, candidates)


def _naive_ap(scores: np.ndarray, is_relevant: np.ndarray) -> float:
    """Textbook AP: walk the fully sorted ranking and average precision at each relevant hit."""
    hits, total = 0, 0.0
    for position, index in enumerate(np.argsort(-scores, kind="stable"), start=1):
        if is_relevant[index]:
            hits += 1
            total += hits / position
    return total / is_relevant.sum()


def _naive_settings(corpus: ParallelQA, q_emb: np.ndarray, c_emb: np.ndarray) -> dict[str, float]:
    pair = {}
    for x in LANGS:
        for y in LANGS:
            pool = [c for c, cand in enumerate(corpus.candidates) if cand.lang == y]
            aps = []
            for q, question in enumerate(corpus.questions):
                if question.lang != x:
                    continue
                rel = np.array([question.id in corpus.candidates[c].answer_ids for c in pool])
                if rel.any():
                    aps.append(_naive_ap(c_emb[pool] @ q_emb[q], rel))
            pair[(x, y)] = np.mean(aps)
    multi = []
    for q, question in enumerate(corpus.questions):
        rel = np.array([question.id in c.answer_ids for c in corpus.candidates])
        multi.append(_naive_ap(c_emb @ q_emb[q], rel))
    return {
        "monolingual": np.mean([v for (x, y), v in pair.items() if x == y]),
        "crosslingual": np.mean([v for (x, y), v in pair.items() if x != y]),
        "multilingual": np.mean(multi),
        **{f"pair/{x}-{y}": v for (x, y), v in pair.items()},
    }


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_matches_a_naive_full_sort_implementation_on_random_embeddings():
    corpus = _corpus()
    rng = np.random.default_rng(1)
    q_emb = _unit(rng.normal(size=(len(corpus.questions), 16)))
    c_emb = _unit(rng.normal(size=(len(corpus.candidates), 16)))
    result = evaluate_embeddings(corpus, q_emb, c_emb, top_k=5)
    for name, value in _naive_settings(corpus, q_emb, c_emb).items():
        assert result.metrics[f"map_full/{name}"] == pytest.approx(value, abs=1e-9), name
    assert result.pair_map.loc["en", "ru"] == pytest.approx(result.metrics["map_full/pair/en-ru"])


def test_perfectly_aligned_embeddings_score_one_everywhere():
    corpus = _corpus()
    ids = corpus.question_ids
    onehot = np.eye(len(ids) + 1, dtype=np.float32)
    q_emb = np.stack([onehot[ids.index(q.id)] for q in corpus.questions])
    # Distractors point to a direction of their own.
    c_emb = np.stack([onehot[ids.index(c.answer_ids[0])] if c.answer_ids else onehot[-1] for c in corpus.candidates])
    metrics = evaluate_embeddings(corpus, q_emb, c_emb, top_k=3).metrics
    for setting in ("monolingual", "crosslingual", "multilingual"):
        assert metrics[f"map_full/{setting}"] == pytest.approx(1.0)
    assert metrics["recall_at_3/multilingual"] == pytest.approx(1.0)


def test_recall_from_faiss_search_agrees_with_ranks():
    corpus = _corpus()
    rng = np.random.default_rng(2)
    q_emb = _unit(rng.normal(size=(len(corpus.questions), 8)))
    c_emb = _unit(rng.normal(size=(len(corpus.candidates), 8)))
    k = 10
    metrics = evaluate_embeddings(corpus, q_emb, c_emb, top_k=k).metrics
    expected = []
    for q, question in enumerate(corpus.questions):
        order = np.argsort(-(c_emb @ q_emb[q]))[:k]
        rel = {c for c, cand in enumerate(corpus.candidates) if question.id in cand.answer_ids}
        expected.append(len(rel & set(order.tolist())) / len(rel))
    assert metrics[f"recall_at_{k}/multilingual"] == pytest.approx(np.mean(expected))


def test_every_search_engine_finds_the_exact_neighbours():
    """faiss (the installed extra) against the exact torch search and a full sort in numpy."""
    from hybridsweep.evaluation.search import available_engine, nearest

    rng = np.random.default_rng(4)
    pool = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    reference = np.argsort(-(queries @ pool.T), axis=1, kind="stable")[:, :7]
    assert available_engine() in ("faiss-cpu", "faiss-gpu", "torch")
    for engine in {"torch", available_engine()}:
        assert np.array_equal(nearest(queries, pool, 7, engine), reference), engine
    assert nearest(queries, pool[:3], 7, "torch").shape == (40, 3)
