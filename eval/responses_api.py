"""The OpenAI Responses API wire format (`POST /v1/responses`) for `flywheel serve`, on top of the
chat-completions machinery (eval/chat_api.py, eval/serve.py): a Responses request is checked and
mapped to a chat-completions request, that is answered by the same decoder, and its result is
mapped back to a `response` object, or its stream chunks to the Responses stream events.

Every request field is honoured or refused with a RequestError (HTTP 400) naming it, as for
chat completions. The server keeps no state: `previous_response_id` is refused (send the whole
conversation as `input`), and `store` is accepted but nothing is stored (the response says
`"store": false`). `prompt_cache_key` is accepted and echoed: it only steers which cache a
request hits, and the answer never depends on a cache (this server keeps none). `client_metadata`
(what the Codex CLI sends about itself) is kept in the served log beside `metadata`.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, Iterator

from eval import json_grammar as jg
from eval.chat_api import RequestError, check_fields, optional

FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
          "temperature", "top_p", "text", "stream", "store", "previous_response_id", "metadata", "user", "include",
          "reasoning", "truncation", "top_logprobs", "prompt_cache_key", "client_metadata")
ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")
# a chat-completions field -> the Responses field it came from (for errors raised on the chat request)
FROM_CHAT = {"messages": "input", "max_completion_tokens": "max_output_tokens", "response_format": "text"}
LOGPROBS = "message.output_text.logprobs"
# what to turn off in the harness that sent a tool this server cannot run (the Codex CLI sends it)
HOSTED_TOOL_HINTS = {
    "web_search": " (a search this server cannot run; Codex CLI: -c web_search='\"disabled\"')",
}
NS_SEP = "."  # a namespace tool's function, as the model sees it: NAMESPACE.NAME


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- the request ---------------------------------------------------------------------------------
def to_chat(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Responses request -> (the chat-completions request answering it, the request fields a
    response object echoes). Raises RequestError naming the Responses field."""
    check_fields(body, FIELDS)
    if body.get("previous_response_id") is not None:
        raise RequestError("'previous_response_id': this server keeps no responses; send the whole conversation as "
                           "'input' (earlier output items included)", "previous_response_id")
    # the served model writes no reasoning items: what would be added to them (their encrypted content,
    # a summary) is nothing, but a reasoning effort cannot be honoured
    include = body.get("include") or []
    if not isinstance(include, list) or set(include) - {"reasoning.encrypted_content", LOGPROBS}:
        raise RequestError(f"'include': only {LOGPROBS} and reasoning.encrypted_content (there are no reasoning "
                           f"items) are served, got {include!r}", "include")
    if body.get("top_logprobs") is not None and LOGPROBS not in include:
        raise RequestError(f"'top_logprobs' needs 'include': [\"{LOGPROBS}\"]", "top_logprobs")
    reasoning = body.get("reasoning")
    if reasoning is not None and (not isinstance(reasoning, dict) or set(reasoning) - {"effort", "summary"}
                                  or reasoning.get("effort") is not None):
        raise RequestError("'reasoning': the served model does not reason: a reasoning effort cannot be honoured "
                           "(reasoning.summary is accepted; there is nothing to summarize)", "reasoning")
    if body.get("truncation") not in (None, "disabled"):
        raise RequestError("'truncation': only \"disabled\" is served (an input longer than the context is a 400); "
                           f"got {body['truncation']!r}", "truncation")
    optional(body, "store", bool)
    stream = optional(body, "stream", bool)
    cache_key = optional(body, "prompt_cache_key", str)
    client_meta = optional(body, "client_metadata", dict)

    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise RequestError("'instructions' must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    messages += input_messages(body.get("input"))
    tools = _tools(body.get("tools"))
    chat: dict[str, Any] = {"messages": messages}
    if tools:
        chat["tools"] = tools
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        chat["tool_choice"] = _tool_choice(tool_choice, tools)
    fmt = _text_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    for ours, theirs in (("model", "model"), ("parallel_tool_calls", "parallel_tool_calls"),
                         ("max_output_tokens", "max_completion_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("metadata", "metadata"), ("user", "user")):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    if client_meta:
        chat["metadata"] = {**(chat.get("metadata") or {}), "client_metadata": client_meta}
    if LOGPROBS in include:
        chat.update(logprobs=True, top_logprobs=body.get("top_logprobs") or 0)
    if stream:
        chat.update(stream=True, stream_options={"include_usage": True})
    echo = {"instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {}, "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": None, "prompt_cache_key": cache_key,
            "reasoning": {"effort": None, "summary": (reasoning or {}).get("summary")}, "store": False,
            "temperature": body.get("temperature", 1.0), "text": {"format": (body.get("text") or {}).get("format")
                                                                   or {"type": "text"}},
            "tool_choice": tool_choice if tool_choice is not None else ("auto" if tools else "none"),
            "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "top_logprobs": body.get("top_logprobs"),
            "user": body.get("user")}
    return chat, echo


def input_messages(items: Any) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) -> chat-completions messages: an assistant message and
    the function_call items after it are one assistant turn; a function_call_output is a tool message."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise RequestError("'input' must be a string or a non-empty list of items", "input")
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call_id -> the function's name
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"input[{k}]: an item must be an object, got {type(item).__name__}", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise RequestError(f"input[{k}]: a message needs 'role', one of {', '.join(ROLES)}", "input")
            out.append({"role": role, "content": _text(item.get("content"), f"input[{k}].content")})
        elif kind == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, str):
                raise RequestError(f"input[{k}]: a function_call item needs 'call_id', 'name' and 'arguments' "
                                   "(a JSON string)", "input")
            try:
                parsed = json.loads(args or "{}")
            except json.JSONDecodeError:
                raise RequestError(f"input[{k}].arguments are not JSON: {args!r}", "input") from None
            name = qualified(name, item)  # a namespace tool's function (Codex's sub-agents)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": parsed}}
            names[call_id] = name
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":  # the same turn: its text, then its calls
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise RequestError(f"input[{k}]: a function_call_output item needs 'call_id'", "input")
            msg = {"role": "tool", "tool_call_id": call_id,
                   "content": _text(item.get("output"), f"input[{k}].output")}
            if call_id in names:
                msg["name"] = names[call_id]
            out.append(msg)
        else:
            raise RequestError(f"input[{k}]: items of type {kind!r} are not served (message, function_call and "
                               "function_call_output are)", "input")
    return out


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RequestError(f"{where}: must be a string or a list of text parts", "input")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise RequestError(f"{where}[{j}]: only text parts ({', '.join(TEXT_PARTS[:2])}) are served, got {kind!r}",
                               "input")
        texts.append(part["text"])
    return "".join(texts)


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Responses tools -> chat tools: flat function tools ({type, name, description, parameters,
    strict}), and `namespace` tools ({type, name, description, tools: [function tools]}, how the Codex
    CLI groups its sub-agent tools), whose functions the model sees as `NAMESPACE.NAME`."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError("'tools' must be a list of function tools", "tools")
    out = []
    for k, t in enumerate(tools):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "namespace":
            ns, inner = t.get("name"), t.get("tools")
            if not isinstance(ns, str) or not ns or not isinstance(inner, list):
                raise RequestError(f"tools[{k}]: a namespace tool needs 'name' and 'tools' (function tools)", "tools")
            for j, f in enumerate(inner):
                if not isinstance(f, dict) or f.get("type") != "function":
                    got = f.get("type") if isinstance(f, dict) else type(f).__name__
                    raise RequestError(f"tools[{k}].tools[{j}]: only function tools are served in a namespace, "
                                       f"got {got!r}", "tools")
                out.append(_function_tool(f, f"tools[{k}].tools[{j}]", {"namespace": ns}))
            continue
        if kind != "function":
            hint = HOSTED_TOOL_HINTS.get(kind, "")
            raise RequestError(f"tools[{k}]: only function and namespace tools are served, got type {kind!r}{hint}",
                               "tools")
        out.append(_function_tool(t, f"tools[{k}]"))
    return out


def _function_tool(t: dict[str, Any], where: str, group: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(t.get("name"), str):
        raise RequestError(f"{where}: a function tool needs 'name'", "tools")
    extra = sorted(set(t) - {"type", "name", "description", "parameters", "strict"})
    if extra:
        raise RequestError(f"{where}: unsupported field(s) {', '.join(extra)}", "tools")
    fn = {"name": qualified(t["name"], group or {}), "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
    if t.get("description"):
        fn["description"] = t["description"]
    return {"type": "function", "function": fn}


def qualified(name: str, where: dict[str, Any]) -> str:
    """A function's name as the model sees it: NAMESPACE.NAME when `where` (a function_call item, a
    tool_choice) names its namespace; the inverse of split_name."""
    ns = where.get("namespace")
    return f"{ns}{NS_SEP}{name}" if isinstance(ns, str) else name


def split_name(name: str, tools: list[dict[str, Any]]) -> dict[str, str]:
    """A chat tool name -> the Responses call's `name` (and `namespace`, when it is a function of a
    namespace tool of this request)."""
    ns, sep, inner = name.partition(NS_SEP)
    if sep:
        for t in tools:
            if isinstance(t, dict) and t.get("type") == "namespace" and t.get("name") == ns and any(
                    isinstance(f, dict) and f.get("name") == inner for f in t.get("tools") or []):
                return {"namespace": ns, "name": inner}
    return {"name": name}


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if isinstance(choice, str):
        return choice  # none / auto / required: chat_api checks it (and that tools are given)
    name = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(name, str):
        name = qualified(name, choice)
    if not isinstance(name, str):
        raise RequestError("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"name\": ...}",
                           "tool_choice")
    names = [t["function"]["name"] for t in tools]
    if name not in names:
        raise RequestError(f"'tool_choice' names {name!r}, which is not in 'tools' ({', '.join(names) or 'none'})",
                           "tool_choice")
    return {"type": "function", "function": {"name": name}}


def _text_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"} or text.get("verbosity") is not None:
        raise RequestError("'text' takes only 'format' ({\"type\": \"text\" | \"json_object\" | \"json_schema\", ...})",
                           "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise RequestError("'text.format' of type json_schema needs 'schema' (an object) and 'name'", "text")
        try:
            jg.check_schema(schema, "text.format.schema")
        except jg.SchemaUnsupported as e:
            raise RequestError(str(e), "text") from None
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name") or "output", "schema": schema}}
    raise RequestError(f"'text.format.type' must be text, json_object or json_schema, got {kind!r}", "text")


def renamed(e: RequestError) -> RequestError:
    """An error raised on the chat request, naming the Responses field instead."""
    param = FROM_CHAT.get(e.param or "", e.param)
    message = str(e)
    for chat, ours in FROM_CHAT.items():
        message = message.replace(f"'{chat}'", f"'{ours}'")
        if message.startswith(chat + ":"):
            message = ours + message[len(chat):]
    return type(e)(message, param)


# ---- the response --------------------------------------------------------------------------------
def response_object(rid: str, created: int, model: str, echo: dict[str, Any], output: list[dict[str, Any]],
                    status: str, usage: dict[str, int] | None) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": model, "output": output, "usage": responses_usage(usage) if usage else None, **echo}


def responses_usage(usage: dict[str, int]) -> dict[str, Any]:
    return {"input_tokens": usage["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"]}


def message_item(text: str, status: str = "completed", logprobs: list | None = None) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return {"type": "message", "id": new_id("msg"), "status": status, "role": "assistant", "content": [part]}


def call_item(call: dict[str, Any], status: str = "completed", tools: list | None = None) -> dict[str, Any]:
    """A chat tool call -> a function_call item (`namespace` + `name` for a namespace tool's function
    among the request's `tools`)."""
    return {"type": "function_call", "id": new_id("fc"), "call_id": call["id"],
            **split_name(call["function"]["name"] or "", tools or []), "arguments": call["function"]["arguments"],
            "status": status}


def output_items(message: dict[str, Any], finish: str, logprobs: list | None = None,
                 tools: list | None = None) -> list[dict[str, Any]]:
    """A chat-completions reply -> Responses output items: its text (if any, or no call), then its calls.
    `logprobs` (asked for): the reply's tokens', on its text."""
    out = []
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        out.append(message_item(message.get("content") or "", "incomplete" if finish == "length" else "completed",
                                logprobs))
    return out + [call_item(c, tools=tools) for c in calls]


def from_completion(rid: str, echo: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    choice = completion["choices"][0]
    logprobs = choice["logprobs"]["content"] if choice.get("logprobs") else None
    return response_object(rid, completion["created"], completion["model"], echo,
                           output_items(choice["message"], choice["finish_reason"], logprobs, echo.get("tools")),
                           "incomplete" if choice["finish_reason"] == "length" else "completed", completion["usage"])


class EventStream:
    """Chat-completions stream chunks (one choice, usage last) -> the Responses stream events:
    response.created, response.in_progress, then for each output item output_item.added,
    (content_part.added, output_text.delta..., output_text.done, content_part.done) or
    (function_call_arguments.delta, function_call_arguments.done), output_item.done, and last
    response.completed (response.incomplete when the reply ran out of max_output_tokens)."""

    def __init__(self, rid: str, created: int, model: str, echo: dict[str, Any], logprobs: bool = False):
        self.rid, self.created, self.model, self.echo = rid, created, model, echo
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.logprobs: list[dict[str, Any]] | None = [] if logprobs else None  # asked for: those not yet sent

    def events(self, chunks: Iterable[dict[str, Any]], cancelled: Callable[[], bool] = lambda: False) \
            -> Iterator[dict[str, Any]]:
        yield self._event("response.created", response=self._response("in_progress"))
        yield self._event("response.in_progress", response=self._response("in_progress"))
        finish, usage = None, None
        try:
            for chunk in chunks:
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if self.logprobs is not None and choice.get("logprobs"):
                        self.logprobs += choice["logprobs"]["content"]
                    if delta.get("content"):
                        yield from self._text(delta["content"])
                    for tc in delta.get("tool_calls") or []:
                        yield from self._call(tc)
                    finish = choice.get("finish_reason") or finish
        except Exception as e:  # the status line is sent: the failure is the stream's last events
            message = f"the server failed on this request: {type(e).__name__}: {e}"
            yield self._event("error", code="server_error", message=message, param=None)
            failed = self._response("failed", usage)
            failed["error"] = {"code": "server_error", "message": message}
            yield self._event("response.failed", response=failed)
            return
        if cancelled():
            return
        status = "incomplete" if finish == "length" else "completed"
        if self.open is None and not self.output:  # an empty reply is still one (empty) message
            yield from self._text("")
        yield from self._close("incomplete" if status == "incomplete" else "completed")
        yield self._event(f"response.{status}", response=self._response(status, usage))

    # ---- inside ------------------------------------------------------------------------------
    def _event(self, kind: str, **fields) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _response(self, status: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
        return response_object(self.rid, self.created, self.model, self.echo, list(self.output), status, usage)

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.open["id"], "output_index": len(self.output)}

    def _text(self, text: str) -> Iterator[dict[str, Any]]:
        if self.open is not None and self.open["type"] != "message":
            yield from self._close()
        if self.open is None:
            self.open = message_item("", "in_progress", [] if self.logprobs is not None else None)
            added = {**self.open, "content": []}
            yield self._event("response.output_item.added", output_index=len(self.output), item=added)
            yield self._event("response.content_part.added", **self._where(), content_index=0,
                              part={"type": "output_text", "text": "", "annotations": []})
        if text:
            part, logprobs = self.open["content"][0], self._take_logprobs()
            part["text"] += text
            yield self._event("response.output_text.delta", **self._where(), content_index=0, delta=text,
                              logprobs=logprobs)

    def _take_logprobs(self) -> list[dict[str, Any]]:
        """The log-probs not yet sent, now the open message's (those of a call's tokens are dropped)."""
        new = self.logprobs or []
        if self.logprobs is not None:
            self.logprobs = []
            if self.open is not None and self.open["type"] == "message":
                self.open["content"][0]["logprobs"] += new
        return new

    def _call(self, tc: dict[str, Any]) -> Iterator[dict[str, Any]]:
        fn = tc.get("function") or {}
        if tc.get("id"):  # a new call: its id and name come first, its arguments after
            yield from self._close()
            self.open = call_item({"id": tc["id"], "function": {"name": fn.get("name"), "arguments": ""}},
                                  "in_progress", self.echo.get("tools"))
            yield self._event("response.output_item.added", output_index=len(self.output), item=dict(self.open))
        if fn.get("arguments") and self.open is not None:
            self.open["arguments"] += fn["arguments"]
            yield self._event("response.function_call_arguments.delta", **self._where(), delta=fn["arguments"])

    def _close(self, status: str = "completed") -> Iterator[dict[str, Any]]:
        item = self.open
        if item is None:
            return
        if item["type"] == "message":
            part = item["content"][0]
            self._take_logprobs()
            yield self._event("response.output_text.done", **self._where(), content_index=0, text=part["text"],
                              logprobs=list(part.get("logprobs") or []))
            yield self._event("response.content_part.done", **self._where(), content_index=0, part=dict(part))
        else:
            status = "completed"  # a call is streamed once it is whole
            yield self._event("response.function_call_arguments.done", **self._where(), name=item["name"],
                              arguments=item["arguments"])
        item["status"] = status
        yield self._event("response.output_item.done", output_index=len(self.output), item=item)
        self.output.append(item)
        self.open = None
