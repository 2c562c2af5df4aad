"""OpenTelemetry GenAI spans, from three kinds of file:
- OTLP JSON: one `ExportTraceServiceRequest` ({"resourceSpans": [{resource, scopeSpans (or the
  older instrumentationLibrarySpans): [{scope, spans: [...]}]}]}) per file, or one per line (the
  collector's file exporter). Attribute values are OTLP AnyValues (stringValue, intValue as a number
  or a string, doubleValue, boolValue, arrayValue, kvlistValue); span ids may be hex (OTLP/JSON) or
  base64 (protobuf's JSON mapping), and are only compared, never decoded;
- a Grafana Tempo trace export: the same with `batches` in place of `resourceSpans` (or Tempo's v2
  {"trace": {"resourceSpans"}}); kind strings, numbers for timestamps / ints are read as they come;
- a Jaeger JSON export ({"data": [{traceID, spans: [{traceID, spanID, operationName, references,
  startTime, duration (µs), tags: [{key, type, value}], processID}], processes}]}): tags become the
  attributes, the process's tags and serviceName the resource attributes, the CHILD_OF reference the
  parent, µs become ns, span logs become span events (`_jaeger_spans`).

Message content given in span events rather than attributes (the current conventions'
`gen_ai.client.inference.operation.details` event, the older per-message `gen_ai.*.message` /
`gen_ai.choice` events, v1.27's `gen_ai.content.prompt` / `completion`; Strands Agents writes them) is
folded into the span's attributes first (otel_events.py), so everything below applies to it.

Spans are grouped into one trajectory per `gen_ai.conversation.id` (a trace whose spans carry one
belongs to that conversation), else one per trace (locators `conversation <id>` / `trace <id>`),
where traces that continue one another are one conversation (`stitch`: a model call made outside any
enclosing span, as the OpenAI instrumentation on its own writes it, is a trace of its own).
Within a group, spans are read in start-time order, following the GenAI semantic conventions
(gen-ai-input-messages.json / gen-ai-output-messages.json):
- an inference span (`gen_ai.input.messages` and/or `gen_ai.output.messages`; chat,
  text_completion, generate_content, invoke_agent; or the older OpenLLMetry / traceloop attributes,
  below) contributes its input messages, minus the conversation so far when the input repeats it
  (chat history is usually resent; see `merge_history`), then its output messages;
  `gen_ai.system_instructions` becomes the leading system message;
- layers: an inference span that encloses another inference span (an agent framework's span
  around the client instrumentation's span of the same model call, e.g. Google ADK's `call_llm` /
  `generate_content` around OpenLLMetry's `openai.chat`) is not read: only the innermost
  (`metadata.layered_inference_spans` counts the skipped ones);
- agents: each inference span continues the conversation whose messages so far (system aside) are
  the longest prefix of its input, else the latest one of the same agent (the nearest enclosing
  `invoke_agent` span's `gen_ai.agent.name`, else the service.name); a call that continues none and
  runs in another agent (a sub-agent called as a tool, given only its instruction) starts that
  agent's own trajectory, episode `<group> / agent <name>` (`metadata.parent_episode`; the first
  trajectory lists them in `metadata.sub_agents`);
- message parts: `text` -> content, `tool_call` {id, name, arguments} -> a tool call,
  `tool_call_response` {id, response} -> a `tool` message answering that id (also when a provider
  puts it in a user message; a response that is a list of text parts, as MCP / LangChain tool
  messages are, possibly JSON-encoded, is their text), `reasoning` -> kept in `metadata.reasoning` by
  message index, blob / file / uri -> a `[modality]` placeholder; a message given as {role, content}
  (older instrumentations) is read too;
- the older OpenLLMetry / traceloop attributes, read when a span has no gen_ai.input/output.messages:
  `gen_ai.prompt.N.role` / `.content` / `.tool_call_id` / `.tool_calls.M.id|name|arguments` (the
  input messages, N in order) and `gen_ai.completion.N.role` / `.content` / `.finish_reason` /
  `.tool_calls.M.id|name|arguments` / `.function_call.name|arguments` (the output); a `tool` role's
  content answers its tool_call_id, arguments given as JSON strings are parsed, a content that is a
  JSON list of content parts becomes their text; roles developer -> system, model / ai -> assistant,
  human -> user, function -> tool; `llm.request.functions.N.name|description|parameters` ->
  metadata.tools (when there is no gen_ai.tool.definitions);
- Google ADK's own `call_llm` span, read when a span has neither of the above:
  `gcp.vertex.agent.llm_request` ({config: {system_instruction, tools: [{function_declarations}]},
  contents: [google-genai Content]}) as the input (system instruction first, declarations ->
  metadata.tools) and `gcp.vertex.agent.llm_response` ({content}) as the output; Content parts:
  text (a `thought` one -> reasoning), function_call {id, name, args} -> a tool call,
  function_response {id, response} -> a tool message, other parts -> a `[kind]` placeholder; role
  model -> assistant. (Where OpenLLMetry's chat span is inside it, the layer rule reads only that.)
  A tool result that is an MCP CallToolResult ({content: [text parts]}, not isError) is its text;
- an `execute_tool` span (gen_ai.tool.name, gen_ai.tool.call.id, else the LangChain run kwargs'
  `tool_call_id` inside gen_ai.tool.call.arguments; gen_ai.tool.call.arguments,
  gen_ai.tool.call.result, else ADK's `gcp.vertex.agent.tool_response`) whose call id an assistant
  message made, and that no message answers, becomes the tool message after that call; one whose
  call no captured message made is counted in `metadata.unpaired_tool_spans` (its name, id,
  arguments and result kept there);
- `gen_ai.tool.definitions` -> metadata.tools; model: `gen_ai.response.model`, else
  `gen_ai.request.model`, else (both missing or "unknown", as LangChain callbacks write them) an
  `*.ls_model_name` association property; each output's inference span duration is the step's
  `duration_s`.
A trace with no GenAI span, or whose GenAI spans carry no message content (content capture is
opt-in), is quarantined with that reason. OpenTelemetry has no outcome field: every trajectory is
unlabeled. task_id: `otel/` + a hash of the first user message. Interaction time: first span start
to last span end of the group (a sub-agent's trajectory: of its own spans)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from . import Record, bad
from .common import (MappingError, head_text, jsonl_objects, load_document, mapped, stable_id, tools_to_openai)
from .otel_events import fold_events

NAME = "otel-genai"
STREAM = True  # OTLP export lines: a trace's spans, and a conversation's traces, arrive over many lines (data_pipeline/live.py)
_ROLES = {"system", "user", "assistant", "tool"}
_INFERENCE_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages")


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:65536]
    if not text.startswith("{"):
        return False
    if '"resourceSpans"' in text or '"batches"' in text:  # OTLP JSON, or a Grafana Tempo export
        return ('"scopeSpans"' in text or '"instrumentationLibrarySpans"' in text) and '"gen_ai.' in text
    # a Jaeger JSON export (the OpenAI Agents SDK's {"data": [...]} payloads hold trace_id / "trace.span")
    return (_JAEGER.match(text) is not None and '"spanID"' in text and '"operationName"' in text
            and '"trace.span"' not in text)


_JAEGER = re.compile(r'\{\s*"data"\s*:\s*\[\s*\{\s*"(traceID|spans|processes|warnings)"')


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
    """Every span of one export (OTLP JSON, a Tempo export or a Jaeger export) in one internal form:
    the OTLP span fields (traceId, spanId, parentSpanId, name, startTimeUnixNano, endTimeUnixNano,
    status) with its attributes as `_attrs` and its resource's as `_resource`."""
    if isinstance(doc, dict) and isinstance(doc.get("trace"), dict):  # Tempo's v2 API: {"trace": {"resourceSpans"}}
        doc = doc["trace"]
    if isinstance(doc, dict) and isinstance(doc.get("data"), list) and not isinstance(doc.get("resourceSpans"), list):
        yield from _jaeger_spans(doc)
        return
    batches = doc.get("resourceSpans", doc.get("batches")) if isinstance(doc, dict) else None
    if not isinstance(batches, list):
        raise MappingError("resourceSpans", f"{loc}: an OTLP trace export needs a list of resourceSpans "
                           "(or a Tempo export's batches, or a Jaeger export's data)")
    for rs in batches:
        if not isinstance(rs, dict):
            continue
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
            for sp in (ss or {}).get("spans") or []:
                if isinstance(sp, dict):
                    events = [(e.get("name"), attributes(e.get("attributes"))) for e in sp.get("events") or []
                              if isinstance(e, dict)]
                    yield {**sp, "_attrs": fold_events(attributes(sp.get("attributes")), events),
                           "_resource": resource}


def _tag_value(t: dict[str, Any]) -> Any:
    v, kind = t.get("value"), t.get("type")
    if kind == "int64" and isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return v
    if kind == "float64" and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    if kind == "bool" and isinstance(v, str):
        return v.lower() == "true"
    return v


def _tags(tags: Any) -> dict[str, Any]:
    return {t["key"]: _tag_value(t) for t in tags or [] if isinstance(t, dict) and isinstance(t.get("key"), str)}


def _jaeger_spans(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A Jaeger JSON export ({"data": [{traceID, spans: [{traceID, spanID, operationName, references,
    startTime, duration (µs), tags: [{key, type, value}], processID}], processes}]}) in the internal
    span form: tags -> attributes, the process's tags (+ service.name) -> resource attributes, the
    CHILD_OF reference (else the first) -> parentSpanId, µs -> ns; an `error` / `otel.status_code`
    ERROR tag -> status code 2."""
    for trace in doc["data"]:
        if not isinstance(trace, dict):
            continue
        processes = trace.get("processes") or {}
        for sp in trace.get("spans") or []:
            if not isinstance(sp, dict):
                continue
            proc = sp.get("process") or processes.get(sp.get("processID")) or {}
            resource = _tags(proc.get("tags"))
            if proc.get("serviceName") is not None:
                resource.setdefault("service.name", proc["serviceName"])
            refs = [r for r in sp.get("references") or [] if isinstance(r, dict)]
            parent = next((r.get("spanID") for r in refs if r.get("refType") == "CHILD_OF"), None)
            if parent is None and refs:
                parent = refs[0].get("spanID")
            attrs = fold_events(_tags(sp.get("tags")), _jaeger_events(sp.get("logs")))
            start, dur = _nanos(sp.get("startTime")), _nanos(sp.get("duration"))
            error = attrs.get("error") is True or str(attrs.get("otel.status_code", "")).upper() == "ERROR"
            yield {"traceId": sp.get("traceID") or trace.get("traceID"), "spanId": sp.get("spanID"),
                   "parentSpanId": parent, "name": sp.get("operationName"),
                   "startTimeUnixNano": None if start is None else start * 1000,
                   "endTimeUnixNano": None if start is None else (start + (dur or 0)) * 1000,
                   "status": {"code": 2, "message": attrs.get("otel.status_description") or ""} if error else {},
                   "_attrs": attrs, "_resource": resource}


def _jaeger_events(logs: Any) -> list[tuple[Any, dict[str, Any]]]:
    """A Jaeger span's logs as span events: the `event` field is the name, the other fields its
    attributes (how Jaeger stores an OpenTelemetry span event)."""
    out = []
    for log in logs or []:
        fields = _tags(log.get("fields")) if isinstance(log, dict) else {}
        if "event" in fields:
            name = fields.pop("event")
            out.append((name, fields))
    return out


def _text_parts(parts: list[Any]) -> str:
    out = []
    for p in parts:
        if isinstance(p, dict) and p.get("type") == "text":
            out.append(str(p.get("content") if p.get("content") is not None else p.get("text", "")))
        elif isinstance(p, str):
            out.append(p)
    return "\n".join(out)


def _response_text(r: Any) -> str:
    """A tool result as text; a result that is a list of text parts (an MCP / LangChain tool message's
    content, often JSON-encoded into the string) is their text."""
    if isinstance(r, str) and r.lstrip().startswith("[{"):
        try:
            r = json.loads(r)
        except json.JSONDecodeError:
            return r
    if isinstance(r, dict) and isinstance(r.get("content"), list) and not r.get("isError") and set(r) <= {
            "content", "isError", "structuredContent", "_meta"}:  # an MCP CallToolResult
        r = r["content"]
    if isinstance(r, list) and r and all(  # {"type": "text", "text"} parts, or Bedrock's {"text"} blocks
            isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str) for p in r):
        return "\n".join(p["text"] for p in r)
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


_LEGACY = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
_LEGACY_CALL = re.compile(r"tool_calls\.(\d+)\.(\w+)")
_LEGACY_ROLES = {"developer": "system", "model": "assistant", "ai": "assistant", "human": "user", "function": "tool"}


_ADK_REQUEST, _ADK_RESPONSE = "gcp.vertex.agent.llm_request", "gcp.vertex.agent.llm_response"


def _is_inference(a: dict[str, Any]) -> bool:
    return (any(k in a for k in _INFERENCE_KEYS) or any(_LEGACY.match(k) for k in a)
            or (a.get("gen_ai.operation.name") != "execute_tool"
                and any(isinstance(a.get(k), str) and a[k].strip() not in ("", "{}") for k in (_ADK_REQUEST, _ADK_RESPONSE))))


def _adk_content(c: Any, where: str) -> dict[str, Any]:
    """A google-genai Content ({role: user|model, parts: [{text} | {function_call: {id, name, args}} |
    {function_response: {id, name, response}} | {inline_data | file_data} ...]}) as a semantic-
    convention message; a `thought` text part is reasoning."""
    if not isinstance(c, dict):
        raise MappingError(where, f"expected a Content object, got {type(c).__name__}")
    role = {"model": "assistant"}.get(c.get("role") or "", c.get("role") or "user")
    parts: list[dict[str, Any]] = []
    for p in c.get("parts") or []:
        if not isinstance(p, dict):
            continue
        if p.get("function_call"):
            fc = p["function_call"]
            parts.append({"type": "tool_call", "id": fc.get("id"), "name": fc.get("name"), "arguments": fc.get("args") or {}})
        elif p.get("function_response"):
            fr = p["function_response"]
            parts.append({"type": "tool_call_response", "id": fr.get("id"), "response": fr.get("response")})
        elif p.get("text") is not None:
            parts.append({"type": "reasoning" if p.get("thought") else "text", "content": p["text"]})
        else:
            parts.append({"type": next((k for k in ("inline_data", "file_data", "executable_code",
                                                     "code_execution_result") if p.get(k)), "part")})
    return {"role": role, "parts": parts}


def _adk_messages(a: dict[str, Any], which: str, sid: str) -> list[dict[str, Any]] | None:
    """Google ADK's own `call_llm` span: `gcp.vertex.agent.llm_request` ({model, config:
    {system_instruction, tools}, contents: [Content]}) and `gcp.vertex.agent.llm_response`
    ({content: Content, finish_reason}) as semantic-convention messages."""
    if which == "prompt":
        req = _json_attr(a, _ADK_REQUEST, sid)
        if not isinstance(req, dict) or not req.get("contents"):
            return None
        out = []
        system = (req.get("config") or {}).get("system_instruction")
        if isinstance(system, dict):  # a Content
            system = "\n".join(str(p.get("text", "")) for p in system.get("parts") or [] if isinstance(p, dict))
        if system:
            out.append({"role": "system", "parts": [{"type": "text", "content": str(system)}]})
        return out + [_adk_content(c, f"span {sid}.{_ADK_REQUEST}.contents[{i}]") for i, c in enumerate(req["contents"])]
    resp = _json_attr(a, _ADK_RESPONSE, sid)
    if not isinstance(resp, dict) or not resp.get("content"):
        return None
    return [_adk_content(resp["content"], f"span {sid}.{_ADK_RESPONSE}.content")]


def _adk_tools(a: dict[str, Any], sid: str) -> list[dict[str, Any]]:
    req = _json_attr(a, _ADK_REQUEST, sid) if isinstance(a.get(_ADK_REQUEST), str) else None
    if not isinstance(req, dict):
        return []
    decls = [d for t in (req.get("config") or {}).get("tools") or [] if isinstance(t, dict)
             for d in t.get("function_declarations") or []]
    return tools_to_openai([{k: d[k] for k in ("name", "description", "parameters") if d.get(k) is not None}
                            for d in decls if isinstance(d, dict)])


def _arguments(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return {} if v is None else v


def _legacy_text(v: Any) -> str:
    """An OpenLLMetry `.content`: a string, or (for a list of content parts) that list as a JSON string."""
    if isinstance(v, str) and v.lstrip().startswith("["):
        try:
            parts = json.loads(v)
        except json.JSONDecodeError:
            return v
        if isinstance(parts, list) and parts and all(isinstance(p, dict) and "type" in p for p in parts):
            return "\n".join(str(p.get("text", p.get("content", ""))) if p.get("type") == "text"
                             else f"[{p.get('type')}]" for p in parts)
        return v
    return "" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _legacy_messages(a: dict[str, Any], which: str) -> list[dict[str, Any]] | None:
    """The older OpenLLMetry / traceloop attributes `gen_ai.{prompt|completion}.N.{role, content,
    tool_call_id, finish_reason, tool_calls.M.{id, name, arguments}}` as semantic-convention messages
    (role + parts), or None when the span has none."""
    fields: dict[int, dict[str, Any]] = {}
    for k, v in a.items():
        m = _LEGACY.fullmatch(k)
        if m and m.group(1) == which:
            fields.setdefault(int(m.group(2)), {})[m.group(3)] = v
    if not fields:
        return None
    out = []
    for n in sorted(fields):
        f = fields[n]
        role = str(f.get("role") or ("assistant" if which == "completion" else "user"))
        role = _LEGACY_ROLES.get(role, role)
        if role == "tool":
            out.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": f.get("tool_call_id"),
                                                   "response": _legacy_text(f.get("content"))}]})
            continue
        parts: list[dict[str, Any]] = []
        text = _legacy_text(f.get("content"))
        if text:
            parts.append({"type": "text", "content": text})
        calls: dict[int, dict[str, Any]] = {}
        for k, v in f.items():
            m = _LEGACY_CALL.fullmatch(k)
            if m:
                calls.setdefault(int(m.group(1)), {})[m.group(2)] = v
        if f.get("function_call.name"):  # the pre-tools OpenAI function_call
            calls[-1] = {"name": f["function_call.name"], "arguments": f.get("function_call.arguments")}
        for j in sorted(calls):
            c = calls[j]
            parts.append({"type": "tool_call", "id": c.get("id"), "name": c.get("name"),
                          "arguments": _arguments(c.get("arguments"))})
        msg: dict[str, Any] = {"role": role, "parts": parts}
        if f.get("finish_reason"):
            msg["finish_reason"] = f["finish_reason"]
        out.append(msg)
    return out


_LEGACY_FN = re.compile(r"llm\.request\.functions\.(\d+)\.(name|description|parameters)")


def _legacy_tools(a: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenLLMetry's `llm.request.functions.N.{name, description, parameters}` as OpenAI tools."""
    fns: dict[int, dict[str, Any]] = {}
    for k, v in a.items():
        m = _LEGACY_FN.fullmatch(k)
        if m:
            fns.setdefault(int(m.group(1)), {})[m.group(2)] = _arguments(v) if m.group(2) == "parameters" else v
    return tools_to_openai([fns[n] for n in sorted(fns)])


def _raw_messages(a: dict[str, Any], which: str, sid: str) -> Any:
    key = "gen_ai.input.messages" if which == "prompt" else "gen_ai.output.messages"
    if key in a:
        return _json_attr(a, key, sid)
    legacy = _legacy_messages(a, which)
    return legacy if legacy is not None else _adk_messages(a, which, sid)


def _inputs(s: dict[str, Any], scratch: list[str]) -> list[dict[str, Any]]:
    """An inference span's input messages, `gen_ai.system_instructions` as the leading system message."""
    a, sid = s["_attrs"], str(s.get("spanId"))
    inputs = _messages(_raw_messages(a, "prompt", sid), f"span {sid}.gen_ai.input.messages", scratch)
    instructions = _json_attr(a, "gen_ai.system_instructions", sid)
    if instructions and not (inputs and inputs[0]["role"] == "system"):
        parts = instructions if isinstance(instructions, list) else [instructions]
        inputs.insert(0, {"role": "system", "content": _text_parts(parts), "tool_calls": []})
    return inputs


def _model(a: dict[str, Any]) -> str | None:
    """gen_ai.response.model, else gen_ai.request.model; a placeholder "unknown" (LangChain callbacks
    that do not know the model) gives way to LangChain's `ls_model_name` association property."""
    for k in ("gen_ai.response.model", "gen_ai.request.model"):
        if a.get(k) and str(a[k]).lower() != "unknown":
            return str(a[k])
    return next((str(v) for k, v in a.items() if k.endswith(".ls_model_name") and v), None)


def _tool_call_id(a: dict[str, Any]) -> Any:
    """gen_ai.tool.call.id, else the LangChain tool-run kwargs' tool_call_id inside the arguments
    (OpenLLMetry's LangChain instrumentation writes no call id)."""
    if a.get("gen_ai.tool.call.id") is not None:
        return a["gen_ai.tool.call.id"]
    args = a.get("gen_ai.tool.call.arguments")
    try:
        args = json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError:
        return None
    kwargs = args.get("kwargs") if isinstance(args, dict) else None
    return kwargs.get("tool_call_id") if isinstance(kwargs, dict) else None


def _innermost(spans: list[dict[str, Any]]) -> set[int]:
    """The inference spans that are no enclosing layer of another inference span of the group: a
    model call is often described by several nested spans (an agent framework's `call_llm` /
    `generate_content` around the client instrumentation's `openai.chat`); only the innermost is read."""
    by_id = {str(s.get("spanId")): s for s in spans if s.get("spanId") is not None}
    outer: set[int] = set()
    for s in spans:
        if not _is_inference(s["_attrs"]):
            continue
        seen, p = set(), s.get("parentSpanId")
        while p and str(p) in by_id and str(p) not in seen:
            seen.add(str(p))
            outer.add(id(by_id[str(p)]))
            p = by_id[str(p)].get("parentSpanId")
    return {id(s) for s in spans if _is_inference(s["_attrs"]) and id(s) not in outer}


def _agent_of(s: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """The agent a span runs in: the nearest enclosing (or own) invoke_agent span's gen_ai.agent.name
    (and that span), else the span's service.name."""
    seen, cur = set(), s
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        a = cur["_attrs"]
        if a.get("gen_ai.operation.name") == "invoke_agent":
            return f"agent {a.get('gen_ai.agent.name') or cur.get('spanId')}", cur
        p = cur.get("parentSpanId")
        cur = by_id.get(str(p)) if p else None
    return f"service {s['_resource'].get('service.name') or ''}", None


def _provider(spans: list[dict[str, Any]]) -> Any:
    return next((s["_attrs"].get("gen_ai.provider.name") or s["_attrs"].get("gen_ai.system")
                 for s in spans if s["_attrs"].get("gen_ai.provider.name") or s["_attrs"].get("gen_ai.system")), None)


def _agent_name(agent: str) -> str | None:
    return agent.split(" ", 1)[1] if agent.startswith("agent ") else None


class _Thread:
    """One agent's conversation within a group of spans."""

    def __init__(self, agent: str, agent_span: dict[str, Any] | None):
        self.agent, self.spans = agent, [agent_span] if agent_span else []
        self.messages: list[dict[str, Any]] = []
        self.models: list[str] = []
        self.tools: list[dict[str, Any]] = []

    def said(self) -> list[tuple]:
        return [_key(m) for m in self.messages if m["role"] != "system"]


def _thread_for(threads: list[_Thread], inputs: list[dict[str, Any]], agent: str) -> _Thread | None:
    """The thread an inference span continues: the one whose conversation so far (system messages
    aside) is the longest prefix of the span's input; else the latest of the same agent (a call
    given only the new turns); None: a new thread (another agent's own conversation, e.g. a
    sub-agent called as a tool, whose input does not repeat its caller's history)."""
    keys = [_key(m) for m in inputs if m["role"] != "system"]
    best, best_n = None, 0
    for t in threads:
        said = t.said()
        if said and len(said) > best_n and keys[:len(said)] == said:
            best, best_n = t, len(said)
    if best is not None:
        return best
    return next((t for t in reversed(threads) if t.agent == agent), None)


def conversations(spans: list[dict[str, Any]], path: Path, loc: str, key: str) -> list[dict[str, Any]]:
    """The group's trajectories: the first agent's conversation (episode `key`), then one per other
    agent whose model calls do not continue it (episode `key / agent <name>`)."""
    genai = [s for s in spans if any(k.startswith("gen_ai.") for k in s["_attrs"])]
    if not genai:
        raise MappingError("spans", f"no GenAI span (no gen_ai.* attribute) among {len(spans)} spans")
    ordered = sorted(spans, key=lambda s: (_nanos(s.get("startTimeUnixNano")) or 0, _nanos(s.get("endTimeUnixNano")) or 0))
    by_id = {str(s.get("spanId")): s for s in spans if s.get("spanId") is not None}
    innermost = _innermost(spans)
    threads: list[_Thread] = []
    agents: list[str] = []
    tool_spans: list[dict[str, Any]] = []
    layered = 0
    for s in ordered:
        a, sid = s["_attrs"], str(s.get("spanId"))
        if a.get("gen_ai.agent.name"):
            agents.append(str(a["gen_ai.agent.name"]))
        if a.get("gen_ai.operation.name") == "execute_tool":
            tool_spans.append(s)
            continue
        if not _is_inference(a):
            continue
        if id(s) not in innermost:
            layered += 1
            continue
        scratch: list[str] = []
        inputs = _inputs(s, scratch)
        agent, agent_span = _agent_of(s, by_id)
        t = _thread_for(threads, inputs, agent)
        if t is None:
            t = _Thread(agent, agent_span)
            threads.append(t)
        t.spans.append(s)
        if not t.tools and a.get("gen_ai.tool.definitions") is not None:
            t.tools = tools_to_openai(_json_attr(a, "gen_ai.tool.definitions", sid))
        if not t.tools:
            t.tools = _legacy_tools(a) or _adk_tools(a, sid)
        model = _model(a)
        if model:
            t.models.append(model)
        merge_history(t.messages, inputs)
        outputs = _messages(_raw_messages(a, "completion", sid), f"span {sid}.gen_ai.output.messages", scratch)
        start, end = _nanos(s.get("startTimeUnixNano")), _nanos(s.get("endTimeUnixNano"))
        if outputs and start is not None and end is not None and end >= start:
            outputs[0]["duration_s"] = (end - start) / 1e9
        t.messages.extend(outputs)
    threads = [t for t in threads if t.messages]
    if not threads:
        raise MappingError("gen_ai.input.messages", f"{len(genai)} GenAI spans but no message content "
                           "(content capture is opt-in: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="
                           "span_only or span_and_event; span events are read, but event_only writes it to the "
                           "OpenTelemetry logs signal, which is not a trace export)")
    # execute_tool results for calls no message answers, in the thread that made the call
    owner = {c["id"]: t for t in threads for m in t.messages for c in m.get("tool_calls") or [] if c.get("id")}
    unpaired = []
    for s in tool_spans:
        a = s["_attrs"]
        call_id = _tool_call_id(a)
        t = owner.get(call_id) if call_id is not None else None
        if t is None:
            unpaired.append({k: a.get(f"gen_ai.tool.{k}") for k in ("name", "call.id", "call.arguments", "call.result")})
            continue
        t.spans.append(s)
        if any(m["role"] == "tool" and m.get("tool_call_id") == call_id for m in t.messages):
            continue
        result = a.get("gen_ai.tool.call.result", a.get("gcp.vertex.agent.tool_response"))
        status = (s.get("status") or {})
        content = (_response_text(result) if result is not None
                   else f"[error] {status.get('message') or a.get('error.type') or 'no result recorded'}")
        msgs = t.messages
        at = max(i for i, m in enumerate(msgs) if any(c.get("id") == call_id for c in m.get("tool_calls") or []))
        while at + 1 < len(msgs) and msgs[at + 1]["role"] == "tool":
            at += 1
        msgs.insert(at + 1, {"role": "tool", "content": content, "tool_call_id": call_id})
    provider = _provider(genai)
    keys = [key] + [f"{key} / {t.agent}" for t in threads[1:]]
    for i in range(1, len(keys)):  # two threads of one agent name: number them
        if keys.index(keys[i]) < i:
            keys[i] = f"{keys[i]} #{i + 1}"
    records = []
    for n, (t, k) in enumerate(zip(threads, keys)):
        messages = t.messages
        names = {c["id"]: c["name"] for m in messages for c in m.get("tool_calls") or [] if c.get("id")}
        reasoning: dict[str, str] = {}
        for i, m in enumerate(messages):
            if m["role"] == "tool" and not m.get("name"):
                m["name"] = names.get(m.get("tool_call_id") or "")
            r = m.pop("_reasoning", None)
            if r:
                reasoning[str(i)] = r
        timed = spans if n == 0 else t.spans  # the first thread spans the whole group
        starts = [x for x in (_nanos(s.get("startTimeUnixNano")) for s in timed) if x]
        ends = [x for x in (_nanos(s.get("endTimeUnixNano")) for s in timed) if x]
        if n == 0:  # the group's agent names, but a sub-agent's own
            subs = {_agent_name(x.agent) for x in threads[1:]} - {_agent_name(t.agent), None}
            thread_agents = [x for x in agents if x not in subs]
        else:
            thread_agents = [x for x in [_agent_name(t.agent)] if x]
        resource = next((s["_resource"] for s in t.spans if _is_inference(s["_attrs"])), genai[0]["_resource"])
        meta: dict[str, Any] = {"group": key, "trace_ids": sorted({str(s.get("traceId")) for s in timed}),
                                "spans": len(timed), "genai_spans": len(genai), "service": resource.get("service.name"),
                                "agents": sorted(set(thread_agents)) or None,
                                "provider": _provider([x for x in t.spans if _is_inference(x["_attrs"])]) or provider}
        if t.tools:
            meta["tools"] = t.tools
        if reasoning:
            meta["reasoning"] = reasoning
        if n == 0 and unpaired:
            meta["unpaired_tool_spans"] = unpaired
        if n == 0 and layered:
            meta["layered_inference_spans"] = layered  # enclosing spans of a model call, not read
        if n == 0 and len(threads) > 1:
            meta["sub_agents"] = keys[1:]
        if n:
            meta["parent_episode"] = key
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        category = thread_agents[0] if thread_agents else str(resource.get("service.name") or "")
        records.append({"episode_id": k, "task_id": "otel/" + stable_id(first_user), "suite": "",
                        "category": category, "policy": t.models[-1] if t.models else "", "source_format": NAME,
                        "started_at": min(starts) / 1e9 if starts else None,
                        "ended_at": max(ends) / 1e9 if ends else None,
                        "messages": messages, "outcome": {}, "metadata": meta})
    return records


def conversation(spans: list[dict[str, Any]], path: Path, loc: str, key: str) -> dict[str, Any]:
    """The group's first (main) trajectory."""
    return conversations(spans, path, loc, key)[0]


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
        rec = mapped(key, conversations, members, path, key, key)
        if rec.data is None:
            yield rec
            continue
        for data in rec.data:
            yield Record(data["episode_id"], data=data)


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
    only joins the chain that made its call id. The chain keeps its first trace's key. A conversation
    group (named by gen_ai.conversation.id) is a chain from the start: in a file read while the agent
    works, a later trace of it may not carry the id yet (the span naming it ends last)."""
    out: dict[str, list[dict[str, Any]]] = {k: v for k, v in groups.items() if not k.startswith("trace ")}
    by_prefix: dict[tuple, list[str]] = {}  # the message keys of a chain so far -> chains there
    said: dict[str, tuple] = {}
    calls: dict[str, str] = {}  # tool call id -> the chain that made it
    traces = sorted(((k, v) for k, v in groups.items() if k.startswith("trace ")), key=lambda kv: _start(kv[1]))
    for key in list(out) if traces else ():
        # a conversation named by its id is a chain too: a trace of it whose spans naming the id are
        # not in this file yet (a live log read while the agent works) joins it the same way
        try:
            record = conversation(out[key], path, key, key)
        except (MappingError, KeyError, TypeError, ValueError, AttributeError, IndexError):
            continue
        said[key] = tuple(_key(m) for m in record["messages"])
        by_prefix.setdefault(said[key], []).append(key)
        calls.update({c["id"]: key for m in record["messages"] for c in m.get("tool_calls") or [] if c.get("id")})
    for key, members in traces:
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
