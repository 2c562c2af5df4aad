"""mini-swe-agent trajectories (`*.traj.json`, trajectory_format "mini-swe-agent-1.x"):
{instance_id, info: {exit_status, submission, model_stats, config}, messages}. Messages are
OpenAI/litellm chat messages plus a final `exit` message (dropped; its status is in metadata).
`extra.timestamp` (epoch seconds) gives start / end. Outcome: resolved/unresolved joined from the
SWE-bench report of the same model beside the run; exit statuses (`exit_statuses_*.yaml`) and the
prediction (`preds.json`) are joined into metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import head_text, load_document, mapped, require
from .openai_chat import message
from .swebench import exit_status_for, find_report, prediction_for

NAME = "mini-swe-agent"


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head)[:65536]
    if '"trajectory_format"' in text and "mini-swe-agent" in text:
        return True
    # the format tag sits at the end of the file, past the head: fall back on the file name
    return path.name.endswith(".traj.json") and '"messages"' in text and '"info"' in text


def traj_file(doc: Any, path: Path, loc: str) -> dict[str, Any]:
    instance = require(doc, "instance_id", str)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    names: dict[str, str] = {}
    messages, stamps = [], []
    for i, m in enumerate(require(doc, "messages", list)):
        if isinstance(m, dict) and m.get("role") == "exit":
            continue
        msg = message(m, f"messages[{i}]", names)
        extra = m.get("extra") if isinstance(m.get("extra"), dict) else {}
        if isinstance(extra.get("timestamp"), (int, float)):
            stamps.append(float(extra["timestamp"]))
        messages.append(msg)
    model = str(((info.get("config") or {}).get("model") or {}).get("model_name") or "")
    resolved = find_report(path, instance, model=model or None)
    pred = prediction_for(path, instance)
    meta = {"exit_status": info.get("exit_status") or exit_status_for(path, instance),
            "exit_status_listed": exit_status_for(path, instance), "submission": info.get("submission"),
            "model_stats": info.get("model_stats"), "mini_version": info.get("mini_version"),
            "trajectory_format": doc.get("trajectory_format"), "prediction_found": pred is not None}
    if resolved is not None:
        meta["outcome_source"] = "swe-bench report"
    return {"episode_id": f"mini-swe-agent/{path.parent.parent.name}/{instance}", "task_id": instance,
            "suite": "swe-bench", "category": instance.split("__")[0], "policy": model, "source_format": NAME,
            "started_at": min(stamps) if stamps else None, "ended_at": max(stamps) if stamps else None,
            "messages": messages, "outcome": {} if resolved is None else {"success": resolved},
            "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    doc = load_document(path)
    yield doc if isinstance(doc, Record) else mapped("file", traj_file, doc, path, "file")
