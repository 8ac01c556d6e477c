"""Intervals and best-cell separation of the report tables and curves (scaling laws: ``fits``).

Bootstrap (percentile, two levels). A run's value in a setting is a mean of cell means,
``v = mean_cells mean_{q in cell} AP_q`` (cells: language pairs for mono/cross, one pool for
multilingual). Resampling unit: the question id, so every language version of one parallel
question moves together. Replicate ``b`` of a run draws ``n_q`` ids with replacement, weights each
id by its draw count ``w_bq`` and recomputes ``v_b = mean_cells (sum_q w_bq AP_q / sum_q w_bq)``.
Over seeds, replicate ``b`` draws ``n_runs`` runs with replacement and averages their ``v_b``. The
95% interval is the 2.5th and 97.5th percentile of the replicates. Draw order, from one
``numpy.random.default_rng(seed)`` per cell: every run's ``integers(0, n_q, (B, n_q))`` (indices
into its sorted unique ids) in the given run order, then ``integers(0, n_runs, (B, n_runs))``.
The paired tests (:mod:`hybridsweep.reports.significance`) resample with the same pieces
(:func:`question_matrix`, :func:`draw_counts`, :func:`cell_means`), questions and seeds alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

N_BOOT = 1000


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds of one cell with its 95% interval."""

    mean: float
    low: float
    high: float
    n_runs: int


@dataclass(frozen=True)
class RunSample:
    """One run's contribution to a cell: its value and, where questions are known, their APs.

    ``questions`` has columns ``qid``, ``cell`` and ``ap``; ``None`` means no per-question data,
    so the run contributes no within-run variability (intervals then cover seeds only).
    """

    value: float
    questions: pd.DataFrame | None = None


def question_matrix(questions: pd.DataFrame, qids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A run's APs summed per (question id, cell), and how many rows each sum holds, as two
    (len(qids), cells) arrays; rows follow ``qids`` (sorted, and holding every id of the frame),
    columns the sorted cells. Count 0 marks an id the run did not evaluate in that cell."""
    ids = questions["qid"].to_numpy()
    q_index = np.minimum(np.searchsorted(qids, ids), max(len(qids) - 1, 0))
    if len(ids) and (len(qids) == 0 or (qids[q_index] != ids).any()):
        raise ValueError(f"question ids {sorted(set(ids) - set(qids))[:5]} are not in the given id list")
    cells, c_index = np.unique(questions["cell"].to_numpy().astype(str), return_inverse=True)
    ap_sum = np.zeros((len(qids), len(cells)))
    count = np.zeros((len(qids), len(cells)))
    np.add.at(ap_sum, (q_index, c_index), questions["ap"].to_numpy(dtype=float))
    np.add.at(count, (q_index, c_index), 1.0)
    return ap_sum, count


def draw_counts(rng: np.random.Generator, n_ids: int, n_rows: int) -> np.ndarray:
    """``rng.integers(0, n_ids, (n_rows, n_ids))``, one resample of ``n_ids`` ids with replacement
    per row, as draw counts: entry ``[b, q]`` is how often row ``b`` drew id ``q``."""
    draws = rng.integers(0, n_ids, size=(n_rows, n_ids))
    flat = (np.arange(n_rows)[:, None] * n_ids + draws).ravel()
    return np.bincount(flat, minlength=n_rows * n_ids).reshape(n_rows, n_ids).astype(float)


def cell_means(weights: np.ndarray, ap_sum: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``sum_q w_bq AP_qc / sum_q w_bq n_qc`` for each row ``b`` of the (B, ids) ``weights`` and
    each cell ``c`` (column of ``ap_sum`` and ``count``), shape (B, cells); NaN where none of a
    cell's ids was drawn. Columns may hold the cells of several runs side by side: one matrix
    product serves them all."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ ap_sum) / (weights @ count)


def weighted_value(weights: np.ndarray, ap_sum: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``v_b = mean_cells (sum_q w_bq AP_qc / sum_q w_bq n_qc)`` for each row ``b`` of the
    (B, ids) ``weights``: the run value under resampled questions (all-ones weights give the
    value itself). A cell none of whose ids were drawn is left out of that replicate's mean."""
    return np.nanmean(cell_means(weights, ap_sum, count), axis=1)


def _question_replicates(questions: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    qids = np.unique(questions["qid"].to_numpy())
    ap_sum, count = question_matrix(questions, qids)
    return weighted_value(draw_counts(rng, len(qids), n_boot), ap_sum, count)


def bootstrap_replicates(samples: Sequence[RunSample], n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """The ``n_boot`` two-level bootstrap replicates of the mean over runs (module doc), shape (B,)."""
    if not samples:
        raise ValueError("no runs to estimate from")
    rng = np.random.default_rng(seed)
    per_run = np.stack([
        _question_replicates(s.questions, rng, n_boot) if s.questions is not None and len(s.questions)
        else np.full(n_boot, s.value)
        for s in samples
    ])  # (runs, B)
    picks = rng.integers(0, len(samples), size=(n_boot, len(samples)))
    return per_run[picks, np.arange(n_boot)[:, None]].mean(axis=1)


def bootstrap_estimate(samples: Sequence[RunSample], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean of the runs' values with the two-level percentile bootstrap interval (module doc)."""
    replicates = bootstrap_replicates(samples, n_boot, seed)
    low, high = np.nanpercentile(replicates, [2.5, 97.5])
    return Estimate(float(np.mean([s.value for s in samples])), float(low), float(high), len(samples))


def separated_best(estimates: Sequence[Estimate | None], higher_is_better: bool = True) -> int | None:
    """Index of the best mean, only if its interval lies strictly beyond every other interval.

    A best mean without a spread (one run and no per-question data: ``low == mean == high``) has
    no interval to separate, so it is never marked: a single number beating another proves nothing.
    """
    present = [(i, e) for i, e in enumerate(estimates) if e is not None and np.isfinite(e.mean)]
    if len(present) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best, top = max(present, key=lambda item: sign * item[1].mean)
    if top.low == top.high:
        return None
    for i, other in present:
        if i == best:
            continue
        if higher_is_better and not top.low > other.high:
            return None
        if not higher_is_better and not top.high < other.low:
            return None
    return best
