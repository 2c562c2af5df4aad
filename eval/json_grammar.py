"""A character-level pushdown automaton for constrained decoding: which text may come next so that
the whole reply is valid JSON (optionally of a JSON schema), or one tool call in the form the chat
template prints it (a forced call: fixed text, one of the tools' names, arguments of its schema).

A state is an immutable tuple, so trying a candidate token's text never copies anything: `feed`
returns the new state or None when the text cannot continue the reply. The decoder
(eval/decoding.py) asks it for each candidate token in the order it would sample them and takes
the first that fits, which samples exactly from the model's distribution restricted to what fits.

Supported schema keywords: type (one or a list), properties, required, additionalProperties (a
bool), items, enum, const, and the annotations title / description / default / examples /
$schema / strict. Anything else (anyOf, $ref, pattern, minimum, ...) is refused by `check_schema`
with the path of the keyword, so that a schema is never half-honoured. An object with declared
properties takes only those keys (as OpenAI's strict mode does) unless additionalProperties is true.
"""
from __future__ import annotations

import json
import re
from typing import Any

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "strict", "$comment"}
SUPPORTED = {"type", "properties", "required", "additionalProperties", "items", "enum", "const"} | ANNOTATIONS
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
MAX_WS = 6  # whitespace characters in a row outside strings: keeps a reply from idling forever
_NUMBER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][+-]?[0-9]*)?\Z")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
_INTEGER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?\Z")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")


class SchemaUnsupported(ValueError):
    """A schema keyword this decoder cannot enforce; the message names its path."""


def check_schema(schema: Any, path: str = "schema") -> None:
    """Raise SchemaUnsupported naming the first keyword that cannot be enforced."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise SchemaUnsupported(f"{path}: a schema must be an object")
    for key in schema:
        if key not in SUPPORTED:
            raise SchemaUnsupported(f"{path}.{key}: this server cannot enforce '{key}' while decoding "
                                    f"(supported: {', '.join(sorted(SUPPORTED - ANNOTATIONS))})")
    types = schema.get("type")
    for t in ([types] if isinstance(types, str) else types or []):
        if t not in TYPES:
            raise SchemaUnsupported(f"{path}.type: unknown type {t!r}")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        raise SchemaUnsupported(f"{path}.additionalProperties: only true or false can be enforced")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{path}.properties.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")


def _types(schema) -> set[str]:
    if not isinstance(schema, dict):
        return set(TYPES)
    if "const" in schema or "enum" in schema:
        return set()
    t = schema.get("type")
    if t is None:
        return {"object"} if "properties" in schema else ({"array"} if "items" in schema else set(TYPES))
    return {t} if isinstance(t, str) else set(t)


def _options(schema) -> tuple[str, ...] | None:
    """The literal texts a const / enum schema allows (as JSON), else None."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return (json.dumps(schema["const"]),)
    if "enum" in schema:
        return tuple(json.dumps(v) for v in schema["enum"])
    return None


def _keys(schema) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(allowed keys or None for any, required keys) of an object schema."""
    if not isinstance(schema, dict):
        return None, ()
    props = schema.get("properties")
    required = tuple(schema.get("required") or ())
    if props is None or schema.get("additionalProperties") is True:
        return None, required
    return tuple(props), required


def _prop(schema, key):
    if isinstance(schema, dict) and key in (schema.get("properties") or {}):
        return schema["properties"][key]
    return None


def _items(schema):
    return schema.get("items") if isinstance(schema, dict) else None


# Frames (tuples, the first item names the kind):
#   ("V", schema)                          a value is expected
#   ("O", schema, seen, phase, key)        inside an object; phase: first | key | colon | after
#   ("K", schema, seen, buf)               inside a key string
#   ("A", schema, phase)                   inside an array; phase: first | next | after
#   ("S", esc)                             inside a string value; esc: 0, or the \uXXXX digits left + 1, or -1 after '\'
#   ("N", integer, buf)                    a number
#   ("L", options, buf)                    one of the literal texts (true/false/null, enum, const, choices)
#   ("T", text, at)                        exactly this text (forced)
#   ("D", ((name, schema)...), buf, mid)   a tool's JSON name, then `mid`, then a value of its schema

def value_state(schema: Any = None) -> tuple:
    """The start state of a reply that is one JSON value of `schema` (None: any JSON object)."""
    return ((("V", {"type": "object"} if schema is None else schema),), 0)


def tool_call_state(head: str, schemas: dict[str, Any], mid: str, tail: str) -> tuple:
    """The start state of one tool call as a template prints it: `head`, the JSON name of one of
    `schemas` (name -> parameter schema), `mid`, arguments fitting that tool's schema, `tail`."""
    options = tuple((json.dumps(name), schema) for name, schema in schemas.items())
    return ((("T", tail, 0), ("D", options, "", mid), ("T", head, 0)), 0)


def feed(state: tuple, text: str) -> tuple | None:
    for ch in text:
        state = _step(state, ch)
        if state is None:
            return None
    return state


def done(state: tuple) -> bool:
    """Nothing more may come: the reply must end."""
    return not state[0]


def can_end(state: tuple) -> bool:
    """The reply may end here (a complete value: a number may still grow, but need not)."""
    stack = list(state[0])
    while stack:
        top = stack[-1]
        if top[0] == "N" and (_INTEGER if top[1] else _NUMBER).match(top[2]):
            stack.pop()
        elif top[0] == "L" and top[2] in top[1]:
            stack.pop()
        else:
            return False
    return True


def _step(state: tuple, ch: str) -> tuple | None:
    stack, ws = state
    if not stack:
        return None
    top, rest = stack[-1], stack[:-1]
    kind = top[0]
    if kind == "T":
        text, at = top[1], top[2]
        if text[at] != ch:
            return None
        return ((rest + (("T", text, at + 1),) if at + 1 < len(text) else rest), 0)
    if kind == "S":
        return _string(rest, top[1], ch, ws)
    if kind == "D":  # a tool's name; its arguments' schema follows from it
        options, buf, mid = top[1], top[2] + ch, top[3]
        if not any(name.startswith(buf) for name, _ in options):
            return None
        chosen = next((schema for name, schema in options if name == buf), None)
        if chosen is None:
            return (rest + (("D", options, buf, mid),), 0)
        return (rest + (("V", chosen),) + ((("T", mid, 0),) if mid else ()), 0)
    if kind == "K":
        return _key(rest, top, ch)
    if kind == "N":
        integer, buf = top[1], top[2]
        if (_INTEGER_PREFIX if integer else _NUMBER_PREFIX).match(buf + ch):
            return (rest + (("N", integer, buf + ch),), 0)
        if (_INTEGER if integer else _NUMBER).match(buf):
            return _step((rest, ws), ch)  # the number ended: the character belongs to what holds it
        return None
    if kind == "L":
        options, buf = top[1], top[2]
        if any(o.startswith(buf + ch) for o in options):
            grown = buf + ch
            if grown in options and not any(o != grown and o.startswith(grown) for o in options):
                return (rest, 0)
            return (rest + (("L", options, grown),), 0)
        if buf in options:
            return _step((rest, ws), ch)
        return None
    if ch in " \t\n\r":
        if kind == "V" or kind in ("O", "A"):
            return (stack, ws + 1) if ws < MAX_WS else None
        return None
    if kind == "V":
        return _value(rest, top[1], ch)
    if kind == "O":
        return _object(rest, top, ch)
    if kind == "A":
        return _array(rest, top, ch)
    return None


def _value(rest: tuple, schema, ch: str) -> tuple | None:
    options = _options(schema)
    if options is not None:
        return _step((rest + (("L", options, ""),), 0), ch)
    types = _types(schema)
    if ch == "{" and "object" in types:
        return (rest + (("O", schema, frozenset(), "first", None),), 0)
    if ch == "[" and "array" in types:
        return (rest + (("A", schema, "first"),), 0)
    if ch == '"' and "string" in types:
        return (rest + (("S", 0),), 0)
    if (ch == "-" or ch.isdigit()) and types & {"number", "integer"}:
        return _step((rest + (("N", "number" not in types, ""),), 0), ch)
    lits = tuple(lit for t, lit in (("boolean", "true"), ("boolean", "false"), ("null", "null")) if t in types)
    if lits and any(lit[0] == ch for lit in lits):
        return _step((rest + (("L", lits, ""),), 0), ch)
    return None


def _string(rest: tuple, esc: int, ch: str, ws: int) -> tuple | None:
    if esc == -1:  # after a backslash
        if ch == "u":
            return (rest + (("S", 5),), 0)
        return (rest + (("S", 0),), 0) if ch in '"\\/bfnrt' else None
    if esc > 1:  # \u digits
        if ch not in "0123456789abcdefABCDEF":
            return None
        return (rest + (("S", esc - 1 if esc > 2 else 0),), 0)
    if ch == '"':
        return (rest, 0)
    if ch == "\\":
        return (rest + (("S", -1),), 0)
    if ord(ch) < 0x20:
        return None
    return (rest + (("S", 0),), 0)


def _object(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, schema, seen, phase, key = top
    allowed, required = _keys(schema)
    free = allowed is None or any(k not in seen for k in allowed)
    if phase in ("first", "key") and ch == '"':
        if phase == "first" and not free:
            return None
        return (rest + (("K", schema, seen, ""),), 0)
    if ch == "}" and phase in ("first", "after") and all(k in seen for k in required):
        return (rest, 0)
    if phase == "colon" and ch == ":":
        return (rest + (("O", schema, seen, "after", None), ("V", _prop(schema, key) or True)), 0)
    if phase == "after" and ch == "," and free:
        return (rest + (("O", schema, seen, "key", None),), 0)
    return None


def _key(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, schema, seen, buf = top
    allowed, _ = _keys(schema)
    if ch == '"':
        if buf in seen or (allowed is not None and buf not in allowed):
            return None
        return (rest + (("O", schema, seen | {buf}, "colon", buf),), 0)
    if ch == "\\" or ord(ch) < 0x20:
        return None  # keys are plain text here
    grown = buf + ch
    if allowed is not None and not any(k.startswith(grown) and k not in seen for k in allowed):
        return None
    return (rest + (("K", schema, seen, grown),), 0)


def _array(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, schema, phase = top
    if ch == "]" and phase in ("first", "after"):
        return (rest, 0)
    if phase == "after":
        return (rest + (("A", schema, "next"),), 0) if ch == "," else None
    items = _items(schema)
    return _value(rest + (("A", schema, "after"),), True if items is None else items, ch)
