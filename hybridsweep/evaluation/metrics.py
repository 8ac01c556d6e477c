"""Ranking metrics computed from the ranks of the relevant candidates alone.

For full-ranking average precision only the positions of the relevant candidates matter, and the
rank of a relevant candidate c for query q is

    rank(q, c) = 1 + |{c' in pool : s(q, c') > s(q, c)}|

which costs one comparison per pool item and relevant candidate, with no sort of the pool.
Ties are counted in the candidate's favour (rare with continuous scores). Counting the same
comparisons per contiguous block of the pool (e.g. one block per language) gives, in the same
pass, the rank of c within its block's own pool.
"""

from __future__ import annotations

import numpy as np


def pad_rows(rows: list[np.ndarray], fill) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths as one (n, width) array filled with ``fill``, and the mask of real entries."""
    width = max((len(r) for r in rows), default=0)
    padded = np.full((len(rows), width), fill, dtype=np.asarray(fill).dtype)
    valid = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
        valid[i, : len(r)] = True
    return padded, valid


def block_ranks(scores: np.ndarray, positions: np.ndarray, block_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of given candidates in the whole pool and within the pool block each one lies in.

    Args:
        scores: (n_queries, pool_size) similarities; the pool is ordered so that blocks are contiguous.
        positions: (n_queries, width) pool positions of each query's relevant candidates (padding: any).
        block_starts: sorted first positions of the blocks, starting with 0.
    Returns:
        (overall, within), both (n_queries, width) 1-based ranks.
    """
    rows = np.arange(len(scores))[:, None]
    threshold = scores[rows, positions][:, :, None]
    bounds = np.append(block_starts, scores.shape[1])
    per_block = np.stack([
        np.count_nonzero(scores[:, None, start:end] > threshold, axis=-1) for start, end in zip(bounds[:-1], bounds[1:])
    ], axis=-1)
    block_of = np.searchsorted(block_starts, positions, side="right") - 1
    within = np.take_along_axis(per_block, block_of[:, :, None], axis=-1)[:, :, 0]
    return per_block.sum(-1) + 1, within + 1


def relevant_ranks(scores: np.ndarray, relevant: list[np.ndarray]) -> list[np.ndarray]:
    """The 1-based ranks of each query's relevant candidates in one pool, sorted ascending.

    Args:
        scores: (n_queries, pool_size) similarity of every query to every candidate of the pool.
        relevant: per query, the pool positions of its relevant candidates (may be empty).
    """
    positions, valid = pad_rows(relevant, np.int64(0))
    overall, _ = block_ranks(scores, positions, np.array([0]))
    return [np.sort(overall[i, valid[i]]) for i in range(len(relevant))]


def grouped_average_precisions(
    ranks: np.ndarray, valid: np.ndarray, groups: np.ndarray, n_groups: int, k: int | None = None
) -> np.ndarray:
    """AP of every (query, group) from the ranks of the query's relevant candidates, vectorised.

    Within each group g of query q's relevant candidates (e.g. the candidates of one language,
    ranked in that language's pool), with R the group's size and rank_i the rank of its i-th best:

    Full ranking (``k=None``), the LAReQA definition:  AP = 1/R * sum_i i / rank_i.
    Truncated (``k``), the XTREME-R definition:  AP@k = 1/min(k, R) * sum_{i: rank_i <= k} i / rank_i.

    Relevant candidates tied with each other share a rank; in the optimistic order they occupy
    consecutive positions, i.e. rank_i is replaced by max_{j <= i} (rank_j + i - j), keeping AP <= 1.

    Args:
        ranks, valid, groups: (n_queries, width) ranks (any order), which entries are real, and
            each entry's group in [0, n_groups).
    Returns:
        (n_queries, n_groups) APs, NaN where a query has no relevant candidate in a group.
    """
    n, width = ranks.shape
    # Sort each row by (group, rank): a group's entries become contiguous and ascending.
    span = float(ranks[valid].max(initial=0) + width + 1)
    key = np.where(valid, groups * span + ranks, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    key, groups, valid = (np.take_along_axis(a, order, axis=1) for a in (key, groups, valid))
    position = np.broadcast_to(np.arange(width), (n, width))
    starts = valid & np.concatenate([np.ones((n, 1), bool), groups[:, 1:] != groups[:, :-1]], axis=1)
    index = position - np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    # The running max restarts per group because a later group's keys exceed all earlier ones.
    effective = index + np.maximum.accumulate(np.where(valid, key - index, -np.inf), axis=1) - groups * span
    precisions = np.where(valid, (index + 1) / np.where(valid, effective, 1), 0.0)
    if k is not None:
        precisions = np.where(effective <= k, precisions, 0.0)
    cell = (np.arange(n)[:, None] * n_groups + groups)[valid]
    sums = np.bincount(cell, precisions[valid], minlength=n * n_groups).reshape(n, n_groups)
    counts = np.bincount(cell, minlength=n * n_groups).reshape(n, n_groups)
    divisor = counts if k is None else np.minimum(k, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / divisor, np.nan)


def average_precisions(ranks: list[np.ndarray], k: int | None = None) -> np.ndarray:
    """AP of each query from the ranks of all its relevant candidates (one group per query)."""
    if any(len(r) == 0 for r in ranks):
        raise ValueError("average precision is undefined for a query without relevant candidates")
    padded, valid = pad_rows(ranks, np.int64(0))
    return grouped_average_precisions(padded, valid, np.zeros_like(padded), 1, k)[:, 0]


def average_precision(ranks: np.ndarray, k: int | None = None) -> float:
    """AP of one query: :func:`average_precisions` of a single rank list."""
    return float(average_precisions([np.asarray(ranks)], k)[0])
