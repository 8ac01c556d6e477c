"""LAReQA-style evaluation of a parallel QA corpus in the three retrieval settings.

Every question ranks a candidate pool; every candidate holding the answer of a question with the
same id, in any language, is relevant. For query language X and candidate language Y the pool is
Y's candidates, which gives the language-pair matrix of mAP; its diagonal averages to the
*monolingual* setting and its off-diagonal cells to the *cross-lingual* setting (means over
language pairs). The *multilingual* setting pools every language's candidates at once and
averages over all questions. Questions and candidates are encoded once and shared by all settings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd

from hybridsweep.data.parallel_qa import ParallelQA
from hybridsweep.evaluation.encode import encode_texts
from hybridsweep.evaluation.metrics import average_precision, relevant_ranks
from hybridsweep.evaluation.precision import Precision
from hybridsweep.model import TextEncoder

_QUERY_CHUNK = 256


@dataclass
class RetrievalResult:
    """What an evaluation produced: scalar metrics and the language-pair matrices."""

    metrics: dict[str, float]
    pair_map: pd.DataFrame
    """mAP (full ranking) with query languages as rows and candidate languages as columns."""


def _pool_ranks(
    question_emb: np.ndarray, pool_emb: np.ndarray, relevant: list[np.ndarray]
) -> list[np.ndarray]:
    ranks: list[np.ndarray] = []
    for start in range(0, len(question_emb), _QUERY_CHUNK):
        scores = question_emb[start : start + _QUERY_CHUNK] @ pool_emb.T
        ranks.extend(relevant_ranks(scores, relevant[start : start + _QUERY_CHUNK]))
    return ranks


def _top_k(question_emb: np.ndarray, pool_emb: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product search: the pool positions of each question's k best candidates."""
    index = faiss.IndexFlatIP(pool_emb.shape[1])
    index.add(pool_emb)
    return index.search(question_emb, min(k, len(pool_emb)))[1]


def evaluate_embeddings(
    corpus: ParallelQA, question_emb: np.ndarray, candidate_emb: np.ndarray, top_k: int = 20
) -> RetrievalResult:
    """All metrics of a corpus from precomputed, L2-normalised embeddings (rows in corpus order)."""
    languages = corpus.languages
    by_qid: dict[str, list[int]] = defaultdict(list)
    for c, candidate in enumerate(corpus.candidates):
        for qid in candidate.answer_ids:
            by_qid[qid].append(c)
    q_langs = np.array([q.lang for q in corpus.questions])
    c_langs = np.array([c.lang for c in corpus.candidates])
    metrics: dict[str, float] = {}
    pair_map = pd.DataFrame(np.nan, index=pd.Index(languages, name="query"), columns=pd.Index(languages, name="candidates"))

    def setting(question_rows: np.ndarray, pool_rows: np.ndarray):
        """APs (full and @k) of the questions that have a relevant candidate in the pool."""
        position = {c: p for p, c in enumerate(pool_rows)}
        relevant = [
            np.array([position[c] for c in by_qid[corpus.questions[q].id] if c in position], dtype=np.int64)
            for q in question_rows
        ]
        answered = np.array([len(r) > 0 for r in relevant], dtype=bool)
        rows = question_rows[answered]
        ranks = _pool_ranks(question_emb[rows], candidate_emb[pool_rows], [r for r, a in zip(relevant, answered) if a])
        return rows, relevant, answered, ranks

    for x in languages:
        x_rows = np.flatnonzero(q_langs == x)
        for y in languages:
            _, _, _, ranks = setting(x_rows, np.flatnonzero(c_langs == y))
            if ranks:
                pair_map.loc[x, y] = np.mean([average_precision(r) for r in ranks])
                metrics[f"map_full/pair/{x}-{y}"] = float(pair_map.loc[x, y])
                metrics[f"map_at_{top_k}/pair/{x}-{y}"] = float(np.mean([average_precision(r, top_k) for r in ranks]))
    diagonal = np.eye(len(languages), dtype=bool)
    for name, mask in (("monolingual", diagonal), ("crosslingual", ~diagonal)):
        metrics[f"map_full/{name}"] = float(np.nanmean(pair_map.to_numpy()[mask]))
        metrics[f"map_at_{top_k}/{name}"] = float(np.nanmean([
            metrics.get(f"map_at_{top_k}/pair/{x}-{y}", np.nan)
            for i, x in enumerate(languages) for j, y in enumerate(languages) if mask[i, j]
        ]))

    all_questions = np.arange(len(corpus.questions))
    all_candidates = np.arange(len(corpus.candidates))
    rows, relevant, answered, ranks = setting(all_questions, all_candidates)
    metrics["map_full/multilingual"] = float(np.mean([average_precision(r) for r in ranks]))
    metrics[f"map_at_{top_k}/multilingual"] = float(np.mean([average_precision(r, top_k) for r in ranks]))
    hits = _top_k(question_emb[rows], candidate_emb, top_k)
    relevant_sets = [set(r.tolist()) for r, a in zip(relevant, answered) if a]
    metrics[f"recall_at_{top_k}/multilingual"] = float(np.mean([
        len(relevant_sets[i] & set(hits[i].tolist())) / len(relevant_sets[i]) for i in range(len(rows))
    ]))
    metrics["eval/questions"] = float(len(rows))
    metrics["eval/candidates"] = float(len(all_candidates))
    return RetrievalResult(metrics, pair_map)


def evaluate_encoder(
    encoder: TextEncoder, corpus: ParallelQA, batch_size: int = 256, top_k: int = 20, precision: Precision = "fp32"
) -> RetrievalResult:
    """Encode a corpus's questions and candidates once, then evaluate every setting."""
    question_emb = encode_texts(encoder, [q.text for q in corpus.questions], "query", batch_size, precision=precision)
    candidate_emb = encode_texts(encoder, [c.text for c in corpus.candidates], "passage", batch_size, precision=precision)
    return evaluate_embeddings(corpus, question_emb, candidate_emb, top_k)
