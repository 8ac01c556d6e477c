"""Additional evaluation suites (``eval.extra``): benchmarks beside the main parallel QA corpus.

A suite is any object with ``name`` and ``evaluate(encoder, batch_size) -> SuiteResult``; the
training run evaluates each one listed in ``eval.extra`` and logs its metrics and matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from hybridsweep.evaluation.precision import Precision
from hybridsweep.model import TextEncoder


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    matrices: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Named tables (e.g. per-language scores), logged as CSV and heatmap."""


class EvalSuite(Protocol):
    name: str

    def evaluate(self, encoder: TextEncoder, batch_size: int, precision: Precision = "fp32") -> SuiteResult: ...
