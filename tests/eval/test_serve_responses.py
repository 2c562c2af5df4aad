"""flywheel serve's `POST /v1/responses` (the OpenAI Responses API) on the tiny model: the same decode
as chat completions, called with the real `openai` client and over raw HTTP (the stream's events)."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import openai
import pytest

from eval.serve import ChatModel, serving

ASK = "How old is ann?"
TOOLS = [{"type": "function", "name": "lookup", "description": "Look a person up.",
          "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}},
         {"type": "function", "name": "add", "strict": True, "parameters": {
             "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
             "required": ["x", "y"], "additionalProperties": False}}]
ROUND_TRIP = [{"role": "developer", "content": "Answer in one word."},
              {"role": "user", "content": [{"type": "input_text", "text": ASK}]},
              {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"name": "ann"}'},
              {"type": "function_call_output", "call_id": "call_1", "output": "41"}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from eval.policy import load_checkpoint

    return load_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def served(tiny):
    model, tok = tiny
    with serving(model, tok, model_name="tiny-round-0") as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def _post(url: str, body: dict) -> tuple[int, dict]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("POST", "/v1/responses", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    status, raw = r.status, r.read()
    conn.close()
    return status, json.loads(raw)


def _events(url: str, body: dict) -> list[tuple[str, dict]]:
    """A streamed request over raw HTTP: its server-sent events as (event name, data)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("POST", "/v1/responses", body=json.dumps({**body, "stream": True}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    raw = r.read().decode()
    conn.close()
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(lines) == {"event", "data"}, block  # no bare data lines, no [DONE]
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_plain_text_input_through_the_openai_client(served):
    """The Responses answer is the chat-completions answer of the same request (one decoder)."""
    c = client(served)
    resp = c.responses.create(model="tiny-round-0", input=ASK, temperature=0, max_output_tokens=12)
    assert resp.object == "response" and resp.id.startswith("resp_") and resp.model == "tiny-round-0"
    chat = c.chat.completions.create(model="tiny-round-0", messages=[{"role": "user", "content": ASK}],
                                     temperature=0, max_tokens=12)
    (item,) = resp.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text" and item.content[0].annotations == []
    assert resp.output_text == chat.choices[0].message.content
    assert resp.usage.input_tokens == chat.usage.prompt_tokens
    assert resp.usage.output_tokens == chat.usage.completion_tokens
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    finished = chat.choices[0].finish_reason == "stop"
    assert resp.status == ("completed" if finished else "incomplete")
    assert resp.incomplete_details is None if finished else resp.incomplete_details.reason == "max_output_tokens"
    # the request's settings are echoed, and nothing is kept
    echoed = (resp.temperature, resp.top_p, resp.max_output_tokens, resp.tool_choice, resp.tools)
    assert echoed == (0, 1.0, 12, "none", [])
    assert resp.store is False
    # instructions are the system turn, placed first
    c.responses.create(model="tiny-round-0", input=ASK, instructions="Be brief.", max_output_tokens=2)


def test_max_output_tokens_makes_an_incomplete_response(tiny):
    model, tok = tiny
    chat = ChatModel(model, tok)
    job = chat.prepare_response({"input": ASK, "max_output_tokens": 3})
    job.req.sampling.logit_bias = {1: -100.0}  # no end-of-turn token: the whole budget is used
    resp = chat.response(job)
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["usage"]["output_tokens"] == 3 and resp["output"][0]["status"] == "incomplete"
    # the server's default (flywheel serve --max-tokens) when a request, as the Codex CLI's, sets none
    capped = ChatModel(model, tok, max_tokens=5)
    job = capped.prepare_response({"input": ASK})
    assert job.req.sampling.max_new_tokens == 5
    job = capped.prepare_response({"input": ASK, "max_output_tokens": 9})  # the request's own wins
    assert job.req.sampling.max_new_tokens == 9
    assert chat.prepare_response({"input": ASK}).req.sampling.max_new_tokens == chat.context - len(job.prompt_ids)


def test_list_input_round_trip_of_a_function_call(tiny, served):
    """A developer message, a function_call and its function_call_output are the chat turns system,
    assistant (with tool_calls) and tool; the assistant's text and the call after it are one turn."""
    model, tok = tiny
    chat = ChatModel(model, tok)
    job = chat.prepare_response({"input": ROUND_TRIP, "tools": TOOLS})
    assert job.req.messages == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "lookup",
                                                              "arguments": {"name": "ann"}}]},
        {"role": "tool", "content": "41", "tool_call_id": "call_1", "name": "lookup"}]
    assert "41" in job.prompt_text and '"lookup"' in job.prompt_text
    said = chat.prepare_response({"input": [{"role": "user", "content": ASK},
                                            {"type": "message", "role": "assistant", "id": "msg_1",
                                             "status": "completed", "content": [
                                                 {"type": "output_text", "text": "Let me look.", "annotations": []}]},
                                            ROUND_TRIP[2], ROUND_TRIP[3]], "instructions": "Be brief."})
    assert [m["role"] for m in said.req.messages] == ["system", "user", "assistant", "tool"]
    assert said.req.messages[2]["content"] == "Let me look." and said.req.messages[2]["tool_calls"][0]["id"] == "call_1"
    resp = client(served).responses.create(model="tiny-round-0", input=ROUND_TRIP, tools=TOOLS, max_output_tokens=8,
                                           temperature=0)
    assert resp.status in ("completed", "incomplete") and resp.output
    assert [t.name for t in resp.tools] == ["lookup", "add"] and resp.tool_choice == "auto"


def test_forced_tool_choice_gives_a_function_call_item(served):
    c = client(served)
    resp = c.responses.create(model="tiny-round-0", input=ASK, tools=TOOLS, max_output_tokens=200,
                              tool_choice={"type": "function", "name": "add"})
    calls = [o for o in resp.output if o.type == "function_call"]
    assert resp.status == "completed" and len(calls) == 1, resp
    (call,) = calls
    args = json.loads(call.arguments)
    assert call.name == "add" and call.call_id and call.id.startswith("fc_") and call.status == "completed"
    assert set(args) == {"x", "y"} and all(type(v) is int for v in args.values())
    # room for the random model's string argument to end (lookup's "name"): at 200 tokens it sometimes
    # ran out mid-string, an incomplete response without a call item
    required = c.responses.create(model="tiny-round-0", input=ASK, tools=TOOLS, max_output_tokens=2000,
                                  tool_choice="required")
    assert any(o.type == "function_call" and o.name in ("lookup", "add") for o in required.output)
    # the call goes back as input, with its output: the next turn renders
    follow = c.responses.create(model="tiny-round-0", tools=TOOLS, max_output_tokens=4, input=[
        {"role": "user", "content": ASK}, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                                           "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": str(args["x"] + args["y"])}])
    assert follow.output
    status, err = _post(served, {"input": ASK, "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}})
    assert status == 400 and "'nope'" in err["error"]["message"] and err["error"]["param"] == "tool_choice"


def test_namespace_tools_as_the_codex_cli_groups_its_sub_agent_tools(served):
    """A `namespace` tool's functions are offered as NAMESPACE.NAME; a call of one comes back as a
    function_call item with `namespace` and `name`, streamed too, and goes back as input the same way."""
    # an integer argument: the random model's strings sometimes never end in valid JSON
    spawn = {"type": "function", "name": "spawn_agent", "description": "Start sub-agents.", "strict": False,
             "parameters": {"type": "object", "properties": {"agents": {"type": "integer"}}, "required": ["agents"]}}
    tools = [TOOLS[1], {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [spawn]}]
    forced = {"type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1"}
    status, resp = _post(served, {"model": "tiny-round-0", "input": ASK, "tools": tools, "tool_choice": forced,
                                  "max_output_tokens": 2000})
    assert status == 200, resp
    (call,) = [o for o in resp["output"] if o["type"] == "function_call"]
    assert (call["namespace"], call["name"]) == ("multi_agent_v1", "spawn_agent")
    assert set(json.loads(call["arguments"])) == {"agents"}
    assert resp["tools"] == tools  # echoed as sent
    events = _events(served, {"model": "tiny-round-0", "input": ASK, "tools": tools, "tool_choice": forced,
                              "max_output_tokens": 2000, "stream": True})
    done = [e for kind, e in events if kind == "response.output_item.done" and e["item"]["type"] == "function_call"]
    assert [(d["item"]["namespace"], d["item"]["name"]) for d in done] == [("multi_agent_v1", "spawn_agent")]
    # a plain function of the same request stays plain
    status, plain = _post(served, {"model": "tiny-round-0", "input": ASK, "tools": tools, "max_output_tokens": 200,
                                   "tool_choice": {"type": "function", "name": "add"}})
    (pc,) = [o for o in plain["output"] if o["type"] == "function_call"]
    assert pc["name"] == "add" and "namespace" not in pc
    # the call goes back as input with its namespace: the model sees the qualified name
    status, follow = _post(served, {"model": "tiny-round-0", "tools": tools, "max_output_tokens": 2, "input": [
        {"role": "user", "content": ASK}, {k: call[k] for k in ("type", "call_id", "namespace", "name", "arguments")},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "agent-1 started"}]})
    assert status == 200 and follow["output"]
    # an unknown namespace in tool_choice is a 400 naming the tools there are
    status, err = _post(served, {"input": ASK, "tools": tools,
                                 "tool_choice": {"type": "function", "name": "spawn_agent", "namespace": "other"}})
    assert status == 400 and "multi_agent_v1.spawn_agent" in err["error"]["message"]


def test_namespace_calls_as_the_model_sees_them(tiny):
    model, tok = tiny
    chat = ChatModel(model, tok)
    spawn = {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}
    job = chat.prepare_response({"input": [
        {"role": "user", "content": ASK},
        {"type": "function_call", "call_id": "c1", "namespace": "multi_agent_v1", "name": "spawn_agent",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "namespace", "name": "multi_agent_v1", "tools": [spawn]}], "max_output_tokens": 1})
    assert [t["function"]["name"] for t in job.req.tools] == ["multi_agent_v1.spawn_agent"]
    (sent,) = job.req.messages[1]["tool_calls"]
    assert (sent.get("function") or sent)["name"] == "multi_agent_v1.spawn_agent", sent
    assert job.req.messages[2]["name"] == "multi_agent_v1.spawn_agent"


def test_json_schema_format_gives_valid_json(served):
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "unit": {"enum": ["years", "months"]}},
              "required": ["age", "unit"], "additionalProperties": False}
    docs = []
    for seed_temp in (0.0, 0.5, 0.9):
        resp = client(served).responses.create(
            model="tiny-round-0", input=ASK, max_output_tokens=200, temperature=seed_temp,
            text={"format": {"type": "json_schema", "name": "age", "schema": schema, "strict": True}})
        assert resp.output_text.startswith("{")
        if resp.status == "completed":
            docs.append(json.loads(resp.output_text))
    assert docs
    for doc in docs:
        assert set(doc) == {"age", "unit"} and type(doc["age"]) is int and doc["unit"] in ("years", "months")
    bad = {"type": "object", "properties": {"age": {"type": "string", "pattern": "^[0-9]+$"}}}
    status, err = _post(served, {"input": ASK, "text": {"format": {"type": "json_schema", "name": "a", "schema": bad}}})
    assert status == 400 and "text.format.schema.properties.age.pattern" in err["error"]["message"]


def test_streamed_events_in_order_and_deltas_make_the_text(served):
    body = {"model": "tiny-round-0", "input": ASK, "temperature": 0, "max_output_tokens": 16}
    events = _events(served, body)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:6] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta", "response.output_text.delta"]
    deltas = [n for n in names if n == "response.output_text.delta"]
    assert names == names[:4] + deltas + ["response.output_text.done", "response.content_part.done",
                                          "response.output_item.done", names[-1]]
    assert names[-1] in ("response.completed", "response.incomplete")
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == events[-4][1]["text"] == events[-2][1]["item"]["content"][0]["text"]
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == text and final["usage"]["output_tokens"] >= 1
    assert events[0][1]["response"]["status"] == "in_progress" and events[0][1]["response"]["output"] == []
    whole = client(served).responses.create(**body)
    assert whole.output_text == text and whole.status == final["status"]


def test_streamed_function_call_through_the_openai_stream_helper(served):
    """The `openai` client's stream helper checks the event order (items added before their deltas,
    done before completed) and rebuilds the response from the events."""
    c = client(served)
    with c.responses.stream(model="tiny-round-0", input=ASK, tools=TOOLS, max_output_tokens=200,
                            tool_choice={"type": "function", "name": "add"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")
    (call,) = [o for o in final.output if o.type == "function_call"]
    assert call.name == "add" and set(json.loads(call.arguments)) == {"x", "y"}
    with c.responses.stream(model="tiny-round-0", input=ASK, temperature=0, max_output_tokens=40) as stream:
        events = list(stream)  # the greedy tiny model runs out of tokens: response.incomplete ends it
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert deltas == events[-1].response.output_text and deltas


def test_logprobs_whole_and_streamed(served):
    body = {"model": "tiny-round-0", "input": ASK, "temperature": 0, "max_output_tokens": 10, "top_logprobs": 2,
            "include": ["message.output_text.logprobs"]}
    whole = client(served).responses.create(**body)
    entries = whole.output[0].content[0].logprobs
    assert len(entries) == whole.usage.output_tokens and whole.top_logprobs == 2
    for e in entries:
        assert len(e.top_logprobs) == 2 and e.logprob <= 0 and e.token == e.top_logprobs[0].token  # greedy
    events = _events(served, body)
    streamed = [e["logprob"] for n, d in events if n == "response.output_text.delta" for e in d["logprobs"]]
    assert streamed == pytest.approx([e.logprob for e in entries])
    done = next(d for n, d in events if n == "response.output_text.done")
    assert [e["logprob"] for e in done["logprobs"]] == pytest.approx(streamed)
    plain = client(served).responses.create(model="tiny-round-0", input=ASK, max_output_tokens=2)
    assert plain.output[0].content[0].logprobs is None
    status, err = _post(served, {"input": ASK, "top_logprobs": 2})
    assert status == 400 and err["error"]["param"] == "top_logprobs"


def test_refused_fields_and_models(served):
    status, err = _post(served, {"input": ASK, "frobnicate": 1})
    assert status == 400 and err["error"]["param"] == "frobnicate" and "frobnicate" in err["error"]["message"]
    status, err = _post(served, {"input": ASK, "previous_response_id": "resp_123"})
    assert status == 400 and err["error"]["param"] == "previous_response_id"
    assert "whole conversation" in err["error"]["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client(served).responses.create(model="gpt-4o", input=ASK)
    assert "served: tiny-round-0" in str(e.value)
    status, err = _post(served, {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})
    assert status == 400 and "input[0].content[0]" in err["error"]["message"]
    status, err = _post(served, {"input": ASK, "tools": [{"type": "web_search"}]})
    assert status == 400 and "tools[0]" in err["error"]["message"]
    assert "-c web_search=" in err["error"]["message"]  # what to turn off in the Codex CLI, which sends it
    status, err = _post(served, {"input": ASK, "tools": [{"type": "namespace", "name": "multi_agent_v1",
                                                          "tools": [{"type": "web_search"}]}]})
    assert status == 400 and "tools[0].tools[0]" in err["error"]["message"]
    status, err = _post(served, {"input": []})
    assert status == 400 and err["error"]["param"] == "input"
    status, err = _post(served, {"input": ASK, "max_output_tokens": 0})
    assert status == 400 and err["error"]["param"] == "max_output_tokens"
    assert "'max_output_tokens'" in err["error"]["message"]
    status, err = _post(served, {"input": ASK, "reasoning": {"effort": "high"}})
    assert status == 400 and err["error"]["param"] == "reasoning"
    for field, value in (("prompt_cache_key", 7), ("client_metadata", "x")):
        status, err = _post(served, {"input": ASK, field: value})
        assert status == 400 and err["error"]["param"] == field
    status, _ = _post(served, {"input": ASK, "store": True, "max_output_tokens": 1, "metadata": {"a": "b"},
                               "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
                               "user": "u", "parallel_tool_calls": False})
    assert status == 200


def test_log_dir_covers_responses(tiny, tmp_path):
    from data_pipeline.store import ExperienceStore
    from trainer.cli import main

    model, tok = tiny
    logs = tmp_path / "served"
    with serving(model, tok, model_name="r3", log_dir=logs, policy="runs/x/rounds/round-0003") as url:
        c = client(url)
        plain = c.responses.create(model="r3", input=ASK, max_output_tokens=4, user="agent-7",
                                   prompt_cache_key="thread-1", extra_body={"client_metadata": {"turn_id": "t1"}})
        assert plain.prompt_cache_key == "thread-1"  # a cache hint (the answer never depends on it): echoed
        with c.responses.stream(model="r3", input=ROUND_TRIP, tools=TOOLS, max_output_tokens=4) as stream:
            for _ in stream:
                pass
    lines = [json.loads(line) for line in next(logs.glob("served-*.jsonl")).read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["metadata"]["request_id"] == plain.id
    # what the Codex CLI says about itself is kept beside the request's metadata
    assert lines[0]["metadata"]["metadata"] == {"client_metadata": {"turn_id": "t1"}}
    assert main(["ingest", str(logs), "--store", str(tmp_path / "store")]) == 0
    trajs = ExperienceStore(tmp_path / "store").trajectories()
    assert len(trajs) == 2 and {t.policy for t in trajs} == {"runs/x/rounds/round-0003"}
    follow = next(t for t in trajs if len(t.messages) > 2)
    assert [m.role for m in follow.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert follow.messages[2].tool_calls[0].name == "lookup" and follow.metadata["context_messages"] == [2]
    # the tools the model was offered are logged: an SFT row of this log renders them as it was prompted
    assert [t["function"]["name"] for t in follow.metadata["tools"]] == [t["name"] for t in TOOLS]
    assert {t.metadata.get("user") for t in trajs if len(t.messages) == 2} == {"agent-7"}


@pytest.mark.slow
def test_inspect_ai_over_the_responses_api(tiny, tmp_path, monkeypatch):
    """inspect_ai's `openai-api/flywheel/NAME` provider with `responses_api=True` (it then speaks
    /v1/responses): a forced tool call is parsed by the server, executed by inspect, and its output
    goes back as a function_call_output item; the served log ingests."""
    pytest.importorskip("inspect_ai", reason="pip install -e '.[harness]'")
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import ToolFunction, tool

    from data_pipeline.store import ExperienceStore
    from trainer.cli import main

    @tool
    def add():
        async def execute(x: int, y: int):
            """Add two numbers.

            Args:
                x: The first number.
                y: The second number.
            """
            return str(x + y)
        return execute

    model, tok = tiny
    with serving(model, tok, model_name="tiny", api_key="k", log_dir=tmp_path / "served") as url:
        monkeypatch.setenv("FLYWHEEL_BASE_URL", url)
        monkeypatch.setenv("FLYWHEEL_API_KEY", "k")
        task = Task(dataset=[Sample(input="What is 2+3? Use the add tool.", target="5")],
                    solver=[use_tools(add(), tool_choice=ToolFunction("add")), generate()], scorer=includes(),
                    message_limit=4)
        (log,) = inspect_eval(task, model="openai-api/flywheel/tiny", model_args={"responses_api": True},
                              log_dir=str(tmp_path / "logs"), display="none", max_tokens=200, seed=0)
    assert log.status == "success", log.error
    (sample,) = log.samples
    call = next(m for m in sample.messages if m.role == "assistant" and m.tool_calls).tool_calls[0]
    result = next(m for m in sample.messages if m.role == "tool")
    assert call.function == "add" and result.text == str(call.arguments["x"] + call.arguments["y"])
    assert main(["ingest", str(tmp_path / "served"), "--store", str(tmp_path / "served-store")]) == 0
    served = ExperienceStore(tmp_path / "served-store").trajectories()
    assert len(served) >= 2 and any(any(m.role == "tool" for m in t.messages) for t in served)
