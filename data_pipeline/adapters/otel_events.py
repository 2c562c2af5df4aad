"""GenAI message content carried by span events rather than span attributes, folded into the span's
attributes so that the otel-genai adapter reads it as it reads attributes. Instrumentations write it
three ways (each seen from a real library, see tests/fixtures/samples/otel-genai/):

- the current conventions' `gen_ai.client.inference.operation.details` event, whose attributes are
  `gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions` /
  `gen_ai.tool.definitions` (Strands Agents with OTEL_SEMCONV_STABILITY_OPT_IN=
  gen_ai_latest_experimental writes one event per attribute; lists given twice are concatenated);
- the v1.28-1.36 per-message events: `gen_ai.system.message` / `gen_ai.user.message` /
  `gen_ai.assistant.message` / `gen_ai.tool.message` (input, in order) and `gen_ai.choice` (output),
  each with `content` (text, or a JSON list of content blocks), `tool_calls` (OpenAI shape), `id`
  (a tool message's call id), `message` and `finish_reason` (a choice);
- the v1.27 `gen_ai.content.prompt` / `gen_ai.content.completion` events with `gen_ai.prompt` /
  `gen_ai.completion`: a JSON list of messages, one message, or plain text.

Content blocks of every provider shape are read: text (`{"type": "text"}` or Bedrock's `{"text"}`),
tool calls (`{"toolUse": {toolUseId, name, input}}`, Anthropic's `{"type": "tool_use"}`, the
conventions' `tool_call` part), tool results (`{"toolResult": {toolUseId, content, status}}`,
Anthropic's `{"type": "tool_result"}`, `tool_call_response`), reasoning; anything else (images,
documents) becomes a `[kind]` placeholder. Attributes the span already has are never replaced.

An `execute_tool` span's events are not messages: Strands' `gen_ai.tool.message` there holds the
call's arguments and its `gen_ai.choice` the result, which fill `gen_ai.tool.call.arguments` /
`gen_ai.tool.call.result` when the span lacks them."""
from __future__ import annotations

import json
from typing import Any, Iterable

DETAILS = "gen_ai.client.inference.operation.details"
_DETAIL_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                "gen_ai.tool.definitions")
_INPUT_EVENTS = {f"gen_ai.{r}.message": r for r in ("system", "user", "assistant", "tool")}
_ROLES = {"developer": "system", "human": "user", "ai": "assistant", "model": "assistant", "function": "tool"}


def fold_events(attrs: dict[str, Any], events: Iterable[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """`attrs` with the GenAI content of the span's events (name, attributes) added."""
    events = [(name, ev) for name, ev in events if isinstance(name, str) and isinstance(ev, dict)]
    if not events:
        return attrs
    if attrs.get("gen_ai.operation.name") == "execute_tool":
        return _tool_span(attrs, events)
    out = dict(attrs)
    details: dict[str, Any] = {}
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for name, ev in events:
        if name == DETAILS:
            for key in _DETAIL_KEYS:
                if key in ev:
                    value = _loads(ev[key])
                    prior = details.get(key)
                    details[key] = prior + value if isinstance(prior, list) and isinstance(value, list) else (
                        value if prior is None else prior)
        elif name in _INPUT_EVENTS:
            inputs.append(_event_message(_INPUT_EVENTS[name], ev))
        elif name == "gen_ai.choice":
            outputs.append(_choice(ev))
        elif name == "gen_ai.content.prompt" and "gen_ai.prompt" in ev:
            inputs += _loose_messages(ev["gen_ai.prompt"], "user")
        elif name == "gen_ai.content.completion" and "gen_ai.completion" in ev:
            outputs += _loose_messages(ev["gen_ai.completion"], "assistant")
    for key, value in details.items():
        out.setdefault(key, value)
    # an event without content (capture off: a choice with only its finish_reason) is no message
    inputs, outputs = [m for m in inputs if m["parts"]], [m for m in outputs if m["parts"]]
    if inputs and "gen_ai.input.messages" not in out:
        out["gen_ai.input.messages"] = inputs
    if outputs and "gen_ai.output.messages" not in out:
        out["gen_ai.output.messages"] = outputs
    return out


def _tool_span(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    out = dict(attrs)
    for name, ev in events:
        if name == "gen_ai.tool.message" and "content" in ev:
            out.setdefault("gen_ai.tool.call.arguments", ev["content"])
        elif name == "gen_ai.choice" and "message" in ev:
            out.setdefault("gen_ai.tool.call.result", _result_text(_loads(ev["message"])))
    return out


def _loads(v: Any) -> Any:
    """A JSON-encoded attribute value as its structure; text that is not JSON stays text."""
    if isinstance(v, str) and v.lstrip()[:1] in ("[", "{", '"'):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _event_message(role: str, ev: dict[str, Any]) -> dict[str, Any]:
    parts = _parts(_loads(ev.get("content")))
    parts += _openai_calls(_loads(ev.get("tool_calls")))
    if role == "tool" and not any(p["type"] == "tool_call_response" for p in parts):
        text = "\n".join(p["content"] for p in parts if p["type"] == "text")
        parts = [{"type": "tool_call_response", "id": ev.get("id"), "response": text}]
    return {"role": role, "parts": parts}


def _choice(ev: dict[str, Any]) -> dict[str, Any]:
    message = _loads(ev.get("message"))
    if isinstance(message, dict) and ("content" in message or "tool_calls" in message or "role" in message):
        msg = _loose_message(message, "assistant")
    else:
        msg = {"role": "assistant", "parts": _parts(message)}
    msg["parts"] += _openai_calls(_loads(ev.get("tool_calls")))
    if ev.get("finish_reason") is not None:
        msg["finish_reason"] = ev["finish_reason"]
    return msg


def _loose_messages(v: Any, role: str) -> list[dict[str, Any]]:
    """A JSON list of messages, one message ({role, content, tool_calls}), or plain text."""
    v = _loads(v)
    if isinstance(v, list) and v and all(isinstance(m, dict) and "role" in m for m in v):
        return [_loose_message(m, role) for m in v]
    if isinstance(v, dict) and "role" in v:
        return [_loose_message(v, role)]
    return [{"role": role, "parts": _parts(v)}]


def _loose_message(m: dict[str, Any], role: str) -> dict[str, Any]:
    """An OpenAI / Anthropic / Bedrock style message as a conventions message (role + parts)."""
    r = str(m.get("role") or role)
    r = _ROLES.get(r, r)
    parts = _parts(m.get("content")) + _openai_calls(m.get("tool_calls"))
    call_id = m.get("tool_call_id", m.get("id"))
    if r == "tool" and not any(p["type"] == "tool_call_response" for p in parts):
        text = "\n".join(p["content"] for p in parts if p["type"] == "text")
        parts = [{"type": "tool_call_response", "id": call_id, "response": text}]
    msg: dict[str, Any] = {"role": r, "parts": parts}
    if m.get("finish_reason") is not None:
        msg["finish_reason"] = m["finish_reason"]
    return msg


def _openai_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for c in calls if isinstance(calls, list) else []:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.append({"type": "tool_call", "id": c.get("id"), "name": fn["name"],
                        "arguments": _loads(fn.get("arguments"))})
    return out


def _parts(content: Any) -> list[dict[str, Any]]:
    """Content (text, or a list of content blocks of any provider's shape) as conventions parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    blocks = content if isinstance(content, list) else [content]
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, str):
            parts.append({"type": "text", "content": b})
        elif not isinstance(b, dict):
            parts.append({"type": "text", "content": json.dumps(b)})
        elif b.get("type") in ("tool_call", "tool_call_response", "reasoning"):
            parts.append(b)
        elif b.get("type") == "text" or (set(b) == {"text"} and isinstance(b["text"], str)):
            parts.append({"type": "text", "content": str(b.get("text", b.get("content", "")))})
        elif isinstance(b.get("toolUse"), dict):
            u = b["toolUse"]
            parts.append({"type": "tool_call", "id": u.get("toolUseId"), "name": u.get("name"),
                          "arguments": _loads(u.get("input"))})
        elif b.get("type") == "tool_use":
            parts.append({"type": "tool_call", "id": b.get("id"), "name": b.get("name"),
                          "arguments": _loads(b.get("input"))})
        elif isinstance(b.get("toolResult"), dict):
            r = b["toolResult"]
            parts.append({"type": "tool_call_response", "id": r.get("toolUseId"),
                          "response": _result_text(r.get("content"))})
        elif b.get("type") == "tool_result":
            parts.append({"type": "tool_call_response", "id": b.get("tool_use_id"),
                          "response": _result_text(b.get("content"))})
        elif isinstance(b.get("reasoningContent"), dict):
            text = (b["reasoningContent"].get("reasoningText") or {}).get("text", "")
            parts.append({"type": "reasoning", "content": text})
        elif b.get("type") in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": b.get("thinking", b.get("content", ""))})
        else:  # image, document, video, cache points ...
            kind = b.get("type") or next(iter(b), "part")
            parts.append({"type": str(kind)})
    return parts


def _result_text(content: Any) -> str:
    """A tool result's content: text, or blocks ({"text"}, {"json"}, {"type": "text"}) as their text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for b in content:
            if isinstance(b, dict) and isinstance(b.get("text"), str):
                out.append(b["text"])
            elif isinstance(b, dict) and "json" in b:
                out.append(json.dumps(b["json"], ensure_ascii=False))
            else:
                out.append(b if isinstance(b, str) else json.dumps(b, ensure_ascii=False))
        return "\n".join(out)
    return "" if content is None else json.dumps(content, ensure_ascii=False)
