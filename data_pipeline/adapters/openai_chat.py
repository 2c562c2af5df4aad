"""OpenAI chat-completions conversations, one per JSONL line (or a JSON array of them):
`{"messages": [...], "tools"?: [...], "id"?, "task_id"?, "suite"?, "reward"|"score"|"success"?,
"outcome"?, "metadata"?}`. Assistant tool calls in the OpenAI shape (`function.arguments` a JSON
string) or the legacy `function_call`; `developer` is read as `system`, `function` as `tool`.

The outcome (common.log_outcome) comes from, most explicit first: `outcome.{success, score,
reward}` (flywheel's own shape), top-level `reward` / `score` / `success`, then
`metadata.{success, score, reward}`: success true/false, score and reward numbers in [0, 1];
anything else is quarantined naming the field. A line with none of these is unlabeled: neither a
success nor a failure.

Interaction time (the curve's x-axis): `started_at` / `ended_at` (epoch seconds or ISO-8601) and
`duration_s` / `duration`, top-level or in `metadata` (common.record_times); a line without them
has none (the curve then counts episodes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import (MappingError, head_text, log_outcome, openai_tool_calls, read_records, record_list,
                     record_times, stable_id, text_of, token_fields, tools_to_openai)

NAME = "openai"
LINES = True  # a .jsonl of this format is one record per line: a live log is read from its watermark on
_ROLE = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool",
         "function": "tool"}


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:8192]
    return text[:1] in "{[" and '"messages"' in text and '"role"' in text and '"episode_id"' not in text


def message(m: Any, where: str, call_names: dict[str, str]) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise MappingError(where, f"expected an object, got {type(m).__name__}")
    role = m.get("role")
    if role not in _ROLE:
        raise MappingError(f"{where}.role", f"unknown role {role!r}")
    calls = openai_tool_calls(m.get("tool_calls"), f"{where}.tool_calls")
    fc = m.get("function_call")
    if isinstance(fc, dict):
        calls.append({"name": fc.get("name"), "arguments": fc.get("arguments", {}), "id": None})
    for c in calls:
        if c["id"] and isinstance(c["name"], str):
            call_names[c["id"]] = c["name"]
    out = {"role": _ROLE[role], "content": text_of(m.get("content")), "tool_calls": calls, **token_fields(m)}
    if out["role"] == "tool":
        out["tool_call_id"] = m.get("tool_call_id")
        out["name"] = m.get("name") or call_names.get(m.get("tool_call_id") or "")
    return out


def conversation(rec: Any, path: Path, loc: str) -> dict[str, Any]:
    msgs = record_list(rec, "messages", "messages")
    names: dict[str, str] = {}
    messages = [message(m, f"messages[{i}]", names) for i, m in enumerate(msgs)]
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    meta = dict(rec.get("metadata") or {}) if isinstance(rec.get("metadata"), dict) else {}
    outcome = log_outcome(rec, meta)
    tools = tools_to_openai(rec.get("tools"))
    if tools:
        meta["tools"] = tools
    return {"episode_id": str(rec.get("id") or rec.get("episode_id") or f"{path.name}:{loc}"),
            "task_id": str(rec.get("task_id") or "openai/" + stable_id(first_user)),
            "suite": str(rec.get("suite") or ""), "policy": str(rec.get("model") or ""), "source_format": NAME,
            "messages": messages, "outcome": outcome, "metadata": meta, **record_times(rec, meta)}


def read(path: Path) -> Iterator[Record]:
    return read_records(path, conversation)
