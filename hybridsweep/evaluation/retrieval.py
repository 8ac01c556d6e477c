"""LAReQA-style evaluation of a parallel QA corpus in the three retrieval settings.

Every question ranks a candidate pool; every candidate holding the answer of a question with the
same id, in any language, is relevant. For query language X and candidate language Y the pool is
Y's candidates, which gives the language-pair matrix of mAP; its diagonal averages to the
*monolingual* setting and its off-diagonal cells to the *cross-lingual* setting (means over
language pairs). The *multilingual* setting pools every language's candidates at once and
averages over all questions, and its rankings give the language-bias measures
(:mod:`hybridsweep.evaluation.bias`).

Questions and candidates are encoded once and shared by all settings, and so is the search: each
question is scored once against the multilingual pool (candidates grouped by language), and from
that one score matrix come every relevant candidate's rank in the whole pool and in its own
language's pool (its rank in the language pair's setting), and the question's top k (exact
inner-product search: a partial selection of the same scores, no second search).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybridsweep.data.parallel_qa import ParallelQA
from hybridsweep.evaluation.bias import rank_distance, same_language_rank_gap, same_language_share
from hybridsweep.evaluation.metrics import block_ranks, grouped_average_precisions, pad_rows
from hybridsweep.evaluation.suites import SuiteResult

_QUERY_CHUNK = 256
PER_QUESTION_ARTIFACT = "per_question_ap.csv.gz"
"""Run artifact holding ``RetrievalResult.per_question`` (``init/`` holds the untrained model's)."""


@dataclass
class RetrievalResult:
    """What an evaluation produced: scalar metrics and the language-pair matrices."""

    metrics: dict[str, float]
    pair_map: pd.DataFrame
    """mAP (full ranking) with query languages as rows and candidate languages as columns."""
    per_question: pd.DataFrame
    """Full-ranking AP of every evaluated question in every setting: columns ``qid``, ``q_lang``,
    ``setting`` (monolingual / crosslingual / multilingual), ``c_lang`` (the pool's language, or
    ``all`` for the multilingual pool) and ``ap``; the basis of bootstrap intervals over questions."""


def top_k_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Pool positions of each row's ``k`` highest scores, best first (ties: lower position first).

    A partial selection (``argpartition``, linear in the pool size), then a sort of the ``k``
    selected entries only. Where scores tie across the k-th place, which of them is selected is
    up to the partial selection (as with any exact top-k search).
    """
    k = min(k, scores.shape[1])
    selected = np.argpartition(-scores, k - 1, axis=1)[:, :k] if 0 < k < scores.shape[1] else (
        np.broadcast_to(np.arange(k), (len(scores), k)))
    chosen = np.take_along_axis(scores, selected, axis=1)
    order = np.lexsort((selected, -chosen), axis=1)
    return np.take_along_axis(selected, order, axis=1).astype(np.int64)


def _search(question_emb, pool_emb, positions, valid, block_starts, top_k):
    """Overall and within-block ranks of each question's relevant pool positions ((n, width) each),
    its top k pool positions, and how many of its relevant candidates are among them; all from one
    exact inner-product score matrix, computed ``_QUERY_CHUNK`` questions at a time."""
    overall, within = np.zeros_like(positions), np.zeros_like(positions)
    hits = np.zeros((len(question_emb), min(top_k, len(pool_emb))), dtype=np.int64)
    for start in range(0, len(question_emb), _QUERY_CHUNK):
        chunk = slice(start, start + _QUERY_CHUNK)
        scores = question_emb[chunk] @ pool_emb.T
        overall[chunk], within[chunk] = block_ranks(scores, positions[chunk], block_starts)
        hits[chunk] = top_k_positions(scores, top_k)
    found = ((positions[:, :, None] == hits[:, None, :]).any(-1) & valid).sum(1)
    return overall, within, hits, found


def _per_question_frame(
    qids: np.ndarray, query_langs: np.ndarray, pair_ap: np.ndarray, pool_ap: np.ndarray, languages: list[str]
) -> pd.DataFrame:
    """Long table of full-ranking APs: one row per (question, language pool) and per question in the
    multilingual pool; ``pair_ap`` is (questions, languages) with NaN where a pool has no answer."""
    question, column = np.nonzero(~np.isnan(pair_ap))
    pool_langs = np.asarray(languages)[column]
    pairs = pd.DataFrame({
        "qid": qids[question], "q_lang": query_langs[question],
        "setting": np.where(query_langs[question] == pool_langs, "monolingual", "crosslingual"),
        "c_lang": pool_langs, "ap": pair_ap[question, column],
    })
    pooled = pd.DataFrame({"qid": qids, "q_lang": query_langs, "setting": "multilingual", "c_lang": "all", "ap": pool_ap})
    return pd.concat([pairs, pooled], ignore_index=True)


def evaluate_embeddings(
    corpus: ParallelQA, question_emb: np.ndarray, candidate_emb: np.ndarray, top_k: int = 20
) -> RetrievalResult:
    """All metrics of a corpus from precomputed, L2-normalised embeddings (rows in corpus order)."""
    languages = corpus.languages
    c_langs = np.array([c.lang for c in corpus.candidates])
    q_langs = np.array([q.lang for q in corpus.questions])
    # The pool in language order, so that each language's candidates form one block.
    order = np.argsort(c_langs, kind="stable")
    pool_langs = c_langs[order]
    block_starts = np.searchsorted(pool_langs, np.unique(pool_langs))
    pool_lang_index = np.searchsorted(languages, pool_langs)
    pool_position = np.empty(len(order), dtype=np.int64)
    pool_position[order] = np.arange(len(order))
    by_qid: dict[str, list[int]] = defaultdict(list)
    for c, candidate in enumerate(corpus.candidates):
        for qid in candidate.answer_ids:
            by_qid[qid].append(pool_position[c])
    relevant_all = [by_qid.get(q.id, []) for q in corpus.questions]
    rows = np.array([q for q, r in enumerate(relevant_all) if r], dtype=np.int64)
    positions, valid = pad_rows([np.array(relevant_all[q], dtype=np.int64) for q in rows], np.int64(0))
    overall, within, hits, found = _search(question_emb[rows], candidate_emb[order], positions, valid, block_starts, top_k)

    # Language pairs: the ranks within each candidate language's pool, grouped by that language.
    slot_langs = pool_lang_index[positions]
    query_langs = q_langs[rows]
    metrics: dict[str, float] = {}
    pair_tables, aps = {}, {}
    for name, k in (("map_full", None), (f"map_at_{top_k}", top_k)):
        ap = aps[name] = grouped_average_precisions(within, valid, slot_langs, len(languages), k)
        table = pd.DataFrame(ap, columns=languages).groupby(query_langs).mean().reindex(index=languages)
        table.index.name, table.columns.name = "query", "candidates"
        pair_tables[name] = table
        for x, row in table.iterrows():
            metrics.update({f"{name}/pair/{x}-{y}": float(v) for y, v in row.items() if not np.isnan(v)})
        diagonal = np.eye(len(languages), dtype=bool)
        metrics[f"{name}/monolingual"] = float(np.nanmean(table.to_numpy()[diagonal]))
        metrics[f"{name}/crosslingual"] = float(np.nanmean(table.to_numpy()[~diagonal]))
        whole_pool = np.zeros_like(positions)
        aps[f"{name}/multilingual"] = grouped_average_precisions(overall, valid, whole_pool, 1, k)[:, 0]
        metrics[f"{name}/multilingual"] = float(aps[f"{name}/multilingual"].mean())
    counts = valid.sum(1)
    metrics[f"recall_at_{top_k}/multilingual"] = float(np.mean(found / counts))

    overall_lists = [overall[i, : counts[i]] for i in range(len(rows))]
    relevant_langs = [pool_langs[positions[i, : counts[i]]] for i in range(len(rows))]
    metrics["bias/rank_distance"] = rank_distance(overall_lists)
    metrics["bias/same_lang_rank_gap"] = same_language_rank_gap(overall_lists, relevant_langs, query_langs)
    share, pool_share = same_language_share(hits, pool_langs, query_langs)
    metrics[f"bias/same_lang_share_at_{top_k}"] = share
    metrics["bias/same_lang_pool_share"] = pool_share
    metrics[f"bias/same_lang_excess_at_{top_k}"] = share - pool_share
    metrics["eval/questions"] = float(len(rows))
    metrics["eval/candidates"] = float(len(corpus.candidates))
    qids = np.array([corpus.questions[q].id for q in rows])
    per_question = _per_question_frame(qids, query_langs, aps["map_full"], aps["map_full/multilingual"], languages)
    return RetrievalResult(metrics, pair_tables["map_full"], per_question)


class LareqaSuite:
    """A parallel QA corpus (XQuAD-R, MLQA-R, the synthetic set) as an evaluation suite: the
    LAReQA metrics of :func:`evaluate_embeddings`, the language-pair matrix and the per-question
    APs (artifact :data:`PER_QUESTION_ARTIFACT`)."""

    def __init__(self, corpus: ParallelQA, top_k: int = 20, prefix: str = ""):
        self.corpus, self.top_k, self.prefix = corpus, top_k, prefix

    def texts(self) -> dict[str, list[str]]:
        return {"query": [q.text for q in self.corpus.questions], "passage": [c.text for c in self.corpus.candidates]}

    def score(self, embeddings: dict[str, np.ndarray]) -> SuiteResult:
        result = evaluate_embeddings(self.corpus, embeddings["query"], embeddings["passage"], self.top_k)
        return SuiteResult(result.metrics, {"map_full_pairs": result.pair_map}, {PER_QUESTION_ARTIFACT: result.per_question})
