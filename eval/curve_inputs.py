"""Where curve points come from: a run directory's rounds, or a CSV of points from anywhere.

Run directory layout read here (written by the local loop / trainer):
  RUN_DIR/rounds/round-XXXX/manifest.json      round, cumulative_interaction_hours, gpu_hours, tokens_trained
                                               (optional: date, ISO or days)
  RUN_DIR/rounds/round-XXXX/eval/summary.json  success_rate, mean_score, episodes, ci95 [lo, hi], per_task {task: score}
A round without eval/summary.json (not evaluated yet) is skipped with a note.

CSV columns: arm, x, score (required); task, date, n, lo, hi, label (optional). With a task column each
row is one task's score and the rows of one (arm, x) make one point whose score is their mean.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from data_pipeline.errors import FlywheelError
from eval.curve import CurvePoint
from eval.errors import read_mapping
from eval.records import X_FIELDS, CheckpointManifest, EvalSummary

CSV_REQUIRED = ("arm", "x", "score")
CSV_OPTIONAL = ("task", "date", "n", "lo", "hi", "label")


class CurveInputError(FlywheelError, ValueError):
    """Unreadable or malformed curve input; the message names the file, record and field."""


def parse_date(value: Any, where: str) -> float | None:
    """Days: a number as given, or an ISO date (YYYY-MM-DD[THH:MM...]) as days since 1970-01-01."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CurveInputError(f"{where}: date {text!r} is neither a number of days nor an ISO date") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp() / 86400.0


def _read_json(path: Path) -> dict[str, Any]:
    return read_mapping(path, CurveInputError, kind="JSON")


def _number(record: CheckpointManifest | EvalSummary, key: str, path: Path) -> float:
    value = getattr(record, key, None)
    if value is None:
        raise CurveInputError(f"{path}: missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CurveInputError(f"{path}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _round_point(round_dir: Path, x_axis: str, metric: str | None, arm: str) -> CurvePoint | None:
    manifest_path, summary_path = round_dir / CheckpointManifest.FILE, round_dir / "eval" / EvalSummary.FILE
    if not manifest_path.is_file():
        raise CurveInputError(f"{round_dir}: no {CheckpointManifest.FILE}")
    if not summary_path.is_file():
        return None
    manifest = CheckpointManifest.from_dict(_read_json(manifest_path))
    summary = EvalSummary.from_dict(_read_json(summary_path))
    key = metric or ("mean_score" if summary.mean_score is not None else "success_rate")
    if x_axis == "episodes" and manifest.cumulative_episodes is None and manifest.round == 0:
        manifest.cumulative_episodes = 0  # the base checkpoint, written without the key
    point = CurvePoint(x=_number(manifest, X_FIELDS[x_axis], manifest_path), score=_number(summary, key, summary_path),
                       arm=arm, label=f"round-{int(_number(manifest, 'round', manifest_path))}",
                       date=parse_date(manifest.date, f"{manifest_path}: field 'date'"))
    if summary.episodes is not None:
        point.n = int(_number(summary, "episodes", summary_path))
    # the interval and per-task values that belong to the metric (success vs mean score)
    ci = summary.mean_score_ci95 if key == "mean_score" and summary.mean_score_ci95 is not None else summary.ci95
    if ci is not None:
        if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
            raise CurveInputError(f"{summary_path}: field 'ci95' must be [lo, hi], got {ci!r}")
        point.lo, point.hi = float(ci[0]), float(ci[1])
    success = key == "success_rate" and summary.per_task_success is not None
    point.task_scores = _per_task(summary.per_task_success if success else summary.per_task, summary_path)
    return point


def _per_task(per_task: Any, path: Path) -> dict[str, float] | None:
    if per_task is None:
        return None
    if not isinstance(per_task, dict):
        raise CurveInputError(f"{path}: field 'per_task' must be an object {{task_id: score}}")
    out = {}
    for task, score in per_task.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise CurveInputError(f"{path}: per_task[{task!r}] must be a finite number, got {score!r}")
        out[str(task)] = float(score)
    return out or None


def points_from_run(run_dir: Path, x_axis: str = "hours", metric: str | None = None,
                    arm: str | None = None) -> tuple[list[CurvePoint], list[str]]:
    """One point per evaluated round of a run directory, plus notes (rounds skipped). ``metric``:
    summary key used as the score (default mean_score when present, else success_rate)."""
    run_dir = Path(run_dir)
    if x_axis not in X_FIELDS:
        raise CurveInputError(f"unknown x-axis {x_axis!r} (known: {', '.join(X_FIELDS)})")
    rounds = run_dir / "rounds"
    if not rounds.is_dir():
        raise CurveInputError(f"{run_dir}: no rounds/ folder (is this a flywheel run directory?)")
    arm = arm or run_dir.resolve().name
    points, notes = [], []
    for round_dir in sorted(p for p in rounds.iterdir() if p.is_dir() and p.name.startswith("round-")):
        point = _round_point(round_dir, x_axis, metric, arm)
        if point is None:
            notes.append(f"{round_dir}: no eval/summary.json yet, round skipped")
        else:
            points.append(point)
    return points, notes


def run_axis(run_dir: Path, x_axis: str) -> tuple[str, str | None]:
    """The x-axis a run's curve uses, and why when it is not `x_axis`: interaction hours fall back to
    episodes (cumulative trajectories ingested) where the rounds trained on trajectories but none
    carried an interaction time (logs without start/end times or durations)."""
    if x_axis != "hours":
        return x_axis, None
    trained = [m for d in sorted(Path(run_dir).glob("rounds/round-*")) if d.is_dir()
               for m in [CheckpointManifest.read(d)] if m is not None and (m.round or 0) > 0]
    if (trained and all(not m.cumulative_interaction_hours for m in trained)
            and any(m.cumulative_episodes for m in trained)):
        return "episodes", ("the x-axis is episodes (cumulative trajectories ingested), not interaction hours: "
                            "the trajectories carry no interaction time (no started_at/ended_at or duration in "
                            "the logs), so every round's interaction time is 0")
    return x_axis, None


def points_from_csv(path: Path) -> dict[str, list[CurvePoint]]:
    """Points by arm from a CSV (see the module docstring for the columns)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [(i + 2, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                    for i, row in enumerate(reader)]
    except OSError as e:
        raise CurveInputError(f"{path}: cannot read ({e.strerror})") from None
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise CurveInputError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(columns) or 'none'})")
    unknown = [c for c in columns if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if unknown:
        raise CurveInputError(f"{path}: unknown column(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(CSV_REQUIRED + CSV_OPTIONAL)})")
    if not rows:
        raise CurveInputError(f"{path}: no rows")
    if "task" in columns:
        return _grouped_by_task(path, rows)
    by_arm: dict[str, list[CurvePoint]] = {}
    for line, row in rows:
        point = _csv_point(path, line, row)
        by_arm.setdefault(point.arm, []).append(point)
    return by_arm


def _csv_float(path: Path, line: int, row: dict[str, str], col: str, required: bool = True) -> float | None:
    text = row.get(col, "")
    if text == "":
        if required:
            raise CurveInputError(f"{path}:{line}: column {col!r} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise CurveInputError(f"{path}:{line}: column {col!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise CurveInputError(f"{path}:{line}: column {col!r}: {text!r} is not finite")
    return value


def _csv_point(path: Path, line: int, row: dict[str, str]) -> CurvePoint:
    if not row.get("arm"):
        raise CurveInputError(f"{path}:{line}: column 'arm' is empty")
    n = _csv_float(path, line, row, "n", required=False)
    return CurvePoint(x=_csv_float(path, line, row, "x"), score=_csv_float(path, line, row, "score"),
                      n=int(n) if n is not None else 0, lo=_csv_float(path, line, row, "lo", required=False),
                      hi=_csv_float(path, line, row, "hi", required=False), label=row.get("label", ""),
                      arm=row["arm"], date=parse_date(row.get("date"), f"{path}:{line}: column 'date'"))


def _grouped_by_task(path: Path, rows: list[tuple[int, dict[str, str]]]) -> dict[str, list[CurvePoint]]:
    groups: dict[tuple[str, float], CurvePoint] = {}
    for line, row in rows:
        point = _csv_point(path, line, row)
        task = row.get("task", "")
        if not task:
            raise CurveInputError(f"{path}:{line}: column 'task' is empty (the file has a task column)")
        key = (point.arm, point.x)
        group = groups.setdefault(key, CurvePoint(x=point.x, score=0.0, arm=point.arm, label=point.label,
                                                  date=point.date, task_scores={}))
        if task in group.task_scores:
            raise CurveInputError(f"{path}:{line}: task {task!r} appears twice for arm {point.arm!r} at x={point.x:g}")
        group.task_scores[task] = point.score
        if group.date is None:
            group.date = point.date
    by_arm: dict[str, list[CurvePoint]] = {}
    for group in groups.values():
        group.score = sum(group.task_scores.values()) / len(group.task_scores)
        group.n = len(group.task_scores)
        by_arm.setdefault(group.arm, []).append(group)
    return by_arm
