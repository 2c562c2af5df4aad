"""SWE-agent `.traj` files (0.x and 1.x): {environment, trajectory[steps], history[chat], info}.
The chat the model saw is `history`; 1.x tool results carry `tool_call_ids`. Per-step
`execution_time` (1.x) becomes the duration of the matching tool result. The task is the instance
id (the file name). Outcome: the file only has `info.exit_status`; resolved/unresolved is joined
from a SWE-bench harness report (`resolved_ids`) found beside the run, else left unknown."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import MappingError, head_text, load_document, mapped, openai_tool_calls, require, text_of
from .swebench import find_report, prediction_for

NAME = "swe-agent"
_ROLE = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def detect(path: Path, head: bytes) -> bool:
    if path.name.endswith(".traj"):
        return True
    text = head_text(path, head)[:65536]
    return text.lstrip().startswith(('{"environment"', '{"trajectory"', '{"history"'))


def _messages(history: list[Any], steps: list[Any]) -> list[dict[str, Any]]:
    times = [s.get("execution_time") for s in steps if isinstance(s, dict)]
    out, n_obs = [], 0
    for i, m in enumerate(history):
        where = f"history[{i}]"
        if not isinstance(m, dict):
            raise MappingError(where, f"expected an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLE:
            raise MappingError(f"{where}.role", f"unknown role {role!r}")
        msg = {"role": role, "content": text_of(m.get("content")),
               "tool_calls": openai_tool_calls(m.get("tool_calls"), f"{where}.tool_calls")}
        if role == "tool":
            ids = m.get("tool_call_ids") or [None]
            msg["tool_call_id"] = ids[0]
            # 1.x: the k-th tool result answers the k-th step, whose execution_time it took
            if n_obs < len(times) and isinstance(times[n_obs], (int, float)):
                msg["duration_s"] = float(times[n_obs])
            n_obs += 1
        out.append(msg)
    return out


def traj_file(doc: Any, path: Path, loc: str) -> dict[str, Any]:
    history = require(doc, "history", list)
    steps = doc.get("trajectory") if isinstance(doc.get("trajectory"), list) else []
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    instance = path.name[: -len(".traj")] if path.name.endswith(".traj") else path.stem
    meta = {"exit_status": info.get("exit_status"), "model_stats": info.get("model_stats"),
            "submission": info.get("submission"), "environment": doc.get("environment"),
            "demonstration_messages": sum(1 for m in history if isinstance(m, dict) and m.get("is_demo"))}
    pred = prediction_for(path, instance)
    outcome: dict[str, Any] = {}
    report = find_report(path, instance, model=(pred or {}).get("model_name_or_path"))
    if report is not None:
        outcome = {"success": report}
        meta["outcome_source"] = "swe-bench report"
    if pred is not None:
        meta["prediction_model"] = pred.get("model_name_or_path")
    policy = ""
    if isinstance(doc.get("replay_config"), dict):
        policy = str(((doc["replay_config"].get("agent") or {}).get("model") or {}).get("name") or "")
    return {"episode_id": f"swe-agent/{path.parent.name}/{instance}", "task_id": instance, "suite": "swe-bench",
            "category": instance.split("__")[0], "policy": policy or str((pred or {}).get("model_name_or_path") or ""),
            "source_format": NAME, "messages": _messages(history, steps), "outcome": outcome, "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    doc = load_document(path)
    yield doc if isinstance(doc, Record) else mapped("file", traj_file, doc, path, "file")
