"""OpenTelemetry GenAI spans as OTLP JSON: one `ExportTraceServiceRequest` ({"resourceSpans":
[{resource, scopeSpans: [{scope, spans: [...]}]}]}) per file, or one per line (the collector's
file exporter). Attribute values are OTLP AnyValues (stringValue, intValue as a number or a
string, doubleValue, boolValue, arrayValue, kvlistValue); span ids may be hex (OTLP/JSON) or
base64 (protobuf's JSON mapping), and are only compared, never decoded.

Spans are grouped into one trajectory per `gen_ai.conversation.id` (a trace whose spans carry one
belongs to that conversation), else one per trace (locators `conversation <id>` / `trace <id>`),
where traces that continue one another are one conversation (`stitch`: a model call made outside any
enclosing span, as the OpenAI instrumentation on its own writes it, is a trace of its own).
Within a group, spans are read in start-time order, following the GenAI semantic conventions
(gen-ai-input-messages.json / gen-ai-output-messages.json):
- an inference span (`gen_ai.input.messages` and/or `gen_ai.output.messages`; chat,
  text_completion, generate_content, invoke_agent) contributes its input messages, minus the
  conversation so far when the input repeats it (chat history is usually resent; see
  `merge_history`), then its output messages; `gen_ai.system_instructions` becomes the leading
  system message;
- message parts: `text` -> content, `tool_call` {id, name, arguments} -> a tool call,
  `tool_call_response` {id, response} -> a `tool` message answering that id (also when a provider
  puts it in a user message), `reasoning` -> kept in `metadata.reasoning` by message index,
  blob / file / uri -> a `[modality]` placeholder; a message given as {role, content} (older
  instrumentations) is read too;
- an `execute_tool` span (gen_ai.tool.name, gen_ai.tool.call.id, gen_ai.tool.call.arguments,
  gen_ai.tool.call.result) whose call id an assistant message made, and that no message answers,
  becomes the tool message after that call; one whose call no captured message made is counted in
  `metadata.unpaired_tool_spans` (its name, id, arguments and result kept there);
- `gen_ai.tool.definitions` -> metadata.tools; model: `gen_ai.response.model`, else
  `gen_ai.request.model`; each output's inference span duration is the step's `duration_s`.
A trace with no GenAI span, or whose GenAI spans carry no message content (content capture is
opt-in), is quarantined with that reason. OpenTelemetry has no outcome field: every trajectory is
unlabeled. task_id: `otel/` + a hash of the first user message. Interaction time: first span start
to last span end."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import Record, bad
from .common import (MappingError, head_text, jsonl_objects, load_document, mapped, stable_id, tools_to_openai)

NAME = "otel-genai"
_ROLES = {"system", "user", "assistant", "tool"}
_INFERENCE_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages")


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:65536]
    return text.startswith("{") and '"resourceSpans"' in text and '"scopeSpans"' in text and '"gen_ai.' in text


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return v["intValue"]
    if "doubleValue" in v:
        return v["doubleValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs or []:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = any_value(kv.get("value"))
    return out


def _json_attr(attrs: dict[str, Any], key: str, sid: str) -> Any:
    """A structured attribute: a JSON string (the usual encoding) or an already structured value."""
    v = attrs.get(key)
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError as e:
            raise MappingError(f"span {sid}.{key}", f"not valid JSON ({e.msg} at char {e.pos})") from None
    return v


def _nanos(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _spans(doc: Any, loc: str) -> Iterator[dict[str, Any]]:
    """Every span of one export request, with its resource attributes beside it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
        raise MappingError("resourceSpans", f"{loc}: an OTLP trace export needs a list of resourceSpans")
    for rs in doc["resourceSpans"]:
        if not isinstance(rs, dict):
            continue
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
            for sp in (ss or {}).get("spans") or []:
                if isinstance(sp, dict):
                    yield {**sp, "_attrs": attributes(sp.get("attributes")), "_resource": resource}


def _text_parts(parts: list[Any]) -> str:
    out = []
    for p in parts:
        if isinstance(p, dict) and p.get("type") == "text":
            out.append(str(p.get("content") if p.get("content") is not None else p.get("text", "")))
        elif isinstance(p, str):
            out.append(p)
    return "\n".join(out)


def _response_text(r: Any) -> str:
    return r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)


def _messages(raw: Any, where: str, reasoning: list[str]) -> list[dict[str, Any]]:
    """Semantic-convention messages -> canonical messages (a tool response part is its own message)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MappingError(where, f"expected a list of messages, got {type(raw).__name__}")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        mw = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise MappingError(mw, f"expected an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise MappingError(f"{mw}.role", f"unknown role {role!r}")
        parts = m.get("parts")
        if parts is None and isinstance(m.get("content"), str):  # {role, content}: older instrumentations
            parts = [{"type": "text", "content": m["content"]}]
        if not isinstance(parts, list):
            raise MappingError(f"{mw}.parts", "expected a list of message parts")
        text, calls, responses, thoughts = [], [], [], []
        for j, p in enumerate(parts):
            if not isinstance(p, dict):
                raise MappingError(f"{mw}.parts[{j}]", f"expected an object, got {type(p).__name__}")
            kind = p.get("type")
            if kind == "text":
                text.append(str(p.get("content") if p.get("content") is not None else p.get("text", "")))
            elif kind == "tool_call":
                if not isinstance(p.get("name"), str):
                    raise MappingError(f"{mw}.parts[{j}].name", "a tool_call part needs a name")
                args = p.get("arguments")
                calls.append({"name": p["name"], "arguments": {} if args is None else args, "id": p.get("id")})
            elif kind == "tool_call_response":
                responses.append((p.get("id"), _response_text(p.get("response"))))
            elif kind == "reasoning":
                thoughts.append(str(p.get("content") or ""))
            else:  # blob, file, uri, server tool parts, custom parts
                text.append(f"[{p.get('modality') or kind or 'part'}]")
        if role in ("tool", "user") and responses:
            if role == "user" and text:
                out.append({"role": "user", "content": "\n".join(text)})
            for call_id, content in responses:
                out.append({"role": "tool", "content": content, "tool_call_id": call_id})
            continue
        if thoughts:
            reasoning.append("\n".join(thoughts))
        msg: dict[str, Any] = {"role": role, "content": "\n".join(text), "tool_calls": calls}
        if thoughts:
            msg["_reasoning"] = "\n".join(thoughts)
        if role == "tool":
            msg["tool_call_id"] = m.get("id") or m.get("tool_call_id")
        out.append(msg)
    return out


def _key(m: dict[str, Any]) -> tuple:
    return (m["role"], m.get("content", ""), json.dumps([(c["name"], c["arguments"], c.get("id"))
                                                         for c in m.get("tool_calls") or []], sort_keys=True,
                                                        default=str), m.get("tool_call_id"))


def merge_history(messages: list[dict[str, Any]], inputs: list[dict[str, Any]]) -> None:
    """Append to `messages` what a model call's `inputs` add to the conversation so far. Inputs
    usually resend the whole history: when the non-system messages so far are a prefix of the
    inputs' non-system messages, only the rest is new; otherwise (a call given only the new turns)
    all of them are. A system prompt that differs from the latest one (e.g. after a handoff to
    another agent with other instructions) is appended after the new turns, right before the
    output it was the prompt of."""
    if not messages:
        messages.extend(inputs)
        return
    systems = [m for m in messages if m["role"] == "system"]
    seen = [_key(m) for m in messages if m["role"] != "system"]
    rest = [m for m in inputs if m["role"] != "system"]
    if [_key(m) for m in rest[:len(seen)]] == seen:
        rest = rest[len(seen):]  # the history resent: only what is new
    messages.extend(rest)
    for m in inputs:
        if m["role"] == "system" and (not systems or _key(systems[-1]) != _key(m)):
            messages.append(m)
            systems.append(m)


def _is_inference(a: dict[str, Any]) -> bool:
    return any(k in a for k in _INFERENCE_KEYS)


def _inputs(s: dict[str, Any], scratch: list[str]) -> list[dict[str, Any]]:
    """An inference span's input messages, `gen_ai.system_instructions` as the leading system message."""
    a, sid = s["_attrs"], str(s.get("spanId"))
    inputs = _messages(_json_attr(a, "gen_ai.input.messages", sid), f"span {sid}.gen_ai.input.messages", scratch)
    instructions = _json_attr(a, "gen_ai.system_instructions", sid)
    if instructions and not (inputs and inputs[0]["role"] == "system"):
        parts = instructions if isinstance(instructions, list) else [instructions]
        inputs.insert(0, {"role": "system", "content": _text_parts(parts), "tool_calls": []})
    return inputs


def conversation(spans: list[dict[str, Any]], path: Path, loc: str, key: str) -> dict[str, Any]:
    genai = [s for s in spans if any(k.startswith("gen_ai.") for k in s["_attrs"])]
    if not genai:
        raise MappingError("spans", f"no GenAI span (no gen_ai.* attribute) among {len(spans)} spans")
    ordered = sorted(spans, key=lambda s: (_nanos(s.get("startTimeUnixNano")) or 0, _nanos(s.get("endTimeUnixNano")) or 0))
    messages: list[dict[str, Any]] = []
    reasoning: dict[str, str] = {}
    tools: list[dict[str, Any]] = []
    models: list[str] = []
    agents: list[str] = []
    tool_spans: list[dict[str, Any]] = []
    for s in ordered:
        a, sid = s["_attrs"], str(s.get("spanId"))
        if a.get("gen_ai.agent.name"):
            agents.append(str(a["gen_ai.agent.name"]))
        if a.get("gen_ai.operation.name") == "execute_tool":
            tool_spans.append(s)
            continue
        if not _is_inference(a):
            continue
        if not tools and a.get("gen_ai.tool.definitions") is not None:
            tools = tools_to_openai(_json_attr(a, "gen_ai.tool.definitions", sid))
        model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
        if model:
            models.append(str(model))
        scratch: list[str] = []
        merge_history(messages, _inputs(s, scratch))
        outputs = _messages(_json_attr(a, "gen_ai.output.messages", sid), f"span {sid}.gen_ai.output.messages", scratch)
        start, end = _nanos(s.get("startTimeUnixNano")), _nanos(s.get("endTimeUnixNano"))
        if outputs and start is not None and end is not None and end >= start:
            outputs[0]["duration_s"] = (end - start) / 1e9
        messages.extend(outputs)
    if not messages:
        raise MappingError("gen_ai.input.messages", f"{len(genai)} GenAI spans but no message content "
                           "(content capture is opt-in: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="
                           "span_only or span_and_event; event_only and the older conventions write it to log "
                           "events, which are not read)")
    # tool names, and execute_tool results for calls no message answers
    names = {c["id"]: c["name"] for m in messages for c in m.get("tool_calls") or [] if c.get("id")}
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    unpaired = []
    for s in tool_spans:
        a = s["_attrs"]
        call_id = a.get("gen_ai.tool.call.id")
        if call_id in names and call_id not in answered:
            result = a.get("gen_ai.tool.call.result")
            status = (s.get("status") or {})
            content = (_response_text(result) if result is not None
                       else f"[error] {status.get('message') or a.get('error.type') or 'no result recorded'}")
            at = max(i for i, m in enumerate(messages) if any(c.get("id") == call_id for c in m.get("tool_calls") or []))
            while at + 1 < len(messages) and messages[at + 1]["role"] == "tool":
                at += 1
            messages.insert(at + 1, {"role": "tool", "content": content, "tool_call_id": call_id})
            answered.add(call_id)
        elif call_id not in names:
            unpaired.append({k: a.get(f"gen_ai.tool.{k}") for k in ("name", "call.id", "call.arguments", "call.result")})
    for i, m in enumerate(messages):
        if m["role"] == "tool" and not m.get("name"):
            m["name"] = names.get(m.get("tool_call_id") or "")
        r = m.pop("_reasoning", None)
        if r:
            reasoning[str(i)] = r
    starts = [t for t in (_nanos(s.get("startTimeUnixNano")) for s in spans) if t]
    ends = [t for t in (_nanos(s.get("endTimeUnixNano")) for s in spans) if t]
    resource = genai[0]["_resource"]
    meta: dict[str, Any] = {"group": key, "trace_ids": sorted({str(s.get("traceId")) for s in spans}),
                            "spans": len(spans), "genai_spans": len(genai), "service": resource.get("service.name"),
                            "agents": sorted(set(agents)) or None, "provider": next(
                                (s["_attrs"].get("gen_ai.provider.name") or s["_attrs"].get("gen_ai.system")
                                 for s in genai if s["_attrs"].get("gen_ai.provider.name") or s["_attrs"].get("gen_ai.system")), None)}
    if tools:
        meta["tools"] = tools
    if reasoning:
        meta["reasoning"] = reasoning
    if unpaired:
        meta["unpaired_tool_spans"] = unpaired
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return {"episode_id": key, "task_id": "otel/" + stable_id(first_user), "suite": "",
            "category": agents[0] if agents else str(resource.get("service.name") or ""),
            "policy": models[-1] if models else "", "source_format": NAME,
            "started_at": min(starts) / 1e9 if starts else None, "ended_at": max(ends) / 1e9 if ends else None,
            "messages": messages, "outcome": {}, "metadata": meta}


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    doc = load_document(path)
    if not isinstance(doc, Record):
        yield "file", doc
        return
    yield from jsonl_objects(path)  # one export request per line


def read(path: Path) -> Iterator[Record]:
    spans: list[dict[str, Any]] = []
    for loc, doc in _documents(path):
        if isinstance(doc, Record):
            yield doc
            continue
        try:
            spans.extend(_spans(doc, loc))
        except MappingError as e:
            yield bad(loc, e.field, e.problem, json.dumps(doc, default=str)[:1024])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            yield bad(loc, "resourceSpans", f"unexpected structure: {type(e).__name__}: {e}",
                      json.dumps(doc, default=str)[:1024])
    # a trace belongs to the conversation any of its spans names
    conv_of_trace: dict[str, str] = {}
    for s in spans:
        cid = s["_attrs"].get("gen_ai.conversation.id")
        if cid is not None and str(s.get("traceId")) not in conv_of_trace:
            conv_of_trace[str(s.get("traceId"))] = str(cid)
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        tid = str(s.get("traceId"))
        cid = s["_attrs"].get("gen_ai.conversation.id") or conv_of_trace.get(tid)
        groups.setdefault(f"conversation {cid}" if cid is not None else f"trace {tid}", []).append(s)
    for key, members in stitch(groups, path).items():
        yield mapped(key, conversation, members, path, key, key)


def _start(members: list[dict[str, Any]]) -> int:
    return min((_nanos(s.get("startTimeUnixNano")) or 0 for s in members), default=0)


def stitch(groups: dict[str, list[dict[str, Any]]], path: Path) -> dict[str, list[dict[str, Any]]]:
    """Join the traces of one conversation that no conversation id ties together. An instrumented
    client called outside any enclosing span (the OpenAI instrumentation on its own) writes each model
    call, and each execute_tool span, as a trace of its own; the conversation is then the chain of
    traces whose first inference input starts with everything the chain has said so far. So, in start
    order, a `trace` group (no gen_ai.conversation.id) joins the chain whose messages are the longest
    prefix of its first inference span's input (the earliest such chain on a tie; a chain is extended
    once from one state, so two runs of the same prompt stay apart), and a trace of execute_tool spans
    only joins the chain that made its call id. The chain keeps its first trace's key."""
    out: dict[str, list[dict[str, Any]]] = {k: v for k, v in groups.items() if not k.startswith("trace ")}
    by_prefix: dict[tuple, list[str]] = {}  # the message keys of a chain so far -> chains there
    said: dict[str, tuple] = {}
    calls: dict[str, str] = {}  # tool call id -> the chain that made it
    for key, members in sorted(((k, v) for k, v in groups.items() if k.startswith("trace ")),
                               key=lambda kv: _start(kv[1])):
        inference = sorted((s for s in members if _is_inference(s["_attrs"])),
                           key=lambda s: _nanos(s.get("startTimeUnixNano")) or 0)
        tool_ids = {s["_attrs"].get("gen_ai.tool.call.id") for s in members
                    if s["_attrs"].get("gen_ai.operation.name") == "execute_tool"} - {None}
        chain = None
        try:
            if inference:
                keys = tuple(_key(m) for m in _inputs(inference[0], []))
                chain = next((by_prefix[keys[:n]][0] for n in range(len(keys), 0, -1) if by_prefix.get(keys[:n])), None)
            elif tool_ids and all(t in calls for t in tool_ids) and len({calls[t] for t in tool_ids}) == 1:
                chain = calls[next(iter(tool_ids))]
        except MappingError:
            chain = None  # reported when the trace is read on its own
        joined = out[chain] + members if chain else members
        try:
            record = conversation(joined, path, key, key)
        except (MappingError, KeyError, TypeError, ValueError, AttributeError, IndexError):
            out[key] = members  # its own record, quarantined with its own reason
            continue
        if chain:
            if said.get(chain) in by_prefix:
                by_prefix[said[chain]].remove(chain)
            key = chain
        out[key] = joined
        said[key] = tuple(_key(m) for m in record["messages"])
        by_prefix.setdefault(said[key], []).append(key)
        calls.update({c["id"]: key for m in record["messages"] for c in m.get("tool_calls") or [] if c.get("id")})
    return {k: out[k] for k in groups if k in out}
