"""OpenHands event streams: a trajectory file (JSON array of events) or the `history` of an
evaluation `output.jsonl` line (format "openhands-eval", also the older resolver output).

Events map to messages: the `system` action -> system; `message` actions -> user or assistant by
`source`; other agent actions (run, edit, read, think, finish, ...) -> an assistant tool call
named by `tool_call_metadata.function_name` with the exact arguments of the model response when
recorded (else the action's `args`), the `thought` as content; observations -> tool results
linked by `tool_call_id` (or, in old logs, to the action just before). Bookkeeping events
(`recall`, `agent_state_changed`, `null`) are dropped. Event timestamps (zone-less: read as UTC)
give start and end. Outcome: the resolver's `success`; eval output has none (an `error` such as
the iteration cap is kept in metadata)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import MappingError, head_text, iso_seconds, load_document, mapped, stable_id

NAME = "openhands"
_SKIP = {"recall", "agent_state_changed", "null", "change_agent_state", "condensation"}
_ARG_NOISE = {"thought", "impl_source", "is_confirmed", "keep_prompt", "action_risk", "confirmation_state",
              "security_risk", "hidden", "blocking", "is_input", "wait_for_response", "image_urls", "file_urls"}


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:16384]
    return text.startswith("[") and '"source"' in text and ('"action"' in text or '"observation"' in text)


def _call_arguments(event: dict[str, Any]) -> dict[str, Any]:
    meta = event.get("tool_call_metadata") or {}
    call_id = meta.get("tool_call_id")
    try:
        for choice in (meta.get("model_response") or {}).get("choices") or []:
            for c in (choice.get("message") or {}).get("tool_calls") or []:
                if c.get("id") == call_id:
                    args = c["function"]["arguments"]
                    return json.loads(args) if isinstance(args, str) else args
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # fall back to the parsed action args
    args = event.get("args") if isinstance(event.get("args"), dict) else {
        k: v for k, v in event.items() if k not in ("action", "thought", "id", "timestamp", "source", "message")}
    return {k: v for k, v in args.items() if k not in _ARG_NOISE}


def events_to_messages(events: list[Any]) -> tuple[list[dict[str, Any]], list[float], str]:
    out: list[dict[str, Any]] = []
    stamps: list[float] = []
    model = ""
    pending: dict[str, Any] | None = None  # the last tool call, for observations without ids
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            raise MappingError(f"history[{i}]", f"expected an event object, got {type(e).__name__}")
        ts = iso_seconds(e.get("timestamp"))
        if ts is not None:
            stamps.append(ts)
        action, obs = e.get("action"), e.get("observation")
        meta = e.get("tool_call_metadata") or {}
        model = model or str((meta.get("model_response") or {}).get("model") or "")
        args = e.get("args") if isinstance(e.get("args"), dict) else {}
        if action in _SKIP or obs in _SKIP or (action is None and obs is None):
            continue
        if action == "system":
            out.append({"role": "system", "content": args.get("content") or e.get("message") or ""})
        elif action == "message":
            role = "user" if e.get("source", "user") == "user" else "assistant"
            out.append({"role": role, "content": args.get("content") or e.get("message") or e.get("content") or ""})
        elif action is not None:
            call_id = meta.get("tool_call_id") or f"call_{i}"
            pending = {"name": meta.get("function_name") or action, "arguments": _call_arguments(e), "id": call_id}
            thought = args.get("thought") if "thought" in args else e.get("thought", "")
            out.append({"role": "assistant", "content": thought or "", "tool_calls": [pending]})
        else:
            call_id = meta.get("tool_call_id") or (pending or {}).get("id")
            content = e.get("content") if isinstance(e.get("content"), str) else e.get("message") or ""
            if call_id is None:  # an error with no call to answer: the environment speaking
                out.append({"role": "user", "content": f"({obs}) {content}"})
            else:
                name = meta.get("function_name") or (pending or {}).get("name")
                out.append({"role": "tool", "content": content, "tool_call_id": call_id, "name": name})
    return out, stamps, model


def event_file(events: Any, path: Path, loc: str) -> dict[str, Any]:
    if not isinstance(events, list):
        raise MappingError("<record>", f"expected a list of events, got {type(events).__name__}")
    messages, stamps, model = events_to_messages(events)
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return {"episode_id": f"openhands/{path.stem}/{stable_id(events[:1])}", "task_id": f"openhands/{path.stem}",
            "suite": "openhands", "policy": model, "source_format": NAME,
            "started_at": min(stamps) if stamps else None, "ended_at": max(stamps) if stamps else None,
            "messages": messages, "outcome": {}, "metadata": {"first_user_hash": stable_id(first_user)}}


def read(path: Path) -> Iterator[Record]:
    doc = load_document(path)
    yield doc if isinstance(doc, Record) else mapped("file", event_file, doc, path, "file")
