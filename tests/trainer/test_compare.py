"""`flywheel compare` on hand-made run directories: table, overlay plot, the run's own curve record,
bad input. (tests/trainer/test_tracking_loop.py compares two real loop runs.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from trainer.cli import main as flywheel
from trainer.rundir import atomic_write_json

TASKS = [f"maze/d3/s{1_000_000_000 + i}" for i in range(40)]


def make_run(root: Path, experiment: str, asymptote: float, midpoint: float, rounds: int = 6,
             method: str = "sft", folder: str | None = None) -> Path:
    """Round manifests and eval summaries of a run whose held-out success follows a sigmoid in hours."""
    run_dir = root / (folder or experiment)
    doc = {"experiment": experiment, "model": {"name_or_path": "tiny"}, "train": {"method": method, "rounds": rounds},
           "curve": {"form": "scalerl", "x": "hours", "metric": "success_rate", "bootstrap": 50}}
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.resolved.yaml").write_text(yaml.safe_dump(doc))
    for r in range(rounds + 1):
        hours = 0.5 * r
        score = 0.1 + (asymptote - 0.1) / (1 + (midpoint / hours) ** 2) if hours else 0.1
        per_task = {t: float((i + 0.5) / len(TASKS) < score) for i, t in enumerate(TASKS)}
        success = sum(per_task.values()) / len(TASKS)
        rdir = run_dir / "rounds" / f"round-{r:04d}"
        atomic_write_json(rdir / "manifest.json", {"round": r, "cumulative_interaction_hours": hours,
                                                   "gpu_hours": 0.25 * r, "tokens_trained": 1000 * r})
        atomic_write_json(rdir / "eval" / "summary.json", {
            "episodes": len(TASKS), "success_rate": success, "ci95": [max(0, success - 0.1), min(1, success + 0.1)],
            "mean_score": success / 2, "mean_score_ci95": [success / 2 - 0.05, success / 2 + 0.05],
            "per_task": {t: v / 2 for t, v in per_task.items()}, "per_task_success": per_task})
    return run_dir


@pytest.fixture
def two_runs(tmp_path):
    return (make_run(tmp_path, "high-lr", asymptote=0.8, midpoint=0.8),
            make_run(tmp_path, "low-lr", asymptote=0.5, midpoint=1.5, method="kto"))


def test_table_and_overlay_plot_of_two_experiments(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert flywheel(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    header, rule, *rows = [line for line in text.splitlines() if line.startswith("|")]
    assert "final held-out success_rate [95% CI]" in header and "GPU-h" in header and "asymptote [CI]" in header
    assert rows[0].startswith("| high-lr | sft | 6 |") and rows[1].startswith("| low-lr | kto | 6 |")
    assert "@ round 6" in rows[0] and "| 3 | 1.5 |" in rows[0]  # 3 interaction h, 1.5 GPU-h
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    result = json.loads((out / "compare.json").read_text())
    high, low = result["runs"]
    assert high["fit_status"] == low["fit_status"] == "ok" and high["fit_source"] == "refit"
    for row in (high, low):
        lo, hi = row["intervals"]["asymptote"]
        assert lo <= row["params"]["asymptote"] <= hi
    assert high["params"]["asymptote"] > low["params"]["asymptote"] + 0.15
    summary = json.loads((two_runs[0] / "rounds" / "round-0006" / "eval" / "summary.json").read_text())
    assert high["final_score"] == summary["success_rate"] and high["final_ci95"] == summary["ci95"]
    assert [c["arms"] for c in result["comparisons"]] == [["high-lr", "low-lr"]]
    assert "verdict" in result["comparisons"][0]
    assert (out / "compare.md").read_text().startswith("# flywheel compare")
    assert not list(out.glob(".fit-*")) and not (out / "curve.png").exists()


def test_curve_parameters_come_from_the_runs_own_curve_record(two_runs, tmp_path, capsys):
    """With a comparable curve/curve.json the table shows the run's own fit; another metric refits."""
    run = two_runs[0]
    from eval.config import CurveConfig
    from eval.curve_inputs import points_from_run
    from eval.curve_report import write_curve_outputs

    cfg = CurveConfig(form="scalerl", x="hours", metric="success_rate", bootstrap=50)
    points, _ = points_from_run(run, "hours", "success_rate", "high-lr")
    curve = write_curve_outputs({"high-lr": points}, run / "curve", cfg)
    own = curve["arms"]["high-lr"]["fit"]["derived"]["asymptote"]
    doc = json.loads((run / "curve" / "curve.json").read_text())
    doc["arms"]["high-lr"]["fit"]["derived"]["asymptote"] = 0.777  # marks the run's own record
    (run / "curve" / "curve.json").write_text(json.dumps(doc))
    assert flywheel(["compare", str(run), str(two_runs[1]), "--out", str(tmp_path / "a"), "--json"]) == 0
    high = json.loads(capsys.readouterr().out)["runs"][0]
    assert high["fit_source"] == "curve/curve.json" and high["params"]["asymptote"] == 0.777
    assert flywheel(["compare", str(run), "--out", str(tmp_path / "b"), "--json", "--metric", "mean_score"]) == 0
    high = json.loads(capsys.readouterr().out)["runs"][0]
    assert high["fit_source"] == "refit" and not math.isclose(high["params"]["asymptote"], 0.777)
    assert high["params"]["asymptote"] < own  # mean score is half the success rate here


def test_runs_of_one_experiment_are_told_apart_by_folder(tmp_path, capsys):
    a = make_run(tmp_path, "quickstart", 0.8, 0.8, folder="seed0")
    b = make_run(tmp_path, "quickstart", 0.7, 0.8, folder="seed1")
    assert flywheel(["compare", str(a), str(b), "--out", str(tmp_path / "o"), "--json"]) == 0
    assert [r["arm"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["quickstart (seed0)", "quickstart (seed1)"]


def test_a_run_without_enough_points_is_listed_without_a_fit(tmp_path, capsys):
    a = make_run(tmp_path, "long", 0.8, 0.8)
    b = make_run(tmp_path, "short", 0.8, 0.8, rounds=2)
    assert flywheel(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 0
    short = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| short")][0]
    assert "no fit: fewer than 4 points" in short and "@ round 2" in short


@pytest.mark.parametrize("damage, message", [
    (lambda run: None, "no such run directory"),
    (lambda run: run.mkdir(), "no rounds/ folder"),
])
def test_bad_run_directories_are_named(tmp_path, capsys, damage, message):
    good = make_run(tmp_path, "good", 0.8, 0.8)
    bad = tmp_path / "bad"
    damage(bad)
    assert flywheel(["compare", str(good), str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flywheel compare: error:") and str(bad) in err and message in err and "Traceback" not in err


def test_a_corrupt_summary_is_named_with_its_file_and_field(tmp_path, capsys):
    run = make_run(tmp_path, "good", 0.8, 0.8)
    summary = run / "rounds" / "round-0003" / "eval" / "summary.json"
    doc = json.loads(summary.read_text())
    doc["success_rate"] = "high"
    summary.write_text(json.dumps(doc))
    assert flywheel(["compare", str(run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(summary) in err and "'success_rate'" in err
    summary.write_text("{not json")
    assert flywheel(["compare", str(run), "--out", str(tmp_path / "o")]) == 2
    assert str(summary) in capsys.readouterr().err
