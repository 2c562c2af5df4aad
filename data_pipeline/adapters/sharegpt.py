"""ShareGPT conversations (LLaMA-Factory's "sharegpt" formatting): a JSON array (or JSONL) of
`{"conversations": [{"from", "value"}], "system"?, "tools"?: <JSON string or list>}`.
`from` is human|user, gpt|assistant, system, function_call (value = JSON {name, arguments}) or
observation|tool|function (the tool result of the preceding call). Tool calls carry no ids in
this format; the adapter numbers them (`call_0`, ...) so results stay linked to their calls.
Outcome (common.log_outcome): `outcome.{success,score,reward}`, top-level `reward` / `score` /
`success`, `metadata.{success,score,reward}`; none: unlabeled.

Interaction time: `started_at` / `ended_at` / `duration_s` as in the OpenAI adapter (common.record_times)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import (MappingError, head_text, log_outcome, read_records, record_list, record_times, stable_id,
                     tools_to_openai)

NAME = "sharegpt"
LINES = True  # a .jsonl of this format is one record per line: a live log is read from its watermark on
_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
         "observation": "tool", "tool": "tool", "function": "tool"}


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head)[:8192]
    return '"conversations"' in text and '"from"' in text


def _call(value: Any, where: str, n: int) -> dict[str, Any]:
    try:
        obj = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as e:
        raise MappingError(f"{where}.value", f"function_call is not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MappingError(f"{where}.value", "function_call must be a JSON object with a string name")
    return {"name": obj["name"], "arguments": obj.get("arguments", {}), "id": f"call_{n}"}


def conversation(rec: Any, path: Path, loc: str) -> dict[str, Any]:
    turns = record_list(rec, "conversations", "turns")
    messages: list[dict[str, Any]] = []
    if isinstance(rec.get("system"), str) and rec["system"]:
        messages.append({"role": "system", "content": rec["system"]})
    last_call: dict[str, Any] | None = None
    for i, t in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise MappingError(where, f"expected an object, got {type(t).__name__}")
        frm, value = t.get("from"), t.get("value", "")
        if frm == "function_call":
            last_call = _call(value, where, i)
            messages.append({"role": "assistant", "content": "", "tool_calls": [last_call]})
            continue
        if frm not in _ROLE:
            raise MappingError(f"{where}.from", f"unknown speaker {frm!r}")
        if not isinstance(value, str):
            raise MappingError(f"{where}.value", f"expected a string, got {type(value).__name__}")
        m = {"role": _ROLE[frm], "content": value}
        if m["role"] == "tool" and last_call is not None:
            m["tool_call_id"], m["name"] = last_call["id"], last_call["name"]
        messages.append(m)
    outcome = log_outcome(rec)
    meta = {k: v for k, v in rec.items() if k not in ("conversations", "system", "tools")}
    tools = tools_to_openai(rec.get("tools"))
    if tools:
        meta["tools"] = tools
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return {"episode_id": str(rec.get("id") or f"{path.name}:{loc}"),
            "task_id": str(rec.get("task_id") or "sharegpt/" + stable_id(first_user)),
            "source_format": NAME, "messages": messages, "outcome": outcome,
            "metadata": meta, **record_times(rec, meta.get("metadata") if isinstance(meta.get("metadata"), dict) else {})}


def read(path: Path) -> Iterator[Record]:
    return read_records(path, conversation)
