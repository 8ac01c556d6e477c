"""The paper's tables: rows = initializer x training strategy, one column per setting or metric.

Every cell is the mean over seeds with a 95% bootstrap interval (``stats.bootstrap_estimate``);
the best cell of a column is marked only when its interval separates it from every other row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybridsweep.reports.stats import N_BOOT, RunSample, bootstrap_estimate, separated_best

SETTINGS = ("monolingual", "crosslingual", "multilingual")
STRATEGY_LABELS = {"mono": "mono-only", "cross": "cross-only", "hybrid": "hybrid"}
ROW_KEYS = ("model.name", "sampling.strategy")

QuestionLoader = Callable[[str], "pd.DataFrame | None"]
"""run id -> that run's per-question APs (``RetrievalResult.per_question``) or ``None``."""


@dataclass(frozen=True)
class Column:
    """One table column: how a run contributes to it, and which direction is better."""

    name: str
    sample: Callable[[pd.Series, QuestionLoader], RunSample | None]
    higher_is_better: bool = True


def setting_column(setting: str) -> Column:
    """mAP (full ranking) in one retrieval setting; per-question APs give the question bootstrap."""

    def sample(run: pd.Series, questions: QuestionLoader) -> RunSample | None:
        value = run.get(f"metrics.map_full/{setting}", np.nan)
        if not np.isfinite(value):
            return None
        frame = questions(run["run_id"])
        if frame is None:
            return RunSample(float(value))
        rows = frame[frame["setting"] == setting]
        # Mono and cross average over language pairs; the multilingual pool averages over questions
        # (LAReQA), which differs where languages have unequal question counts (MLQA-R).
        cells = "all" if setting == "multilingual" else rows["q_lang"] + "-" + rows["c_lang"]
        return RunSample(float(value), pd.DataFrame({"qid": rows["qid"], "cell": cells, "ap": rows["ap"]}))

    return Column(setting, sample)


def language_column(language: str) -> Column:
    """mAP of one query language's questions in the multilingual pool (needs per-question APs)."""

    def sample(run: pd.Series, questions: QuestionLoader) -> RunSample | None:
        frame = questions(run["run_id"])
        if frame is None:
            return None
        rows = frame[(frame["setting"] == "multilingual") & (frame["q_lang"] == language)]
        if rows.empty:
            return None
        return RunSample(float(rows["ap"].mean()), pd.DataFrame({"qid": rows["qid"], "cell": "all", "ap": rows["ap"]}))

    return Column(language, sample)


def metric_column(metric: str, higher_is_better: bool) -> Column:
    """Any scalar run metric (e.g. ``bias/rank_distance``); intervals over seeds only."""

    def sample(run: pd.Series, questions: QuestionLoader) -> RunSample | None:
        value = run.get(f"metrics.{metric}", np.nan)
        return RunSample(float(value)) if np.isfinite(value) else None

    return Column(metric, sample, higher_is_better)


def multilingual_languages(runs: pd.DataFrame, questions: QuestionLoader) -> list[str]:
    """Query languages present in the runs' multilingual per-question APs, sorted."""
    languages: set[str] = set()
    for run_id in runs["run_id"]:
        frame = questions(run_id)
        if frame is not None:
            languages |= set(frame.loc[frame["setting"] == "multilingual", "q_lang"])
    return sorted(languages)


def _row_order(strategy: str) -> int:
    return list(STRATEGY_LABELS).index(strategy) if strategy in STRATEGY_LABELS else len(STRATEGY_LABELS)


def build_table(
    runs: pd.DataFrame, columns: Sequence[Column], questions: QuestionLoader,
    row_keys: Sequence[str] = ROW_KEYS, n_boot: int = N_BOOT, seed: int = 0,
) -> pd.DataFrame:
    """Long table: one row per (row keys, column) with mean, low, high, n_runs and ``best``."""
    missing = [k for k in row_keys if f"params.{k}" not in runs]
    if missing:
        raise ValueError(f"runs lack the row params {missing}; have {sorted(c for c in runs if c.startswith('params.'))}")
    groups = sorted(
        runs.groupby([f"params.{k}" for k in row_keys], sort=False),
        key=lambda item: tuple(_row_order(v) if k == "sampling.strategy" else v for k, v in zip(row_keys, item[0])),
    )
    records = []
    for column in columns:
        estimates = []
        for _, group in groups:
            # Seed order fixes the bootstrap's draw order, so a cell is reproducible.
            ordered = group.sort_values("params.seed") if "params.seed" in group else group
            samples = [s for s in (column.sample(run, questions) for _, run in ordered.iterrows()) if s is not None]
            estimates.append(bootstrap_estimate(samples, n_boot, seed) if samples else None)
        best = separated_best(estimates, column.higher_is_better)
        for index, (keys, estimate) in enumerate(zip([g[0] for g in groups], estimates)):
            records.append({
                **dict(zip(row_keys, keys)), "column": column.name,
                "mean": estimate.mean if estimate else np.nan, "low": estimate.low if estimate else np.nan,
                "high": estimate.high if estimate else np.nan, "n_runs": estimate.n_runs if estimate else 0,
                "best": index == best,
            })
    return pd.DataFrame.from_records(records)


def _latex_escape(text: str) -> str:
    for char in ("\\", "_", "%", "&", "#", "$"):
        text = text.replace(char, f"\\{char}" if char != "\\" else r"\textbackslash{}")
    return text


def wide(table: pd.DataFrame, style: str, row_keys: Sequence[str] = ROW_KEYS, digits: int = 3) -> pd.DataFrame:
    """Rows x columns of ``mean [low, high]`` strings; the separated best in bold
    (``style``: ``markdown`` or ``latex``)."""
    bold = {"markdown": "**{}**", "latex": r"\textbf{{{}}}"}[style]

    def cell(row: pd.Series) -> str:
        if not np.isfinite(row["mean"]):
            return "n/a"
        text = f"{row['mean']:.{digits}f} [{row['low']:.{digits}f}, {row['high']:.{digits}f}]"
        return bold.format(text) if row["best"] else text

    labelled = table.assign(cell=table.apply(cell, axis=1))
    if "sampling.strategy" in labelled:
        labelled["sampling.strategy"] = labelled["sampling.strategy"].map(lambda s: STRATEGY_LABELS.get(s, s))
    columns = list(dict.fromkeys(table["column"]))
    rows = list(dict.fromkeys(labelled[list(row_keys)].itertuples(index=False, name=None)))  # table order
    pivoted = labelled.pivot(index=list(row_keys), columns="column", values="cell")
    result = pivoted.reindex(pd.MultiIndex.from_tuples(rows, names=list(row_keys)))[columns].reset_index()
    result = result.rename(columns={"model.name": "initializer", "sampling.strategy": "training"})
    if style == "latex":
        result = result.rename(columns=_latex_escape)
        for key in ("initializer", "training"):
            if key in result:
                result[key] = result[key].map(_latex_escape)
    return result


def write_table(table: pd.DataFrame, stem, caption: str, row_keys: Sequence[str] = ROW_KEYS) -> list:
    """``<stem>.csv`` (long, numeric), ``<stem>.md`` and ``<stem>.tex`` (cells with intervals)."""
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    table.to_csv(paths[0], index=False, float_format="%.5f")
    note = "Mean over seeds [95% bootstrap interval]; bold: best, with an interval separated from every other row."
    paths[1].write_text(f"{caption}\n\n{wide(table, 'markdown', row_keys).to_markdown(index=False)}\n\n{note}\n")
    latex = wide(table, "latex", row_keys).to_latex(index=False, escape=False, caption=_latex_escape(caption))
    paths[2].write_text(latex)
    return paths
