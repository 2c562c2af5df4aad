"""Codex CLI session rollouts: ~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl.

Each line is `{timestamp, type, payload}` (openai/codex `RolloutLine`), `type` one of:
`session_meta` (id, cwd, cli_version, originator, source, model_provider, git, base_instructions),
`turn_context` (per turn: cwd, approval and sandbox policy, `model`, effort), `response_item` (a
Responses API item, below), `event_msg` (UI events: user_message / agent_message echo the items,
token_count, task_started / task_complete with `duration_ms`, ...) and `compacted`; lines of other
types in the same envelope (0.163 adds `world_state`, `token_usage_record`) are bookkeeping, counted
in `metadata.items` as `line:<type>`.

Rollouts of Codex CLI before 0.44 (mid 2025) have no envelope: a first line `{id, timestamp,
instructions, git}`, then the bare response items and `{"record_type": "state", ...}` lines, and no
time but the session's start; they read the same way (`metadata.legacy`).

One trajectory per file, `task_id` `codex/<session id>`. Messages, in file order, from the
`response_item`s (read by responses_items.py, shared with the openai-agents adapter): `message`
(role developer / system -> system, user, assistant; content items input_text / output_text as
text, images as a placeholder); `function_call` -> a tool call of the assistant turn it follows
(name, `arguments` parsed from its JSON string, `call_id` as id);
`custom_tool_call` (freeform input, e.g. apply_patch) -> a tool call with arguments `{"input": ...}`;
`local_shell_call` -> a `local_shell` tool call with its exec action as arguments;
`web_search_call` -> a `web_search` tool call with its action (the search runs server-side: no
result item; rollouts write the item without its id, so the call takes the `call_id` of the
`web_search_end` event beside it, in order, or `web_search_<n>` without one);
`function_call_output` / `custom_tool_call_output` -> a `tool` message with `tool_call_id` =
`call_id` and the call's name. `reasoning` items (summaries; the content is encrypted) are not
part of the reply: counted in `metadata.reasoning_items`; ghost snapshots and compaction items are
the harness's bookkeeping: counted in `metadata.items`. The session's base
instructions (`session_meta.base_instructions.text`), the system prompt the model saw, become the
first (system) message. Policy: the `turn_context` model. Interaction time: first and last
`timestamp`, and `duration_s` the sum of the turns' `task_complete.duration_ms` when the log has
them. No outcome in the format: unlabeled. A line that is not JSON is quarantined on its own; a
rollout with no message is quarantined as a whole.
A session file is one conversation (`SESSION`, no `LINES`): as a live log (`collect.logs`) it is read
once it has been quiet for `collect.session_quiet_s`, and a session resumed after that gives only
its new turns (data_pipeline/live.py)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from . import Record, bad
from .common import MappingError, head_text, iso_seconds, jsonl_objects, mapped, record_times
from .responses_items import ITEM_TYPES, add_item, item_type

SESSION = True  # one file, one growing conversation (data_pipeline/live.py)
NAME = "codex"
_LINE_TYPES = ("session_meta", "response_item", "event_msg", "turn_context", "compacted")
_META_START, _META_TYPE = '{"timestamp":', '"type":"session_meta","payload":{'  # a cut-off first line
_LEGACY_META = {"id", "timestamp", "instructions", "git"}  # the first line of a rollout before 0.44


def _is_line(d: Any) -> bool:
    return (isinstance(d, dict) and d.get("type") in _LINE_TYPES and isinstance(d.get("payload"), dict)
            and isinstance(d.get("timestamp"), str))


def _is_envelope(d: Any) -> bool:
    """A rollout line of a type this adapter does not know (Codex adds bookkeeping lines:
    `world_state` and `token_usage_record` in 0.163): counted, not quarantined."""
    return (isinstance(d, dict) and isinstance(d.get("type"), str) and isinstance(d.get("payload"), dict)
            and isinstance(d.get("timestamp"), str))


def _is_legacy_meta(d: Any) -> bool:
    return (isinstance(d, dict) and isinstance(d.get("id"), str) and isinstance(d.get("timestamp"), str)
            and set(d) <= _LEGACY_META)


def detect(path: Path, head: bytes) -> bool:
    """The first line is a rollout line (`timestamp`, `type` session_meta / response_item / ...,
    `payload`), or a legacy session line (`id`, `timestamp`, `instructions`, `git`, nothing else)
    followed by a state line or a response item; a first line longer than the head: it starts as a
    session_meta line does."""
    text = head_text(path, head).lstrip()
    first, newline, rest = text.partition("\n")
    try:
        d = json.loads(first)
    except ValueError:  # cut off by the head (no newline yet), or not JSON
        return not newline and first.startswith(_META_START) and _META_TYPE in first[:200]
    if _is_line(d):
        return True
    if not _is_legacy_meta(d):
        return False
    try:
        nxt = json.loads(rest.partition("\n")[0])
    except ValueError:
        return False
    return isinstance(nxt, dict) and (nxt.get("record_type") == "state" or nxt.get("type") in ITEM_TYPES)


def _legacy(loc: str, obj: Any, first: bool) -> dict[str, Any] | None:
    """A line of a pre-0.44 rollout in today's envelope (no time of its own); None: not one."""
    if first and _is_legacy_meta(obj):
        return {"timestamp": obj["timestamp"], "type": "session_meta", "payload": obj}
    if isinstance(obj, dict) and obj.get("record_type") == "state":
        return {"timestamp": None, "type": "state", "payload": obj}
    if isinstance(obj, dict) and isinstance(obj.get("type"), str) and "payload" not in obj:
        return {"timestamp": None, "type": "response_item", "payload": obj}
    return None


def read(path: Path) -> Iterator[Record]:
    lines: list[tuple[str, dict[str, Any]]] = []
    legacy = None  # decided by the first line
    for loc, obj in jsonl_objects(path):
        if isinstance(obj, Record):
            yield obj  # a broken line: quarantined on its own
            continue
        if legacy is None:
            legacy = not _is_line(obj) and _is_legacy_meta(obj)
        line = _legacy(loc, obj, not lines) if legacy else obj if _is_line(obj) or (lines and _is_envelope(obj)) \
            else None
        if line is None:
            what = "a pre-0.44 rollout line (a response item or a state line)" if legacy else \
                "a rollout line ({timestamp, type, payload})"
            yield bad(loc, "type", f"not {what}", json.dumps(obj)[:1024])
        else:
            lines.append((loc, line))
    if not lines:
        yield bad("file", "<session>", "no rollout lines in this file")
        return
    yield mapped(f"session ({lines[0][0]})", _trajectory, lines, path, bool(legacy))


def _trajectory(lines: list[tuple[str, dict[str, Any]]], path: Path, legacy: bool) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    stamps: list[float] = []
    models: Counter = Counter()
    items: Counter = Counter()
    events: Counter = Counter()
    names: dict[str, str] = {}
    session: dict[str, Any] = {}
    durations: list[float] = []
    reasoning = compactions = 0
    searches: list[dict[str, Any]] = []  # web_search calls without an id, waiting for their event's
    search_ids: list[str] = []  # web_search_end call ids waiting for their call
    for loc, line in lines:
        if line["timestamp"] is not None or line["type"] == "session_meta":
            s = iso_seconds(line["timestamp"])
            if s is None:
                raise MappingError(f"{loc}.timestamp", f"expected an ISO-8601 time, got {line['timestamp']!r}")
            stamps.append(s)
        kind, p = line["type"], line["payload"]
        if kind == "state":
            items["record_type:state"] += 1
        elif kind == "session_meta":
            session = session or p
        elif kind == "turn_context":
            if isinstance(p.get("model"), str) and p["model"]:
                models[p["model"]] += 1
        elif kind == "compacted":
            compactions += 1
        elif kind == "event_msg":
            events[str(p.get("type"))] += 1
            if p.get("type") == "task_complete" and isinstance(p.get("duration_ms"), (int, float)):
                durations.append(p["duration_ms"] / 1000.0)
            elif p.get("type") == "web_search_end" and isinstance(p.get("call_id"), str):
                if searches:
                    searches.pop(0)["id"] = p["call_id"]
                else:
                    search_ids.append(p["call_id"])
        elif kind not in ("response_item", "state"):
            items[f"line:{kind}"] += 1  # a newer bookkeeping line
        else:
            item = add_item(msgs, p, f"{loc}.payload", names)
            if item_type(p) == "web_search_call" and msgs[-1]["tool_calls"][-1]["id"] is None:
                call = msgs[-1]["tool_calls"][-1]
                if search_ids:
                    call["id"] = search_ids.pop(0)
                else:
                    searches.append(call)
            if item == "reasoning":
                reasoning += 1
            elif item is not None:
                items[str(item)] += 1
    for n, call in enumerate(searches, 1):
        call["id"] = f"web_search_{n}"
    base = session.get("base_instructions")
    base = base.get("text") if isinstance(base, dict) else base
    if isinstance(base, str) and base and msgs:
        msgs.insert(0, {"role": "system", "content": base, "tool_calls": []})
    if not msgs:
        raise MappingError("response_item", "no message or tool call in this rollout")
    sid = str(session.get("id") or path.stem)
    cwd = session.get("cwd") if isinstance(session.get("cwd"), str) else None
    meta: dict[str, Any] = {
        "session_id": sid, "cwd": cwd, "cli_version": session.get("cli_version"),
        "originator": session.get("originator"), "source": session.get("source"),
        "model_provider": session.get("model_provider"), "git": session.get("git"), "models": dict(models),
        "reasoning_items": reasoning, "items": dict(items), "events": dict(events), "compactions": compactions,
    }
    if legacy:
        meta["legacy"] = True
        if isinstance(session.get("instructions"), str):
            meta["instructions"] = session["instructions"]  # the user's instructions (AGENTS.md)
    times: dict[str, Any] = {"started_at": min(stamps)} if stamps else {}
    if stamps and not legacy:
        times["ended_at"] = max(stamps)
    if durations:
        times["duration_s"] = sum(durations)
    return {"episode_id": sid, "task_id": f"codex/{sid}", "suite": "codex",
            "category": PurePosixPath(cwd).name if cwd else None, "source_format": NAME,
            "policy": models.most_common(1)[0][0] if models else "", **record_times(times, {}),
            "messages": msgs, "outcome": {}, "metadata": meta}
