"""OpenAI Responses API items (the `input` and `output` items of `/v1/responses`, also the
`response_item`s of Codex rollouts) as canonical messages. Shared by the codex and openai-agents
adapters. (eval/responses_api.py parses request `input` for `flywheel serve`: that is a strict
request check raising HTTP 400s; this is a lenient reader of logged items.)

- `message` (role developer / system -> system, user, assistant; a bare `{role, content}` easy
  input message counts as one): content items input_text / output_text as text, images and
  other media as a placeholder naming their type;
- `function_call` -> a tool call (name, `NAMESPACE.NAME` for a call of a namespace tool's
  function, as Codex's sub-agent tools are; `arguments` as sent, `call_id` as id) of the assistant
  turn it follows (else a new assistant turn with empty content); `custom_tool_call` -> arguments
  `{"input": ...}`; `local_shell_call` -> a `local_shell` call with its exec action;
  `web_search_call` -> a `web_search` call with its action (server-side: no result item);
- `function_call_output` / `custom_tool_call_output` -> a `tool` message with `tool_call_id` =
  `call_id` and the call's name when the call was seen;
- anything else (`reasoning`, `item_reference`, ...) adds no message: `add_item` returns its type
  for the caller to count."""
from __future__ import annotations

from typing import Any

from .common import MappingError, text_of

ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}
CALLS = ("function_call", "custom_tool_call", "local_shell_call", "web_search_call")
OUTPUTS = ("function_call_output", "custom_tool_call_output")
ITEM_TYPES = ("message", "reasoning", *CALLS, *OUTPUTS)


def item_type(p: dict[str, Any]) -> Any:
    """The item's type; an easy input message ({role, content}, no type) is a message."""
    kind = p.get("type")
    return "message" if kind is None and "role" in p else kind


def output_text(where: str, output: Any) -> str:
    """A call's output: a string, content items (Responses API), or the older {content, success}."""
    if isinstance(output, dict) and "content" in output:
        output = output["content"]
    try:
        return text_of(output)
    except MappingError:
        got = type(output).__name__
        raise MappingError(f"{where}.output", f"expected text or content items, got {got}") from None


def call(where: str, p: dict[str, Any]) -> dict[str, Any]:
    kind = p["type"]
    if kind == "function_call":
        name, args = p.get("name"), p.get("arguments", "{}")
    elif kind == "custom_tool_call":
        name, args = p.get("name"), {"input": p.get("input")}
    elif kind == "local_shell_call":
        action = p.get("action") if isinstance(p.get("action"), dict) else {}
        name, args = "local_shell", {k: v for k, v in action.items() if k != "type"}
    else:  # web_search_call
        name, args = "web_search", p.get("action") if isinstance(p.get("action"), dict) else {}
    if not isinstance(name, str) or not name:
        raise MappingError(f"{where}.name", f"a {kind} needs a name")
    if isinstance(p.get("namespace"), str) and p["namespace"]:
        name = f"{p['namespace']}.{name}"  # a namespace tool's function, as flywheel serve shows it to the model
    return {"name": name, "arguments": args, "id": p.get("call_id") or p.get("id")}


def add_item(msgs: list[dict[str, Any]], p: dict[str, Any], where: str, names: dict[str, str]) -> Any:
    """Append what the item `p` adds to the conversation `msgs`; `names` maps call ids to tool
    names (filled by calls, read by outputs). Returns None when the item was read, else its type
    (reasoning and other items add no message). Field errors name `where` + the item's key."""
    kind = item_type(p)
    if kind == "message":
        role = ROLES.get(p.get("role"))
        if role is None:
            raise MappingError(f"{where}.role", f"unknown role {p.get('role')!r}")
        try:
            content = text_of(p.get("content"))
        except MappingError:
            raise MappingError(f"{where}.content", "expected text or content items") from None
        msgs.append({"role": role, "content": content, "tool_calls": []})
    elif kind in CALLS:
        c = call(where, p)
        if isinstance(c["id"], str):
            names[c["id"]] = c["name"]
        if msgs and msgs[-1]["role"] == "assistant":
            msgs[-1]["tool_calls"].append(c)  # calls of the same response as its message
        else:
            msgs.append({"role": "assistant", "content": "", "tool_calls": [c]})
    elif kind in OUTPUTS:
        call_id = p.get("call_id")
        msgs.append({"role": "tool", "content": output_text(where, p.get("output")), "tool_call_id": call_id,
                     "name": names.get(call_id)})
    else:
        return kind
    return None
