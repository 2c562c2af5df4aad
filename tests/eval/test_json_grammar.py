"""eval/json_grammar.py: the automaton that constrained decoding in flywheel serve walks, character
by character: what it accepts is exactly the documents of the schema (the subset it enforces)."""
from __future__ import annotations

import json

import pytest

from eval import json_grammar as jg

PERSON = {"type": "object", "properties": {"age": {"type": "integer"}, "unit": {"enum": ["years", "months"]},
                                           "tags": {"type": "array", "items": {"type": "string"}},
                                           "ok": {"type": ["boolean", "null"]}},
          "required": ["age", "unit"], "additionalProperties": False}


def complete(state, text: str) -> bool:
    got = jg.feed(state, text)
    return got is not None and jg.can_end(got)


@pytest.mark.parametrize("doc", ['{"age": 3, "unit": "years"}', '{"unit":"months","age":-12,"tags":["a","\\u00e9\\n"]}',
                                 '{\n  "age": 0,\n  "unit": "years",\n  "ok": null\n}', '{"age": 7, "unit": "years", "ok": true}'])
def test_schema_documents_are_accepted(doc):
    assert complete(jg.value_state(PERSON), doc) and json.loads(doc)


@pytest.mark.parametrize("doc", ['{"age": 3}', '{"age": 3.5, "unit": "years"}', '{"age": 3, "unit": "days"}',
                                 '{"age": 3, "unit": "years", "name": "x"}', '{"age": 1, "age": 2, "unit": "years"}',
                                 '{"age": 01, "unit": "years"}', '[1]', '{"age": 3, "unit": "years"} x',
                                 '{"age": 3, "unit": "years", "tags": [1]}', '{"age": 3, "unit": "years",}'])
def test_anything_else_is_refused(doc):
    assert not complete(jg.value_state(PERSON), doc)


def test_json_object_mode_takes_any_object_and_nothing_after_it():
    s = jg.value_state(None)
    assert complete(s, '{"k": [1, 2.5e3, "q", true, null, {}], "n": {"m": -0.5}}')
    assert jg.feed(s, "[") is None and jg.feed(s, '"x"') is None
    done = jg.feed(s, "{}")
    assert jg.done(done) and jg.feed(done, " ") is None
    assert jg.feed(s, "{" + " " * (jg.MAX_WS + 1)) is None  # a reply cannot idle in whitespace


def test_a_number_may_end_or_grow():
    s = jg.feed(jg.value_state({"type": "number"}), "12")
    assert jg.can_end(s) and not jg.done(s) and jg.feed(s, ".5") is not None
    assert not jg.can_end(jg.feed(jg.value_state({"type": "number"}), "1e"))


def test_tool_call_arguments_follow_the_chosen_tool():
    s = jg.tool_call_state('<|tool_call|>{"name": ', {"add": {"type": "object", "properties": {"x": {"type": "integer"}},
                                                              "required": ["x"]}, "echo": {"type": "object"}},
                           ', "arguments": ', "}<|/tool_call|>")
    assert jg.done(jg.feed(s, '<|tool_call|>{"name": "add", "arguments": {"x": 2}}<|/tool_call|>'))
    assert jg.feed(s, '<|tool_call|>{"name": "add", "arguments": {"y": 2}') is None  # add's schema
    assert jg.done(jg.feed(s, '<|tool_call|>{"name": "echo", "arguments": {"y": 2}}<|/tool_call|>'))
    assert jg.feed(s, '<|tool_call|>{"name": "sub"') is None and jg.feed(s, "hello") is None


def test_unenforceable_keywords_are_named():
    with pytest.raises(jg.SchemaUnsupported, match=r"schema\.properties\.a\.items\.pattern"):
        jg.check_schema({"type": "object", "properties": {"a": {"type": "array", "items": {"pattern": "x"}}}})
    with pytest.raises(jg.SchemaUnsupported, match="anyOf"):
        jg.check_schema({"anyOf": [{"type": "string"}]})
    jg.check_schema(PERSON)
