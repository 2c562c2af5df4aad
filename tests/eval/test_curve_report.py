"""Outputs around the fits (eval/curve_report.py): curve.json / curve.png / markdown, the comparison of
arms, the doubling time of learning speed."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval.config import CurveConfig
from eval.curve import CurvePoint, fit_curve, sigmoid_curve
from eval.curve_report import compare_arms, doubling_time, write_curve_outputs

XS = [0.0] + list(np.geomspace(0.25, 16, 10))


def arm_points(arm, r0, a, mid, b, rng=None, date=None, n_tasks=300):
    """Round-0 at x = 0 plus ten checkpoints; exact, or per-task pass/fail draws."""
    p = sigmoid_curve(np.array(XS), r0, a, mid, b)
    out = []
    for i, (x, pi) in enumerate(zip(XS, p)):
        point = CurvePoint(x=float(x), score=float(pi), label=f"round-{i}", arm=arm, date=date)
        if rng is not None:
            passed = rng.random(n_tasks) < pi
            point.score = float(passed.mean())
            point.task_scores = {f"t{j}": float(v) for j, v in enumerate(passed)}
            point.n = n_tasks
        out.append(point)
    return out


def test_write_curve_outputs_files_and_every_number(tmp_path):
    rng = np.random.default_rng(0)
    pts = {"sft": arm_points("sft", 0.1, 0.6, 2.0, 1.5, rng)}
    cfg = CurveConfig(bootstrap=40, target_score=0.4)
    result = write_curve_outputs(pts, tmp_path / "curve", cfg, title="test")
    for name in ("curve.json", "curve.png", "curve.md"):
        assert (tmp_path / "curve" / name).stat().st_size > 0
    on_disk = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert on_disk == result
    arm = result["arms"]["sft"]
    assert arm["fit"]["status"] == "ok"
    for key in ("asymptote", "midpoint", "exponent", "slope_at_midpoint", "learning_speed", "x_to_target"):
        assert arm["fit"]["derived"][key] is not None, key
        assert len(arm["fit"]["intervals"][key]) == 2, key
    assert set(arm["fit"]["params"]) == {"r0", "a", "c_mid", "b"}
    assert arm["fit"]["r2"] > 0.8
    assert arm["forecast"]["status"] == "ok" and arm["forecast"]["mae"] >= 0
    assert arm["window_sensitivity"]["max_relative_change"] is not None
    assert (tmp_path / "curve" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = result["markdown"]
    assert md.startswith("## Improvement curve") and "curve/curve.png" in md
    assert "**Forecast check**" in md and "MAE" in md and "x to reach 0.4" in md


def test_outputs_with_a_degenerate_arm(tmp_path):
    flat = [CurvePoint(x=float(x), score=0.3, arm="flat") for x in (1, 2, 3, 4, 5)]
    result = write_curve_outputs({"flat": flat}, tmp_path, CurveConfig(bootstrap=10))
    fit = result["arms"]["flat"]["fit"]
    assert fit["status"] == "no_fit" and "all scores equal" in fit["reason"]
    assert len(fit["points"]) == 5
    assert result["arms"]["flat"]["window_sensitivity"] is None
    assert "no fit: all scores equal" in result["markdown"]
    assert (tmp_path / "curve.png").exists()


def test_edgebench_outputs_drop_x0_and_say_so(tmp_path):
    pts = {"agent": arm_points("agent", 0.0, 0.55, 0.8, 0.95)}
    result = write_curve_outputs(pts, tmp_path, CurveConfig(form="edgebench", bootstrap=0))
    fit = result["arms"]["agent"]["fit"]
    assert fit["params"]["s_max"] == pytest.approx(0.55, rel=0.01)
    assert any("x = 0" in w for w in fit["warnings"]) and "x = 0" in result["markdown"]


# ---------------------------------------------------------------------------------------------
# Comparison of arms

def _fits(specs, bootstrap=60):
    fits = {}
    for i, (name, truth) in enumerate(specs.items()):
        pts = arm_points(name, *truth, rng=np.random.default_rng(10 + i), n_tasks=400)
        fits[name] = fit_curve(pts, form="scalerl", bootstrap=bootstrap, seed=i)
    return fits


def test_verdict_asymptote_differs():
    fits = _fits({"latest": (0.1, 0.45, 1.0, 1.5), "accumulate": (0.1, 0.7, 1.0, 1.5)})
    (row,) = compare_arms(fits, margin=0.02)
    assert row["verdict"] == "asymptote_differs"
    assert row["asymptote_gap"] > 0.02 and row["asymptote_gap_interval"][0] > 0
    assert "accumulate saturates higher" in row["text"]


def test_verdict_efficiency_differs():
    fits = _fits({"slow": (0.1, 0.6, 4.0, 2.0), "fast": (0.1, 0.6, 0.6, 2.0)})
    (row,) = compare_arms(fits, margin=0.05)
    assert row["verdict"] == "efficiency_differs"
    assert row["midpoint_ratio_interval"][1] < 1
    assert "fast reaches its midpoint" in row["text"]


def test_verdict_indistinguishable():
    fits = _fits({"seed0": (0.1, 0.6, 1.5, 1.5), "seed1": (0.1, 0.6, 1.5, 1.5)})
    (row,) = compare_arms(fits, margin=0.02)
    assert row["verdict"] == "indistinguishable"


def test_verdict_without_bootstrap_uses_margin_and_band():
    exact = {name: fit_curve(arm_points(name, *truth), form="scalerl", bootstrap=0)
             for name, truth in {"a": (0.1, 0.6, 1.0, 1.5), "b": (0.1, 0.61, 1.0, 1.5), "c": (0.1, 0.7, 1.0, 1.5)}.items()}
    rows = {tuple(r["arms"]): r for r in compare_arms(exact, margin=0.02)}
    assert rows[("a", "b")]["verdict"] == "indistinguishable"
    assert rows[("a", "c")]["verdict"] == "asymptote_differs"
    assert rows[("a", "b")]["basis"].startswith("point estimates only")


def test_comparison_skips_arms_without_fit():
    fits = _fits({"a": (0.1, 0.6, 1.0, 1.5)}, bootstrap=0)
    fits["broken"] = fit_curve([CurvePoint(x=1, score=0.2)], form="scalerl")
    assert compare_arms(fits) == []


# ---------------------------------------------------------------------------------------------
# Doubling time of learning speed

def test_doubling_time_recovered_from_dated_arms():
    # EdgeBench form: learning speed at 2 h = S(2). Successive agents: speed x2 every 90 days.
    beta, t_mid, horizon = 1.0, 4.0, 2.0
    speeds = [0.05, 0.1, 0.2]
    by_arm, fits = {}, {}
    for i, speed in enumerate(speeds):
        s_max = speed * (1 + (t_mid / horizon) ** beta)
        t = np.geomspace(0.25, 16, 12)
        pts = [CurvePoint(x=float(x), score=float(v), arm=f"agent-{i}", date=90.0 * i)
               for x, v in zip(t, sigmoid_curve(t, 0.0, s_max, t_mid, beta))]
        by_arm[f"agent-{i}"] = pts
        fits[f"agent-{i}"] = fit_curve(pts, form="edgebench", bootstrap=0, horizon=horizon)
    dt = doubling_time(fits, by_arm, horizon)
    assert dt["status"] == "ok"
    assert dt["doubling_time_days"] == pytest.approx(90.0, rel=0.02)
    assert dt["doubling_time_months"] == pytest.approx(90.0 / 30.44, rel=0.02)
    assert dt["r2_log2"] > 0.999


def test_doubling_time_interval_from_bootstrap():
    by_arm, fits = {}, {}
    for i, a in enumerate([0.3, 0.45, 0.7]):
        pts = arm_points(f"v{i}", 0.05, a, 2.0, 1.5, rng=np.random.default_rng(i), date=100.0 * i)
        by_arm[f"v{i}"], fits[f"v{i}"] = pts, fit_curve(pts, form="scalerl", bootstrap=40, seed=i)
    dt = doubling_time(fits, by_arm, 2.0)
    lo, hi = dt["doubling_time_days_interval"]
    assert lo <= dt["doubling_time_days"] and (math.isinf(hi) or dt["doubling_time_days"] <= hi)


def test_doubling_time_needs_dates():
    fits = _fits({"a": (0.1, 0.6, 1.0, 1.5), "b": (0.1, 0.7, 1.0, 1.5)}, bootstrap=0)
    by_arm = {name: arm_points(name, 0.1, 0.6, 1.0, 1.5) for name in fits}  # no dates
    dt = doubling_time(fits, by_arm, 2.0)
    assert dt["status"] == "not_computed" and "distinct dates" in dt["reason"]


def test_logged_to_wandb_only_when_a_run_is_active(tmp_path, monkeypatch):
    """A stand-in wandb module (wandb itself is not under test): headline numbers and the plot are
    logged when a run is active, nothing when wandb has no run."""
    import sys
    import types

    logged = []
    fake = types.SimpleNamespace(run=None, log=logged.append, Image=lambda path: ("image", path))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    pts = {"sft": arm_points("sft", 0.1, 0.6, 2.0, 1.5)}
    write_curve_outputs(pts, tmp_path, CurveConfig(bootstrap=0))
    assert logged == []
    fake.run = object()
    write_curve_outputs(pts, tmp_path, CurveConfig(bootstrap=0))
    (entry,) = logged
    assert entry["curve/sft/asymptote"] == pytest.approx(0.6, rel=0.01)
    assert entry["curve/plot"] == ("image", str(tmp_path / "curve.png"))
