"""The improvement curve: a sigmoid in log-x fitted to (x, held-out score) points of one arm.

Two published forms, chosen by name:
- ``edgebench``: S(t) = S_max / (1 + (t_mid / t)^beta), t = cumulative interaction hours. S(0) = 0 by
  construction and the form needs log t, so points at t <= 0 (the base checkpoint's round-0 eval) are
  dropped from the fit, and the fit says so in its warnings.
- ``scalerl``: R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B), C = compute (ScaleRL, Khatri et al. 2025).
  R0 is the score at x = 0 when such points exist (their mean), otherwise a free parameter.

Fitting follows ScaleRL: a grid over (asymptote, midpoint) with the exponent fitted for each pair, then
bounded local least squares (scipy ``least_squares``) from the best few grid cells; the best result is
kept. Uncertainty is a bootstrap: over tasks when every point carries per-task scores (one shared
resample of task ids for all checkpoints, since every checkpoint is evaluated on the same held-out
tasks), otherwise over residuals. Every parameter and derived number gets a percentile interval.

Degenerate input never raises: ``fit_curve`` returns ``status="no_fit"`` with a ``reason`` and keeps the
points, so reports can still show them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import least_squares

FORMS = ("scalerl", "edgebench")
Form = Literal["scalerl", "edgebench"]

# Names of the parameters of each form, in the order used internally (r0 first for scalerl).
PARAM_NAMES = {"edgebench": ("s_max", "t_mid", "beta"), "scalerl": ("r0", "a", "c_mid", "b")}
EXPONENT_BOUNDS = (0.05, 20.0)
LEVEL = 0.95  # two-sided level of every interval


@dataclass
class CurvePoint:
    """One evaluated checkpoint of one arm."""

    x: float  # hours, GPU-hours, tokens or round number, per the fit's x-axis
    score: float  # held-out score of the checkpoint (success rate or mean score)
    n: int = 0  # episodes behind the score
    lo: float | None = None  # the evaluator's own interval of the score, for the plot
    hi: float | None = None
    task_scores: dict[str, float] | None = None  # per-task mean score, for the bootstrap over tasks
    label: str = ""  # e.g. "round-3"
    arm: str = ""
    date: float | None = None  # days (any origin); used for the doubling time of learning speed


def sigmoid_curve(x: np.ndarray, r0: float, a: float, mid: float, e: float) -> np.ndarray:
    """R0 + (A - R0) / (1 + (mid / x)^e); equals R0 at x <= 0 (the limit from the right)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        g = 1.0 / (1.0 + np.exp(e * (np.log(mid) - np.log(np.where(x > 0, x, 1.0)))))
    g = np.where(x > 0, g, 0.0)
    return r0 + (a - r0) * g


def x_for_score(target: float, r0: float, a: float, mid: float, e: float) -> float:
    """Smallest x with curve(x) >= target: 0 if the start already reaches it, inf if the asymptote
    does not."""
    if target <= r0:
        return 0.0
    if target >= a:
        return math.inf
    return mid / ((a - r0) / (target - r0) - 1.0) ** (1.0 / e)


@dataclass
class _Problem:
    """The numbers a fit works on: points with x > 0 (after the initial-window skip) and the R0 anchor."""

    form: str
    x: np.ndarray
    y: np.ndarray
    r0_fixed: float | None  # scalerl with x = 0 points, or 0 for edgebench; None = free parameter
    a_bounds: tuple[float, float]
    mid_bounds: tuple[float, float]
    r0_bounds: tuple[float, float]
    fit_points: list = field(default_factory=list)  # the CurvePoints behind x, y (same order)


@dataclass
class CurveFit:
    """Result of one fit. ``status`` is "ok" or "no_fit" (then ``reason`` says why)."""

    form: str
    status: str
    reason: str = ""
    params: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float | None]] = field(default_factory=dict)
    r2: float | None = None
    derived: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_fit_points: int = 0
    bootstrap: dict[str, Any] = field(default_factory=dict)
    points: list[CurvePoint] = field(default_factory=list)
    # (n_ok, 4) bootstrap replicates of (r0, a, mid, e) and of the baseline score; kept in memory for
    # bands and comparisons, summarised (not dumped) in to_dict().
    replicates: np.ndarray | None = None
    baseline_replicates: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def _theta(self) -> tuple[float, float, float, float]:
        p = self.params
        if self.form == "edgebench":
            return 0.0, p["s_max"], p["t_mid"], p["beta"]
        return p["r0"], p["a"], p["c_mid"], p["b"]

    def predict(self, x) -> np.ndarray:
        """Fitted score at x (array or scalar); raises if the fit failed."""
        if not self.ok:
            raise ValueError(f"no fitted curve ({self.reason})")
        return sigmoid_curve(np.asarray(x, dtype=float), *self._theta())

    def band(self, x, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap band of the fitted curve at x, or None without replicates."""
        if not self.ok or self.replicates is None or len(self.replicates) < 10:
            return None
        x = np.asarray(x, dtype=float)
        curves = np.stack([sigmoid_curve(x, *row) for row in self.replicates])
        q = (1 - level) / 2
        return (np.quantile(curves, q, axis=0, method="weibull"),
                np.quantile(curves, 1 - q, axis=0, method="weibull"))

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({
            "form": self.form, "status": self.status, "reason": self.reason,
            "params": self.params, "intervals": self.intervals, "interval_level": LEVEL,
            "r2": self.r2, "derived": self.derived, "warnings": self.warnings,
            "n_fit_points": self.n_fit_points, "bootstrap": self.bootstrap,
            "points": [_point_dict(p) for p in self.points],
        })


def _point_dict(p: CurvePoint) -> dict[str, Any]:
    return {"x": p.x, "score": p.score, "n": p.n, "lo": p.lo, "hi": p.hi, "label": p.label,
            "arm": p.arm, "date": p.date, "n_tasks": len(p.task_scores) if p.task_scores else 0}


def _json_safe(obj: Any) -> Any:
    """Floats that JSON cannot hold (inf, nan) become None; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Input checks: every degenerate case becomes a reason string, never an exception.

def _check_points(points: list[CurvePoint], form: str, skip_initial_x: float
                  ) -> tuple[_Problem | None, str, list[str]]:
    """Build the fitting problem, or return (None, reason, warnings) when no honest fit exists."""
    warnings: list[str] = []
    if form not in FORMS:
        return None, f"unknown curve form {form!r} (known: {', '.join(FORMS)})", warnings
    if not points:
        return None, "no points", warnings
    xs = np.array([p.x for p in points], dtype=float)
    ys = np.array([p.score for p in points], dtype=float)
    bad = [p.label or f"#{i}" for i, p in enumerate(points) if not (math.isfinite(p.x) and math.isfinite(p.score))]
    if bad:
        return None, f"non-finite x or score at point(s) {', '.join(bad)}", warnings
    neg = [f"{p.label or f'#{i}'} (x={p.x:g})" for i, p in enumerate(points) if p.x < 0]
    if neg:
        return None, f"x must be >= 0; negative at {', '.join(neg)}", warnings
    at_zero = xs <= 0
    r0_fixed: float | None = None
    if form == "edgebench":
        r0_fixed = 0.0
        if at_zero.any():
            warnings.append(f"dropped {int(at_zero.sum())} point(s) at x = 0: the EdgeBench form is 0 at x = 0 "
                            "and fits in log x; the x = 0 score is used only as the learning-speed baseline")
    elif at_zero.any():
        r0_fixed = float(ys[at_zero].mean())
    keep = ~at_zero & (xs >= skip_initial_x)
    if skip_initial_x > 0 and (~at_zero & (xs < skip_initial_x)).any():
        warnings.append(f"initial window: skipped {int((~at_zero & (xs < skip_initial_x)).sum())} point(s) "
                        f"with 0 < x < {skip_initial_x:g}")
    kept = sorted([p for p, k in zip(points, keep) if k], key=lambda p: p.x)
    x = np.array([p.x for p in kept], dtype=float)
    y = np.array([p.score for p in kept], dtype=float)
    if len(x) < 4:
        return None, f"fewer than 4 points with x > 0 to fit ({len(x)}); reporting the points only", warnings
    y_all = y if r0_fixed is None or form == "edgebench" else np.concatenate([[r0_fixed], y])
    if np.ptp(y_all) <= 1e-9 * max(1.0, abs(y_all).max()):
        return None, f"all scores equal ({y_all[0]:g}): nothing to fit; reporting the points only", warnings
    rho = _spearman(np.concatenate([[0.0], x]) if len(y_all) > len(x) else x, y_all)
    if rho <= 0:
        return None, (f"scores do not increase with x (Spearman rho = {rho:.2f}); an increasing sigmoid "
                      "would be a nonsense fit; reporting the points only"), warnings
    if form == "edgebench" and (y < 0).any():
        return None, "negative scores: the EdgeBench form is bounded below by 0", warnings
    pb = _make_problem(form, x, y, r0_fixed)
    pb.fit_points = kept
    return pb, "", warnings


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = _ranks(x), _ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for val in np.unique(v):  # ties share their mean rank
        ranks[v == val] = ranks[v == val].mean()
    return ranks


def _make_problem(form: str, x: np.ndarray, y: np.ndarray, r0_fixed: float | None) -> _Problem:
    y_hi, y_lo = float(y.max()), float(y.min())
    spread = max(y_hi - y_lo, 1e-6)
    in_unit = y_lo >= 0 and y_hi <= 1
    a_hi = 1.0 if in_unit else y_hi + 2 * spread  # a score in [0, 1] cannot saturate above 1
    base = r0_fixed if r0_fixed is not None else y_lo
    a_lo = max(base + 1e-6, 1e-6) if form == "edgebench" else base + 1e-6
    r0_bounds = (0.0 if y_lo >= 0 else y_lo - spread, y_lo)
    return _Problem(form, x, y, r0_fixed, (a_lo, max(a_hi, a_lo + 1e-3)),
                    (float(x.min()) / 100, float(x.max()) * 100), r0_bounds)


# ---------------------------------------------------------------------------------------------
# The fit: grid over (asymptote, midpoint) with the exponent fitted per pair, then least squares.

def _grid_starts(pb: _Problem, n_starts: int = 4) -> list[np.ndarray]:
    """ScaleRL's grid: for each (A, mid) pair the exponent minimising the squared error (over a grid
    of exponents; R0, when free, by closed-form linear least squares). Returns the best few cells as
    starts (r0, A, mid, e)."""
    a_grid = np.linspace(max(pb.a_bounds[0], 0.9 * pb.y.max() if pb.y.max() > 0 else pb.a_bounds[0]),
                         pb.a_bounds[1], 30)
    mid_grid = np.geomspace(pb.x.min() / 10, pb.x.max() * 10, 30)
    e_grid = np.geomspace(0.15, 8.0, 24)
    best_sse = np.full((len(a_grid), len(mid_grid)), np.inf)
    best = np.zeros((len(a_grid), len(mid_grid), 2))  # (e, r0) at the best exponent per pair
    logx = np.log(pb.x)
    for e in e_grid:
        g = 1.0 / (1.0 + np.exp(e * (np.log(mid_grid)[:, None] - logx[None, :])))  # (M, N)
        A = a_grid[:, None, None]
        if pb.r0_fixed is not None:
            r0 = np.full((len(a_grid), len(mid_grid), 1), pb.r0_fixed)
        else:  # y - A g = r0 (1 - g): linear in r0
            h = 1.0 - g[None]
            r0 = ((pb.y - A * g[None]) * h).sum(-1, keepdims=True) / np.maximum((h * h).sum(-1, keepdims=True), 1e-12)
            r0 = np.clip(r0, *pb.r0_bounds)
        sse = ((pb.y - (r0 + (A - r0) * g[None])) ** 2).sum(-1)
        better = sse < best_sse
        best_sse = np.where(better, sse, best_sse)
        best[..., 0] = np.where(better, e, best[..., 0])
        best[..., 1] = np.where(better, r0[..., 0], best[..., 1])
    flat = np.argsort(best_sse, axis=None)[:n_starts]
    starts = []
    for i, j in zip(*np.unravel_index(flat, best_sse.shape)):
        starts.append(np.array([best[i, j, 1], a_grid[i], mid_grid[j], best[i, j, 0]]))
    return starts


def _to_z(pb: _Problem, theta: np.ndarray) -> np.ndarray:
    """Optimiser coordinates: A, log mid, log e (and r0 when free)."""
    z = [theta[1], math.log(theta[2]), math.log(theta[3])]
    return np.array(z + ([theta[0]] if pb.r0_fixed is None else []))


def _from_z(pb: _Problem, z: np.ndarray) -> np.ndarray:
    r0 = pb.r0_fixed if pb.r0_fixed is not None else z[3]
    return np.array([r0, z[0], math.exp(z[1]), math.exp(z[2])])


def _z_bounds(pb: _Problem) -> tuple[np.ndarray, np.ndarray]:
    lo = [pb.a_bounds[0], math.log(pb.mid_bounds[0]), math.log(EXPONENT_BOUNDS[0])]
    hi = [pb.a_bounds[1], math.log(pb.mid_bounds[1]), math.log(EXPONENT_BOUNDS[1])]
    if pb.r0_fixed is None:
        lo.append(pb.r0_bounds[0])
        hi.append(pb.r0_bounds[1] + 1e-9)
    return np.array(lo), np.array(hi)


def _refine(pb: _Problem, starts: list[np.ndarray], y: np.ndarray | None = None,
            max_nfev: int = 400) -> tuple[np.ndarray, float] | None:
    """Bounded least squares from each start; the best (theta, sse), or None if all failed."""
    y = pb.y if y is None else y
    lo, hi = _z_bounds(pb)
    logx = np.log(pb.x)

    def resid(z):
        r0 = pb.r0_fixed if pb.r0_fixed is not None else z[3]
        g = 1.0 / (1.0 + np.exp(np.exp(z[2]) * (z[1] - logx)))
        return r0 + (z[0] - r0) * g - y

    best: tuple[np.ndarray, float] | None = None
    for theta in starts:
        z0 = np.clip(_to_z(pb, theta), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        try:
            res = least_squares(resid, z0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=max_nfev)
        except (ValueError, FloatingPointError):
            continue
        sse = float(2 * res.cost)
        if math.isfinite(sse) and (best is None or sse < best[1]):
            best = (_from_z(pb, res.x), sse)
    return best


def _fit_problem(pb: _Problem) -> tuple[np.ndarray, float] | None:
    return _refine(pb, _grid_starts(pb))


# ---------------------------------------------------------------------------------------------
# Bootstrap: resampled score vectors, refitted from the full-data optimum.

def _task_resamples(points: list[CurvePoint], pb_points: list[CurvePoint], anchor_points: list[CurvePoint],
                    n: int, rng: np.random.Generator):
    """Yield (y*, anchor*) from one shared resample of task ids per replicate. Each point keeps its own
    level: y* = score + (resampled task mean - task mean), so a score that is a success rate while the
    per-task numbers are mean scores is still resampled around itself."""
    tasks = sorted({t for p in points for t in (p.task_scores or {})})
    index = {t: i for i, t in enumerate(tasks)}

    def table(pts):
        m = np.full((len(pts), len(tasks)), np.nan)
        for i, p in enumerate(pts):
            for t, s in p.task_scores.items():
                m[i, index[t]] = s
        return m

    fit_tab, anchor_tab = table(pb_points), table(anchor_points)
    fit_y = np.array([p.score for p in pb_points])
    anchor_y = np.array([p.score for p in anchor_points])
    for _ in range(n):
        w = rng.multinomial(len(tasks), np.full(len(tasks), 1 / len(tasks))).astype(float)
        yield _reweighted(fit_tab, fit_y, w), _reweighted(anchor_tab, anchor_y, w)


def _reweighted(tab: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    if len(tab) == 0:
        return score
    have = ~np.isnan(tab)
    vals = np.where(have, tab, 0.0)
    full = vals.sum(1) / np.maximum(have.sum(1), 1)
    ww = w[None, :] * have
    denom = ww.sum(1)
    resampled = np.where(denom > 0, (vals * ww).sum(1) / np.maximum(denom, 1e-12), full)
    return score + (resampled - full)


def _residual_resamples(pb: _Problem, theta: np.ndarray, anchor_y: np.ndarray, n: int, rng: np.random.Generator):
    """Yield (y*, anchor*): fitted values plus resampled residuals, rescaled by sqrt(n / (n - p)) since
    fitted residuals are smaller than the noise."""
    fitted = sigmoid_curve(pb.x, *theta)
    r = pb.y - fitted
    n_params = 3 + (pb.r0_fixed is None)
    r = (r - r.mean()) * math.sqrt(len(r) / max(len(r) - n_params, 1))
    for _ in range(n):
        yield fitted + rng.choice(r, len(r)), anchor_y + rng.choice(r, len(anchor_y))


# ---------------------------------------------------------------------------------------------
# Derived numbers.

def _derived(theta: np.ndarray, baseline: float, horizon: float, target: float | None) -> dict[str, float]:
    r0, a, mid, e = theta
    out = {"asymptote": a, "midpoint": mid, "exponent": e,
           # d score / d x at the midpoint, where (mid / x)^e = 1: (A - R0) e / (4 mid)
           "slope_at_midpoint": (a - r0) * e / (4 * mid),
           # the same per e-fold of x (per unit of ln x), comparable across x-axes
           "slope_per_log_x": (a - r0) * e / 4,
           "baseline": baseline,
           "learning_speed": float(sigmoid_curve(np.array([horizon]), *theta)[0]) - baseline}
    if target is not None:
        out["x_to_target"] = x_for_score(target, r0, a, mid, e)
    return out


def _summarise(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """Percentile interval; an infinite end (a target never reached) stays inf (None in JSON).
    Efron's bias-corrected variant was tried and covered worse with 60 resamples (0.86-0.88 vs
    0.92-0.96 over 50 draws), so the plain percentile interval stays."""
    q = (1 - level) / 2
    big = np.finfo(float).max / 4  # inf (never reached) sorts last; quantiles cannot interpolate it
    v = np.where(np.isposinf(values), big, values)
    # Weibull plotting positions (rank / (B + 1)): with a few hundred resamples the default linear
    # rule puts the ends inside the extreme order statistics and the interval comes out too narrow.
    ends = [float(np.quantile(v, q, method="weibull")), float(np.quantile(v, 1 - q, method="weibull"))]
    return [math.inf if e >= big / 2 else e for e in ends]


# ---------------------------------------------------------------------------------------------

def fit_curve(points: list[CurvePoint], form: Form = "scalerl", bootstrap: int = 200, seed: int = 0,
              horizon: float = 2.0, target_score: float | None = None, skip_initial_x: float = 0.0) -> CurveFit:
    """Fit one arm's points. ``horizon``: learning speed = predicted score at x = horizon minus the
    baseline (the mean x = 0 score when present, else the curve's own value at 0). ``target_score``:
    also report the x needed to reach it. ``skip_initial_x``: points with 0 < x < this are left out
    (ScaleRL's initial window). Never raises on bad points: returns status "no_fit" with the reason."""
    points = list(points)
    pb, reason, warnings = _check_points(points, form, skip_initial_x)
    if pb is None:
        return CurveFit(form=form, status="no_fit", reason=reason, warnings=warnings, points=points)
    best = _fit_problem(pb)
    if best is None:
        return CurveFit(form=form, status="no_fit", reason="the optimiser failed from every start",
                        warnings=warnings, points=points)
    theta, sse = best
    sst = float(((pb.y - pb.y.mean()) ** 2).sum())
    anchor_points = [p for p in points if p.x <= 0]
    baseline = float(np.mean([p.score for p in anchor_points])) if anchor_points else float(theta[0])
    fit = CurveFit(form=form, status="ok", params=_named(form, theta), r2=1 - sse / sst if sst > 0 else None,
                   derived=_derived(theta, baseline, horizon, target_score), warnings=warnings,
                   n_fit_points=len(pb.x), points=points)
    fit.derived["horizon"] = horizon
    if target_score is not None:
        fit.derived["target_score"] = target_score
    fit.warnings += _bound_warnings(pb, theta)
    if bootstrap > 0:
        _bootstrap(fit, pb, theta, points, anchor_points, bootstrap, seed, horizon, target_score)
    return fit


def _named(form: str, theta: np.ndarray) -> dict[str, float]:
    names = PARAM_NAMES[form]
    vals = theta[1:] if form == "edgebench" else theta
    return {n: float(v) for n, v in zip(names, vals)}


def _bound_warnings(pb: _Problem, theta: np.ndarray) -> list[str]:
    out = []
    r0, a, mid, e = theta
    if a >= pb.a_bounds[1] - 1e-3 * (pb.a_bounds[1] - pb.a_bounds[0]):
        out.append(f"asymptote at its upper bound ({pb.a_bounds[1]:g}): the points do not show saturation yet; "
                   "asymptote, midpoint and time-to-target are not identified")
    if not (pb.mid_bounds[0] * 1.01 < mid < pb.mid_bounds[1] / 1.01):
        out.append("midpoint at its bound: the curve's centre lies far outside the observed x range")
    if not (EXPONENT_BOUNDS[0] * 1.01 < e < EXPONENT_BOUNDS[1] / 1.01):
        out.append("exponent at its bound: the points look like a step or a flat line, not a sigmoid")
    if mid > pb.x.max():
        out.append("midpoint beyond the last point: asymptote extrapolated")
    return out


def _bootstrap(fit: CurveFit, pb: _Problem, theta: np.ndarray, points: list[CurvePoint],
               anchor_points: list[CurvePoint], n: int, seed: int, horizon: float, target: float | None) -> None:
    rng = np.random.default_rng(seed)
    fit_points = pb.fit_points
    by_tasks = all(p.task_scores for p in fit_points + anchor_points)
    anchor_y = np.array([p.score for p in anchor_points])
    if by_tasks:
        draws = _task_resamples(points, fit_points, anchor_points, n, rng)
        method = "tasks"
    else:
        draws = _residual_resamples(pb, theta, anchor_y, n, rng)
        method = "residuals"
    reps, bases = [], []
    for y_star, anchor_star in draws:
        pb_star = pb
        if pb.r0_fixed is not None and pb.form == "scalerl":
            r0_star = float(np.mean(anchor_star))
            a_lo = max(pb.a_bounds[0], r0_star + 1e-6)  # the resampled start must stay below the asymptote
            pb_star = _Problem(**{**pb.__dict__, "r0_fixed": r0_star,
                                  "a_bounds": (a_lo, max(pb.a_bounds[1], a_lo + 1e-3))})
        got = _refine(pb_star, [theta], y=y_star, max_nfev=200)
        if got is None:
            continue
        reps.append(got[0])
        bases.append(float(np.mean(anchor_star)) if len(anchor_star) else float(got[0][0]))
    fit.bootstrap = {"method": method, "requested": n, "ok": len(reps), "seed": seed}
    if method == "residuals":
        fit.bootstrap["note"] = "no per-task scores on every point: residual bootstrap (ignores task correlation)"
    if len(reps) < max(10, n // 2):
        fit.warnings.append(f"only {len(reps)} of {n} bootstrap refits succeeded: no intervals")
        return
    fit.replicates, fit.baseline_replicates = np.array(reps), np.array(bases)
    names = PARAM_NAMES[fit.form]
    cols = fit.replicates[:, 1:] if fit.form == "edgebench" else fit.replicates
    fit.intervals = {name: _summarise(cols[:, i]) for i, name in enumerate(names)}
    derived = [_derived(r, b, horizon, target) for r, b in zip(fit.replicates, fit.baseline_replicates)]
    for key in derived[0]:
        fit.intervals[key] = _summarise(np.array([d[key] for d in derived]))
    if target is not None:
        never = float(np.mean([math.isinf(d["x_to_target"]) for d in derived]))
        fit.derived["target_not_reached_share"] = never
        if math.isinf(fit.derived["x_to_target"]):
            fit.derived["x_to_target_note"] = "not reached within the asymptote"


# ---------------------------------------------------------------------------------------------
# Checks around one fit: forecast and fit-window sensitivity.

def forecast_check(points: list[CurvePoint], form: Form, fraction: float, **fit_kw) -> dict[str, Any]:
    """Fit on the first ``fraction`` of the checkpoints (by x; x = 0 anchors always kept), predict the
    rest and report the errors. Needs 4 fit points and 1 held-back point."""
    pos = sorted([p for p in points if p.x > 0], key=lambda p: p.x)
    anchors = [p for p in points if p.x <= 0]
    n_fit = int(math.floor(fraction * len(pos)))
    if n_fit < 4 or n_fit >= len(pos):
        return {"status": "no_fit", "reason": f"forecast needs >= 4 fit points and >= 1 held-back point "
                f"({len(pos)} points with x > 0, fraction {fraction:g})", "fraction": fraction}
    fit = fit_curve(anchors + pos[:n_fit], form=form, bootstrap=0, **fit_kw)
    if not fit.ok:
        return {"status": "no_fit", "reason": fit.reason, "fraction": fraction}
    rest = pos[n_fit:]
    pred = fit.predict([p.x for p in rest])
    err = pred - np.array([p.score for p in rest])
    return {"status": "ok", "fraction": fraction, "n_fit": n_fit, "n_heldback": len(rest),
            "x_split": pos[n_fit - 1].x, "params": fit.params, "mae": float(np.abs(err).mean()),
            "max_abs_error": float(np.abs(err).max()), "bias": float(err.mean()),
            "predictions": [{"x": p.x, "score": p.score, "predicted": float(v)} for p, v in zip(rest, pred)]}


def window_sensitivity(points: list[CurvePoint], form: Form, full: CurveFit, drops=(1, 2), **fit_kw) -> dict[str, Any]:
    """Refit dropping the first 1..k points with x > 0 (anchors kept) and report how far each
    parameter moves, relative to the full fit."""
    pos = sorted([p for p in points if p.x > 0], key=lambda p: p.x)
    anchors = [p for p in points if p.x <= 0]
    out: dict[str, Any] = {"refits": []}
    worst = 0.0
    for k in drops:
        fit = fit_curve(anchors + pos[k:], form=form, bootstrap=0, **fit_kw)
        row: dict[str, Any] = {"dropped_first": k, "status": fit.status, "reason": fit.reason, "params": fit.params}
        if fit.ok and full.ok:
            rel = {n: abs(fit.params[n] - v) / max(abs(v), 1e-12) for n, v in full.params.items()}
            row["relative_change"] = rel
            worst = max(worst, max(rel.values()))
        out["refits"].append(row)
    out["max_relative_change"] = worst if full.ok and any(r["status"] == "ok" for r in out["refits"]) else None
    return out
