"""Per-question APs of the evaluation (the bootstrap's input) against a naive full sort."""

import numpy as np
import pytest
from test_retrieval import LANGS, _corpus, _naive_ap, _unit

from hybridsweep.evaluation.retrieval import evaluate_embeddings


def test_every_questions_ap_matches_a_naive_ranking_in_every_setting():
    corpus = _corpus(n_ids=6, distractors=1)
    rng = np.random.default_rng(3)
    q_emb = _unit(rng.normal(size=(len(corpus.questions), 8)))
    c_emb = _unit(rng.normal(size=(len(corpus.candidates), 8)))
    frame = evaluate_embeddings(corpus, q_emb, c_emb, top_k=5).per_question

    n_questions = len(corpus.questions)
    assert len(frame) == n_questions * len(LANGS) + n_questions  # every pool language, plus the multilingual pool
    assert frame.groupby("setting").size().to_dict() == {
        "monolingual": n_questions, "crosslingual": n_questions * (len(LANGS) - 1), "multilingual": n_questions,
    }
    row_of = {(q.id, q.lang): i for i, q in enumerate(corpus.questions)}
    for row in frame.itertuples():
        q = row_of[(row.qid, row.q_lang)]
        pool = [c for c, cand in enumerate(corpus.candidates) if row.c_lang in ("all", cand.lang)]
        relevant = np.array([row.qid in corpus.candidates[c].answer_ids for c in pool])
        assert row.ap == pytest.approx(_naive_ap(c_emb[pool] @ q_emb[q], relevant), abs=1e-9)
        assert row.setting == ("multilingual" if row.c_lang == "all" else "monolingual" if row.c_lang == row.q_lang else "crosslingual")
