"""Scaling-law fits against data drawn from a known law: parameters recovered, bootstrap
intervals that cover the truth at their nominal rate, extrapolation checks that flag a point off
the law, and Huber's loss resisting an outlier. The vectorised solver is checked against
``scipy.optimize.least_squares`` as an independent minimiser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from hybridsweep.reports.extrapolation import check_extrapolation
from hybridsweep.reports.fits import (
    CHECKED,
    FITTED,
    MAX_RATE,
    MIN_IDENTIFIABLE_RATE,
    FitSettings,
    _solve,
    fit_law,
    log_linear_trend,
)
from hybridsweep.reports.stats import RunSample, bootstrap_replicates

SIZES = np.array([50.0, 100.0, 200.0, 400.0, 800.0, 1600.0])
TRUTH_1D = (0.8, 1.5, 0.5)  # y = a - b n^-c
DESIGN_2D = np.array([(d, s) for d in (36.0, 54.0, 81.0, 121.0, 180.0) for s in (8.0, 32.0)] + [(180.0, 16.0), (180.0, 64.0)])
TRUTH_2D = (0.9, 0.4, 0.6, 0.15, 0.8)  # y = E - A (D/36)^-alpha - B (S/8)^-beta


def law_1d(n, a, b, c):
    return a - b * np.asarray(n, dtype=float) ** -c


def law_2d(design, e, a, alpha, b, beta):
    d, s = design[:, 0], design[:, 1]
    return e - a * (d / 36.0) ** -alpha - b * (s / 8.0) ** -beta


def theta_1d(a, b, c, reference=SIZES[0]):
    """The fit's parametrisation (E, A at the smallest size, alpha) of ``a - b n^-c``."""
    return np.array([a, b * reference**-c, c])


def noisy_points(truth_y, rng, n_questions, sd, n_boot, seed=0):
    """Each point the mean AP of ``n_questions`` questions with N(0, sd) noise, and its bootstrap
    replicates from ``stats.bootstrap_replicates`` (the same seed at every point, as the reports)."""
    means, replicates = [], []
    qids = [f"q{i}" for i in range(n_questions)]
    for value in truth_y:
        ap = value + rng.normal(0.0, sd, n_questions)
        sample = RunSample(float(ap.mean()), pd.DataFrame({"qid": qids, "cell": "all", "ap": ap}))
        means.append(ap.mean())
        replicates.append(bootstrap_replicates([sample], n_boot, seed))
    return np.array(means), np.stack(replicates, axis=1)


def test_noise_free_parameters_are_recovered():
    fit = fit_law(SIZES[:, None], law_1d(SIZES, *TRUTH_1D), None, ["N"])
    assert fit.status == FITTED
    np.testing.assert_allclose(fit.estimate, theta_1d(*TRUTH_1D), rtol=1e-7)
    assert fit.predict([[1e6]])[0] == pytest.approx(law_1d(1e6, *TRUTH_1D), rel=1e-7)
    # No resampling spread and no residual: every refit is the truth.
    low, high = fit.interval()
    np.testing.assert_allclose(low, theta_1d(*TRUTH_1D), rtol=1e-6)
    np.testing.assert_allclose(high, theta_1d(*TRUTH_1D), rtol=1e-6)

    joint = fit_law(DESIGN_2D, law_2d(DESIGN_2D, *TRUTH_2D), None, ["D", "S"])
    assert joint.status == FITTED
    np.testing.assert_allclose(joint.estimate, TRUTH_2D, rtol=1e-6)
    # A falling metric (a loss): negative amplitudes, same law.
    loss = 2.0 + 3.0 * (DESIGN_2D[:, 0] / 36) ** -0.5 + 0.5 * (DESIGN_2D[:, 1] / 8) ** -1.0
    np.testing.assert_allclose(fit_law(DESIGN_2D, loss, None, ["D", "S"]).estimate, [2.0, -3.0, 0.5, -0.5, 1.0], rtol=1e-6)


def test_unidentifiable_designs_are_not_fitted():
    few = fit_law(SIZES[:3, None], law_1d(SIZES[:3], *TRUTH_1D), None, ["N"])
    assert few.status == "too few points (3 < 4)"
    assert np.isnan(few.estimate).all()
    log_linear = fit_law(SIZES[:, None], 0.1 + 0.05 * np.log(SIZES), None, ["N"])
    assert log_linear.status == "not saturating in N" and np.isnan(log_linear.estimate).all()
    two_batch_sizes = DESIGN_2D[:10]
    assert fit_law(two_batch_sizes, law_2d(two_batch_sizes, *TRUTH_2D), None, ["D", "S"]).status == "too few levels of S (2 < 3)"


@pytest.mark.parametrize("loss", ["l2", "huber"])
def test_vectorised_solver_reaches_the_minimum_scipy_finds(loss):
    """Every replicate's solution has a loss no larger than scipy's least_squares (started from
    the truth and from a generic point), for the 1-D and the joint law, with Huber's loss too."""
    rng = np.random.default_rng(3)
    delta = 0.01 if loss == "huber" else None
    cases = [
        (np.log(SIZES / SIZES[0])[:, None], law_1d(SIZES, *TRUTH_1D), theta_1d(*TRUTH_1D)),
        (np.log(DESIGN_2D / DESIGN_2D.min(axis=0)), law_2d(DESIGN_2D, *TRUTH_2D), np.array(TRUTH_2D)),
    ]
    for log_u, clean, truth in cases:
        targets = clean + rng.normal(0, 0.01, (40, len(clean)))
        targets[::4, -1] += 0.08  # outliers, where Huber's loss differs from least squares
        solved = _solve(log_u, targets, delta)
        u = np.exp(log_u)
        lower = np.where(np.arange(len(truth)) % 2 == 0, MIN_IDENTIFIABLE_RATE, -np.inf)
        lower[0] = -np.inf
        upper = np.where((np.arange(len(truth)) % 2 == 0) & (np.arange(len(truth)) > 0), MAX_RATE, np.inf)

        def residuals(theta, y, u=u):
            return theta[0] - np.sum(theta[1::2] * u ** -theta[2::2], axis=1) - y

        def objective(theta, y):
            r = np.abs(residuals(theta, y))
            return np.sum(0.5 * r**2) if delta is None else np.sum(np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)))

        for theta, y in zip(solved, targets):
            reference = min(
                objective(least_squares(residuals, start, args=(y,), bounds=(lower, upper), loss="linear" if delta is None else "huber",
                                        f_scale=delta or 1.0, ftol=1e-15, xtol=1e-15, gtol=1e-15).x, y)
                for start in (truth, np.where(np.arange(len(truth)) % 2 == 0, 1.0, 0.1))
            )
            assert objective(theta, y) <= reference * (1 + 1e-8) + 1e-15


def test_noisy_truth_lies_inside_the_bootstrap_intervals():
    rng = np.random.default_rng(11)
    means, replicates = noisy_points(law_1d(SIZES, *TRUTH_1D), rng, n_questions=100, sd=0.05, n_boot=400)
    fit = fit_law(SIZES[:, None], means, replicates, ["N"])
    assert fit.resampling == "points" and len(fit.refits) == 400
    low, high = fit.interval()
    assert np.all(low <= theta_1d(*TRUTH_1D)) and np.all(theta_1d(*TRUTH_1D) <= high)
    assert np.all(high - low > 0)

    means, replicates = noisy_points(law_2d(DESIGN_2D, *TRUTH_2D), rng, n_questions=100, sd=0.05, n_boot=400)
    joint = fit_law(DESIGN_2D, means, replicates, ["D", "S"])
    low, high = joint.interval()
    assert np.all(low <= TRUTH_2D) and np.all(np.array(TRUTH_2D) <= high)


def test_bootstrap_intervals_cover_the_truth_at_their_nominal_rate():
    """200 datasets drawn from the law with Gaussian question noise of known sd: the 90%
    intervals of the three parameters and the 90% forecast interval of the held-out largest size
    contain the truth (the measured point, drawn on the law) in 90% of them, within the 99.9%
    binomial band (the bootstrap of a mean of 100 draws runs ~1 point narrow, well inside it)."""
    rng = np.random.default_rng(2024)
    settings = FitSettings(level=0.9)
    n_datasets = 200
    covered = np.zeros(3)
    forecast_inside = 0
    truth = theta_1d(*TRUTH_1D)
    for _ in range(n_datasets):
        means, replicates = noisy_points(law_1d(SIZES, *TRUTH_1D), rng, n_questions=100, sd=0.05, n_boot=200)
        fit = fit_law(SIZES[:, None], means, replicates, ["N"], settings)
        low, high = fit.interval()
        covered += (low <= truth) & (truth <= high)
        check = check_extrapolation(SIZES[:, None], means, replicates, ["N"], "N", settings)
        forecast_inside += bool(check.inside[0])
    band = 3.29 * np.sqrt(0.9 * 0.1 / n_datasets)
    for name, rate in zip(("E", "A", "alpha"), covered / n_datasets):
        assert abs(rate - 0.9) <= band, f"{name}: coverage {rate:.3f} outside 0.9 ± {band:.3f}"
    assert abs(forecast_inside / n_datasets - 0.9) <= band


def test_extrapolation_flags_a_point_off_the_law_and_accepts_one_on_it():
    rng = np.random.default_rng(5)
    truth_y = law_1d(SIZES, *TRUTH_1D)
    means, replicates = noisy_points(truth_y, rng, n_questions=100, sd=0.05, n_boot=400)
    on_law = check_extrapolation(SIZES[:, None], means, replicates, ["N"], "N")
    assert on_law.status == CHECKED and on_law.inside.tolist() == [True]
    np.testing.assert_array_equal(on_law.held_out, [[1600.0]])
    assert abs(on_law.error[0]) < 0.02

    # The largest size 0.05 below the law (ten standard errors of the point): a law that stops holding.
    shifted = truth_y.copy()
    shifted[-1] -= 0.05
    means, replicates = noisy_points(shifted, np.random.default_rng(5), n_questions=100, sd=0.05, n_boot=400)
    off_law = check_extrapolation(SIZES[:, None], means, replicates, ["N"], "N")
    assert off_law.inside.tolist() == [False]
    assert off_law.error[0] == pytest.approx(-0.05, abs=0.02)

    # Too few sizes to hold one out: the check says why.
    short = check_extrapolation(SIZES[:4, None], means[:4], replicates[:, :4], ["N"], "N")
    assert short.status.startswith("cannot hold out the largest N: too few")


def test_joint_extrapolation_holds_out_the_largest_batch_size():
    rng = np.random.default_rng(9)
    means, replicates = noisy_points(law_2d(DESIGN_2D, *TRUTH_2D), rng, n_questions=100, sd=0.05, n_boot=300)
    check = check_extrapolation(DESIGN_2D, means, replicates, ["D", "S"], "S")
    np.testing.assert_array_equal(check.held_out, [[180.0, 64.0]])
    assert check.inside.tolist() == [True]
    # Without the largest data size only batch sizes 8 and 32 remain: not identifiable.
    assert check_extrapolation(DESIGN_2D, means, replicates, ["D", "S"], "D").status == (
        "cannot hold out the largest D: too few levels of S (2 < 3) without it"
    )


def test_huber_resists_a_planted_outlier_where_least_squares_does_not():
    """One point twenty standard errors off the law: against the fit to the same draws without
    the outlier, Huber's loss moves the parameters well under half as far as least squares
    (a fifth, for the rate), and its intervals still hold the truth, which least squares' miss."""
    sizes = np.geomspace(50, 6400, 8)
    truth = theta_1d(*TRUTH_1D, reference=sizes[0])
    clean_y = law_1d(sizes, *TRUTH_1D)
    planted = clean_y.copy()
    planted[2] += 0.1
    clean = noisy_points(clean_y, np.random.default_rng(0), n_questions=100, sd=0.05, n_boot=200)
    outlier = noisy_points(planted, np.random.default_rng(0), n_questions=100, sd=0.05, n_boot=200)
    shift, inside = {}, {}
    for loss in ("l2", "huber"):
        settings = FitSettings(loss=loss, huber_delta=2.0)
        reference = fit_law(sizes[:, None], *clean, ["N"], settings).estimate
        fit = fit_law(sizes[:, None], *outlier, ["N"], settings)
        shift[loss] = np.abs(fit.estimate - reference)
        low, high = fit.interval()
        inside[loss] = (low <= truth) & (truth <= high)
    ratio = shift["huber"] / shift["l2"]
    assert ratio[0] < 0.5 and ratio[1] < 0.5 and ratio[2] < 0.2, ratio
    assert inside["huber"].all() and not inside["l2"].any()
    # The point's standard error sets the scale: delta = 2 x the median bootstrap sd.
    fit = fit_law(sizes[:, None], *outlier, ["N"], FitSettings(loss="huber", huber_delta=2.0))
    assert fit.delta == pytest.approx(2.0 * np.median(np.std(outlier[1], axis=0)))


def test_points_without_spread_use_the_residual_bootstrap():
    """One run per point and no per-question data: replicates come from the residuals. Their
    intervals are not zero-width while the points scatter about the law, and over 100 datasets
    of 12 points they cover the truth at close to, if below, the nominal rate (the noise is
    estimated from n - p = 9 degrees of freedom)."""
    sizes = np.geomspace(50, 6400, 12)
    truth = theta_1d(*TRUTH_1D, reference=sizes[0])
    rng = np.random.default_rng(8)
    covered = np.zeros(3)
    for seed in range(100):
        y = law_1d(sizes, *TRUTH_1D) + rng.normal(0, 0.005, len(sizes))
        flat = np.tile(y, (50, 1))  # the replicates of runs without per-question data: all equal
        fit = fit_law(sizes[:, None], y, flat, ["N"], FitSettings(level=0.9), n_boot=200, seed=seed)
        assert fit.resampling == "residuals" and len(fit.refits) == 200
        low, high = fit.interval()
        assert np.all(high - low > 0)
        covered += (low <= truth) & (truth <= high)
    assert np.all(covered / 100 >= 0.9 - 3.29 * np.sqrt(0.09 / 100) - 0.05), covered


def test_fit_settings_name_the_bad_key_or_value():
    assert FitSettings.from_config({"loss": "huber", "huber_delta": 1.5}, "p.fit") == FitSettings("huber", 1.5)
    with pytest.raises(ValueError, match=r"p\.fit: fit\.loss='cauchy': expected one of \('l2', 'huber'\)"):
        FitSettings.from_config({"loss": "cauchy"}, "p.fit")
    with pytest.raises(ValueError, match=r"p\.fit: fit\.huber_delta=0: expected a number > 0"):
        FitSettings.from_config({"loss": "huber", "huber_delta": 0}, "p.fit")
    with pytest.raises(ValueError, match=r"p\.fit: unknown keys \['delta'\]"):
        FitSettings.from_config({"delta": 1}, "p.fit")


def test_log_linear_trend_is_the_per_doubling_slope_of_every_replicate():
    """A line falling 0.01 per doubling with question noise: the slope of the means and of each
    replicate equal numpy.polyfit's on log2(size); a noise-free joint design recovers both axes'
    slopes exactly."""
    rng = np.random.default_rng(5)
    truth = 0.55 - 0.01 * np.log2(SIZES)
    means, replicates = noisy_points(truth, rng, n_questions=200, sd=0.05, n_boot=300)
    trend = log_linear_trend(SIZES[:, None], means, replicates, ["B"])
    assert trend.status == FITTED and len(trend.refits) == 300
    assert trend.slopes[0] == pytest.approx(np.polyfit(np.log2(SIZES), means, 1)[0], abs=1e-12)
    for b in (0, 150, 299):
        assert trend.refits[b, 0] == pytest.approx(np.polyfit(np.log2(SIZES), replicates[b], 1)[0], abs=1e-12)

    design = np.array([(d, s) for d in (100.0, 200.0, 400.0) for s in (16.0, 64.0)])
    exact = 0.3 + 0.02 * np.log2(design[:, 0]) - 0.005 * np.log2(design[:, 1])
    joint = log_linear_trend(design, exact, None, ["D", "S"])
    assert joint.slopes == pytest.approx([0.02, -0.005]) and np.isnan(joint.interval()[0]).all()


def test_log_linear_trend_intervals_cover_the_truth_at_their_nominal_rate():
    """200 lines falling 0.01 per doubling with Gaussian question noise: the 90% interval of the
    slope holds -0.01 in 90% of them, within the 99.9% binomial band."""
    rng = np.random.default_rng(77)
    truth = 0.55 - 0.01 * np.log2(SIZES)
    n_datasets = 200
    covered = 0
    for _ in range(n_datasets):
        means, replicates = noisy_points(truth, rng, n_questions=100, sd=0.05, n_boot=200)
        low, high = log_linear_trend(SIZES[:, None], means, replicates, ["B"]).interval(0.9)
        covered += bool(low[0] <= -0.01 <= high[0])
    assert abs(covered / n_datasets - 0.9) <= 3.29 * np.sqrt(0.9 * 0.1 / n_datasets)


def test_log_linear_trend_needs_two_levels_of_axes_that_do_not_move_together():
    assert log_linear_trend(np.array([[16.0], [16.0]]), np.array([0.5, 0.6]), None, ["B"]).status == "too few levels of B (< 2)"
    two = log_linear_trend(np.array([[16.0], [64.0]]), np.array([0.5, 0.6]), None, ["B"])
    assert two.status == FITTED and two.slopes == pytest.approx([0.05])
    together = np.array([(100.0, 16.0), (200.0, 32.0), (400.0, 64.0)])
    collinear = log_linear_trend(together, np.array([0.5, 0.6, 0.7]), None, ["D", "S"])
    assert collinear.status == "the levels of D, S move together" and np.isnan(collinear.slopes).all()
