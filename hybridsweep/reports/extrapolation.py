"""The check of a scaling law's extrapolation (:mod:`hybridsweep.reports.fits`).

**Extrapolation check.** The points at the largest level of one axis are held out; the law is
fitted to the rest and predicts them. The forecast interval of a held-out point adds its own
measurement noise to the refits' predictions, ``pred_b + (y_held - y*_held,b)``, so the measured
mean lies inside it unless the law, not the noise, misses it (equivalently: the percentile
interval of ``y*_held,b - pred_b`` contains 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridsweep.reports.fits import (
    CHECKED,
    DEFAULT_FIT,
    FitSettings,
    LawFit,
    finite_rows,
    fit_law,
    identification_problem,
    percentile_interval,
)


@dataclass(frozen=True)
class Extrapolation:
    """Held-out points at the largest level of ``axis``, predicted by a fit to the others.

    ``forecast_low``/``forecast_high``: the forecast interval (module doc); ``inside``: the
    measured mean lies in it. ``status`` is CHECKED, or why no check was made."""

    axis: str
    status: str
    fit: LawFit | None = None
    held_out: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    measured: np.ndarray = field(default_factory=lambda: np.empty(0))
    predicted: np.ndarray = field(default_factory=lambda: np.empty(0))
    forecast_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    forecast_high: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def error(self) -> np.ndarray:
        """Measured minus predicted."""
        return self.measured - self.predicted

    @property
    def inside(self) -> np.ndarray:
        # The tolerance admits rounding: where the held-out point's noise is shared with the rest
        # (the same questions), it cancels and the interval can shrink to the prediction itself.
        tolerance = 1e-9 * np.maximum(1.0, np.abs(self.measured))
        return (self.forecast_low - tolerance <= self.measured) & (self.measured <= self.forecast_high + tolerance)


def check_extrapolation(
    x: np.ndarray, y: np.ndarray, replicates: np.ndarray | None, axes: Sequence[str], axis: str,
    settings: FitSettings = DEFAULT_FIT, n_boot: int = 1000, seed: int = 0,
) -> Extrapolation:
    """Hold out the points at the largest level of ``axis``, fit the rest (same reference as
    the full fit) and forecast the held-out ones (module doc)."""
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    replicates = finite_rows(replicates)  # before the split, so refit b and replicate b stay paired
    k = list(axes).index(axis)
    held = x[:, k] == np.nanmax(x[:, k])
    rest = ~held
    problem = identification_problem(x[rest], axes)
    if problem is not None:
        return Extrapolation(axis, f"cannot hold out the largest {axis}: {problem} without it")
    sub_replicates = None if replicates is None else replicates[:, rest]
    fit = fit_law(x[rest], y[rest], sub_replicates, axes, settings, x.min(axis=0), n_boot, seed)
    if not fit.fitted:
        return Extrapolation(axis, f"cannot hold out the largest {axis}: without it, {fit.status}", fit)
    predictions = fit.predict_refits(x[held])  # (B, m)
    if fit.resampling == "points":
        noise = y[held] - replicates[:, held]
    else:
        rng = np.random.default_rng(seed + 1)
        noise = rng.choice(fit.residual_pool, size=predictions.shape, replace=True)
    low, high = percentile_interval(predictions + noise, settings.level)
    return Extrapolation(axis, CHECKED, fit, x[held], y[held], fit.predict(x[held]), low, high)
