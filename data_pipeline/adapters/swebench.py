"""Outcomes that live beside SWE-style trajectories, joined by instance id:
- SWE-bench harness reports (`<model>.<run_id>.json` with `resolved_ids` / `unresolved_ids`),
  looked for in the trajectory's folder and up to four folders above it; a report named for a
  model is only used for trajectories of that model (`/` in model names becomes `__`);
- predictions (`preds.json` keyed by instance id, or `all_preds.jsonl`);
- mini-swe-agent `exit_statuses_*.yaml` ({instances_by_exit_status: {status: [ids]}}).
All are side files: the directory walk skips them with a note (`side_file_note`)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_REPORT_MAX_BYTES = 16 * 1024 * 1024
_UNRESOLVED_KEYS = ("unresolved_ids", "error_ids", "empty_patch_ids")


def side_file_note(path: Path) -> str | None:
    name = path.name
    if name in ("preds.json", "all_preds.jsonl"):
        return "SWE-bench predictions; joined to the trajectories they belong to"
    if name.startswith("exit_statuses_") and name.endswith((".yaml", ".yml")):
        return "exit statuses; joined to the trajectories they belong to"
    if path.suffix == ".json" and _report(path) is not None:
        return "SWE-bench evaluation report; joined to the trajectories it grades"
    if path.suffix in (".yaml", ".yml"):
        return "configuration, not trajectories"
    return None


@lru_cache(maxsize=256)
def _report(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            if b'"resolved_ids"' not in f.read(1 << 20):
                return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("resolved_ids"), list) else None


def find_report(traj_path: Path, instance: str, model: str | None = None) -> bool | None:
    """True (resolved), False (graded, not resolved) or None (no report mentions it)."""
    prefix = model.replace("/", "__") + "." if model else None
    folder = traj_path.parent
    for _ in range(5):
        for p in sorted(folder.glob("*.json")):
            rep = _report(p)
            if rep is None or (prefix and not p.name.startswith(prefix)):
                continue
            if instance in rep["resolved_ids"]:
                return True
            if any(instance in (rep.get(k) or []) for k in _UNRESOLVED_KEYS):
                return False
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


@lru_cache(maxsize=64)
def _predictions(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    try:
        p = folder / "preds.json"
        if p.exists():
            doc = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(doc, dict):
                out.update({k: v for k, v in doc.items() if isinstance(v, dict)})
        p = folder / "all_preds.jsonl"
        if p.exists():
            for line in p.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line) if line.strip() else None
                if isinstance(rec, dict) and isinstance(rec.get("instance_id"), str):
                    out[rec["instance_id"]] = rec
    except (OSError, ValueError):
        pass  # a broken side file only means no join; the trajectory itself is still read
    return out


def prediction_for(traj_path: Path, instance: str) -> dict[str, Any] | None:
    for folder in (traj_path.parent, traj_path.parent.parent):
        pred = _predictions(folder).get(instance)
        if pred is not None:
            return pred
    return None


@lru_cache(maxsize=64)
def _exit_statuses(folder: Path) -> dict[str, str]:
    import yaml

    out: dict[str, str] = {}
    for p in sorted(folder.glob("exit_statuses_*.y*ml")):  # names carry a timestamp: later wins
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        for status, ids in (doc.get("instances_by_exit_status") or {}).items():
            for i in ids or []:
                out[str(i)] = str(status)
    return out


def exit_status_for(traj_path: Path, instance: str) -> str | None:
    for folder in (traj_path.parent, traj_path.parent.parent):
        status = _exit_statuses(folder).get(instance)
        if status is not None:
            return status
    return None
