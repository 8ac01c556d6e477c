"""MIRACL evaluation: nDCG@10 and Recall@100 with graded relevance, as trec_eval computes them.

For query q with retrieved list d_1, d_2, ... and graded judgements rel(q, d) (0 if unjudged):

    DCG@k(q)   = sum_{i <= k} rel(q, d_i) / log2(i + 1)
    nDCG@k(q)  = DCG@k(q) / IDCG@k(q),  IDCG from the judgements sorted by relevance
    Recall@k(q) = |{i <= k : rel(q, d_i) > 0}| / |{d : rel(q, d) > 0}|

averaged over the queries with at least one relevant passage (linear gain, trec_eval ndcg_cut).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridsweep.data.miracl import MIRACL_HUB_ROOT, load_miracl
from hybridsweep.evaluation.search import nearest
from hybridsweep.evaluation.suites import SuiteResult


def ndcg_at_k(retrieved: list[str], judgements: dict[str, int], k: int) -> float:
    gains = np.array([judgements.get(d, 0) for d in retrieved[:k]], dtype=float)
    ideal = np.sort(np.array([g for g in judgements.values() if g > 0], dtype=float))[::-1][:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return float((gains * discounts[: len(gains)]).sum() / (ideal * discounts[: len(ideal)]).sum())


def recall_at_k(retrieved: list[str], judgements: dict[str, int], k: int) -> float:
    relevant = {d for d, g in judgements.items() if g > 0}
    return len(relevant.intersection(retrieved[:k])) / len(relevant)


def evaluate_rankings(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 of ranked docid lists over the queries with a relevant passage."""
    scored = [q for q in rankings if any(g > 0 for g in qrels.get(q, {}).values())]
    if not scored:
        raise ValueError("no query has a relevant passage in the qrels")
    return {
        "ndcg_at_10": float(np.mean([ndcg_at_k(rankings[q], qrels[q], 10) for q in scored])),
        "recall_at_100": float(np.mean([recall_at_k(rankings[q], qrels[q], 100) for q in scored])),
    }


class MiraclSuite:
    """MIRACL as an evaluation suite: the metrics per language and their mean."""

    def __init__(self, languages: list[str], split: str = "dev", root: str = MIRACL_HUB_ROOT, prefix: str = "miracl/"):
        self.sets = [load_miracl(lang, split, root) for lang in languages]
        self.prefix = prefix

    def texts(self) -> dict[str, list[str]]:
        """Every language's queries, and its passages as ``title text``, language after language."""
        return {
            "query": [m.queries[q] for m in self.sets for q in m.queries],
            "passage": [f"{t} {x}".strip() for m in self.sets for t, x in zip(m.passages["title"], m.passages["text"])],
        }

    def score(self, embeddings: dict[str, np.ndarray]) -> SuiteResult:
        table = pd.DataFrame(index=pd.Index([s.lang for s in self.sets], name="language"),
                             columns=pd.Index(["ndcg_at_10", "recall_at_100"], name="metric"), dtype=float)
        query_start = passage_start = 0
        for miracl in self.sets:
            qids, docids = list(miracl.queries), miracl.passages["docid"]
            query_emb = embeddings["query"][query_start:query_start + len(qids)]
            passage_emb = embeddings["passage"][passage_start:passage_start + len(docids)]
            query_start, passage_start = query_start + len(qids), passage_start + len(docids)
            hits = nearest(query_emb, passage_emb, 100)
            rankings = {q: [docids[i] for i in row] for q, row in zip(qids, hits)}
            table.loc[miracl.lang] = evaluate_rankings(rankings, miracl.qrels)
        metrics = {f"{m}/{lang}": float(table.loc[lang, m]) for lang in table.index for m in table.columns}
        metrics |= {f"{m}/mean": float(table[m].mean()) for m in table.columns}
        return SuiteResult(metrics, {"scores": table})
