"""The paper's tables: rows = initializer x training, one column per setting or metric.

Rows (:func:`row_label`, :func:`table_rows`): per initializer, ``zero-shot`` (the initializer
evaluated without training), ``mono-only``, ``cross-only`` and one ``hybrid α=<mix ratio>`` row per
mix ratio present (``hybrid α=0.5`` and ``hybrid α=auto`` are different rows). Every cell is the
mean over seeds with a 95% bootstrap interval (``stats.bootstrap_estimate``); the best cell of a
column is bold only when its interval separates it from every other row. Cells may carry marks
(a ``marks`` column, e.g. the paired tests of :mod:`hybridsweep.reports.significance`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from hybridsweep.reports.stats import N_BOOT, RunSample, bootstrap_estimate, separated_best
from hybridsweep.tracking.store import POINT_ROLE, ROLE_TAG, ZERO_SHOT_ROLE

SETTINGS = ("monolingual", "crosslingual", "multilingual")
ZERO_SHOT = "zero-shot"
STRATEGY_LABELS = {"mono": "mono-only", "cross": "cross-only", "hybrid": "hybrid"}
ROW_COLUMNS = ("initializer", "training")
RANK_DISTANCE = "bias/rank_distance"
POOL_SIZE = "eval/candidates"
"""Candidates in the multilingual pool: rank distances grow with it, so it stands beside them."""
COUNT_COLUMNS = (POOL_SIZE, "eval/questions")
"""Columns of whole numbers, printed without decimals."""
BASELINE_MARKS = {"mono-only": "†", "cross-only": "‡"}
"""Mark of a hybrid cell with a strategy claim against that baseline row
(:mod:`hybridsweep.reports.significance`); LOWER before it when the marked row is the lower one."""
LOWER = "−"
_LATEX_MARKS = {"†": r"\dagger", "‡": r"\ddagger", LOWER: "-"}
_LATEX_MATH = {"α": r"\alpha", "≤": r"\leq", "≥": r"\geq", "·": r"\cdot", "×": r"\times", **_LATEX_MARKS}
_LATEX_TEXT = {"\\": r"\textbackslash{}", "^": r"\textasciicircum{}", **{c: f"\\{c}" for c in "_%&#${}"}}

QuestionLoader = Callable[[str], "pd.DataFrame | None"]
"""run id -> that run's per-question APs (``RetrievalResult.per_question``) or ``None``."""


@dataclass(frozen=True)
class Column:
    """One table column: how a run contributes to it, and which direction is better (``None``:
    neither, e.g. the pool size; such a column never has a best cell)."""

    name: str
    sample: Callable[[pd.Series, QuestionLoader], RunSample | None]
    higher_is_better: bool | None = True


class Row(NamedTuple):
    """One table row: its initializer, its label (:func:`row_label`), its runs in seed order."""

    initializer: str
    training: str
    runs: pd.DataFrame

    @property
    def is_hybrid(self) -> bool:
        return self.training == STRATEGY_LABELS["hybrid"] or self.training.startswith("hybrid α=")


def _present(run: pd.Series, key: str) -> str | None:
    value = run.get(key)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _ratio_text(ratio: str) -> str:
    """``0.50`` and ``0.5`` name one ratio; non-numbers (``auto``) stay as written."""
    try:
        return f"{float(ratio):g}"
    except ValueError:
        return ratio.strip()


def row_label(run: pd.Series) -> str:
    """The table row of a run (one of ``mlflow.search_runs``' rows): ``zero-shot`` for tag
    ``hybridsweep.role=zero-shot``; for a point (tag ``point``, or no role tag and a
    ``sampling.strategy`` param, as older runs are), ``mono-only``, ``cross-only`` or
    ``hybrid α=<params.sampling.mix_ratio>`` (plain ``hybrid`` where the run has no mix ratio)."""
    run_id = run.get("run_id", "?")
    role = _present(run, f"tags.{ROLE_TAG}")
    if role == ZERO_SHOT_ROLE:
        return ZERO_SHOT
    strategy = _present(run, "params.sampling.strategy")
    if role not in (POINT_ROLE, None) or strategy is None:
        raise ValueError(
            f"run {run_id}: tag {ROLE_TAG}={role!r} with params.sampling.strategy={strategy!r} is neither a "
            f"point (role {POINT_ROLE!r}, or no role and a sampling.strategy) nor a {ZERO_SHOT_ROLE!r} evaluation"
        )
    if strategy not in STRATEGY_LABELS:
        raise ValueError(f"run {run_id}: params.sampling.strategy={strategy!r}; expected one of {list(STRATEGY_LABELS)}")
    if strategy != "hybrid":
        return STRATEGY_LABELS[strategy]
    ratio = _present(run, "params.sampling.mix_ratio")
    return STRATEGY_LABELS["hybrid"] if ratio is None else f"hybrid α={_ratio_text(ratio)}"


def _row_order(label: str) -> tuple:
    """zero-shot, mono-only, cross-only, then hybrid rows by increasing α, non-numeric α last."""
    fixed = [ZERO_SHOT, *STRATEGY_LABELS.values()]
    if label in fixed:
        return (fixed.index(label),)
    ratio = label.removeprefix("hybrid α=")
    try:
        return (len(fixed), 0, float(ratio), "")
    except ValueError:
        return (len(fixed), 1, 0.0, ratio)


def _seed_order(seed) -> tuple:
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def table_rows(runs: pd.DataFrame) -> list[Row]:
    """The runs grouped into table rows (initializers sorted, rows in :func:`_row_order`), each
    row's runs in seed order (which fixes the bootstrap's draw order, so a cell is reproducible).
    A zero-shot row keeps only its initializer's newest zero-shot run: the evaluation of an
    untrained model is deterministic, so a repeat adds nothing and must not count as a seed."""
    if "params.model.name" not in runs:
        raise ValueError(f"runs lack the param model.name; have {sorted(c for c in runs if c.startswith('params.'))}")
    unnamed = runs.loc[runs["params.model.name"].isna(), "run_id"].tolist()
    if unnamed:
        raise ValueError(f"runs {unnamed} have no param model.name (the initializer of a table row)")
    labelled = runs.assign(_training=[row_label(run) for _, run in runs.iterrows()])
    rows = []
    for (initializer, training), group in labelled.groupby(["params.model.name", "_training"], sort=False):
        if training == ZERO_SHOT and "start_time" in group:
            group = group.sort_values("start_time").tail(1)
        elif "params.seed" in group:
            group = group.iloc[sorted(range(len(group)), key=lambda i: _seed_order(group["params.seed"].iloc[i]))]
        rows.append(Row(str(initializer), training, group.drop(columns="_training")))
    return sorted(rows, key=lambda row: (row.initializer, _row_order(row.training)))


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


def metric_column(metric: str, higher_is_better: bool | None) -> Column:
    """Any scalar run metric (e.g. ``bias/rank_distance``); intervals over seeds only."""

    def sample(run: pd.Series, questions: QuestionLoader) -> RunSample | None:
        value = run.get(f"metrics.{metric}", np.nan)
        return RunSample(float(value)) if np.isfinite(value) else None

    return Column(metric, sample, higher_is_better)


def metric_columns(metrics: Mapping[str, str]) -> list[Column]:
    """One column per run metric (name -> ``lower`` or ``higher``, the better direction)."""
    directions = {"lower": False, "higher": True}
    bad = {m: d for m, d in metrics.items() if d not in directions}
    if bad:
        raise ValueError(f"metric directions {bad}: expected 'lower' or 'higher' (which is better)")
    return [metric_column(m, directions[d]) for m, d in metrics.items()]


def bias_columns(metrics: Mapping[str, str]) -> list[Column]:
    """The bias table's columns: :func:`metric_columns`, with the pool size (:data:`POOL_SIZE`)
    right after the rank distance (first when the rank distance is not among them)."""
    columns = metric_columns(metrics)
    names = [c.name for c in columns]
    at = names.index(RANK_DISTANCE) + 1 if RANK_DISTANCE in names else 0
    return [*columns[:at], metric_column(POOL_SIZE, None), *columns[at:]]


def multilingual_languages(runs: pd.DataFrame, questions: QuestionLoader) -> list[str]:
    """Query languages present in the runs' multilingual per-question APs, sorted."""
    languages: set[str] = set()
    for run_id in runs["run_id"]:
        frame = questions(run_id)
        if frame is not None:
            languages |= set(frame.loc[frame["setting"] == "multilingual", "q_lang"])
    return sorted(languages)


def build_table(
    runs: pd.DataFrame, columns: Sequence[Column], questions: QuestionLoader, n_boot: int = N_BOOT, seed: int = 0,
) -> pd.DataFrame:
    """Long table: one row per (initializer, training, column) with mean, low, high, n_runs and
    ``best``, rows in :func:`table_rows` order."""
    rows = table_rows(runs)
    records = []
    for column in columns:
        estimates = []
        for row in rows:
            samples = [s for s in (column.sample(run, questions) for _, run in row.runs.iterrows()) if s is not None]
            estimates.append(bootstrap_estimate(samples, n_boot, seed) if samples else None)
        best = None if column.higher_is_better is None else separated_best(estimates, column.higher_is_better)
        for index, (row, estimate) in enumerate(zip(rows, estimates)):
            records.append({
                "initializer": row.initializer, "training": row.training, "column": column.name,
                "mean": estimate.mean if estimate else np.nan, "low": estimate.low if estimate else np.nan,
                "high": estimate.high if estimate else np.nan, "n_runs": estimate.n_runs if estimate else 0,
                "best": index == best,
            })
    return pd.DataFrame.from_records(records)


def latex_escape(text: str) -> str:
    """``text`` for LaTeX: special characters escaped, Greek letters and symbols in math mode."""
    return "".join(_LATEX_TEXT.get(c) or (f"${_LATEX_MATH[c]}$" if c in _LATEX_MATH else c) for c in text)


def _latex_marks(marks: str) -> str:
    return f"$^{{{''.join(_LATEX_MARKS[m] for m in marks)}}}$" if marks else ""


def wide(table: pd.DataFrame, style: str, digits: int = 3) -> pd.DataFrame:
    """Rows x columns of ``mean [low, high]`` strings (the value alone where the interval is a
    point, whole numbers for :data:`COUNT_COLUMNS`); the separated best in bold, then the cell's
    ``marks`` if the table has them (``style``: ``markdown`` or ``latex``)."""
    bold = {"markdown": "**{}**", "latex": r"\textbf{{{}}}"}[style]

    def cell(row: pd.Series) -> str:
        if not np.isfinite(row["mean"]):
            return "n/a"
        places = 0 if row["column"] in COUNT_COLUMNS else digits
        text = f"{row['mean']:.{places}f}"
        if not row["low"] == row["mean"] == row["high"]:
            text += f" [{row['low']:.{places}f}, {row['high']:.{places}f}]"
        text = bold.format(text) if row["best"] else text
        marks = row.get("marks")
        marks = marks if isinstance(marks, str) else ""
        return f"{text} {marks if style == 'markdown' else _latex_marks(marks)}" if marks else text

    labelled = table.assign(cell=table.apply(cell, axis=1))
    columns = list(dict.fromkeys(table["column"]))
    rows = list(dict.fromkeys(labelled[list(ROW_COLUMNS)].itertuples(index=False, name=None)))  # table order
    pivoted = labelled.pivot(index=list(ROW_COLUMNS), columns="column", values="cell")
    result = pivoted.reindex(pd.MultiIndex.from_tuples(rows, names=list(ROW_COLUMNS)))[columns].reset_index()
    if style == "latex":
        result = result.rename(columns=latex_escape)
        for key in ROW_COLUMNS:
            result[key] = result[key].map(latex_escape)
    return result


def table_notes(table: pd.DataFrame) -> list[str]:
    """What the cells of a table are (printed under it)."""
    notes = ["Mean over seeds [95% bootstrap interval]; bold: best, with an interval separated from every other row. "
             "A cell without an interval is one run without per-question data: never bold."]
    if (table["training"] == ZERO_SHOT).any():
        notes.append("zero-shot: the initializer evaluated without training (one evaluation; its interval is over questions only).")
    if POOL_SIZE in set(table["column"]):
        notes.append(f"{POOL_SIZE}: candidates in the multilingual pool; rank distances grow with it.")
    return notes


def write_table(table: pd.DataFrame, stem: Path, caption: str, notes: Sequence[str] = ()) -> list[Path]:
    """``<stem>.csv`` (long, numeric), ``<stem>.md`` and ``<stem>.tex`` (cells with intervals and
    marks, :func:`table_notes` and ``notes`` under the table; in LaTeX, after the caption)."""
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    table.to_csv(paths[0], index=False, float_format="%.5f")
    notes = [*table_notes(table), *notes]
    paths[1].write_text(f"{caption}\n\n{wide(table, 'markdown').to_markdown(index=False)}\n\n" + "\n".join(notes) + "\n")
    full_caption = latex_escape(" ".join([caption + ".", *notes]))
    paths[2].write_text(wide(table, "latex").to_latex(index=False, escape=False, caption=full_caption))
    return paths
