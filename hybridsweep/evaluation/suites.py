"""Evaluation suites (``eval.suites``): what a point is evaluated on, behind one protocol.

A suite names the texts it needs encoded, per role (:meth:`EvalSuite.texts`), and scores their
embeddings (:meth:`EvalSuite.score`), rows in the order it named them. Encoding is not the
suite's business: in a run, :class:`hybridsweep.evaluation.evaluator.Evaluator` encodes the texts
of every suite in one ``trainer.predict`` on the Trainer's devices; without a Trainer,
:func:`evaluate_suite` encodes them with :func:`encode_texts`. Every suite logs its metrics under
its ``prefix`` (the LAReQA suite under none: ``map_full/multilingual``; Tatoeba under
``tatoeba/``) and its tables under the folder of that prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from hybridsweep.evaluation.encode import encode_texts
from hybridsweep.model import Role, TextEncoder
from hybridsweep.precision import Precision


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


def evaluate_suite(suite: EvalSuite, encoder: TextEncoder, batch_size: int = 256, precision: Precision = "fp32") -> SuiteResult:
    """Encode a suite's texts with ``encoder`` where it sits (no Trainer) and score them."""
    embeddings = {role: encode_texts(encoder, texts, role, batch_size, precision=precision)
                  for role, texts in suite.texts().items()}
    return suite.score(embeddings)
