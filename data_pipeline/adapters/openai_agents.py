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
- `response` spans (runs on the Responses API, OpenAIResponsesModel: the SDK's default model) carry
  only a `response_id`. They are joined to the Responses themselves, which the user gives in
  `*.responses.jsonl` files (or `.responses.jsonl.gz`) in the trace file's folder: one OpenAI
  Response object per line, as `client.responses.retrieve(id)` or the `/v1/responses` body returns
  it ({"object": "response", "id": "resp_...", "model", "instructions", "output": [...], "usage",
  "created_at", ...}), with the request's `input` added as an `input` key: a string, or the list of
  input items as sent (or `client.responses.input_items.list(id, order="asc").data`). One shape, a
  Response plus its input, because the Response already echoes the request's instructions, model
  and tools: `input` is the only thing it lacks, and a Response stored by a logging proxy or
  fetched by id is kept unchanged. These files are side files (sources.skip_note), not records;
  the note that skips one counts the Responses in it that no response span beside it names.
  `instructions` become the system message, `input` and `output` items are read as Codex
  rollouts' (responses_items.py: message roles developer -> system, input_text / output_text parts,
  function_call {name, arguments, call_id} -> an assistant tool call, function_call_output
  {call_id, output} -> its tool result; reasoning items are counted in `metadata.reasoning_items`,
  not kept), the resent history is dropped as for generations, the Response's `model` is the
  policy, its `usage` is summed in `metadata.usage`, its function `tools` (the union over the
  trace's Responses, by name: agents handed off to offer others) are `metadata.tools`, the span's
  duration is the output's `duration_s`. A trace with a response span whose Response is not given
  is quarantined, naming the ids and this way out.
- `function` spans (name, input: the arguments as JSON, output) answer the tool calls that no
  later model input answers, in order per tool name (the span has no call id); the others
  are already paired by the tool messages (tool_call_id) / function_call_output items (call_id)
  of the inputs.
- `handoff` spans (from_agent, to_agent) are listed in `metadata.handoffs`, `agent` spans'
  names in `metadata.agents`, span `error`s in `metadata.errors`.
A trace without generation or response content is quarantined with the reason.

Outcome: the outcome places (common.log_outcome) of the trace's `metadata`; else unlabeled (the
format has no outcome). task_id: the trace metadata's `task_id`, else `openai-agents/<workflow
name>/` + a hash of the first user message. Interaction time: first span start to last span end.
data_pipeline/agents_sdk.py's `TraceLog` is a tracing processor that writes both files as this
adapter reads them."""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from . import HEAD_BYTES, Record, bad
from .common import (MappingError, head_text, iso_seconds, jsonl_objects, load_document, log_outcome, mapped,
                     read_bytes, stable_id, tools_to_openai)
from .openai_chat import message
from .otel_genai import merge_history
from .responses_items import add_item

NAME = "openai-agents"
STREAM = True  # export lines: a trace's spans may arrive over many lines (data_pipeline/live.py)
RESPONSES_SUFFIXES = (".responses.jsonl", ".responses.jsonl.gz")
_RESPONSE_OBJECT = re.compile(r'"object"\s*:\s*"response"')
_WAY_OUT = ("give the Responses as a *.responses.jsonl file beside the trace file: one Response object per line "
            "(client.responses.retrieve(id) or the /v1/responses body) with the request's `input` added")


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


def side_file_note(path: Path) -> str | None:
    """A `*.responses.jsonl` file of Response objects: not trajectories of its own, joined to the
    response spans of the trace exports in its folder (sources.skip_note)."""
    if not path.name.lower().endswith(RESPONSES_SUFFIXES):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None
    if not _RESPONSE_OBJECT.search(head_text(path, head)):
        return None
    note = "OpenAI Responses; joined by the openai-agents adapter to the response spans of the trace exports beside it"
    given, unnamed = _unnamed(path)
    if unnamed:
        shown = ", ".join(unnamed[:3]) + (", ..." if len(unnamed) > 3 else "")
        note += (f"; {len(unnamed)} of {given} are named by no response span in the files beside it ({shown}) "
                 "and are not ingested: export their traces into this folder")
    return note


_RESPONSE_ID = re.compile(rb'"response_id"\s*:\s*"([^"\\]+)"')


def _unnamed(path: Path) -> tuple[int, list[str]]:
    """(how many Responses `path` gives, the ids among them that no `response_id` in the other files
    of its folder names): Responses whose traces were never exported are otherwise lost unseen."""
    try:
        files = sorted(p for p in path.parent.iterdir() if p.is_file() and p != path
                       and not p.name.lower().endswith(RESPONSES_SUFFIXES)
                       and p.name.lower().endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")))
        key = tuple((str(p), st.st_mtime_ns, st.st_size) for p, st in ((p, p.stat()) for p in [path, *files]))
    except OSError:
        return 0, []
    return _unnamed_in(key)


@lru_cache(maxsize=8)
def _unnamed_in(key: tuple[tuple[str, int, int], ...]) -> tuple[int, list[str]]:
    given = list(_load_responses(key[:1])[0])
    named: set[str] = set()
    for name, _, _ in key[1:]:
        try:
            named.update(m.decode("utf-8", "replace") for m in _RESPONSE_ID.findall(read_bytes(Path(name))))
        except (OSError, EOFError):
            continue
    return len(given), [r for r in given if r not in named]


def _responses_beside(path: Path) -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:
    """The Response objects of the `*.responses.jsonl` files in the trace file's folder, by id, and
    the problems met (lines that are not Response objects)."""
    try:
        files = sorted(p for p in path.parent.iterdir() if p.is_file() and p != path
                       and p.name.lower().endswith(RESPONSES_SUFFIXES))
        key = tuple((str(p), st.st_mtime_ns, st.st_size) for p, st in ((p, p.stat()) for p in files))
    except OSError as e:
        return {}, (f"cannot list {path.parent}: {e}",)
    return _load_responses(key)


@lru_cache(maxsize=8)
def _load_responses(key: tuple[tuple[str, int, int], ...]) -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, _, _ in key:
        p = Path(name)
        try:
            lines = read_bytes(p).splitlines()
        except (OSError, EOFError) as e:
            problems.append(f"{p.name}: cannot read: {e}")
            continue
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                problems.append(f"{p.name} line {n}: not JSON")
                continue
            if not (isinstance(obj, dict) and obj.get("object") == "response" and isinstance(obj.get("id"), str)):
                problems.append(f"{p.name} line {n}: not a Response object ({{\"object\": \"response\", \"id\", ...}})")
                continue
            found.setdefault(obj["id"], obj)
    return found, tuple(problems)


def _response(resp: dict[str, Any], where: str, names: dict[str, str]) -> tuple[list, list, int]:
    """A Response -> (the messages its request sent: `instructions` as the system message, then
    `input`; the messages of its `output`; the number of reasoning items in its output)."""
    inputs: list[dict[str, Any]] = []
    instructions = resp.get("instructions")
    if isinstance(instructions, str) and instructions:
        inputs.append({"role": "system", "content": instructions, "tool_calls": []})
    elif isinstance(instructions, list):  # a prompt template's instructions: input items
        for k, item in enumerate(instructions):
            if isinstance(item, dict):
                add_item(inputs, item, f"{where}.instructions[{k}]", names)
    given = resp.get("input", None)
    if isinstance(given, str):
        inputs.append({"role": "user", "content": given, "tool_calls": []})
    elif isinstance(given, list):
        for k, item in enumerate(given):
            if not isinstance(item, dict):
                raise MappingError(f"{where}.input[{k}]", f"expected an input item, got {type(item).__name__}")
            add_item(inputs, item, f"{where}.input[{k}]", names)
    elif "input" not in resp:
        raise MappingError(f"{where}.input", "the Response has no `input`: add the request's input (a string or "
                           "the list of input items as sent; or client.responses.input_items.list(id, "
                           "order=\"asc\").data) as `input`")
    else:
        raise MappingError(f"{where}.input", f"expected a string or a list of input items, got "
                           f"{type(given).__name__}")
    output = resp.get("output")
    if not isinstance(output, list):
        raise MappingError(f"{where}.output", f"expected a list of output items, got {type(output).__name__}")
    outputs: list[dict[str, Any]] = []
    reasoning = 0
    for k, item in enumerate(output):
        if not isinstance(item, dict):
            raise MappingError(f"{where}.output[{k}]", f"expected an output item, got {type(item).__name__}")
        if add_item(outputs, item, f"{where}.output[{k}]", names) == "reasoning":
            reasoning += 1
    return inputs, outputs, reasoning


def _timed(outputs: list[dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    """A model call's output messages, the first with the call's span duration as `duration_s`."""
    start, end = iso_seconds(span.get("started_at")), iso_seconds(span.get("ended_at"))
    if outputs and start is not None and end is not None and math.isfinite(end - start) and end >= start:
        outputs[0]["duration_s"] = end - start
    return outputs


def trace(spans: list[dict[str, Any]], path: Path, loc: str, head: dict[str, Any] | None,
          responses: tuple[dict[str, dict[str, Any]], tuple[str, ...]] = ({}, ())) -> dict[str, Any]:
    head = head or {}
    ordered = sorted(spans, key=lambda s: (iso_seconds(s.get("started_at")) or 0.0, iso_seconds(s.get("ended_at")) or 0.0))
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    models, agents, handoffs, errors = [], [], [], []
    functions: dict[str, list[dict[str, Any]]] = {}
    generations = reasoning = 0
    response_ids: list[str] = []
    missing: list[str] = []
    usage: dict[str, int] = {}
    tools: dict[str, dict[str, Any]] = {}  # the function tools the Responses offered, by name
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
            messages.extend(_timed(outputs, s))
        elif kind == "response":
            rid = data.get("response_id")
            resp = responses[0].get(rid) if isinstance(rid, str) else None
            if resp is None:
                missing.append(str(rid))
                continue
            response_ids.append(rid)
            if resp.get("model"):
                models.append(str(resp["model"]))
            for k, v in (resp.get("usage") or {}).items() if isinstance(resp.get("usage"), dict) else ():
                if k in ("input_tokens", "output_tokens", "total_tokens") and isinstance(v, int):
                    usage[k] = usage.get(k, 0) + v
            for tool in tools_to_openai(resp.get("tools") if isinstance(resp.get("tools"), list) else None):
                tools.setdefault(tool["function"]["name"], tool)
            inputs, outputs, n = _response(resp, f"response {rid}", names)
            reasoning += n
            merge_history(messages, inputs)
            messages.extend(_timed(outputs, s))
    if missing or not (generations or response_ids):
        kinds = sorted({str((s.get("span_data") or {}).get("type")) for s in spans if isinstance(s.get("span_data"), dict)})
        why = f"span types: {', '.join(kinds)}"
        if not generations:
            why = f"no generation span with messages in this trace ({why}); Responses-API runs export only response ids"
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            why += (f"; {len(missing)} of {len(missing) + len(response_ids)} response spans name a Response not "
                    f"given ({shown}): {_WAY_OUT}")
            if responses[1]:
                why += f" ({len(responses[1])} lines of the Responses files beside it were not read: {responses[1][0]})"
        raise MappingError("span_data.input", why)
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
    if response_ids:
        meta.update(responses=len(response_ids), response_ids=response_ids, reasoning_items=reasoning)
        if usage:
            meta["usage"] = usage
    if tools:
        meta["tools"] = list(tools.values())
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
    responses = None  # the Responses beside the file, read when a trace has a response span
    for tid, members in spans.items():
        loc = f"trace {tid}"
        if not members:
            yield bad(loc, "spans", "a trace with no spans in this file")
            continue
        if responses is None and any((s.get("span_data") or {}).get("type") == "response" for s in members
                                     if isinstance(s.get("span_data"), dict)):
            responses = _responses_beside(path)
        yield mapped(loc, trace, members, path, loc, heads.get(tid), responses or ({}, ()))
