"""Claude Code session logs: ~/.claude/projects/<project>/<session>.jsonl (and, since 2.x, the
subagent transcripts <session>/subagents/agent-<id>.jsonl beside them).

Each line is one entry: `type` user / assistant carry an Anthropic `message` (content: a string or
blocks text / tool_use / tool_result / thinking / image) with `uuid`, `parentUuid`, `sessionId`,
`timestamp`, `cwd`, `version`, `isSidechain`; other types (summary, system, file-history-snapshot,
queue-operation, last-prompt, ...) are bookkeeping: counted in `metadata.entries`, a `summary` kept
as `metadata.summary`, never messages.

One trajectory per session file (the main chain, in file order), and one per **sidechain**: the
turns of a subagent (the Task tool) are the subagent's own conversation (the Task prompt is its user
turn), so each becomes its own trajectory, `task_id` `claude-code/<session>/agent-<id>`: grouped by
`agentId`, or in older logs, where they sit inline in the session file, by the sidechain root their
`parentUuid` chain leads to. The main trajectory keeps the Task call and its result (the subagent's
report) as an ordinary tool call and result.

Mapping: an API message written as several lines (one content block each, the same `message.id`,
possibly with tool results between them) becomes one assistant message (text joined, tool calls in
order), so every result follows its call; `tool_use` -> tool call (`input`
as arguments, `id`); a `tool_result` block in a user line -> a `tool` message with `tool_call_id`
= `tool_use_id` and the tool's name; text blocks of a user line -> a user message. Thinking blocks
are not part of the reply: left out, counted in `metadata.thinking_blocks`. Assistant lines Claude
Code wrote itself (`isApiErrorMessage`, model `<synthetic>`) are listed in
`metadata["context_messages"]`: never trained on. Interaction time: first and last `timestamp`.
No outcome in the format: unlabeled. A line that is not JSON is quarantined on its own (the rest of
the session still reads); a session with no user or assistant line is quarantined as a whole.
Lines are read in file order: a rewound or edited turn (an entry with several children in the
`parentUuid` tree) keeps both branches, and their number is in `metadata.forks`.
A session file is one conversation (`SESSION`, no `LINES`): as a live log (`collect.logs`) it is read
once it has been quiet for `collect.session_quiet_s`, and a session resumed after that gives only
its new turns (data_pipeline/live.py)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from . import Record, bad
from .common import MappingError, head_text, iso_seconds, jsonl_objects, mapped, record_times, text_of

SESSION = True  # one file, one growing conversation (data_pipeline/live.py)
NAME = "claude-code"
_MESSAGE_TYPES = ("user", "assistant")
_THINKING = ("thinking", "redacted_thinking")


def _is_entry(d: Any) -> bool:
    return (isinstance(d, dict) and d.get("type") in _MESSAGE_TYPES and isinstance(d.get("message"), dict)
            and isinstance(d.get("sessionId"), str) and isinstance(d.get("uuid"), str))


def detect(path: Path, head: bytes) -> bool:
    """A user/assistant entry (`message`, `sessionId`, `uuid`) among the first lines; when the first
    line is longer than the head, the entry keys Claude Code writes on every line."""
    text = head_text(path, head)
    lines = text.split("\n")[:200]
    parsed_any = False
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except ValueError:
            if i < len(lines) - 1:
                return False
            break  # the last line may be cut off by the head
        if not isinstance(d, dict):
            return False
        parsed_any = True
        if _is_entry(d):
            return True
    if parsed_any:
        return False
    return text.lstrip()[:1] == "{" and all(k in text for k in ('"sessionId"', '"parentUuid"', '"isSidechain"'))


def _sidechain_key(e: dict[str, Any], by_uuid: dict[str, dict[str, Any]]) -> str:
    """The subagent a sidechain entry belongs to: its agentId, else the root of its parentUuid chain."""
    if isinstance(e.get("agentId"), str) and e["agentId"]:
        return e["agentId"]
    seen = set()
    while isinstance(e.get("parentUuid"), str) and e["parentUuid"] in by_uuid and e["uuid"] not in seen:
        seen.add(e["uuid"])
        e = by_uuid[e["parentUuid"]]
    return e["uuid"]


def read(path: Path) -> Iterator[Record]:
    main: list[tuple[str, dict[str, Any]]] = []
    sides: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    side_entries: list[tuple[str, dict[str, Any]]] = []
    other: Counter = Counter()
    summary = None
    for loc, obj in jsonl_objects(path):
        if isinstance(obj, Record):
            yield obj  # a broken line: quarantined on its own
            continue
        if not isinstance(obj, dict):
            yield bad(loc, "<record>", f"expected a JSON object, got {type(obj).__name__}", json.dumps(obj)[:1024])
            continue
        kind = obj.get("type")
        if kind not in _MESSAGE_TYPES:
            other[str(kind)] += 1
            if kind == "summary" and isinstance(obj.get("summary"), str):
                summary = obj["summary"]
            continue
        if obj.get("isSidechain") is True:
            side_entries.append((loc, obj))
        else:
            main.append((loc, obj))
    by_uuid = {e["uuid"]: e for _, e in side_entries if isinstance(e.get("uuid"), str)}
    for loc, e in side_entries:
        if not isinstance(e.get("uuid"), str):
            yield bad(loc, "uuid", "a sidechain entry needs a uuid", json.dumps(e)[:1024])
            continue
        sides.setdefault(_sidechain_key(e, by_uuid), []).append((loc, e))
    file_meta = {"entries": dict(other), "summary": summary}
    if main:
        yield mapped(f"session ({main[0][0]})", _trajectory, main, path, None, file_meta)
    for key, entries in sides.items():
        yield mapped(f"sidechain {key} ({entries[0][0]})", _trajectory, entries, path, key, file_meta)
    if not main and not sides:
        kinds = ", ".join(f"{k} x{n}" for k, n in other.items()) or "nothing"
        yield bad("file", "<session>", f"no user or assistant entry in this session log (it has: {kinds})")


def _timestamp(loc: str, e: dict[str, Any], stamps: list[float]) -> None:
    ts = e.get("timestamp")
    if ts is None:
        return
    s = iso_seconds(ts)
    if s is None:
        raise MappingError(f"{loc}.timestamp", f"expected an ISO-8601 time, got {ts!r}")
    stamps.append(s)


def _blocks(loc: str, content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise MappingError(f"{loc}.message.content", f"expected text or content blocks, got {type(content).__name__}")
    out = []
    for j, b in enumerate(content):
        if isinstance(b, str):
            b = {"type": "text", "text": b}
        if not isinstance(b, dict):
            raise MappingError(f"{loc}.message.content[{j}]", f"expected a content block, got {type(b).__name__}")
        out.append(b)
    return out


def _trajectory(entries: list[tuple[str, dict[str, Any]]], path: Path, agent: str | None,
                file_meta: dict[str, Any]) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    stamps: list[float] = []
    models: Counter = Counter()
    tool_names: dict[str, str] = {}
    thinking = 0
    turns: dict[str, int] = {}  # message.id -> index of its assistant message
    for loc, e in entries:
        _timestamp(loc, e, stamps)
        m = e["message"]
        blocks = _blocks(loc, m.get("content"))
        if e["type"] == "assistant":
            texts, calls = [], []
            for j, b in enumerate(blocks):
                kind = b.get("type")
                if kind == "text":
                    texts.append(b.get("text") or "")
                elif kind == "tool_use":
                    if not isinstance(b.get("name"), str) or not b["name"]:
                        raise MappingError(f"{loc}.message.content[{j}].name", "a tool_use block needs a name")
                    calls.append({"name": b["name"], "arguments": b.get("input") or {}, "id": b.get("id")})
                    if isinstance(b.get("id"), str):
                        tool_names[b["id"]] = b["name"]
                elif kind in _THINKING:
                    thinking += 1
                else:  # server tool blocks, images, ...: named, not dropped
                    texts.append(f"[{kind or 'block'}]")
            model = m.get("model")
            synthetic = bool(e.get("isApiErrorMessage")) or model == "<synthetic>"
            if isinstance(model, str) and model and not synthetic:
                models[model] += 1
            mid = m.get("id")
            prev = msgs[turns[mid]] if isinstance(mid, str) and mid in turns else None
            if prev is not None and prev["_context"] == synthetic:  # more blocks of one API response
                text = "\n".join(t for t in texts if t)
                prev["content"] = "\n".join(t for t in (prev["content"], text) if t)
                prev["tool_calls"].extend(calls)
            else:
                if isinstance(mid, str) and mid:
                    turns[mid] = len(msgs)
                msgs.append({"role": "assistant", "content": "\n".join(t for t in texts if t), "tool_calls": calls,
                             "_context": synthetic})
            continue
        texts = []
        for j, b in enumerate(blocks):
            if b.get("type") == "tool_result":
                call_id = b.get("tool_use_id")
                msgs.append({"role": "tool", "content": text_of(b.get("content")), "tool_call_id": call_id,
                             "name": tool_names.get(call_id), "_context": False})
            else:
                texts.append(text_of([b]))
        if texts:
            msgs.append({"role": "user", "content": "\n".join(texts), "_context": False})
    # an assistant line that held only thinking leaves an empty turn: not a turn
    msgs = [m for m in msgs if not (m["role"] == "assistant" and not m["content"] and not m["tool_calls"])]
    if not msgs:
        raise MappingError("message.content", "no text, tool call or tool result in this session")
    context = [i for i, m in enumerate(msgs) if m.pop("_context")]
    first = entries[0][1]
    session = str(first.get("sessionId") or path.stem)
    cwd = next((e["cwd"] for _, e in entries if isinstance(e.get("cwd"), str) and e["cwd"]), None)
    sessions = list(dict.fromkeys(e["sessionId"] for _, e in entries if isinstance(e.get("sessionId"), str)))
    meta: dict[str, Any] = {
        "session_id": session, "cwd": cwd,
        "git_branch": next((e["gitBranch"] for _, e in entries if e.get("gitBranch")), None),
        "versions": sorted({str(e["version"]) for _, e in entries if e.get("version")}),
        "models": dict(models), "thinking_blocks": thinking, "sidechain": agent is not None,
        "lines": [entries[0][0], entries[-1][0]],
    }
    children = Counter(e.get("parentUuid") for _, e in entries if isinstance(e.get("parentUuid"), str))
    forks = sum(1 for n in children.values() if n > 1)
    if forks:
        meta["forks"] = forks  # entries with several children: a rewound or edited turn (kept in file order)
    if len(sessions) > 1:
        meta["session_ids"] = sessions  # a resumed session carries the lines of the one it continued
    if agent is None:
        meta["entries"] = file_meta["entries"]
        if file_meta["summary"]:
            meta["summary"] = file_meta["summary"]
    else:
        meta["agent_id"] = agent
    if context:
        meta["context_messages"] = context
    times = record_times({"started_at": min(stamps), "ended_at": max(stamps)} if stamps else {}, {})
    task = f"claude-code/{session}" + (f"/agent-{agent}" if agent else "")
    return {"episode_id": task.removeprefix("claude-code/"), "task_id": task, "suite": "claude-code",
            "category": PurePosixPath(cwd).name if cwd else None, "source_format": NAME,
            "policy": models.most_common(1)[0][0] if models else "", **times,
            "messages": msgs, "outcome": {}, "metadata": meta}
