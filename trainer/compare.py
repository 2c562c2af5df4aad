"""`flywheel compare RUN_DIR...`: experiments side by side, from their run directories alone.

One row per run directory: the final held-out score with its 95% interval, the fitted curve's
asymptote, midpoint and exponent with their bootstrap intervals, interaction hours, GPU-hours and
rounds. The curve parameters come from the run's own curve/curve.json when it was fitted on the same
metric, x-axis and points; otherwise (a different --metric, or rounds evaluated since) from a refit
here. All runs are also fitted together with one curve setting (the first run's recipe, changed by
--metric / --x) for the overlay plot compare.png and the ScaleRL-style verdict of every pair.

Nothing here talks to W&B: it works on a cluster node with no network, from the same records that
W&B was fed from. Writes OUT/compare.png, OUT/compare.json and OUT/compare.md.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from eval.curve_report import X_UNITS, _fmt, analyse_arm, write_curve_outputs
from eval.records import CheckpointManifest, EvalSummary

METRICS = ("success_rate", "mean_score")
PARAMS = ("asymptote", "midpoint", "exponent")


def _read_json(path: Path) -> dict[str, Any] | None:
    from eval.curve_inputs import CurveInputError

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CurveInputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise CurveInputError(f"{path}: expected a JSON object")
    return data


def _experiment(run_dir: Path) -> tuple[str, str | None]:
    """(experiment name, training method) from the resolved recipe; the folder name without one."""
    import yaml

    path = run_dir / "recipe.resolved.yaml"
    if not path.is_file():
        return run_dir.resolve().name, None
    doc = yaml.safe_load(path.read_text()) or {}
    return str(doc.get("experiment") or run_dir.resolve().name), (doc.get("train") or {}).get("method")


def _own_fit(run_dir: Path, arm: str, cfg, n_points: int) -> dict[str, Any] | None:
    """The run's own fit from curve/curve.json, when it is comparable (same metric, x and points)."""
    curve = _read_json(run_dir / "curve" / "curve.json")
    if not curve or (curve.get("config") or {}).get("metric") != cfg.metric or curve.get("x_axis") != cfg.x:
        return None
    arms = curve.get("arms") or {}
    record = arms.get(arm) or (next(iter(arms.values())) if len(arms) == 1 else None)
    fit = (record or {}).get("fit")
    if not fit or len(fit.get("points") or []) != n_points:
        return None
    return fit


def _run_row(run_dir: Path, arm: str, cfg) -> tuple[dict[str, Any], list]:
    """One row of the table and the run's curve points."""
    from eval.curve_inputs import points_from_run

    points, notes = points_from_run(run_dir, cfg.x, cfg.metric, arm)
    experiment, method = _experiment(run_dir)
    folder = run_dir / "rounds"
    rounds = sorted(int(p.parent.name.split("-")[1]) for p in folder.glob(f"round-*/{CheckpointManifest.FILE}"))
    last = _read_json(folder / f"round-{rounds[-1]:04d}" / CheckpointManifest.FILE) if rounds else None
    last = CheckpointManifest.from_dict(last) if last else CheckpointManifest()
    evaluated = [r for r in rounds if (folder / f"round-{r:04d}" / "eval" / EvalSummary.FILE).is_file()]
    final = _read_json(folder / f"round-{evaluated[-1]:04d}" / "eval" / EvalSummary.FILE) if evaluated else None
    final = EvalSummary.from_dict(final) if final is not None else None
    fit = _own_fit(run_dir, experiment, cfg, len(points))
    source = "curve/curve.json"
    if fit is None:
        fit, source = analyse_arm(points, cfg)[0].to_dict(), "refit"
    row = {"arm": arm, "run_dir": str(run_dir), "experiment": experiment, "method": method,
           "rounds": max(rounds) if rounds else 0, "evaluated_rounds": evaluated,
           "final_round": evaluated[-1] if evaluated else None,
           "final_score": getattr(final, cfg.metric) if final else None,
           "final_ci95": (final.ci95 if cfg.metric == "success_rate" else final.mean_score_ci95) if final else None,
           "interaction_hours": last.cumulative_interaction_hours, "gpu_hours": last.gpu_hours,
           "fit_status": fit.get("status"), "fit_reason": fit.get("reason") or None, "fit_source": source,
           "params": {k: fit.get("derived", {}).get(k) for k in PARAMS},
           "intervals": {k: (fit.get("intervals") or {}).get(k) for k in PARAMS},
           "notes": notes}
    return row, points


def _arm_names(run_dirs: list[Path]) -> list[str]:
    """Experiment names; the folder (then the path) tells apart runs of one experiment."""
    from eval.curve_inputs import CurveInputError

    names = [_experiment(d)[0] for d in run_dirs]
    out = []
    for d, name in zip(run_dirs, names):
        arm = name if names.count(name) == 1 else f"{name} ({d.resolve().name})"
        if arm in out:
            arm = f"{name} ({d})"
        if arm in out:
            raise CurveInputError(f"{d}: given twice")
        out.append(arm)
    return out


def _curve_config(run_dirs: list[Path], metric: str | None, x: str | None):
    from pydantic import ValidationError

    from eval.config import CurveConfig
    from eval.curve_inputs import CurveInputError

    from trainer.recipe import run_curve_section

    values = run_curve_section(run_dirs[0])
    values.update({k: v for k, v in (("metric", metric), ("x", x)) if v is not None})
    try:
        return CurveConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        raise CurveInputError(f"{run_dirs[0]}: curve setting {'.'.join(map(str, first['loc']))!r}: {first['msg']}") from None


def compare_runs(run_dirs: list[Path], out: Path, metric: str | None = None, x: str | None = None) -> dict[str, Any]:
    """Table rows of every run, the joint fit, and the files compare.png / compare.json / compare.md in out."""
    from eval.curve_inputs import CurveInputError

    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        if not d.is_dir():
            raise CurveInputError(f"{d}: no such run directory")
    cfg = _curve_config(run_dirs, metric, x)
    rows, points_by_arm = [], {}
    for d, arm in zip(run_dirs, _arm_names(run_dirs)):
        row, points = _run_row(d, arm, cfg)
        rows.append(row)
        points_by_arm[arm] = points
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fit-") as tmp:
        joint = write_curve_outputs(points_by_arm, Path(tmp), cfg, title=f"held-out {cfg.metric}: "
                                    + " vs ".join(points_by_arm), image_link="compare.png")
        shutil.move(str(Path(tmp) / "curve.png"), out / "compare.png")
    result = {"metric": cfg.metric, "x_axis": cfg.x, "form": cfg.form, "runs": rows,
              "comparisons": joint.get("comparisons", []), "joint_fit": joint}
    markdown = "# flywheel compare\n\n" + "\n".join(table_lines(result)) + "\n\n" + joint.get("markdown", "")
    (out / "compare.json").write_text(json.dumps({**result, "markdown": markdown}, indent=2) + "\n")
    (out / "compare.md").write_text(markdown)
    result["markdown"] = markdown
    return result


def _with_interval(value: Any, interval: Any) -> str:
    if value is None:
        return "–"
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return f"{_fmt(value)} [{_fmt(interval[0])}, {_fmt(interval[1])}]"
    return _fmt(value)


def table_lines(result: dict[str, Any]) -> list[str]:
    """The comparison table in markdown (also readable as plain text)."""
    unit = X_UNITS[result["x_axis"]]
    head = ["experiment", "method", "rounds", f"final held-out {result['metric']} [95% CI]", "interaction h",
            "GPU-h", "asymptote [CI]", f"midpoint ({unit}) [CI]", "exponent [CI]", "curve"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["runs"]:
        fitted = row["fit_status"] == "ok"
        curve = f"fit ({row['fit_source']})" if fitted else f"no fit: {row['fit_reason']}"
        final = _with_interval(row["final_score"], row["final_ci95"])
        if row["final_round"] is not None:
            final += f" @ round {row['final_round']}"
        cells = [row["arm"], row["method"] or "–", str(row["rounds"]), final, _fmt(row["interaction_hours"]),
                 _fmt(row["gpu_hours"])]
        cells += [_with_interval(row["params"][k], row["intervals"][k]) if fitted else "–" for k in PARAMS]
        lines.append("| " + " | ".join(cells + [curve]) + " |")
    return lines
