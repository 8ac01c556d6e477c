"""Scaling laws fitted with bootstrap refits (their extrapolation check: :mod:`hybridsweep.reports.extrapolation`).

**Law.** An additive saturating power law in ``K`` axes (``K = 1``: one size; ``K = 2``: data
size and batch size)::

    y = E - sum_k A_k * (x_k / m_k) ** (-alpha_k),    alpha_k in [MIN_IDENTIFIABLE_RATE, MAX_RATE]

``m_k`` is the smallest measured level of axis ``k`` (the fit's ``reference``), so ``A_k`` is the
term's size at the smallest measured ``x_k`` and ``E`` the value the law approaches as every axis
grows. Signs are free: a metric that rises with scale (mAP) has ``A_k > 0``, one that falls
(a loss, a bias) ``A_k < 0``. With ``K = 1`` this is ``y = a - b N^-c`` with ``a = E``,
``b = A m^c`` and ``c = alpha``. The additive form is Hoffmann et al.'s (2022) ``E + A/N^a + B/D^b``:
each axis removes its own share of the remaining gap and the shares do not interact, which is the
assumption that lets a sweep that varies one axis at a time (a cross-shaped design) identify it.

**Loss.** Least squares (``l2``) or Huber's loss (``huber``): residuals beyond
``delta = huber_delta * s`` count linearly, not quadratically, so one wild point cannot drag the
curve (Hoffmann et al. 2022; Besiroglu et al. 2024). ``s`` is the median bootstrap standard
deviation of the points, so ``huber_delta`` is in standard errors of a point; where the points
carry no resampling spread, ``s = 1.4826 * MAD`` of the least-squares residuals.

**Solver.** For every candidate exponent vector on a grid the linear parameters ``(E, A)`` have a
closed form (variable projection); the grid's best is the start of a damped Gauss-Newton
(Levenberg-Marquardt) iteration on all parameters, with exponents held at a bound whose gradient
points outwards, and for ``huber`` iteratively reweighted (weights ``min(1, delta / |r|)``, the
minimiser of Huber's loss). Every bootstrap replicate is solved in the same vectorised pass, so a
thousand refits cost about as much as one.

**Intervals: bootstrap refits.** Point estimates come from the points' means. Each replicate ``b``
refits the law to replicate ``b`` of every point (rows of ``replicates``); a parameter's or a
prediction's interval is the percentile interval of its refits. Where the points carry no
resampling spread (one run per point and no per-question data, e.g. a per-run loss from one seed),
replicates are built from the fit's residuals instead: ``y*_b = y_hat + e*_b`` with ``e*_b``
drawn with replacement from the centred residuals scaled by ``sqrt(n / (n - p))``
(``resampling = "residuals"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_IDENTIFIABLE_RATE = 0.01
"""Below this exponent ``A x^-alpha ~ A - A alpha ln x``: a log-linear trend whose asymptote the
points do not determine; a fit that ends at this bound is reported as not saturating."""
MAX_RATE = 5.0
MIN_LEVELS = 3
"""An axis's term ``A x^-alpha`` has two parameters beside the shared ``E``: three levels at least."""
LOSSES = ("l2", "huber")
DEFAULT_HUBER_DELTA = 2.0
DEFAULT_LEVEL = 0.95
FITTED = "fitted"
CHECKED = "checked"
GRID_SIZE = {1: 48, 2: 24}
"""Exponent candidates per axis for the start (log-spaced over the allowed range)."""
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class FitSettings:
    """How a law is fitted: ``loss`` (``l2`` or ``huber``), ``huber_delta`` (in standard errors
    of a point, see the module doc) and the interval ``level``."""

    loss: str = "l2"
    huber_delta: float = DEFAULT_HUBER_DELTA
    level: float = DEFAULT_LEVEL

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"fit.loss={self.loss!r}: expected one of {LOSSES}")
        if not (isinstance(self.huber_delta, (int, float)) and self.huber_delta > 0):
            raise ValueError(f"fit.huber_delta={self.huber_delta!r}: expected a number > 0")
        if not 0 < self.level < 1:
            raise ValueError(f"fit.level={self.level!r}: expected a number in (0, 1)")

    @classmethod
    def from_config(cls, config: Mapping | None, where: str) -> FitSettings:
        """From a profile's ``fit: {loss, huber_delta, level}`` mapping; errors name ``where``."""
        config = dict(config or {})
        unknown = set(config) - {"loss", "huber_delta", "level"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected loss, huber_delta, level")
        try:
            return cls(**config)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def describe(self) -> str:
        if self.loss == "l2":
            return "least squares"
        return f"Huber loss (delta = {self.huber_delta:g} standard errors of a point)"


DEFAULT_FIT = FitSettings()


def parameter_names(axes: Sequence[str]) -> list[str]:
    """``E``, then ``A[axis]`` and ``alpha[axis]`` per axis: the order of a parameter vector."""
    return ["E", *[f"{p}[{axis}]" for axis in axes for p in ("A", "alpha")]]


def saturating_law(x: np.ndarray, theta: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``E - sum_k A_k (x_k / m_k)^-alpha_k`` for ``x`` of shape (n, K) and ``theta`` of shape
    (p,) or (B, p); returns (n,) or (B, n)."""
    u = np.asarray(x, dtype=float) / np.asarray(reference, dtype=float)
    theta = np.asarray(theta, dtype=float)
    single = theta.ndim == 1
    theta = np.atleast_2d(theta)
    amplitude, rate = theta[:, 1::2], theta[:, 2::2]  # (B, K)
    terms = amplitude[:, None, :] * u[None, :, :] ** -rate[:, None, :]  # (B, n, K)
    y = theta[:, :1] - terms.sum(axis=2)
    return y[0] if single else y


def _jacobian(log_u: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """d law / d theta, shape (B, n, p), at ``theta`` (B, p); ``log_u`` = ln(x / m), (n, K)."""
    n_rep, n = len(theta), len(log_u)
    power = np.exp(-theta[:, None, 2::2] * log_u[None])  # (B, n, K)
    jac = np.empty((n_rep, n, theta.shape[1]))
    jac[:, :, 0] = 1.0
    jac[:, :, 1::2] = -power
    jac[:, :, 2::2] = theta[:, None, 1::2] * power * log_u[None]
    return jac


def _loss(residuals: np.ndarray, delta: float | None) -> np.ndarray:
    """Sum over points of ``r^2 / 2`` (least squares) or Huber's ``rho_delta(r)``, per replicate."""
    if delta is None:
        return 0.5 * np.sum(residuals**2, axis=-1)
    a = np.abs(residuals)
    return np.sum(np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta)), axis=-1)


def _grid_start(log_u: np.ndarray, targets: np.ndarray, delta: float | None) -> np.ndarray:
    """Per replicate, the best exponent grid point with its closed-form linear parameters."""
    n_axes = log_u.shape[1]
    rates = np.geomspace(MIN_IDENTIFIABLE_RATE, MAX_RATE, GRID_SIZE.get(n_axes, 12))
    combos = np.array(np.meshgrid(*[rates] * n_axes, indexing="ij")).reshape(n_axes, -1).T  # (G, K)
    design = np.concatenate(
        [np.ones((len(combos), len(log_u), 1)), -np.exp(-combos[:, None, :] * log_u[None])], axis=2
    )  # (G, n, 1 + K)
    projector = np.linalg.pinv(design)  # (G, 1 + K, n)
    start = np.empty((len(targets), 1 + 2 * n_axes))
    for chunk in np.array_split(np.arange(len(targets)), max(1, len(targets) // 256)):
        coef = projector @ targets[chunk].T  # (G, 1 + K, b)
        residuals = np.einsum("gnk,gkb->gbn", design, coef) - targets[chunk][None]
        best = np.argmin(_loss(residuals, delta), axis=0)  # (b,)
        chosen = coef[best, :, np.arange(len(chunk))]  # (b, 1 + K)
        start[chunk, 0] = chosen[:, 0]
        start[chunk, 1::2] = chosen[:, 1:]
        start[chunk, 2::2] = combos[best]
    return start


def _solve(log_u: np.ndarray, targets: np.ndarray, delta: float | None, max_iter: int = 500) -> np.ndarray:
    """Minimise the loss for every row of ``targets`` (B, n) at once (module doc: solver); (B, p).
    A row stops when an accepted step changes the loss or the parameters by a relative 1e-12 or
    1e-10, or when no damped step lowers the loss any more."""
    theta = _grid_start(log_u, targets, delta)
    reference = np.ones(log_u.shape[1])
    u = np.exp(log_u)
    rate_index = np.arange(2, theta.shape[1], 2)
    damping = np.full(len(theta), 1e-3)
    residuals = saturating_law(u, theta, reference) - targets
    current = _loss(residuals, delta)
    done = np.zeros(len(theta), dtype=bool)
    for _ in range(max_iter):
        active = ~done
        if not active.any():
            break
        th, r = theta[active], residuals[active]
        jac = _jacobian(log_u, th)
        weight = np.ones_like(r) if delta is None else np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        gradient = np.einsum("bnp,bn->bp", jac, weight * r)
        hessian = np.einsum("bnp,bn,bnq->bpq", jac, weight, jac)
        rates = th[:, rate_index]
        g_rate = gradient[:, rate_index]
        pinned = ((rates <= MIN_IDENTIFIABLE_RATE) & (g_rate > 0)) | ((rates >= MAX_RATE) & (g_rate < 0))
        free = np.ones_like(th, dtype=bool)
        free[:, rate_index] = ~pinned
        hessian = hessian * free[:, :, None] * free[:, None, :]
        gradient = gradient * free
        scale = np.maximum(np.diagonal(hessian, axis1=1, axis2=2), 1e-12 * np.abs(hessian).max(axis=(1, 2))[:, None] + 1e-300)
        system = hessian + (damping[active][:, None] * scale)[:, :, None] * np.eye(th.shape[1])
        system = np.where(free[:, :, None] | free[:, None, :], system, np.eye(th.shape[1]))
        step = -np.linalg.solve(system, gradient[:, :, None])[:, :, 0]  # positive definite: damped
        trial = th + step
        trial[:, rate_index] = np.clip(trial[:, rate_index], MIN_IDENTIFIABLE_RATE, MAX_RATE)
        trial_residuals = saturating_law(u, trial, reference) - targets[active]
        trial_loss = _loss(trial_residuals, delta)
        better = trial_loss < current[active]
        index = np.flatnonzero(active)
        small_change = (current[active] - trial_loss <= 1e-12 * (current[active] + 1e-30)) | (
            np.abs(trial - th).max(axis=1) <= 1e-10 * (np.abs(th).max(axis=1) + 1e-10)
        )
        accepted = index[better]
        theta[accepted] = trial[better]
        residuals[accepted] = trial_residuals[better]
        current[accepted] = trial_loss[better]
        damping[accepted] = np.maximum(damping[accepted] / 3.0, 1e-12)
        damping[index[~better]] *= 4.0
        done[index[small_change & better]] = True
        done[index[~better & (damping[index] > 1e12)]] = True  # no step lowers the loss: a minimum
    return theta


def identification_problem(x: np.ndarray, axes: Sequence[str]) -> str | None:
    """Why the law cannot be fitted to the design ``x`` (n, K), or ``None`` when it can: every
    axis needs MIN_LEVELS distinct levels, and the design one distinct point per parameter plus
    one (a degree of freedom to spare)."""
    x = np.asarray(x, dtype=float)
    for k, axis in enumerate(axes):
        levels = len(np.unique(x[:, k]))
        if levels < MIN_LEVELS:
            return f"too few levels of {axis} ({levels} < {MIN_LEVELS})"
    needed = 2 + 2 * len(axes)
    distinct = len(np.unique(x, axis=0))
    if distinct < needed:
        return f"too few points ({distinct} < {needed})"
    return None


@dataclass(frozen=True)
class LawFit:
    """A law fitted to points, with its bootstrap refits.

    ``estimate`` (p,) is fitted to the points' means; ``refits`` (B, p) to their replicates
    (one per replicate with a finite value at every point). ``status`` is FITTED, or why not (then ``estimate``
    is NaN): too few levels or points, or not saturating in an axis (its exponent ended at
    MIN_IDENTIFIABLE_RATE)."""

    axes: tuple[str, ...]
    reference: np.ndarray
    estimate: np.ndarray
    refits: np.ndarray
    status: str
    n_points: int
    settings: FitSettings = DEFAULT_FIT
    resampling: str = "points"
    delta: float | None = None
    residual_pool: np.ndarray | None = None
    """The scaled, centred residuals the residual bootstrap draws from (``resampling ==
    "residuals"``)."""

    @property
    def fitted(self) -> bool:
        return self.status == FITTED

    @property
    def names(self) -> list[str]:
        return parameter_names(self.axes)

    def interval(self, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of every parameter over the refits, each (p,)."""
        return percentile_interval(self.refits, level or self.settings.level)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return saturating_law(np.atleast_2d(x), self.estimate, self.reference)

    def predict_refits(self, x: np.ndarray) -> np.ndarray:
        """(B, n) predictions of every refit."""
        return saturating_law(np.atleast_2d(x), self.refits, self.reference)

    def band(self, x: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the fitted curve at ``x`` over the refits."""
        return percentile_interval(self.predict_refits(x), level or self.settings.level)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 50.0 * (1.0 - level)
    with np.errstate(invalid="ignore"):
        if len(samples) == 0 or np.isnan(samples).all():
            return np.full(samples.shape[1:], np.nan), np.full(samples.shape[1:], np.nan)
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return low, high


def finite_rows(replicates: np.ndarray | None) -> np.ndarray | None:
    """The replicates with a finite value at every point (a cell can come out empty in a draw)."""
    if replicates is None:
        return None
    replicates = np.asarray(replicates, dtype=float)
    return replicates[np.isfinite(replicates).all(axis=1)]


def _has_spread(replicates: np.ndarray | None) -> bool:
    return replicates is not None and len(replicates) > 1 and bool(np.ptp(replicates, axis=0).max() > 0)


def usable_points(
    x: np.ndarray, y: np.ndarray, replicates: np.ndarray | None, axes: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The points a fit can use: ``x`` as (n, K) for the K ``axes``, without points whose mean or
    levels are not finite or whose levels are not positive (log scale), and the replicates of those
    points that are finite at every one of them (:func:`finite_rows`)."""
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    if x.shape[1] != len(axes):
        raise ValueError(f"{x.shape[1]} axes of points but {len(axes)} axis names {tuple(axes)}")
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1) & (x > 0).all(axis=1)
    return x[keep], y[keep], finite_rows(None if replicates is None else np.asarray(replicates, dtype=float)[:, keep])


def fit_law(
    x: np.ndarray, y: np.ndarray, replicates: np.ndarray | None, axes: Sequence[str],
    settings: FitSettings = DEFAULT_FIT, reference: np.ndarray | None = None,
    n_boot: int = 1000, seed: int = 0,
) -> LawFit:
    """Fit :func:`saturating_law` to points ``x`` (n, K) with means ``y`` (n,) and bootstrap
    ``replicates`` (B, n): replicate ``b`` of every point, refitted together (module doc).
    ``replicates`` ``None`` or without spread: residual bootstrap with ``n_boot`` draws from
    ``numpy.random.default_rng(seed)``. ``reference`` (K,) defaults to each axis's smallest level."""
    axes = tuple(axes)
    x, y, replicates = usable_points(x, y, replicates, axes)
    reference = x.min(axis=0) if reference is None else np.asarray(reference, dtype=float)
    n_params = 1 + 2 * len(axes)
    problem = identification_problem(x, axes)
    if problem is not None:
        empty = np.full(n_params, np.nan)
        return LawFit(axes, reference, empty, np.empty((0, n_params)), problem, len(y), settings)
    log_u = np.log(x / reference)
    least_squares = _solve(log_u, y[None], None)[0]
    if _has_spread(replicates):
        resampling, pool = "points", None
        spread = float(np.median(np.std(replicates, axis=0)))
    else:
        resampling = "residuals"
        residuals = y - saturating_law(x, least_squares, reference)
        spread = float(MAD_TO_SD * np.median(np.abs(residuals - np.median(residuals))))
        pool = (residuals - residuals.mean()) * np.sqrt(len(y) / (len(y) - n_params))
    delta = settings.huber_delta * spread if settings.loss == "huber" and spread > 0 else None
    estimate = least_squares if delta is None else _solve(log_u, y[None], delta)[0]
    if resampling == "residuals":
        rng = np.random.default_rng(seed)
        fitted = saturating_law(x, estimate, reference)
        replicates = fitted + rng.choice(pool, size=(n_boot, len(y)), replace=True)
    refits = _solve(log_u, replicates, delta)
    status = FITTED
    flat = [axis for axis, rate in zip(axes, estimate[2::2]) if rate <= MIN_IDENTIFIABLE_RATE * (1 + 1e-6)]
    if flat:
        status = f"not saturating in {', '.join(flat)}"
        estimate = np.full(n_params, np.nan)
    return LawFit(axes, reference, estimate, refits, status, len(y), settings, resampling, delta, pool)


@dataclass(frozen=True)
class LogLinearTrend:
    """The change of ``y`` per doubling of each axis, ``y = c + sum_k s_k log2(x_k)`` fitted by least
    squares: ``slopes`` (K,) from the points' means, ``refits`` (B, K) from their replicates (one per
    replicate with a finite value at every point). A descriptive summary that needs no asymptote,
    so it is reported for every line, saturating or not; ``status`` is FITTED or why not."""

    axes: tuple[str, ...]
    slopes: np.ndarray
    refits: np.ndarray
    status: str

    def interval(self, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of every slope over the refits (NaN without replicate spread:
        no refits)."""
        return percentile_interval(self.refits, level)


def trend_names(axes: Sequence[str]) -> list[str]:
    return [f"per_doubling[{axis}]" for axis in axes]


def log_linear_trend(x: np.ndarray, y: np.ndarray, replicates: np.ndarray | None, axes: Sequence[str]) -> LogLinearTrend:
    """:class:`LogLinearTrend` of points ``x`` (n, K) with means ``y`` (n,) and bootstrap
    ``replicates`` (B, n), each replicate refitted as a whole (so the slopes' intervals carry the
    points' shared question draws, as the law's do). Needs two levels of every axis, not moving
    together (two levels give the slope between them; its interval still comes from the replicates)."""
    axes = tuple(axes)
    x, y, replicates = usable_points(x, y, replicates, axes)
    empty = np.full(len(axes), np.nan)
    few = [axis for k, axis in enumerate(axes) if len(np.unique(x[:, k])) < 2]
    if few:
        return LogLinearTrend(axes, empty, np.empty((0, len(axes))), f"too few levels of {', '.join(few)} (< 2)")
    design = np.column_stack([np.ones(len(y)), np.log2(x)])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return LogLinearTrend(axes, empty, np.empty((0, len(axes))), f"the levels of {', '.join(axes)} move together")
    solve = np.linalg.pinv(design)
    refits = (replicates @ solve.T)[:, 1:] if _has_spread(replicates) else np.empty((0, len(axes)))
    return LogLinearTrend(axes, (solve @ y)[1:], refits, FITTED)
