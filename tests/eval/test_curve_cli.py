"""`flywheel curve`: run directories and CSV points in, curve.json / curve.png / curve.md out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.cli.curve import main as curve_main
from eval.curve import sigmoid_curve
from eval.curve_inputs import CurveInputError, points_from_csv, points_from_run

HOURS = [0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 11.0]


def make_run(run_dir, hours=HOURS, truth=(0.1, 0.6, 2.0, 1.5), n_tasks=64, seed=0, evaluated=None):
    """The lead's layout: rounds/round-XXXX/manifest.json and rounds/round-XXXX/eval/summary.json."""
    rng = np.random.default_rng(seed)
    evaluated = len(hours) if evaluated is None else evaluated
    for r, h in enumerate(hours):
        d = run_dir / "rounds" / f"round-{r:04d}"
        (d / "eval").mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({
            "round": r, "parent": None if r == 0 else f"round-{r - 1:04d}", "cumulative_interaction_hours": h,
            "gpu_hours": 0.25 * r, "tokens_trained": 1_000_000 * r, "seed": 1234}))
        if r >= evaluated:
            continue
        p = float(sigmoid_curve(np.array([h]), *truth)[0])
        per_task = {f"maze-{j}": float(rng.random() < p) for j in range(n_tasks)}
        mean = float(np.mean(list(per_task.values())))
        (d / "eval" / "summary.json").write_text(json.dumps({
            "success_rate": mean, "mean_score": mean, "episodes": n_tasks,
            "ci95": [max(mean - 0.1, 0.0), min(mean + 0.1, 1.0)], "per_task": per_task}))
    return run_dir


def test_points_from_run_reads_the_layout(tmp_path):
    run = make_run(tmp_path / "exp", evaluated=7)
    points, notes = points_from_run(run, "hours")
    assert [p.x for p in points] == HOURS[:7]
    assert points[0].label == "round-0" and points[0].n == 64 and len(points[0].task_scores) == 64
    assert points[3].lo is not None and points[3].arm == "exp"
    assert len(notes) == 2 and "no eval/summary.json" in notes[0]
    assert [p.x for p in points_from_run(run, "gpu_hours")[0]] == [0.25 * r for r in range(7)]
    assert [p.x for p in points_from_run(run, "round")[0]] == list(range(7))


def test_one_run_writes_into_run_dir(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    assert curve_main([str(run), "--bootstrap", "30"]) == 0
    for name in ("curve.json", "curve.png", "curve.md"):
        assert (run / "curve" / name).is_file()
    out = capsys.readouterr().out
    assert "## Improvement curve" in out and "wrote" in out
    data = json.loads((run / "curve" / "curve.json").read_text())
    assert data["arms"]["exp"]["fit"]["status"] == "ok"
    assert data["form"] == "scalerl" and data["x_axis"] == "hours"


def test_json_output_and_options(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    rc = curve_main([str(run), "--form", "edgebench", "--x", "gpu_hours", "--bootstrap", "0", "--json",
                     "--target", "0.4", "--horizon", "1"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["form"] == "edgebench" and data["x_axis"] == "gpu_hours"
    fit = data["arms"]["exp"]["fit"]
    assert set(fit["params"]) == {"s_max", "t_mid", "beta"}
    assert fit["points"][1]["x"] == 0.25
    assert data["config"]["target_score"] == 0.4 and data["config"]["horizon_hours"] == 1.0


def test_recipe_curve_section_sets_defaults(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    (run / "recipe.resolved.yaml").write_text("experiment: exp\nmodel: {name_or_path: tiny}\ncurve:\n  form: edgebench\n  bootstrap: 0\n")
    assert curve_main([str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["form"] == "edgebench"


def test_two_runs_compared(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path / "latest", truth=(0.1, 0.4, 2.0, 1.5), n_tasks=300, seed=1)
    b = make_run(tmp_path / "accumulate", truth=(0.1, 0.75, 2.0, 1.5), n_tasks=300, seed=2)
    monkeypatch.chdir(tmp_path)
    assert curve_main([str(a), str(b), "--bootstrap", "40"]) == 0
    data = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert set(data["arms"]) == {"latest", "accumulate"}
    (cmp,) = data["comparisons"]
    assert cmp["verdict"] == "asymptote_differs"
    assert "![improvement curve](curve.png)" in data["markdown"]


def test_points_csv_with_tasks_and_dates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["arm,x,score,task,date"]
    for k, (arm, a, date) in enumerate([("v1", 0.3, "2025-01-01"), ("v2", 0.5, "2025-04-01"), ("v3", 0.8, "2025-07-01")]):
        for x in HOURS:
            p = float(sigmoid_curve(np.array([x]), 0.05, a, 2.0, 1.5)[0])
            rows += [f"{arm},{x},{int(rng.random() < p)},t{j},{date}" for j in range(100)]
    csv_path = tmp_path / "points.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert curve_main(["--points", str(csv_path), "--out", str(out), "--bootstrap", "30", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["arms"]["v1"]["fit"]["bootstrap"]["method"] == "tasks"
    assert data["doubling_time"]["status"] == "ok" and data["doubling_time"]["doubling_time_days"] > 0
    assert (out / "curve.png").is_file()


def test_points_csv_plain_points(tmp_path):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("arm,x,score,lo,hi\na,1,0.1,0.05,0.15\na,2,0.2,,\nb,1,0.3,,\n")
    by_arm = points_from_csv(csv_path)
    assert [p.score for p in by_arm["a"]] == [0.1, 0.2] and by_arm["a"][0].lo == 0.05 and by_arm["a"][1].lo is None
    assert len(by_arm["b"]) == 1


@pytest.mark.parametrize("text, message", [
    ("arm,x\na,1\n", "missing column(s) score"),
    ("arm,x,score,colour\na,1,0.1,red\n", "unknown column(s) colour"),
    ("arm,x,score\na,1,0.1\na,two,0.2\n", "p.csv:3: column 'x': 'two' is not a number"),
    ("arm,x,score\n,1,0.1\n", "p.csv:2: column 'arm' is empty"),
    ("arm,x,score,task\na,1,1,t1\na,1,0,t1\n", "task 't1' appears twice"),
    ("arm,x,score,date\na,1,0.1,yesterday\n", "p.csv:2: column 'date': date 'yesterday'"),
    ("arm,x,score\n", "no rows"),
])
def test_bad_csv_exit_2_with_file_line_and_column(tmp_path, capsys, text, message):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(text)
    with pytest.raises(CurveInputError):
        points_from_csv(csv_path)
    assert curve_main(["--points", str(csv_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_manifest_field_names_file_and_field(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    manifest = run / "rounds" / "round-0002" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["cumulative_interaction_hours"]
    manifest.write_text(json.dumps(data))
    assert curve_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err and "missing field 'cumulative_interaction_hours'" in err


def test_bad_summary_json_and_per_task(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    summary = run / "rounds" / "round-0001" / "eval" / "summary.json"
    summary.write_text("{not json")
    assert curve_main([str(run)]) == 2
    assert f"{summary}: not valid JSON" in capsys.readouterr().err
    summary.write_text(json.dumps({"mean_score": 0.2, "per_task": {"t1": "pass"}}))
    assert curve_main([str(run)]) == 2
    assert "per_task['t1'] must be a finite number" in capsys.readouterr().err


def test_not_a_run_dir_and_no_input(tmp_path, capsys):
    assert curve_main([str(tmp_path)]) == 2
    assert "no rounds/ folder" in capsys.readouterr().err
    assert curve_main([]) == 2
    assert "exactly one of them" in capsys.readouterr().err


def test_too_few_rounds_exit_1_with_reason_and_outputs(tmp_path, capsys):
    run = make_run(tmp_path / "exp", evaluated=3)
    assert curve_main([str(run), "--bootstrap", "10"]) == 1
    err = capsys.readouterr().err
    assert "no arm could be fitted" in err and "fewer than 4 points" in err
    data = json.loads((run / "curve" / "curve.json").read_text())
    assert data["arms"]["exp"]["fit"]["status"] == "no_fit" and len(data["arms"]["exp"]["fit"]["points"]) == 3


def test_bad_setting_exit_2(tmp_path, capsys):
    run = make_run(tmp_path / "exp")
    assert curve_main([str(run), "--forecast-fraction", "1.5"]) == 2
    assert "forecast_fraction" in capsys.readouterr().err


def test_dispatched_by_flywheel_cli(tmp_path, capsys):
    from trainer.cli import main
    run = make_run(tmp_path / "exp")
    assert main(["curve", str(run), "--bootstrap", "0"]) == 0
    assert (run / "curve" / "curve.json").is_file()
