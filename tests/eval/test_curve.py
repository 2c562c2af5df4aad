"""The curve fit (eval/curve.py): recovery of known parameters, interval coverage, degenerate input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.curve import CurvePoint, fit_curve, forecast_check, sigmoid_curve, window_sensitivity, x_for_score

# Ground-truth EdgeBench curves (S_max, beta, t_mid hours). The first is the fit the EdgeBench report
# gives; the other four are invented here, in the same range, to stand for the rest of its five fits.
EDGEBENCH_FITS = [
    (0.55, 0.95, 0.8),   # from the report
    (0.42, 1.10, 1.5),   # invented
    (0.63, 0.85, 0.5),   # invented
    (0.70, 1.20, 2.4),   # invented
    (0.48, 0.75, 0.3),   # invented
]
CADENCE_H = np.arange(1, 145) * 300 / 3600  # every 300 s over 12 h (t = 0 has no log)
N_TASKS = 134


def edgebench_points(truth, rng=None, t=CADENCE_H, n_tasks=N_TASKS):
    """Exact samples, or (with rng) per-task pass/fail draws of an n_tasks suite at every checkpoint."""
    s_max, beta, t_mid = truth
    p = sigmoid_curve(t, 0.0, s_max, t_mid, beta)
    if rng is None:
        return [CurvePoint(x=float(x), score=float(v)) for x, v in zip(t, p)]
    passed = rng.random((len(t), n_tasks)) < p[:, None]  # (checkpoints, tasks)
    return [CurvePoint(x=float(x), score=float(row.mean()), n=n_tasks,
                       task_scores={f"task-{j}": float(v) for j, v in enumerate(row)})
            for x, row in zip(t, passed)]


def scalerl_points(truth, xs, rng, n_tasks=200):
    """ScaleRL truth (r0, a, c_mid, b) with a round-0 point at x = 0, per-task binomial noise."""
    p = sigmoid_curve(np.asarray(xs), *truth)
    passed = rng.random((len(xs), n_tasks)) < p[:, None]
    return [CurvePoint(x=float(x), score=float(row.mean()), n=n_tasks, label=f"round-{i}",
                       task_scores={f"t{j}": float(v) for j, v in enumerate(row)})
            for i, (x, row) in enumerate(zip(xs, passed))]


def covered(fit, names, truth) -> list[bool]:
    return [fit.intervals[n][0] <= v <= fit.intervals[n][1] for n, v in zip(names, truth)]


# ---------------------------------------------------------------------------------------------
# EdgeBench ground truth

@pytest.mark.parametrize("truth", EDGEBENCH_FITS)
def test_edgebench_exact_samples_recovered_within_one_percent(truth):
    fit = fit_curve(edgebench_points(truth), form="edgebench", bootstrap=0)
    assert fit.status == "ok", fit.reason
    for name, value in zip(("s_max", "beta", "t_mid"), truth):
        assert fit.params[name] == pytest.approx(value, rel=0.01), name
    assert fit.r2 > 0.9999


def _edgebench_coverage(draws: int, bootstrap: int) -> float:
    hits = []
    for draw in range(draws):
        for i, truth in enumerate(EDGEBENCH_FITS):
            rng = np.random.default_rng(10 * draw + i)
            fit = fit_curve(edgebench_points(truth, rng), form="edgebench", bootstrap=bootstrap, seed=draw)
            assert fit.status == "ok" and fit.bootstrap["method"] == "tasks"
            hits += covered(fit, ("s_max", "beta", "t_mid"), truth)
    return float(np.mean(hits))


def test_edgebench_binomial_134_tasks_intervals_contain_truth():
    # 5 curves x 4 draws x 3 parameters = 60 intervals of nominal 95%.
    assert _edgebench_coverage(draws=4, bootstrap=100) >= 0.9


@pytest.mark.slow
def test_edgebench_binomial_coverage_many_draws():
    assert _edgebench_coverage(draws=20, bootstrap=200) >= 0.9


def test_edgebench_fit_on_noisy_data_is_close():
    rng = np.random.default_rng(7)
    truth = EDGEBENCH_FITS[0]
    fit = fit_curve(edgebench_points(truth, rng), form="edgebench", bootstrap=50)
    assert fit.params["s_max"] == pytest.approx(truth[0], abs=0.05)
    assert fit.params["t_mid"] == pytest.approx(truth[2], rel=0.3)
    assert fit.r2 > 0.7  # binomial noise of 134 tasks (sd ~0.04) caps R^2 well below EdgeBench's 0.997


# ---------------------------------------------------------------------------------------------
# Synthetic ScaleRL data: recovery and coverage

SCALERL_TRUTH = (0.1, 0.7, 2.0, 1.5)  # r0, A, C_mid, B
SCALERL_X = [0.0] + list(np.geomspace(0.25, 16, 10))


def test_scalerl_recovers_parameters_within_intervals():
    fit = fit_curve(scalerl_points(SCALERL_TRUTH, SCALERL_X, np.random.default_rng(0)), form="scalerl",
                    bootstrap=100, seed=0)
    assert fit.status == "ok", fit.reason
    assert all(covered(fit, ("a", "c_mid", "b"), SCALERL_TRUTH[1:]))
    # r0 is the x = 0 score itself, its interval is that score's resampling spread
    assert fit.intervals["r0"][0] <= SCALERL_TRUTH[0] <= fit.intervals["r0"][1]
    assert fit.bootstrap["method"] == "tasks"


def _scalerl_coverage(draws: int, bootstrap: int) -> np.ndarray:
    hits = []
    for draw in range(draws):
        pts = scalerl_points(SCALERL_TRUTH, SCALERL_X, np.random.default_rng(100 + draw))
        fit = fit_curve(pts, form="scalerl", bootstrap=bootstrap, seed=draw)
        hits.append(covered(fit, ("a", "c_mid", "b"), SCALERL_TRUTH[1:]))
    return np.mean(hits, axis=0)


def test_interval_coverage_at_least_90_percent():
    coverage = _scalerl_coverage(draws=50, bootstrap=60)
    assert (coverage >= 0.9).all(), coverage


@pytest.mark.slow
def test_interval_coverage_many_draws():
    coverage = _scalerl_coverage(draws=200, bootstrap=200)
    assert (coverage >= 0.9).all(), coverage


def test_residual_bootstrap_without_task_scores():
    rng = np.random.default_rng(3)
    truth = EDGEBENCH_FITS[2]
    t = np.geomspace(0.1, 12, 12)
    pts = [CurvePoint(x=float(x), score=float(v + rng.normal(0, 0.01)))
           for x, v in zip(t, sigmoid_curve(t, 0, truth[0], truth[2], truth[1]))]
    fit = fit_curve(pts, form="edgebench", bootstrap=100)
    assert fit.bootstrap["method"] == "residuals" and "note" in fit.bootstrap
    assert fit.intervals["s_max"][0] < fit.params["s_max"] < fit.intervals["s_max"][1]
    assert fit.intervals["s_max"][0] <= truth[0] <= fit.intervals["s_max"][1]


def test_scalerl_without_x0_point_fits_r0():
    xs = list(np.geomspace(0.25, 16, 12))
    truth = (0.2, 0.8, 2.0, 2.0)
    pts = [CurvePoint(x=float(x), score=float(v)) for x, v in zip(xs, sigmoid_curve(np.array(xs), *truth))]
    fit = fit_curve(pts, form="scalerl", bootstrap=0)
    for name, value in zip(("r0", "a", "c_mid", "b"), truth):
        assert fit.params[name] == pytest.approx(value, rel=0.02), name


# ---------------------------------------------------------------------------------------------
# Derived numbers, forecast, window

def test_derived_numbers_match_the_formulas():
    truth = EDGEBENCH_FITS[0]
    fit = fit_curve(edgebench_points(truth), form="edgebench", bootstrap=0, horizon=2.0, target_score=0.4)
    s_max, beta, t_mid = truth
    d = fit.derived
    assert d["slope_at_midpoint"] == pytest.approx(s_max * beta / (4 * t_mid), rel=0.01)
    assert d["learning_speed"] == pytest.approx(s_max / (1 + (t_mid / 2.0) ** beta), rel=0.01)
    assert d["x_to_target"] == pytest.approx(t_mid / (s_max / 0.4 - 1) ** (1 / beta), rel=0.01)
    assert float(fit.predict(d["x_to_target"])) == pytest.approx(0.4, abs=1e-6)


def test_target_above_asymptote_is_not_reached():
    fit = fit_curve(edgebench_points(EDGEBENCH_FITS[0]), form="edgebench", bootstrap=20, target_score=0.9)
    assert math.isinf(fit.derived["x_to_target"])
    assert fit.derived["x_to_target_note"] == "not reached within the asymptote"
    assert fit.to_dict()["derived"]["x_to_target"] is None  # JSON cannot hold inf
    assert x_for_score(0.05, 0.1, 0.7, 2.0, 1.5) == 0.0


def test_learning_speed_is_gain_over_the_x0_score():
    pts = scalerl_points(SCALERL_TRUTH, SCALERL_X, np.random.default_rng(1))
    fit = fit_curve(pts, form="scalerl", bootstrap=0, horizon=2.0)
    assert fit.derived["baseline"] == pytest.approx(pts[0].score)
    assert fit.derived["learning_speed"] == pytest.approx(float(fit.predict(2.0)) - pts[0].score)


def test_forecast_on_exact_data_predicts_the_rest():
    pts = edgebench_points(EDGEBENCH_FITS[3], t=np.geomspace(0.2, 12, 15))
    fc = forecast_check(pts, "edgebench", 0.6)
    assert fc["status"] == "ok" and fc["n_fit"] == 9 and fc["n_heldback"] == 6
    assert fc["mae"] < 1e-3 and fc["max_abs_error"] < 1e-3


def test_forecast_needs_four_fit_points():
    pts = edgebench_points(EDGEBENCH_FITS[0], t=np.geomspace(0.2, 12, 5))
    fc = forecast_check(pts, "edgebench", 0.6)
    assert fc["status"] == "no_fit" and "forecast needs" in fc["reason"]


def test_window_sensitivity_small_on_exact_data():
    pts = edgebench_points(EDGEBENCH_FITS[1], t=np.geomspace(0.2, 12, 12))
    full = fit_curve(pts, form="edgebench", bootstrap=0)
    ws = window_sensitivity(pts, "edgebench", full)
    assert [r["dropped_first"] for r in ws["refits"]] == [1, 2]
    assert ws["max_relative_change"] < 0.01


def test_initial_window_skip():
    pts = edgebench_points(EDGEBENCH_FITS[0], t=np.geomspace(0.1, 12, 12))
    fit = fit_curve(pts, form="edgebench", bootstrap=0, skip_initial_x=0.5)
    assert fit.n_fit_points == sum(p.x >= 0.5 for p in pts)
    assert any("initial window" in w for w in fit.warnings)


def test_band_brackets_the_fit():
    pts = edgebench_points(EDGEBENCH_FITS[0], np.random.default_rng(2), t=np.geomspace(0.1, 12, 12))
    fit = fit_curve(pts, form="edgebench", bootstrap=50)
    grid = np.geomspace(0.1, 12, 20)
    lo, hi = fit.band(grid)
    assert (lo <= fit.predict(grid) + 1e-9).all() and (fit.predict(grid) <= hi + 1e-9).all()


# ---------------------------------------------------------------------------------------------
# Degenerate inputs: a "no_fit" status with the reason, never an exception

def _pts(xs, ys):
    return [CurvePoint(x=float(x), score=float(y), label=f"round-{i}") for i, (x, y) in enumerate(zip(xs, ys))]


@pytest.mark.parametrize("form", ["scalerl", "edgebench"])
@pytest.mark.parametrize("points, reason", [
    ([], "no points"),
    (_pts([1, 2, 3], [0.1, 0.2, 0.3]), "fewer than 4 points"),
    (_pts([1, 2, 3, 4, 5], [0.3] * 5), "all scores equal"),
    (_pts([1, 2, 3, 4, 5], [0.5, 0.4, 0.3, 0.2, 0.1]), "do not increase"),
    (_pts([1, 2, 3, 4, 5], [0.3, 0.3, 0.3, 0.3, 0.2]), "do not increase"),
    (_pts([-1, 1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4, 0.5]), "x must be >= 0; negative at round-0"),
    (_pts([1, 2, float("nan"), 4], [0.1, 0.2, 0.3, 0.4]), "non-finite"),
])
def test_degenerate_inputs_give_no_fit_with_reason(points, reason, form):
    fit = fit_curve(points, form=form, bootstrap=10)
    assert fit.status == "no_fit"
    assert reason in fit.reason
    assert fit.params == {} and fit.points == points
    d = fit.to_dict()
    assert d["status"] == "no_fit" and d["reason"] == fit.reason
    with pytest.raises(ValueError, match="no fitted curve"):
        fit.predict([1.0])


def test_x0_points_dropped_by_edgebench_with_a_warning():
    pts = _pts([0, 1, 2, 4, 8], [0.1, 0.2, 0.3, 0.4, 0.45])
    fit = fit_curve(pts, form="edgebench", bootstrap=0)
    assert fit.status == "ok" and fit.n_fit_points == 4
    assert any("dropped 1 point(s) at x = 0" in w for w in fit.warnings)
    assert fit.derived["baseline"] == pytest.approx(0.1)


def test_x0_points_leave_too_few_for_edgebench():
    pts = _pts([0, 1, 2, 4], [0.1, 0.2, 0.3, 0.4])
    fit = fit_curve(pts, form="edgebench", bootstrap=0)
    assert fit.status == "no_fit" and "fewer than 4 points with x > 0" in fit.reason


def test_x0_point_anchors_scalerl_r0():
    pts = _pts([0, 1, 2, 4, 8], [0.1, 0.2, 0.3, 0.4, 0.45])
    fit = fit_curve(pts, form="scalerl", bootstrap=0)
    assert fit.status == "ok" and fit.params["r0"] == pytest.approx(0.1)


def test_unknown_form_is_no_fit():
    fit = fit_curve(_pts([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]), form="logistic")
    assert fit.status == "no_fit" and "unknown curve form" in fit.reason


def test_unsaturated_data_warns_asymptote_not_identified():
    # doubling with every doubling of x: no sign of saturation yet
    pts = _pts([1, 2, 4, 8, 16], [0.02, 0.05, 0.1, 0.2, 0.4])
    fit = fit_curve(pts, form="edgebench", bootstrap=0)
    assert fit.status == "ok"
    assert any("not identified" in w or "beyond the last point" in w for w in fit.warnings)
