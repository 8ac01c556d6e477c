"""Ranking metrics computed from the ranks of the relevant candidates alone.

For full-ranking average precision only the positions of the relevant candidates matter, and the
rank of a relevant candidate c for query q is

    rank(q, c) = 1 + |{c' in pool : s(q, c') > s(q, c)}|

which costs one comparison per pool item and relevant candidate, with no sort of the pool.
Ties are counted in the candidate's favour (rare with continuous scores).
"""

from __future__ import annotations

import numpy as np


def relevant_ranks(scores: np.ndarray, relevant: list[np.ndarray], sort: bool = True) -> list[np.ndarray]:
    """The 1-based ranks of each query's relevant candidates, sorted ascending.

    With ``sort=False`` the ranks stay aligned with ``relevant`` (to tell which candidate got which).

    Args:
        scores: (n_queries, pool_size) similarity of every query to every candidate of the pool.
        relevant: per query, the pool positions of its relevant candidates (may be empty).
    """
    width = max((len(r) for r in relevant), default=0)
    if width == 0:
        return [np.empty(0, dtype=np.int64) for _ in relevant]
    rows = np.arange(len(relevant))[:, None]
    positions = np.zeros((len(relevant), width), dtype=np.int64)
    valid = np.zeros((len(relevant), width), dtype=bool)
    for i, r in enumerate(relevant):
        positions[i, : len(r)] = r
        valid[i, : len(r)] = True
    relevant_scores = scores[rows, positions]
    above = (scores[:, None, :] > relevant_scores[:, :, None]).sum(-1)
    ranks = [above[i, valid[i]] + 1 for i in range(len(relevant))]
    return [np.sort(r) for r in ranks] if sort else ranks


def average_precision(ranks: np.ndarray, k: int | None = None) -> float:
    """AP of one query from the sorted ranks of all its relevant candidates.

    Full ranking (``k=None``), the LAReQA definition:  AP = 1/R * sum_i i / rank_i, where rank_i
    is the rank of the i-th best-ranked of the R relevant candidates (``ranks`` sorted ascending).

    Truncated (``k``), the XTREME-R definition:  AP@k = 1/min(k, R) * sum_{i: rank_i <= k} i / rank_i.
    """
    if len(ranks) == 0:
        raise ValueError("average precision is undefined for a query without relevant candidates")
    # Relevant candidates tied with each other share a rank; in the optimistic order they occupy
    # consecutive positions (rank, rank + 1, ...), which keeps AP <= 1.
    ranks = ranks + np.arange(len(ranks)) - np.searchsorted(ranks, ranks, side="left")
    precisions = np.arange(1, len(ranks) + 1) / ranks
    if k is None:
        return float(precisions.mean())
    return float(precisions[ranks <= k].sum() / min(k, len(ranks)))
