"""Language-bias measures of a multilingual pool: does a question prefer its own language?

All three take, per question q, the 1-based ranks of its relevant candidates in the pool that
holds every language (ties share the best rank, see :func:`relevant_ranks`) and each candidate's
language. With a perfectly language-agnostic encoder the parallel answers of q are equally
similar to it, so every measure is 0; a ranking that puts every same-language candidate first
gives each its maximum.
"""

from __future__ import annotations

import numpy as np


def rank_distance(ranks: list[np.ndarray]) -> float:
    """Mean over questions of the spread of their relevant candidates' ranks:

        RD = 1/|Q'| * sum_{q in Q'} ( max_c rank(q, c) - min_c rank(q, c) ),  c relevant to q,

    over the questions Q' with at least two relevant candidates (their parallel answers in all
    languages). 0 when all parallel answers sit together (equal scores); large when one answer,
    typically the same-language one, is far ahead of its translations. This is the rank-based
    form of language bias in the multilingual pool used for the paper's claim.
    """
    spreads = [r.max() - r.min() for r in ranks if len(r) >= 2]
    return float(np.mean(spreads)) if spreads else float("nan")


def same_language_rank_gap(ranks: list[np.ndarray], relevant_langs: list[np.ndarray], query_langs: np.ndarray) -> float:
    """Mean over questions of how far ahead their same-language answers rank:

        gap(q) = mean_{c relevant, lang(c) != lang(q)} rank(q, c) - mean_{c relevant, lang(c) = lang(q)} rank(q, c)

    averaged over questions that have relevant candidates both in and out of their language.
    0: own-language answers rank like their translations; positive: own language preferred.
    """
    gaps = []
    for r, langs, lang in zip(ranks, relevant_langs, query_langs):
        own = langs == lang
        if own.any() and (~own).any():
            gaps.append(r[~own].mean() - r[own].mean())
    return float(np.mean(gaps)) if gaps else float("nan")


def same_language_share(hits: np.ndarray, candidate_langs: np.ndarray, query_langs: np.ndarray) -> tuple[float, float]:
    """Share of same-language candidates among each question's top k, and the pool's share:

        share@k = 1/|Q| * sum_q |{c in top_k(q) : lang(c) = lang(q)}| / k
        pool    = 1/|Q| * sum_q |{c in pool : lang(c) = lang(q)}| / |pool|

    ``hits`` holds each question's top-k pool positions. ``share@k - pool`` is the excess of the
    question's own language in what a user sees over what chance gives: 0 when language plays no
    part, ``1 - pool`` when the top k are all in the question's language.
    """
    top_langs = candidate_langs[hits]
    share = float((top_langs == query_langs[:, None]).mean())
    languages, counts = np.unique(candidate_langs, return_counts=True)
    pool_fraction = dict(zip(languages, counts / len(candidate_langs)))
    pool = float(np.mean([pool_fraction.get(lang, 0.0) for lang in query_langs]))
    return share, pool
