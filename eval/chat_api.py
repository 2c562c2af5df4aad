"""The OpenAI chat-completions wire format for `flywheel serve` (eval/serve.py), apart from the
web server: reading and checking a request, the model family's tool-call format, turning a
generated turn back into an OpenAI message (whole or as stream deltas), and the canonical
trajectory a served conversation is logged as.

Every request field this server accepts is honoured; any other field, or a value it cannot
honour, is a RequestError (HTTP 400) that names the field. A model name the server does not
serve is a NotFound (HTTP 404) listing the served names.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from eval import json_grammar as jg
from eval.decoding import Ban, Sampling

ROLES = ("system", "user", "assistant", "tool")
FIELDS = ("model", "messages", "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "max_tokens",
          "max_completion_tokens", "n", "stop", "seed", "logprobs", "top_logprobs", "response_format", "stream",
          "stream_options", "presence_penalty", "frequency_penalty", "logit_bias", "user", "metadata", "store")
MAX_N = 16
PROBE = "probe_tool_x"


class RequestError(ValueError):
    """A request this server cannot answer as asked: HTTP 400 with an OpenAI-style error body."""
    status = 400
    code: str | None = None

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param,
                          "code": self.code}}


class NotFound(RequestError):
    status = 404
    code = "model_not_found"


# ---- the tool-call format of a model family ------------------------------------------------------
@dataclass(frozen=True)
class ToolFormat:
    """How the chat template prints one tool call: `head` NAME_JSON `mid` ARGS_JSON `tail`, e.g.
    '<|tool_call|>{"name": ' "add" ', "arguments": ' {...} '}<|/tool_call|>'. `open` / `close`
    are the marks around a call (close may be empty: the call is the whole turn)."""
    open: str
    close: str
    head: str
    mid: str
    tail: str
    args_key: str = "arguments"
    source: str = "template"

    @classmethod
    def of(cls, tokenizer) -> "ToolFormat | None":
        """Read from the chat template by rendering a probe call; else the family's marks when the
        vocabulary has them (Hermes / Qwen `<tool_call>`, the tiny model's `<|tool_call|>`); None
        when the model has no tool-call format."""
        try:
            fmt = _from_template(tokenizer)
        except Exception:  # a template that cannot render a tool call at all
            fmt = None
        if fmt is not None:
            return fmt
        vocab = set(getattr(tokenizer, "get_vocab", dict)())
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        # Hermes' convention for ChatML models (Qwen, Hermes, SmolLM2) when the template prints no tool calls
        if "<tool_call>" in vocab or "<|im_start|>" in template:
            return cls("<tool_call>\n", "\n</tool_call>", '<tool_call>\n{"name": ', ', "arguments": ',
                       "}\n</tool_call>", source="hermes marks")
        if "<|tool_call|>" in vocab:
            return cls("<|tool_call|>", "<|/tool_call|>", '<|tool_call|>{"name": ', ', "arguments": ',
                       "}<|/tool_call|>", source="tiny marks")
        return None

    def calls_and_content(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """A generated turn -> (content, [{"name", "arguments"}]); a malformed call stays content."""
        start, end = self.open.strip(), self.close.strip()
        if not start:
            call = _call(text.strip(), self.args_key)
            return ("", [call]) if call else (text, [])
        calls, kept, at = [], [], 0
        pattern = re.compile(re.escape(start) + r"(.*?)" + (re.escape(end) if end else r"\Z"), re.S)
        for m in pattern.finditer(text):
            call = _call(m.group(1).strip(), self.args_key)
            if call is None:
                continue
            kept.append(text[at:m.start()])
            at = m.end()
            calls.append(call)
        kept.append(text[at:])
        return "".join(kept), calls


def _call(body: str, args_key: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters")))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return {"name": obj["name"], "arguments": args if isinstance(args, dict) else {}}


def _from_template(tokenizer) -> ToolFormat | None:
    args = {"k": 1}
    ask = [{"role": "user", "content": "q"}]
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": PROBE, "arguments": args}}]}
    tools = [{"type": "function", "function": {"name": PROBE, "parameters": {"type": "object"}}}]
    full = tokenizer.apply_chat_template(ask + [call], tools=tools, tokenize=False)
    prompt = tokenizer.apply_chat_template(ask, tools=tools, tokenize=False, add_generation_prompt=True)
    name_at = full.find(json.dumps(PROBE), len(prompt) if full.startswith(prompt) else 0)
    if name_at < 0:
        return None
    brace = full.rfind("{", 0, name_at)
    try:
        obj, end = json.JSONDecoder().raw_decode(full, brace)
    except json.JSONDecodeError:
        return None
    key = next((k for k in ("arguments", "parameters") if obj.get(k) == args), None)
    if obj.get("name") != PROBE or key is None:
        return None
    turn_start = len(prompt) if full.startswith(prompt) else full.rfind("\n", 0, brace) + 1
    before = full[turn_start:brace]
    m = re.search(r"\S+\s*\Z", before)
    opening = m.group(0) if m else ""
    m = re.match(r"\s*<[^<>\s]+>", full[end:]) if opening else None  # the first tag after the call
    closing = m.group(0) if m else ""
    obj_text = full[brace:end]
    k = obj_text.find(json.dumps(PROBE))
    a = re.search(r'\{\s*"k"\s*:\s*1\s*\}', obj_text[k:])
    if a is None:
        return None
    return ToolFormat(open=opening, close=closing, head=opening + obj_text[:k],
                      mid=obj_text[k + len(json.dumps(PROBE)):k + a.start()], tail=obj_text[k + a.end():] + closing,
                      args_key=key)


def split_reply(text: str, fmt: ToolFormat | None = None) -> tuple[str, list[dict[str, Any]]]:
    """A generated turn -> (content, OpenAI tool_calls); malformed tool-call bodies stay content.
    Without a format: the tiny template's `<|tool_call|>` marks."""
    fmt = fmt or TINY
    content, calls = fmt.calls_and_content(text)
    return content.strip(), [openai_call(c, k) for k, c in enumerate(calls)]


def openai_call(call: dict[str, Any], k: int, call_id: str | None = None) -> dict[str, Any]:
    return {"id": call_id or f"call_{k}_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments") or {})}}


TINY = ToolFormat("<|tool_call|>", "<|/tool_call|>", '<|tool_call|>{"name": ', ', "arguments": ', "}<|/tool_call|>",
                  source="tiny marks")


def strip_specials(text: str, specials: list[str]) -> str:
    for s in specials:
        if s:
            text = text.replace(s, "")
    return text


class ReplyStream:
    """A turn's text as it is generated -> OpenAI stream deltas: content as it settles (never a
    special token, never the start of a tool-call mark), each tool call once it is complete (a
    delta with its id, type and name, then one with its arguments)."""

    def __init__(self, fmt: ToolFormat | None, specials: list[str], parallel: bool = True):
        self.fmt, self.specials, self.parallel = fmt, specials, parallel
        self.open = fmt.open.strip() if fmt else ""
        self.close = fmt.close.strip() if fmt else ""
        self.buf, self.pos, self.in_call = "", 0, False
        self.calls: list[dict[str, Any]] = []
        self.started = False

    def feed(self, delta: str, final: bool = False) -> list[dict[str, Any]]:
        self.buf += delta
        out: list[dict[str, Any]] = []
        if self.fmt is not None and not self.open:  # the whole turn is the call: wait for its end
            if final:
                content, calls = self.fmt.calls_and_content(self.buf)
                out += self._content(content) + [d for c in calls for d in self._call(c)]
            return out
        while True:
            if self.in_call:
                at = self.buf.find(self.close, self.pos) if self.close else -1
                if at < 0:
                    if final:  # an unfinished call: it stays text
                        out += self._content(self.open + self.buf[self.pos:])
                        self.pos = len(self.buf)
                    return out
                call = _call(self.buf[self.pos:at].strip(), self.fmt.args_key)
                if call is None:
                    out += self._content(self.open + self.buf[self.pos:at + len(self.close)])
                else:
                    out += self._call(call)
                self.pos, self.in_call = at + len(self.close), False
                continue
            at = self.buf.find(self.open, self.pos) if self.open else -1
            if at >= 0:
                out += self._content(self.buf[self.pos:at])
                self.pos, self.in_call = at + len(self.open), True
                continue
            upto = len(self.buf)
            if not final and self.open:  # hold back what may be the start of the mark
                for k in range(min(len(self.open) - 1, len(self.buf) - self.pos), 0, -1):
                    if self.open.startswith(self.buf[-k:]):
                        upto -= k
                        break
            out += self._content(self.buf[self.pos:upto])
            self.pos = upto
            return out

    def _content(self, text: str) -> list[dict[str, Any]]:
        text = strip_specials(text, self.specials)
        if not self.started:
            text = text.lstrip()
        if not text:
            return []
        self.started = True
        return [{"content": text}]

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        if self.calls and not self.parallel:
            return []
        k = len(self.calls)
        oc = openai_call(call, k)
        self.calls.append(oc)
        return [{"tool_calls": [{"index": k, "id": oc["id"], "type": "function",
                                 "function": {"name": call["name"], "arguments": ""}}]},
                {"tool_calls": [{"index": k, "function": {"arguments": oc["function"]["arguments"]}}]}]


# ---- the request ---------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: str  # none | auto | required | function:NAME
    parallel_tool_calls: bool
    sampling: Sampling
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    response_format: tuple[str, Any] | None  # ("json_object", None) | ("json_schema", schema)
    model: str | None
    log_metadata: dict[str, Any] = field(default_factory=dict)


def _num(body, key, lo, hi, default, integer=False):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and int(v) != v):
        raise RequestError(f"'{key}' must be {'an integer' if integer else 'a number'}, got {v!r}", key)
    if not lo <= v <= hi:
        raise RequestError(f"'{key}' must lie in [{lo}, {hi}], got {v}", key)
    return int(v) if integer else float(v)


def check_fields(body: Any, fields: tuple[str, ...]) -> None:
    """A request body is a JSON object of known fields: a RequestError naming the first unknown one."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise RequestError(f"unsupported field(s) {', '.join(unknown)}: this server does not honour them; leave them "
                           f"out (accepted: {', '.join(fields)})", unknown[0])


_KINDS = {bool: "true or false", str: "a string", dict: "an object"}


def optional(body: dict[str, Any], field: str, kind: type) -> Any:
    """`body[field]`, None when absent; a RequestError naming the field when it is not `kind`
    (bool, str or dict)."""
    value = body.get(field)
    if value is not None and not isinstance(value, kind):
        raise RequestError(f"'{field}' must be {_KINDS[kind]}", field)
    return value


def parse_request(body: Any, served: list[str]) -> ChatRequest:
    """Check an OpenAI chat-completions request body; every field is honoured or refused here."""
    check_fields(body, FIELDS)
    model = body.get("model")
    if model is not None and model not in served:
        raise NotFound(f"model {model!r} is not served here; served: {', '.join(served)}", "model")
    if body.get("store"):
        raise RequestError("'store': this server keeps no completions; start it with --log-dir to log them", "store")
    messages = chat_messages(body)
    tools = body.get("tools") or None
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type", "function") == "function"
                                                  and isinstance((t.get("function") or {}).get("name"), str)
                                                  for t in tools):
            raise RequestError("'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\": ...}}",
                               "tools")
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = optional(body, "parallel_tool_calls", bool)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    logprobs = optional(body, "logprobs", bool)
    top = _num(body, "top_logprobs", 0, 20, None, integer=True)
    if top is not None and not logprobs:
        raise RequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    max_tokens = _num(body, "max_completion_tokens", 1, 10**9, None, integer=True)
    if max_tokens is None:
        max_tokens = _num(body, "max_tokens", 1, 10**9, None, integer=True)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("'seed' must be an integer", "seed")
    bias = body.get("logit_bias") or {}
    try:
        bias = {int(k): float(v) for k, v in bias.items()}
    except (AttributeError, TypeError, ValueError):
        raise RequestError("'logit_bias' must map token ids to numbers in [-100, 100]", "logit_bias") from None
    if any(not -100 <= v <= 100 for v in bias.values()):
        raise RequestError("'logit_bias' values must lie in [-100, 100]", "logit_bias")
    stream = optional(body, "stream", bool)
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise RequestError("'stream_options' takes only include_usage", "stream_options")
    if opts and not stream:
        raise RequestError("'stream_options' needs 'stream': true", "stream_options")
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise RequestError("'metadata' must be an object", "metadata")
    response_format = _response_format(body.get("response_format"))
    if response_format and tools and tool_choice != "none":
        raise RequestError("'response_format' with 'tools': a reply cannot be both a JSON document and a tool call; "
                           "set tool_choice to none or leave response_format out", "response_format")
    sampling = Sampling(temperature=_num(body, "temperature", 0.0, 2.0, 1.0), top_p=_num(body, "top_p", 0.0, 1.0, 1.0),
                        stop=tuple(stop), seed=seed, top_logprobs=(top or 0) if logprobs else None,
                        presence_penalty=_num(body, "presence_penalty", -2.0, 2.0, 0.0),
                        frequency_penalty=_num(body, "frequency_penalty", -2.0, 2.0, 0.0), logit_bias=bias)
    if sampling.top_p == 0:
        raise RequestError("'top_p' must be above 0", "top_p")
    log_meta = {k: v for k, v in (("user", body.get("user")), ("metadata", meta or None)) if v is not None}
    return ChatRequest(messages=messages, tools=tools, tool_choice=tool_choice,
                       parallel_tool_calls=parallel is not False, sampling=sampling, max_tokens=max_tokens,
                       n=_num(body, "n", 1, MAX_N, 1, integer=True), stream=bool(stream),
                       include_usage=bool(opts.get("include_usage")), logprobs=bool(logprobs),
                       response_format=response_format, model=model, log_metadata=log_meta)


def _tool_choice(choice: Any, tools) -> str:
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise RequestError(f"'tool_choice' must be none, auto, required or a named function, got {choice!r}",
                               "tool_choice")
        if choice != "none" and not tools:
            raise RequestError(f"'tool_choice': {choice} needs 'tools'", "tool_choice")
        return choice
    name = ((choice or {}).get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise RequestError("'tool_choice' as an object is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                           "tool_choice")
    names = [t["function"]["name"] for t in tools or []]
    if name not in names:
        raise RequestError(f"'tool_choice' names {name!r}, which is not in 'tools' ({', '.join(names) or 'none'})",
                           "tool_choice")
    return "function:" + name


def _response_format(rf: Any) -> tuple[str, Any] | None:
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ("json_object", None)
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise RequestError("'response_format.json_schema' must be {\"name\": ..., \"schema\": {...}}",
                               "response_format")
        schema = spec.get("schema") or {}
        try:
            jg.check_schema(schema, "response_format.json_schema.schema")
        except jg.SchemaUnsupported as e:
            raise RequestError(str(e), "response_format") from None
        return ("json_schema", schema or True)
    raise RequestError(f"'response_format.type' must be text, json_object or json_schema, got {kind!r}",
                       "response_format")


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI wire messages -> chat-template messages (tool-call arguments as objects)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    out = []
    for k, m in enumerate(messages):
        # `developer` is the OpenAI API's newer name for the system role (as the ingest adapter reads it)
        role = m.get("role") if isinstance(m, dict) else None
        role = "system" if role == "developer" else role
        if role not in ROLES:
            raise RequestError(f"messages[{k}]: needs 'role', one of {', '.join(ROLES)} or developer", "messages")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: text only
            for j, p in enumerate(content):
                if not isinstance(p, dict) or p.get("type", "text") != "text":
                    kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                    raise RequestError(f"messages[{k}].content[{j}]: only text parts are served, got {kind!r}",
                                       "messages")
            content = "".join(p.get("text", "") for p in content)
        msg = {"role": role, "content": content}
        calls = []
        for c in m.get("tool_calls") or []:
            f = c.get("function", c) if isinstance(c, dict) else {}
            args = f.get("arguments", {})
            try:
                args = json.loads(args) if isinstance(args, str) else args
            except json.JSONDecodeError:
                raise RequestError(f"messages[{k}].tool_calls: arguments are not JSON: {args!r}", "messages") from None
            calls.append({"id": c.get("id"), "name": f.get("name"), "arguments": args})
        if calls:
            msg["tool_calls"] = calls
        for key in ("tool_call_id", "name"):
            if m.get(key):
                msg[key] = m[key]
        out.append(msg)
    return out


def constraint_for(req: ChatRequest, fmt: ToolFormat | None):
    """The decoding constraint the request asks for (eval/json_grammar.py state, a Ban, or None)."""
    if req.response_format:
        kind, schema = req.response_format
        return jg.value_state(None if kind == "json_object" else schema)
    if not req.tools:
        return None
    if fmt is None:
        if req.tool_choice in ("auto", "none"):
            return None
        raise RequestError("'tool_choice': this model's chat template has no tool-call format to force; leave "
                           "tool_choice out or serve with --chat-template FILE that renders tool calls", "tool_choice")
    if req.tool_choice == "none":
        return Ban(fmt.open.strip()) if fmt.open.strip() else None
    if req.tool_choice == "auto":
        return None
    tools = {t["function"]["name"]: t["function"] for t in req.tools}
    names = list(tools) if req.tool_choice == "required" else [req.tool_choice.split(":", 1)[1]]
    schemas = {}
    for name in names:
        params = tools[name].get("parameters") or {"type": "object"}
        try:
            jg.check_schema(params)
            schemas[name] = params
        except jg.SchemaUnsupported:
            schemas[name] = {"type": "object"}  # still one JSON object; the schema's other rules are not forced
    return jg.tool_call_state(fmt.head, schemas, fmt.mid, fmt.tail)
