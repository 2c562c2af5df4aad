"""OpenAI chat-completions conversations, one per JSONL line (or a JSON array of them):
`{"messages": [...], "tools"?: [...], "id"?, "task_id"?, "suite"?, "reward"|"score"|"success"?,
"outcome"?, "metadata"?}`. Assistant tool calls in the OpenAI shape (`function.arguments` a JSON
string) or the legacy `function_call`; `developer` is read as `system`, `function` as `tool`.

The outcome comes from, most explicit first: `outcome: {success, score}` (flywheel's own shape),
top-level `reward` / `score` / `success`, then `metadata.success` (true/false) and
`metadata.reward` / `metadata.score` (a number in [0, 1]; anything else is quarantined naming the
field). A line with none of these is unlabeled: neither a success nor a failure.

Interaction time (the curve's x-axis): `started_at` / `ended_at` (epoch seconds or ISO-8601) and
`duration_s` / `duration`, top-level or in `metadata` (common.record_times); a line without them
has none (the curve then counts episodes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import (MappingError, head_text, openai_tool_calls, outcome_from_reward, read_records, record_list,
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


def metadata_outcome(meta: dict[str, Any]) -> dict[str, Any]:
    """`metadata.success` (true/false) and `metadata.reward` / `metadata.score` (in [0, 1], reward
    first) as outcome keys; a value of the wrong type or range raises naming the field."""
    out: dict[str, Any] = {}
    success = meta.get("success")
    if success is not None:
        if not isinstance(success, bool):
            raise MappingError("metadata.success", f"expected true/false, got {success!r}")
        out["success"] = success
    for key in ("score", "reward"):  # reward, read last, wins when both are given
        v = meta.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MappingError(f"metadata.{key}", f"expected a number in [0, 1], got {v!r}")
        if not 0.0 <= v <= 1.0:
            raise MappingError(f"metadata.{key}", f"must lie in [0, 1], got {v}")
        out["score"] = float(v)
    return out


def record_outcome(rec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The line's outcome (see module doc): each place, from the least explicit up, overrides the
    keys it gives; `outcome` keys are passed on as given for the schema to validate."""
    outcome = metadata_outcome(meta)
    outcome.update(outcome_from_reward(rec.get("reward", rec.get("score"))))
    if isinstance(rec.get("success"), bool):
        outcome["success"] = rec["success"]
    own = rec.get("outcome")
    if own is not None and not isinstance(own, dict):
        raise MappingError("outcome", f"expected an object, got {type(own).__name__}")
    outcome.update({k: own[k] for k in ("success", "score") if own and own.get(k) is not None})
    return outcome


def conversation(rec: Any, path: Path, loc: str) -> dict[str, Any]:
    msgs = record_list(rec, "messages", "messages")
    names: dict[str, str] = {}
    messages = [message(m, f"messages[{i}]", names) for i, m in enumerate(msgs)]
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    meta = dict(rec.get("metadata") or {}) if isinstance(rec.get("metadata"), dict) else {}
    outcome = record_outcome(rec, meta)
    tools = tools_to_openai(rec.get("tools"))
    if tools:
        meta["tools"] = tools
    return {"episode_id": str(rec.get("id") or rec.get("episode_id") or f"{path.name}:{loc}"),
            "task_id": str(rec.get("task_id") or "openai/" + stable_id(first_user)),
            "suite": str(rec.get("suite") or ""), "policy": str(rec.get("model") or ""), "source_format": NAME,
            "messages": messages, "outcome": outcome, "metadata": meta, **record_times(rec, meta)}


def read(path: Path) -> Iterator[Record]:
    return read_records(path, conversation)
