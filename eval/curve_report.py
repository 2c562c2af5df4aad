"""Everything around the fits of one experiment: per-arm fit, forecast check and fit-window
sensitivity, the comparison of arms, the doubling time of learning speed, and the three outputs
(``curve.json`` with every number, ``curve.png``, a markdown section for ``report.md``).

The comparison verdict follows ScaleRL: two arms differ in asymptote when the gap exceeds the margin
(0.02 by default, their seed-variance band) and the bootstrap interval of the gap excludes 0;
otherwise they differ in efficiency when the interval of the midpoint ratio excludes 1; otherwise they
are indistinguishable with the points at hand.
"""
from __future__ import annotations

import json
import math
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from eval.config import CurveConfig
from eval.curve import LEVEL, CurveFit, CurvePoint, _json_safe, fit_curve, forecast_check, sigmoid_curve, window_sensitivity

X_LABELS = {"hours": "cumulative interaction hours", "gpu_hours": "GPU-hours", "tokens": "tokens trained",
            "round": "round", "episodes": "episodes ingested"}
X_UNITS = {"hours": "h", "gpu_hours": "GPU-h", "tokens": "tokens", "round": "rounds", "episodes": "episodes"}
FORM_TEXT = {"edgebench": "EdgeBench S(t) = S_max / (1 + (t_mid / t)^beta)",
             "scalerl": "ScaleRL R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B)"}
# Without bootstrap intervals, midpoints within this factor of each other count as equal.
MIDPOINT_RATIO_BAND = 1.25
DAYS_PER_MONTH = 30.44


def analyse_arm(points: list[CurvePoint], cfg: CurveConfig) -> tuple[CurveFit, dict[str, Any]]:
    """Fit one arm and run its forecast check and window sensitivity; returns the fit and its JSON."""
    kw = dict(horizon=cfg.horizon_hours, target_score=cfg.target_score, skip_initial_x=cfg.skip_initial_x)
    fit = fit_curve(points, form=cfg.form, bootstrap=cfg.bootstrap, seed=cfg.seed, **kw)
    record = {"fit": fit.to_dict(),
              "forecast": forecast_check(points, cfg.form, cfg.forecast_fraction, **kw),
              "window_sensitivity": window_sensitivity(points, cfg.form, fit, **kw) if fit.ok else None}
    return fit, record


# ---------------------------------------------------------------------------------------------
# Comparison of arms and doubling time.

def _interval(values: np.ndarray) -> list[float]:
    q = (1 - LEVEL) / 2
    return [float(np.quantile(values, q, method="weibull")), float(np.quantile(values, 1 - q, method="weibull"))]


def compare_arms(fits: dict[str, CurveFit], margin: float = 0.02) -> list[dict[str, Any]]:
    """Every pair of fitted arms: asymptote gap, midpoint ratio, and a ScaleRL-style verdict."""
    out = []
    ok = {arm: f for arm, f in fits.items() if f.ok}
    for a, b in combinations(ok, 2):
        out.append(_compare_pair(a, ok[a], b, ok[b], margin))
    return out


def _compare_pair(name_a: str, fa: CurveFit, name_b: str, fb: CurveFit, margin: float) -> dict[str, Any]:
    gap = fb.derived["asymptote"] - fa.derived["asymptote"]
    ratio = fb.derived["midpoint"] / fa.derived["midpoint"]
    row: dict[str, Any] = {"arms": [name_a, name_b], "asymptote_gap": gap, "midpoint_ratio": ratio, "margin": margin}
    if fa.replicates is not None and fb.replicates is not None:
        # Arms are independent: pairing replicate i of one with replicate i of the other samples the gap.
        k = min(len(fa.replicates), len(fb.replicates))
        gaps = fb.replicates[:k, 1] - fa.replicates[:k, 1]
        log_ratio = np.log(fb.replicates[:k, 2]) - np.log(fa.replicates[:k, 2])
        row["asymptote_gap_interval"] = _interval(gaps)
        row["midpoint_ratio_interval"] = [math.exp(v) for v in _interval(log_ratio)]
        asym = abs(gap) > margin and not (row["asymptote_gap_interval"][0] <= 0 <= row["asymptote_gap_interval"][1])
        eff = not (row["midpoint_ratio_interval"][0] <= 1 <= row["midpoint_ratio_interval"][1])
        row["basis"] = "bootstrap intervals"
    else:
        asym = abs(gap) > margin
        eff = not (1 / MIDPOINT_RATIO_BAND <= ratio <= MIDPOINT_RATIO_BAND)
        row["basis"] = f"point estimates only (no bootstrap): margin {margin:g}, midpoint band x{MIDPOINT_RATIO_BAND:g}"
    higher, lower = (name_b, name_a) if gap > 0 else (name_a, name_b)
    faster = name_b if ratio < 1 else name_a
    if asym:
        row["verdict"] = "asymptote_differs"
        row["text"] = f"{higher} saturates higher than {lower} by {abs(gap):.3g} (beyond the {margin:g} margin)"
    elif eff:
        row["verdict"] = "efficiency_differs"
        row["text"] = (f"same asymptote within the {margin:g} margin and the noise; {faster} reaches its midpoint "
                       f"{max(ratio, 1 / ratio):.3g}x sooner")
    else:
        row["verdict"] = "indistinguishable"
        row["text"] = f"{name_a} and {name_b} are indistinguishable with these points"
    unidentified = [n for n, f in ((name_a, fa), (name_b, fb)) if any("upper bound" in w for w in f.warnings)]
    if unidentified:
        row["note"] = f"asymptote not identified for {', '.join(unidentified)} (no saturation yet): verdict is provisional"
    return row


def _arm_date(points: list[CurvePoint]) -> float | None:
    dates = [p.date for p in points if p.date is not None]
    return float(np.median(dates)) if dates else None


def _speed_replicates(fit: CurveFit, horizon: float) -> np.ndarray | None:
    if fit.replicates is None:
        return None
    at_h = np.array([sigmoid_curve(np.array([horizon]), *row)[0] for row in fit.replicates])
    return at_h - fit.baseline_replicates


def doubling_time(fits: dict[str, CurveFit], points_by_arm: dict[str, list[CurvePoint]],
                  horizon: float) -> dict[str, Any]:
    """Fit log2(learning speed) against the arms' dates (days); doubling time = 1 / slope. Needs at
    least two fitted arms with distinct dates and positive learning speed."""
    rows = []
    for arm, fit in fits.items():
        date = _arm_date(points_by_arm[arm])
        if fit.ok and date is not None and fit.derived["learning_speed"] > 0:
            rows.append((arm, date, fit.derived["learning_speed"], _speed_replicates(fit, horizon)))
    if len(rows) < 2 or len({r[1] for r in rows}) < 2:
        return {"status": "not_computed", "reason": "needs >= 2 fitted arms with distinct dates and positive "
                f"learning speed ({len(rows)} usable)"}
    dates = np.array([r[1] for r in rows])
    speeds = np.array([r[2] for r in rows])
    slope, intercept = np.polyfit(dates, np.log2(speeds), 1)  # doublings per day
    out: dict[str, Any] = {"status": "ok", "arms": [{"arm": r[0], "date": r[1], "learning_speed": r[2]} for r in rows],
                           "horizon": horizon, "doublings_per_day": float(slope)}
    if len(rows) > 2:
        pred = intercept + slope * dates
        resid = np.log2(speeds) - pred
        sst = ((np.log2(speeds) - np.log2(speeds).mean()) ** 2).sum()
        out["r2_log2"] = float(1 - (resid ** 2).sum() / sst) if sst > 0 else None
    out.update(_doubling_from_slope(float(slope)))
    reps = [r[3] for r in rows]
    if all(r is not None for r in reps):
        k = min(len(r) for r in reps)
        mat = np.log2(np.clip(np.stack([r[:k] for r in reps]), 1e-12, None))  # (arms, k)
        slopes = np.polyfit(dates, mat, 1)[0]
        lo, hi = _interval(slopes)
        out["doublings_per_day_interval"] = [lo, hi]
        # slope > 0 everywhere: a finite doubling time; slope <= 0 in part of the interval: unbounded above
        out["doubling_time_days_interval"] = [1 / hi if hi > 0 else math.inf, 1 / lo if lo > 0 else math.inf]
    return out


def _doubling_from_slope(slope: float) -> dict[str, Any]:
    if slope <= 0:
        return {"doubling_time_days": None, "doubling_time_months": None,
                "note": "learning speed does not grow with date"}
    return {"doubling_time_days": 1 / slope, "doubling_time_months": 1 / slope / DAYS_PER_MONTH}


# ---------------------------------------------------------------------------------------------
# Plot.

def _error_bars(points: list[CurvePoint]) -> tuple[np.ndarray, np.ndarray] | None:
    """Lower/upper error lengths: the evaluator's own interval, else 1.96 standard errors over tasks."""
    lo, hi = [], []
    for p in points:
        if p.lo is not None and p.hi is not None:
            lo.append(max(p.score - p.lo, 0.0))
            hi.append(max(p.hi - p.score, 0.0))
        elif p.task_scores and len(p.task_scores) > 1:
            v = np.array(list(p.task_scores.values()), dtype=float)
            se = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
            lo.append(se)
            hi.append(se)
        else:
            lo.append(0.0)
            hi.append(0.0)
    return (np.array(lo), np.array(hi)) if any(lo) or any(hi) else None


def plot_curves(points_by_arm: dict[str, list[CurvePoint]], fits: dict[str, CurveFit],
                records: dict[str, dict[str, Any]], cfg: CurveConfig, path: Path, title: str = "") -> None:
    """Points with intervals, fitted curve with its bootstrap band, forecast region shaded; log x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(points_by_arm))]
    xs_all = [p.x for pts in points_by_arm.values() for p in pts if p.x > 0]
    x_lo, x_hi = (min(xs_all), max(xs_all)) if xs_all else (0.1, 10.0)
    grid = np.geomspace(x_lo / 1.5, x_hi * 1.5, 200)
    for (arm, pts), color in zip(points_by_arm.items(), colors):
        _plot_arm(ax, arm, pts, fits[arm], records[arm], grid, color)
    ax.set_xscale("log")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel(f"{X_LABELS[cfg.x]} (log scale)")
    ax.set_ylabel("held-out score")
    ax.set_title(title or f"Improvement curve ({cfg.form} form)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_arm(ax, arm: str, pts: list[CurvePoint], fit: CurveFit, record: dict[str, Any],
              grid: np.ndarray, color: str) -> None:
    pos = sorted([p for p in pts if p.x > 0], key=lambda p: p.x)
    zero = [p for p in pts if p.x <= 0]
    label = arm if fit.ok else f"{arm} (no fit: {fit.reason[:50]})"
    if pos:
        bars = _error_bars(pos)
        ax.errorbar([p.x for p in pos], [p.score for p in pos], yerr=None if bars is None else np.vstack(bars),
                    fmt="o", ms=3, color=color, alpha=0.8, capsize=2, label=f"{arm} points")
    if zero:  # x = 0 cannot sit on a log axis: the base score is drawn as a line from the left edge
        ax.axhline(float(np.mean([p.score for p in zero])), color=color, ls=":", lw=1, label=f"{arm} base (x = 0)")
    if not fit.ok:
        ax.plot([], [], color=color, label=label)
        return
    ax.plot(grid, fit.predict(grid), color=color, lw=2, label=f"{arm} fit (R² {fit.r2:.3f})" if fit.r2 is not None else label)
    band = fit.band(grid)
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color=color, alpha=0.2, lw=0)
    fc = record.get("forecast") or {}
    if fc.get("status") == "ok":
        ax.axvspan(fc["x_split"], grid[-1], color=color, alpha=0.06)
        fc_grid = grid[grid >= fc["x_split"]]
        p = fc["params"]
        theta = (0.0, p["s_max"], p["t_mid"], p["beta"]) if fit.form == "edgebench" else (p["r0"], p["a"], p["c_mid"], p["b"])
        ax.plot(fc_grid, sigmoid_curve(fc_grid, *theta), color=color, ls="--", lw=1,
                label=f"{arm} forecast from first {fc['n_fit']} (MAE {fc['mae']:.3f})")


# ---------------------------------------------------------------------------------------------
# Markdown.

def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return f"{v:.3g}" if isinstance(v, (float, int)) else str(v)


def _cell(fit: CurveFit, key: str) -> str:
    value = fit.derived.get(key)
    if value is None:
        return "–"
    iv = fit.intervals.get(key)
    return f"{_fmt(value)} [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else _fmt(value)


def markdown_section(result: dict[str, Any], fits: dict[str, CurveFit], cfg: CurveConfig,
                     image_link: str = "curve/curve.png") -> str:
    boot = {f.bootstrap.get("method") for f in fits.values() if f.bootstrap}
    lines = ["## Improvement curve", "", f"![improvement curve]({image_link})", "",
             f"Form: {FORM_TEXT[cfg.form]}; x = {X_LABELS[cfg.x]}. "
             f"Intervals: {int(LEVEL * 100)}% bootstrap ({', '.join(sorted(boot)) or 'none'}; {cfg.bootstrap} resamples).", ""]
    lines += _md_table(fits, cfg)
    lines += _md_checks(result, fits, cfg)
    return "\n".join(lines) + "\n"


def _md_table(fits: dict[str, CurveFit], cfg: CurveConfig) -> list[str]:
    """One row per arm: every headline number with its interval."""
    unit = X_UNITS[cfg.x]
    target = f"x to reach {cfg.target_score:g} ({unit})" if cfg.target_score is not None else None
    head = ["arm", "status", "asymptote", f"midpoint ({unit})", "exponent", f"slope at midpoint (/{unit})",
            f"learning speed @ {cfg.horizon_hours:g} {unit}"] + ([target] if target else []) + ["R²", "points"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, fit in fits.items():
        if fit.ok:
            cells = [arm, "ok", _cell(fit, "asymptote"), _cell(fit, "midpoint"), _cell(fit, "exponent"),
                     _cell(fit, "slope_at_midpoint"), _cell(fit, "learning_speed")]
            if target:
                cells.append(_cell(fit, "x_to_target") + (" (not reached within asymptote)"
                                                          if math.isinf(fit.derived.get("x_to_target", 0)) else ""))
            cells += [_fmt(fit.r2), str(fit.n_fit_points)]
        else:
            cells = [arm, f"no fit: {fit.reason}"] + ["–"] * (len(head) - 4) + ["–", str(len(fit.points))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _md_checks(result: dict[str, Any], fits: dict[str, CurveFit], cfg: CurveConfig) -> list[str]:
    """Forecast check (printed every time), window sensitivity, warnings, comparisons, doubling time."""
    unit = X_UNITS[cfg.x]
    lines = ["", "**Forecast check** (fit on the first checkpoints, predict the rest):"]
    for arm, rec in result["arms"].items():
        fc = rec["forecast"]
        if fc.get("status") == "ok":
            lines.append(f"- {arm}: fit on the first {fc['n_fit']} checkpoints (x <= {_fmt(fc['x_split'])} {unit}), "
                         f"predicted the other {fc['n_heldback']} with MAE {_fmt(fc['mae'])}, "
                         f"max abs error {_fmt(fc['max_abs_error'])}, bias {_fmt(fc['bias'])}")
        else:
            lines.append(f"- {arm}: not possible ({fc.get('reason')})")
    lines += ["", "**Fit-window sensitivity** (refit dropping the first 1-2 points):"]
    for arm, rec in result["arms"].items():
        ws = rec["window_sensitivity"]
        if ws and ws.get("max_relative_change") is not None:
            lines.append(f"- {arm}: parameters move by at most {100 * ws['max_relative_change']:.1f}%")
        else:
            lines.append(f"- {arm}: not available")
    warn = [(arm, w) for arm, fit in fits.items() for w in fit.warnings]
    if warn:
        lines += ["", "**Warnings:**"] + [f"- {arm}: {w}" for arm, w in warn]
    if result["comparisons"]:
        lines += ["", f"**Comparison of arms** (ScaleRL-style, asymptote margin {cfg.margin:g}):"]
        for c in result["comparisons"]:
            extra = f" ({c['note']})" if c.get("note") else ""
            lines.append(f"- {c['arms'][0]} vs {c['arms'][1]}: **{c['verdict']}**: {c['text']}{extra}")
    dt = result["doubling_time"]
    if dt.get("status") == "ok":
        iv = dt.get("doubling_time_days_interval")
        iv_text = f" [{_fmt(iv[0])}, {_fmt(iv[1])}] days" if iv else ""
        lines += ["", f"**Doubling time of learning speed** ({len(dt['arms'])} arms by date): "
                  f"{_fmt(dt['doubling_time_days'])} days{iv_text} (~{_fmt(dt['doubling_time_months'])} months)"
                  + (f"; {dt['note']}" if dt.get("note") else "")]
    return lines


# ---------------------------------------------------------------------------------------------

def write_curve_outputs(points_by_arm: dict[str, list[CurvePoint]], out_dir: Path, cfg: CurveConfig,
                        title: str = "", image_link: str = "curve/curve.png") -> dict:
    """Fit every arm and write ``curve.json``, ``curve.png`` and ``curve.md`` into out_dir. Returns the
    JSON dict, whose "markdown" entry is the section for report.md (``image_link``: the plot's path as
    seen from the report)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fits: dict[str, CurveFit] = {}
    records: dict[str, dict[str, Any]] = {}
    for arm, pts in points_by_arm.items():
        fits[arm], records[arm] = analyse_arm(pts, cfg)
    result: dict[str, Any] = {
        "title": title, "form": cfg.form, "x_axis": cfg.x, "x_label": X_LABELS[cfg.x],
        "config": cfg.model_dump(), "interval_level": LEVEL, "arms": records,
        "comparisons": compare_arms(fits, cfg.margin),
        "doubling_time": doubling_time(fits, points_by_arm, cfg.horizon_hours),
    }
    result["markdown"] = markdown_section(result, fits, cfg, image_link)
    result = _json_safe(result)
    plot_curves(points_by_arm, fits, records, cfg, out_dir / "curve.png", title)
    (out_dir / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "curve.md").write_text(result["markdown"])
    _log_to_wandb(result, out_dir / "curve.png")
    return result


def _log_to_wandb(result: dict[str, Any], png: Path) -> None:
    """Log the headline numbers when a W&B run is active. wandb is never imported here: if the caller
    has not imported it, no run can be active."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    scalars = {}
    for arm, rec in result["arms"].items():
        fit = rec["fit"]
        if fit["status"] == "ok":
            for key in ("asymptote", "midpoint", "exponent", "learning_speed", "x_to_target"):
                if fit["derived"].get(key) is not None:
                    scalars[f"curve/{arm}/{key}"] = fit["derived"][key]
            scalars[f"curve/{arm}/r2"] = fit["r2"]
        if rec["forecast"].get("status") == "ok":
            scalars[f"curve/{arm}/forecast_mae"] = rec["forecast"]["mae"]
    wandb.log({**scalars, "curve/plot": wandb.Image(str(png))})


# ---------------------------------------------------------------------------------------------
# `flywheel curve` (trainer/cli/curve.py): the settings and points of a fit from run directories or
# a CSV; the command writes them with write_curve_outputs.

# curve settings the command's options set: option name -> CurveConfig field
FLAG_TO_FIELD = {"x": "x", "form": "form", "bootstrap": "bootstrap", "horizon": "horizon_hours",
                 "target": "target_score", "forecast_fraction": "forecast_fraction",
                 "skip_initial_x": "skip_initial_x", "margin": "margin", "seed": "seed"}


def curve_settings(recipe_curve: dict[str, Any], settings: dict[str, Any]) -> CurveConfig:
    """The fit's settings: the (first) run's own curve section, then the options given (None = not given)."""
    from pydantic import ValidationError

    from eval.curve_inputs import CurveInputError
    values = dict(recipe_curve)
    values.update({k: v for k, v in settings.items() if v is not None})
    try:
        return CurveConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CurveInputError(f"curve setting {where!r}: {first['msg']}") from None


def curve_inputs(run_dirs: list[Path], points: Path | None = None, settings: dict[str, Any] | None = None,
                 metric: str | None = None, recipe_curves: list[dict[str, Any]] = (),
                 ) -> tuple[CurveConfig, dict[str, list[CurvePoint]], list[str]]:
    """(settings, points per arm, notes) of `flywheel curve`: each run directory is one arm, or the
    CSV `points` holds them all. `recipe_curves[i]` is run_dirs[i]'s recipe curve section ({} for a
    run without one); the first run's sets the fit, each run's own `metric` picks its score unless
    `metric` is given (without either: the summary's mean score when present, else success rate)."""
    from eval.curve_inputs import CurveInputError, points_from_csv, points_from_run, run_axis
    recipe_curves = list(recipe_curves) or [{} for _ in run_dirs]
    cfg = curve_settings(recipe_curves[0] if run_dirs else {}, settings or {})
    if points is not None:
        return cfg, points_from_csv(points), []
    by_arm: dict[str, list[CurvePoint]] = {}
    notes: list[str] = []
    axes = [run_axis(d, cfg.x) for d in run_dirs] if (settings or {}).get("x") is None else []
    if axes and all(axis != cfg.x for axis, _ in axes):  # logs without interaction time, as the run's report
        cfg = cfg.model_copy(update={"x": axes[0][0]})
        notes.append(f"{axes[0][1]} (--x chooses another axis)")
    for run_dir, recipe_curve in zip(run_dirs, recipe_curves):
        arm = run_dir.resolve().name
        if arm in by_arm:
            arm = str(run_dir)
        if arm in by_arm:
            raise CurveInputError(f"{run_dir}: given twice")
        by_arm[arm], run_notes = points_from_run(run_dir, cfg.x, metric or recipe_curve.get("metric"), arm)
        notes += run_notes
    return cfg, by_arm, notes
