"""Evaluation suites (``eval.suites``): what a point is evaluated on, behind one protocol.

A suite names the texts it needs encoded, per role (:meth:`EvalSuite.texts`), and scores their
embeddings (:meth:`EvalSuite.score`), rows in the order it named them. Encoding is not the
suite's business: :class:`hybridsweep.evaluation.evaluator.Evaluator` encodes the texts of every
suite in one ``trainer.predict`` on the Trainer's devices. Every suite logs its metrics under
its ``prefix`` (the LAReQA suite under none: ``map_full/multilingual``; Tatoeba under
``tatoeba/``) and its tables under the folder of that prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from hybridsweep.model import Role


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    """Metric name (without the suite's prefix) -> value."""
    matrices: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Named tables (e.g. language-pair mAP), logged as CSV and heatmap."""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Named long tables (e.g. per-question APs), logged as CSV artifacts under their file names."""


class EvalSuite(Protocol):
    prefix: str
    """Prefix of the suite's metric names and folder of its artifacts (``""`` or ``"name/"``)."""

    def texts(self) -> dict[Role, list[str]]:
        """The texts to encode, per role."""

    def score(self, embeddings: dict[Role, np.ndarray]) -> SuiteResult:
        """The suite's results from the L2-normalised embeddings of :meth:`texts`, row for row."""
