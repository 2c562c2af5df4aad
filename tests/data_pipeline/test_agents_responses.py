"""OpenAI Agents SDK runs on the Responses API (the SDK's default model), read from real public
captures: traceloop/openllmetry's VCR cassettes (tests/fixtures/samples/openai-agents/openllmetry,
see SOURCE.md), recorded against the live OpenAI API, hold both the SDK's POSTs to
/v1/traces/ingest (the exporter's {"data": [...]} payloads: trace, agent / response / function /
handoff spans, no generation spans) and its /v1/responses calls (request input, Response bodies).
tests/cassettes.py extracts from them the files a user has: the ingest payloads and a
`*.responses.jsonl` of Response objects with their request input. Without the Responses every
trace is quarantined with the reason and the way out; with them, response spans become messages."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from data_pipeline import sources
from data_pipeline.adapters import openai_agents
from data_pipeline.adapters.common import iso_seconds
from data_pipeline.store import ExperienceStore
from tests.cassettes import body_text, extract, interactions, response_object
from tests.paths import TESTS

SAMPLES = TESTS / "fixtures" / "samples" / "openai-agents"
CASSETTES = sorted((SAMPLES / "openllmetry").glob("*.yaml"))
RECIPE = SAMPLES / "openllmetry" / "test_recipe_workflow_agent_handoffs_with_function_tools.yaml"
MUSIC = SAMPLES / "openllmetry" / "test_music_composer_handoff_hierarchy.yaml"
WEAVE = SAMPLES / "wandb-weave" / "agents-quickstart-ingest-body.json"


@pytest.fixture
def extracted(tmp_path):
    ingest, responses, counts = extract(CASSETTES, tmp_path / "run", "openllmetry")
    assert counts == {"payloads": 6, "responses": 13}
    return ingest, responses


def _ingest(tmp_path: Path, root: Path):
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([root])
    return store, s, {t.episode_id: t for t in store.trajectories(include_heldout=True)}


def _items(ingest: Path) -> list[dict]:
    return [i for line in ingest.read_text().splitlines() for i in json.loads(line)["data"]]


def _posts(cassette: Path, endpoint: str) -> list[tuple[dict, dict]]:
    """(request body, response object) of the cassette's POSTs to /v1/responses, in order."""
    out = []
    for it in interactions(cassette):
        if it["request"]["uri"].endswith(endpoint):
            out.append((json.loads(body_text(it["request"]["body"])), response_object(body_text(it["response"]["body"]))))
    return out


def test_without_the_responses_every_trace_is_quarantined_with_the_way_out(tmp_path, extracted):
    ingest, responses = extracted
    responses.unlink()
    items = _items(ingest)
    traces = {i.get("trace_id") or i["id"] for i in items}
    assert traces == {i["trace_id"] for i in items if i["object"] == "trace.span"}
    store, s, trajs = _ingest(tmp_path, ingest.parent)
    assert s.read == s.accepted + s.quarantined + s.duplicates == len(traces) == 8
    assert s.accepted == 0 and not trajs
    q = store.quarantine()
    by_trace = {e["record"]: e for e in q}
    assert set(by_trace) == {f"trace {t}" for t in traces}
    for t in traces:  # no generation spans, response spans only: the reason and the way out
        e = by_trace[f"trace {t}"]
        assert e["field"] == "span_data.input"
        assert "Responses-API runs export only response ids" in e["reason"] and "*.responses.jsonl" in e["reason"]
        ids = [i["span_data"]["response_id"] for i in items if i.get("trace_id") == t
               and i["span_data"]["type"] == "response"]
        assert f"{len(ids)} of {len(ids)} response spans" in e["reason"] and ids[0] in e["reason"]


def test_with_the_responses_the_traces_are_trajectories(tmp_path, extracted):
    ingest, responses = extracted
    assert sources.detect(ingest) == "openai-agents"
    assert sources.skip_note(responses) and sources.skip_note(ingest) is None
    items = _items(ingest)
    store, s, trajs = _ingest(tmp_path, ingest.parent)
    assert s.read == s.accepted + s.quarantined + s.duplicates == 8
    assert (s.accepted, s.quarantined, s.duplicates) == (5, 3, 0), store.quarantine()
    assert [p for p, _ in s.skipped] == [str(responses)]
    given = {json.loads(line)["id"] for line in responses.read_text().splitlines()}
    # the Responses no span names (their traces were not recorded) are counted in the skip note
    named = {i["span_data"]["response_id"] for i in items if i.get("span_data", {}).get("type") == "response"}
    unnamed = given - named
    assert len(given) == 13 and len(unnamed) == 6
    ((_, note),) = s.skipped
    assert f"{len(unnamed)} of {len(given)} are named by no response span" in note
    shown = re.findall(r"resp_[0-9a-f]+", note)
    assert len(shown) == 3 and set(shown) <= unnamed and note.endswith("export their traces into this folder")
    # once every Response is named by a span beside it, the note says nothing more
    (ingest.parent / "more.jsonl").write_text("".join(json.dumps({"response_id": r}) + "\n" for r in unnamed))
    assert sources.skip_note(responses).endswith("the trace exports beside it")
    (ingest.parent / "more.jsonl").unlink()
    for e in store.quarantine():  # response spans whose Response the cassettes did not record
        assert "name a Response not given" in e["reason"]
        span_ids = [i["span_data"]["response_id"] for i in items if f"trace {i.get('trace_id')}" == e["record"]
                    and i["span_data"]["type"] == "response"]
        assert all(r not in given for r in span_ids)

    # the recipe run: its spans are in two cassettes' payloads (the batch exporter), its calls in the recipe one
    posts = _posts(RECIPE, "/v1/responses")
    (first_req, first), (second_req, second), (last_req, last) = posts
    t = trajs["trace_294d81b076ea4262b0f0e94cb73d08c9"]
    spans = [i for i in items if i.get("trace_id") == t.episode_id]
    assert t.policy == first["model"] == last["model"] == "gpt-4o-2024-08-06"
    assert t.metadata["responses"] == 2 and t.metadata["response_ids"] == [first["id"], last["id"]]
    assert t.metadata["agents"] == ["Recipe Editor Agent"] and t.metadata["reasoning_items"] == 0
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert t.messages[0].content == first["instructions"] == first_req["instructions"]
    assert t.messages[1].content == first_req["input"][0]["content"] == "Can you edit the carbonara recipe to be vegetarian?"
    (fc,) = first["output"]
    (call,) = t.messages[2].tool_calls
    assert (call.name, call.arguments, call.id) == ("search_recipes", {"query": "carbonara"}, fc["call_id"])
    assert json.loads(fc["arguments"]) == {"query": "carbonara"}
    # the tools the Responses offered (the SFT row renders them as the model was prompted)
    assert [tl["function"]["name"] for tl in t.metadata["tools"]] == [tl["name"] for tl in first["tools"]]
    assert "search_recipes" in [tl["name"] for tl in first["tools"]]
    assert t.metadata["tools"][0]["function"]["parameters"] == first["tools"][0]["parameters"]
    (func,) = [i["span_data"] for i in spans if i["span_data"]["type"] == "function"]
    result = [x for x in second_req["input"] if x.get("type") == "function_call_output"][0]
    assert (t.messages[3].tool_call_id, t.messages[3].content) == (fc["call_id"], result["output"])
    assert result["output"] == func["output"] and result["output"].startswith("status='success'")
    # the second call's span was not recorded: the last request's input resends it with its output
    (fc2,) = second["output"]
    (call2,) = t.messages[4].tool_calls
    assert (call2.name, call2.arguments, call2.id) == (fc2["name"], json.loads(fc2["arguments"]), fc2["call_id"])
    assert call2.name == "plan_and_apply_recipe_modifications"
    assert call2.arguments["modification_request"] == "Make it vegetarian"
    out2 = [x for x in last_req["input"] if x.get("call_id") == fc2["call_id"] and x["type"] == "function_call_output"]
    assert t.messages[5].tool_call_id == fc2["call_id"] and t.messages[5].content == out2[0]["output"]
    assert t.messages[6].content == last["output"][0]["content"][0]["text"]
    assert t.messages[6].content.startswith("Here's the modified Vegetarian Carbonara recipe")
    starts = [i["started_at"] for i in spans]
    ends = [i["ended_at"] for i in spans]
    assert t.started_at == min(_sec(x) for x in starts) and t.ended_at == max(_sec(x) for x in ends)
    assert t.metadata["usage"]["output_tokens"] == first["usage"]["output_tokens"] + last["usage"]["output_tokens"]

    # the music run: a handoff (a transfer_to_ call answered in the next input), then a function tool
    (r1_req, r1), (r2_req, r2), _ = _posts(MUSIC, "/v1/responses")
    t = trajs["trace_db0186bb863d426e9e4486699cb8418a"]
    assert t.metadata["handoffs"] == [{"from_agent": "Orchestra Conductor", "to_agent": "Symphony Composer"}]
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "system", "assistant", "tool"]
    (h,) = t.messages[2].tool_calls
    assert (h.name, h.id) == ("transfer_to_symphony_composer", r1["output"][0]["call_id"])
    assert t.messages[3].content == json.dumps({"assistant": "Symphony Composer"})  # the SDK's handoff output
    assert t.messages[4].content == r2["instructions"] == r2_req["instructions"]  # the new agent's instructions
    (c,) = t.messages[5].tool_calls
    assert (c.name, c.arguments, c.id) == ("compose_music", {"style": "symphony", "key": "D major"},
                                           r2["output"][0]["call_id"])
    # no later Response in the trace answers compose_music: its function span does, by name
    (func,) = [i["span_data"] for i in items if i.get("trace_id") == t.episode_id and i["span_data"]["type"] == "function"]
    assert (t.messages[6].tool_call_id, t.messages[6].content) == (c.id, func["output"])
    assert func["output"] == "Composed a beautiful symphony piece in D major major"

    # the others: get_weather, get_city_info (answered by their function spans), one plain answer
    weather = trajs["trace_6549cb4b93ea47c8967199b27a04d7c0"]
    assert [(c.name, c.arguments) for c in weather.messages[2].tool_calls] == [("get_weather", {"city": "London"})]
    assert weather.messages[3].content == "It's cloudy with 15°C" and weather.policy == "gpt-4.1-2025-04-14"
    city = trajs["trace_1b9cc6269f8041efbb685fb644225e16"]
    assert [(c.name, c.arguments) for c in city.messages[2].tool_calls] == [("get_city_info", {"city_name": "London"})]
    assert city.messages[3].content.startswith("City: London, Population: 9000000")
    plain = trajs["trace_a14fd79430914a80afdc0c9f25282b1b"]
    assert [m.role for m in plain.messages] == ["system", "user", "assistant"] and plain.messages[1].content == "What is AI?"
    for t in trajs.values():  # each model call's output: its response span's duration
        rspans = [i for i in items if i.get("trace_id") == t.episode_id and i["span_data"]["type"] == "response"]
        first = min(rspans, key=lambda i: _sec(i["started_at"]))
        assert t.messages[2].duration_s == pytest.approx(_sec(first["ended_at"]) - _sec(first["started_at"]))


def _sec(iso: str) -> float:
    return iso_seconds(iso)


def test_wandb_weave_payload_is_quarantined_without_its_responses(tmp_path):
    store, s, trajs = _ingest(tmp_path, WEAVE)
    assert s.read == s.accepted + s.quarantined + s.duplicates == 2 and s.quarantined == 2
    reasons = {e["record"]: e["reason"] for e in store.quarantine()}
    r = reasons["trace trace_1ab5bd2f3bd54272bd73fd8d8a7cd852"]
    assert "3 of 3 response spans name a Response not given" in r and "guardrail, handoff" in r


def _trace_file(tmp_path: Path, response_ids: list[str]) -> Path:
    items = [{"object": "trace", "id": "trace_1", "workflow_name": "W", "group_id": None, "metadata": {"task_id": "t1"}}]
    for k, rid in enumerate(response_ids):
        items.append({"object": "trace.span", "id": f"span_{k}", "trace_id": "trace_1", "parent_id": None,
                      "started_at": f"2026-01-01T00:00:0{2 * k}+00:00", "ended_at": f"2026-01-01T00:00:0{2 * k + 1}+00:00",
                      "span_data": {"type": "response", "response_id": rid, "usage": None}})
    f = tmp_path / "export.jsonl"
    f.write_text(json.dumps({"data": items}) + "\n")
    return f


def test_responses_items_developer_reasoning_and_string_input(tmp_path):
    f = _trace_file(tmp_path, ["resp_a", "resp_b"])
    a = {"object": "response", "id": "resp_a", "model": "m1", "instructions": None, "input": "hi",
         "output": [{"type": "reasoning", "id": "rs_1", "summary": []},
                    {"type": "function_call", "name": "f", "arguments": "{\"x\": 1}", "call_id": "c1"}]}
    b = {"object": "response", "id": "resp_b", "model": "m2", "instructions": None,
         "input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"},
                   {"type": "reasoning", "id": "rs_1", "summary": []},
                   {"type": "function_call", "name": "f", "arguments": "{\"x\": 1}", "call_id": "c1"},
                   {"type": "function_call_output", "call_id": "c1", "output": "2"}],
         "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "two"}]}]}
    (tmp_path / "run.responses.jsonl").write_text("\n".join(json.dumps(r) for r in (a, b)) + "\n")
    (rec,) = list(openai_agents.read(f))
    assert rec.error is None, rec.error
    d = rec.data
    # a developer message is a system prompt: a new one goes right before the output it was the prompt of
    assert [(m["role"], m["content"]) for m in d["messages"]] == [
        ("user", "hi"), ("assistant", ""), ("tool", "2"), ("system", "be brief"), ("assistant", "two")]
    assert d["messages"][1]["tool_calls"] == [{"name": "f", "arguments": "{\"x\": 1}", "id": "c1"}]
    assert d["messages"][2]["tool_call_id"] == "c1" and d["messages"][2]["name"] == "f"
    assert d["policy"] == "m2" and d["metadata"]["reasoning_items"] == 1 and d["task_id"] == "t1"
    assert d["messages"][1]["duration_s"] == 1.0


def test_a_response_without_input_or_missing_is_quarantined(tmp_path):
    f = _trace_file(tmp_path, ["resp_a"])
    side = tmp_path / "x.responses.jsonl"
    side.write_text(json.dumps({"object": "response", "id": "resp_a", "model": "m", "output": []}) + "\nnot json\n")
    (rec,) = list(openai_agents.read(f))
    assert rec.error[0] == "response resp_a.input" and "input_items.list" in rec.error[1]
    side.write_text(json.dumps({"object": "response", "id": "resp_b", "model": "m", "output": []}) + "\nnot json\n")
    (rec,) = list(openai_agents.read(f))
    assert rec.error[0] == "span_data.input" and "resp_a" in rec.error[1]
    assert "1 lines of the Responses files beside it were not read: x.responses.jsonl line 2: not JSON" in rec.error[1]
    # a file not named *.responses.jsonl is not joined (and is a file of its own to the ingest)
    shutil.move(side, tmp_path / "x.jsonl")
    assert openai_agents.side_file_note(tmp_path / "x.jsonl") is None
