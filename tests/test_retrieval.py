import faiss
import numpy as np
import pytest

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question
from hybridsweep.evaluation.retrieval import evaluate_embeddings, top_k_positions

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


def test_recall_and_same_language_share_agree_with_a_faiss_search():
    """The top k come from the ranking pass's own scores; faiss's exact search is the reference."""
    corpus = _corpus(n_ids=30, distractors=5)
    rng = np.random.default_rng(2)
    q_emb = _unit(rng.normal(size=(len(corpus.questions), 8)))
    c_emb = _unit(rng.normal(size=(len(corpus.candidates), 8)))
    k = 10
    metrics = evaluate_embeddings(corpus, q_emb, c_emb, top_k=k).metrics
    index = faiss.IndexFlatIP(c_emb.shape[1])
    index.add(c_emb)
    hits = index.search(q_emb, k)[1]
    recall, same_language = [], []
    for q, question in enumerate(corpus.questions):
        rel = {c for c, cand in enumerate(corpus.candidates) if question.id in cand.answer_ids}
        recall.append(len(rel & set(hits[q].tolist())) / len(rel))
        same_language.append(np.mean([corpus.candidates[c].lang == question.lang for c in hits[q]]))
    assert metrics[f"recall_at_{k}/multilingual"] == pytest.approx(np.mean(recall))
    assert metrics[f"bias/same_lang_share_at_{k}"] == pytest.approx(np.mean(same_language))


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


@pytest.mark.parametrize("k", [1, 7, 50, 64, 100])
def test_top_k_positions_equal_the_head_of_a_full_sort(k):
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(40, 64)).astype(np.float32)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k_positions(scores, k), expected)


def test_top_k_positions_agree_with_faiss_on_embeddings():
    rng = np.random.default_rng(3)
    queries, pool = _unit(rng.normal(size=(300, 24))), _unit(rng.normal(size=(2000, 24)))
    index = faiss.IndexFlatIP(24)
    index.add(pool)
    np.testing.assert_array_equal(top_k_positions(queries @ pool.T, 20), index.search(queries, 20)[1])


def test_tied_scores_are_ordered_by_position_and_selected_by_value():
    # Scores on a coarse grid tie often: within the top k the order is (score desc, position asc),
    # and the selected scores are always the k largest, whichever tied entries fill the last places.
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 6, size=(200, 30)).astype(np.float32)
    k = 8
    top = top_k_positions(scores, k)
    chosen = np.take_along_axis(scores, top, axis=1)
    np.testing.assert_array_equal(chosen, -np.sort(-scores, axis=1)[:, :k])
    same_score = chosen[:, 1:] == chosen[:, :-1]
    assert same_score.any() and (top[:, 1:][same_score] > top[:, :-1][same_score]).all()
    stable = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    clean = scores[np.arange(len(scores)), stable[:, -1]] > np.sort(scores, axis=1)[:, -k - 1]
    assert clean.any()
    np.testing.assert_array_equal(top[clean], stable[clean])
