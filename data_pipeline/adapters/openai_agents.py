"""OpenAI Agents SDK trace exports (openai-agents-python, `agents.tracing`): the items that the
SDK's BackendSpanExporter posts to the traces ingest endpoint, i.e. `Trace.export()`
({"object": "trace", id, workflow_name, group_id, metadata}) and `Span.export()`
({"object": "trace.span", id, trace_id, parent_id, started_at, ended_at, span_data: {type, ...},
error}). A file holds them one per line (a TracingProcessor writing each export), as the
exporter's payload {"data": [...]} (one per file or per line), or as a JSON array.

One trajectory per trace (locator `trace <id>`); spans are read in `started_at` order:
- `generation` spans (chat-completions models: OpenAIChatCompletionsModel, LiteLLM) carry the
  model call's `input` and `output` messages in the chat-completions shape; they are read as the
  `openai` adapter reads messages, the resent history is dropped (otel_genai.merge_history), and a
  handoff's new instructions appear as a system message where they first apply. `model` is the
  policy; the span's duration is the output's `duration_s`.
- `function` spans (name, input: the arguments as JSON, output) answer the tool calls that no
  later generation input answers, in order per tool name (the span has no call id); the others
  are already paired by the tool messages (tool_call_id) of the inputs.
- `handoff` spans (from_agent, to_agent) are listed in `metadata.handoffs`, `agent` spans'
  names in `metadata.agents`, span `error`s in `metadata.errors`.
A trace without generation content is quarantined with the reason: runs on the Responses API
model export `response` spans that carry only a response id, no messages.

Outcome: the outcome places (common.log_outcome) of the trace's `metadata`; else unlabeled (the
format has no outcome). task_id: the trace metadata's `task_id`, else `openai-agents/<workflow
name>/` + a hash of the first user message. Interaction time: first span start to last span end."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from . import Record, bad
from .common import (MappingError, head_text, iso_seconds, jsonl_objects, load_document, log_outcome, mapped,
                     stable_id)
from .openai_chat import message
from .otel_genai import merge_history

NAME = "openai-agents"


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:65536]
    return text[:1] in "{[" and '"trace.span"' in text and '"span_data"' in text


def _items(path: Path) -> Iterator[tuple[str, Any]]:
    doc = load_document(path)
    if isinstance(doc, Record):  # not one JSON document: one item (or payload) per line
        for loc, obj in jsonl_objects(path):
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                for i, item in enumerate(obj["data"]):
                    yield f"{loc} data[{i}]", item
            else:
                yield loc, obj
        return
    items = doc.get("data") if isinstance(doc, dict) and isinstance(doc.get("data"), list) else doc
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        yield "file", bad("file", "<file>", "expected trace export items (a list, {\"data\": [...]}, or JSON lines)")
        return
    for i, item in enumerate(items):
        yield f"item {i}", item


def _chat(msgs: Any, where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    if msgs is None:
        return []
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, list):
        raise MappingError(where, f"expected a list of messages, got {type(msgs).__name__}")
    return [message(m, f"{where}[{i}]", names) for i, m in enumerate(msgs)]


def trace(spans: list[dict[str, Any]], path: Path, loc: str, head: dict[str, Any] | None) -> dict[str, Any]:
    head = head or {}
    ordered = sorted(spans, key=lambda s: (iso_seconds(s.get("started_at")) or 0.0, iso_seconds(s.get("ended_at")) or 0.0))
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    models, agents, handoffs, errors = [], [], [], []
    functions: dict[str, list[dict[str, Any]]] = {}
    generations = 0
    for s in ordered:
        data = s.get("span_data")
        if not isinstance(data, dict):
            raise MappingError(f"span {s.get('id')}.span_data", "expected an object")
        kind, sid = data.get("type"), s.get("id")
        if s.get("error"):
            errors.append({"span": sid, "type": kind, "error": s["error"]})
        if kind == "agent" and data.get("name"):
            agents.append(data["name"])
        elif kind == "handoff":
            handoffs.append({"from_agent": data.get("from_agent"), "to_agent": data.get("to_agent")})
        elif kind == "function":
            functions.setdefault(str(data.get("name")), []).append(s)
        elif kind == "generation" and (data.get("input") is not None or data.get("output") is not None):
            generations += 1
            if data.get("model"):
                models.append(str(data["model"]))
            merge_history(messages, _chat(data.get("input"), f"span {sid}.span_data.input", names))
            outputs = _chat(data.get("output"), f"span {sid}.span_data.output", names)
            start, end = iso_seconds(s.get("started_at")), iso_seconds(s.get("ended_at"))
            if outputs and start is not None and end is not None and math.isfinite(end - start) and end >= start:
                outputs[0]["duration_s"] = end - start
            messages.extend(outputs)
    if not generations:
        kinds = sorted({str((s.get("span_data") or {}).get("type")) for s in spans if isinstance(s.get("span_data"), dict)})
        raise MappingError("span_data.input", f"no generation span with messages in this trace (span types: "
                           f"{', '.join(kinds)}); Responses-API runs export only response ids")
    # function spans answer the calls no later input answered, in order per tool name
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    used = {name: sum(1 for m in messages if m["role"] == "tool" and m.get("name") == name) for name in functions}
    i = 0
    while i < len(messages):
        for c in messages[i].get("tool_calls") or []:
            queue = functions.get(str(c["name"])) or []
            if c.get("id") in answered or used.get(c["name"], 0) >= len(queue):
                continue
            span = queue[used[c["name"]]]
            used[c["name"]] += 1
            out = (span.get("span_data") or {}).get("output")
            at = i
            while at + 1 < len(messages) and messages[at + 1]["role"] == "tool":
                at += 1
            messages.insert(at + 1, {"role": "tool", "content": "" if out is None else str(out),
                                     "tool_call_id": c.get("id"), "name": c["name"]})
            answered.add(c.get("id"))
        i += 1
    meta_in = head.get("metadata") if isinstance(head.get("metadata"), dict) else {}
    meta: dict[str, Any] = {"trace_id": spans[0].get("trace_id") if spans else head.get("id"),
                            "workflow_name": head.get("workflow_name"), "group_id": head.get("group_id"),
                            "trace_metadata": meta_in or None, "agents": list(dict.fromkeys(agents)) or None,
                            "spans": len(spans), "generations": generations}
    if handoffs:
        meta["handoffs"] = handoffs
    if errors:
        meta["errors"] = errors
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    workflow = str(head.get("workflow_name") or "workflow")
    task_id = str(meta_in.get("task_id") or f"openai-agents/{workflow}/{stable_id(first_user)}")
    stamps = [t for s in spans for t in (iso_seconds(s.get("started_at")), iso_seconds(s.get("ended_at"))) if t is not None]
    return {"episode_id": str(meta["trace_id"]), "task_id": task_id, "suite": "openai-agents", "category": workflow,
            "policy": models[-1] if models else "", "source_format": NAME,
            "started_at": min(stamps) if stamps else None, "ended_at": max(stamps) if stamps else None,
            "messages": messages, "outcome": log_outcome({}, meta_in), "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    heads: dict[str, dict[str, Any]] = {}
    spans: dict[str, list[dict[str, Any]]] = {}
    for loc, item in _items(path):
        if isinstance(item, Record):
            yield item
            continue
        obj = item.get("object") if isinstance(item, dict) else None
        if obj == "trace" and isinstance(item.get("id"), str):
            heads[item["id"]] = item
            spans.setdefault(item["id"], [])
        elif obj == "trace.span" and isinstance(item.get("trace_id"), str):
            spans.setdefault(item["trace_id"], []).append(item)
        else:
            yield bad(loc, "object", f"expected a trace or trace.span export item, got {obj!r}",
                      json.dumps(item, default=str)[:1024])
    for tid, members in spans.items():
        loc = f"trace {tid}"
        if not members:
            yield bad(loc, "spans", "a trace with no spans in this file")
            continue
        yield mapped(loc, trace, members, path, loc, heads.get(tid))
