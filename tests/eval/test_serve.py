"""flywheel serve: the OpenAI-compatible endpoint (Starlette on uvicorn) on the tiny model, called
over HTTP with the `openai` client and raw HTTP, and an external suite's harness acting through it
({endpoint})."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import openai
import pytest
import torch

from eval.chat_api import ToolFormat
from eval.config import EvalConfig, SuiteConfig
from eval.errors import EvalError
from eval.evaluator import evaluate
from eval.policy import HFPolicy, load_checkpoint
from eval.serve import ChatModel, make_server, serving, split_reply

TOOL_REPLY = '<|tool_call|>{"name": "lookup", "arguments": {"name": "ann", "field": "age"}}<|/tool_call|>'
ASK = [{"role": "user", "content": "How old is ann?"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
             "required": ["x", "y"]}}}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def taught(tiny):
    """A tiny model taught one tool-call reply to ASK (memorised in a few dozen steps)."""
    _, tok = tiny
    from trainer.tiny import build_model

    model = build_model(tok)
    text = tok.apply_chat_template(ASK, tools=TOOLS, tokenize=False, add_generation_prompt=True) + TOOL_REPLY + "<|end|>"
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, :len(tok(text[:-len(TOOL_REPLY + "<|end|>")], add_special_tokens=False)["input_ids"])] = -100
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < 0.01:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, tok


@pytest.fixture(scope="module")
def served(tiny):
    model, tok = tiny
    with serving(model, tok, model_name="tiny-round-0") as url:
        yield url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def _post(url: str, body: dict, headers: dict | None = None, path: str = "/chat/completions") -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_chat_completions_and_models_over_http(served):
    c = client(served)
    assert [m.id for m in c.models.list().data] == ["tiny-round-0"]
    reply = c.chat.completions.create(model="tiny-round-0", messages=ASK, temperature=0, max_tokens=8)
    assert reply.object == "chat.completion" and reply.model == "tiny-round-0"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = c.chat.completions.create(messages=ASK, temperature=0, max_tokens=8, model="tiny-round-0")
    assert again.choices[0].message.content == choice.message.content  # greedy: the same reply
    assert _post(served, {"messages": []})[0] == 400


def test_special_tokens_never_reach_content(served):
    """A long free reply of the random model prints turn marks; none of them is in the content."""
    reply = client(served).chat.completions.create(model="tiny-round-0", messages=ASK, max_tokens=120, seed=3,
                                                   logit_bias={"1": -100})  # no end-of-turn: the whole budget
    text = reply.choices[0].message.content
    assert reply.usage.completion_tokens == 120 and reply.choices[0].finish_reason == "length"
    assert "<|" not in text and "|>" not in text


def test_special_tokens_are_in_the_raw_reply_not_the_content(tiny):
    model, tok = tiny
    chat = ChatModel(model, tok)
    job = chat.prepare({"messages": ASK, "max_tokens": 120, "seed": 3, "logit_bias": {"1": -100}})
    reply = chat.finish(job)
    assert "<|system|>" in job.rows[0].text  # what the model printed
    assert "<|" not in reply["choices"][0]["message"]["content"]


def test_tool_call_replies_come_back_as_tool_calls(taught):
    model, tok = taught
    with serving(model, tok) as url:
        reply = client(url).chat.completions.create(model="flywheel", messages=ASK, tools=TOOLS, temperature=0,
                                                    max_tokens=40)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.function.name == "lookup"
        assert json.loads(call.function.arguments) == {"name": "ann", "field": "age"}
        # streamed: the call arrives as deltas (id + name, then arguments), never as content
        chunks = list(client(url).chat.completions.create(model="flywheel", messages=ASK, tools=TOOLS, temperature=0,
                                                          max_tokens=40, stream=True))
        deltas = [ch.choices[0].delta for ch in chunks]
        assert not "".join(d.content or "" for d in deltas)
        pieces = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert pieces[0].id and pieces[0].function.name == "lookup"
        assert json.loads("".join(tc.function.arguments or "" for tc in pieces)) == {"name": "ann", "field": "age"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        # tool_choice none: the decode may not open a tool call, so the taught call cannot come out
        none = client(url).chat.completions.create(model="flywheel", messages=ASK, tools=TOOLS, temperature=0,
                                                   max_tokens=40, tool_choice="none")
        assert none.choices[0].finish_reason != "tool_calls" and not none.choices[0].message.tool_calls


def test_tool_choice_forces_a_call_on_an_untrained_model(served):
    """The random model never calls a tool by itself; `required` and a named function force one,
    with arguments that fit the tool's parameter schema."""
    c = client(served)
    named = c.chat.completions.create(model="tiny-round-0", messages=ASK, tools=TOOLS, max_tokens=200, seed=0,
                                      tool_choice={"type": "function", "function": {"name": "add"}})
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    args = json.loads(call.function.arguments)
    assert call.function.name == "add" and set(args) == {"x", "y"} and all(type(v) is int for v in args.values())
    required = c.chat.completions.create(model="tiny-round-0", messages=ASK, tools=TOOLS, max_tokens=200, seed=1,
                                         tool_choice="required")
    (call,) = required.choices[0].message.tool_calls
    args = json.loads(call.function.arguments)
    assert call.function.name in ("lookup", "add") and isinstance(args, dict)
    if call.function.name == "add":  # the chosen tool's own schema
        assert set(args) == {"x", "y"} and all(type(v) is int for v in args.values())
    status, err = _post(served, {"messages": ASK, "tools": TOOLS,
                                 "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert status == 400 and "'nope'" in err["error"]["message"] and "lookup, add" in err["error"]["message"]
    assert _post(served, {"messages": ASK, "tool_choice": "required"})[1]["error"]["param"] == "tool_choice"


def test_qwen_hermes_tool_calls_parsed_and_forced(tiny_model_dir):
    """A Qwen3-template model: the format is read from its template (`<tool_call>\\n{json}\\n</tool_call>`),
    a forced call comes back through the tokenizer's response template (transformers' parse_response,
    set by TRL), and the marks parse it where no response template exists (SmolLM2 / Hermes)."""
    import trl.chat_template_utils as trl_templates

    model, tok = load_checkpoint(tiny_model_dir)
    tok.chat_template = trl_templates.qwen3_chat_template
    fmt = ToolFormat.of(tok)
    assert (fmt.open, fmt.close) == ("<tool_call>\n", "\n</tool_call>")
    text = 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"x": 2, "y": 3}}\n</tool_call>'
    content, calls = split_reply(text, fmt)
    assert content == "Let me add." and calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 2, "y": 3}
    chat = ChatModel(model, tok)
    assert chat.parser is not None  # TRL's response template for qwen3
    reply = chat.complete({"messages": ASK, "tools": TOOLS, "max_tokens": 200, "seed": 0,
                           "tool_choice": {"type": "function", "function": {"name": "add"}}})
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"][0]["function"]["name"] == "add"
    assert set(json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])) == {"x", "y"}
    assert "<tool_call>" not in (choice["message"]["content"] or "")


def test_split_reply_keeps_text_and_malformed_calls():
    content, calls = split_reply('ok <|tool_call|>{"name": "add", "arguments": {"a": 1}}<|/tool_call|> <|tool_call|>{bad<|/tool_call|>')
    assert [c["function"]["name"] for c in calls] == ["add"] and "{bad" in content


def test_stop_top_p_logprobs_and_n(served):
    c = client(served)
    base = dict(model="tiny-round-0", messages=ASK, max_tokens=12, logit_bias={"1": -100})
    greedy = c.chat.completions.create(temperature=0, **base).choices[0].message.content
    assert len(greedy) > 4
    cut = c.chat.completions.create(temperature=0, stop=[greedy[3:5]], **base).choices[0]
    assert cut.message.content == greedy[:3].strip() and cut.finish_reason == "stop"
    # top_p keeps only the likeliest token when it is tiny: sampling at temperature 1 is then greedy
    nucleus = c.chat.completions.create(temperature=1.0, top_p=1e-9, seed=5, **base).choices[0].message.content
    assert nucleus == greedy
    lp = c.chat.completions.create(temperature=0, logprobs=True, top_logprobs=3, **base)
    entries = lp.choices[0].logprobs.content
    assert len(entries) == lp.usage.completion_tokens == 12
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        assert e.token == e.top_logprobs[0].token  # greedy picks the likeliest
    many = c.chat.completions.create(temperature=1.0, n=3, seed=11, **base)
    assert [ch.index for ch in many.choices] == [0, 1, 2]
    assert many.usage.completion_tokens == 36
    assert len({ch.message.content for ch in many.choices}) > 1  # each row samples on its own
    same = c.chat.completions.create(temperature=1.0, n=3, seed=11, **base)
    assert [ch.message.content for ch in same.choices] == [ch.message.content for ch in many.choices]


def test_penalties_and_parallel_tool_calls(tiny):
    """frequency / presence penalties change a greedy reply that repeats itself; parallel_tool_calls
    false keeps one call of a turn that made two."""
    from eval.decoding import Row

    model, tok = tiny
    chat = ChatModel(model, tok)
    base = {"messages": ASK, "max_tokens": 40, "temperature": 0, "logit_bias": {"1": -100}}
    plain = chat.complete(base)["choices"][0]["message"]["content"]
    assert chat.complete({**base, "frequency_penalty": 2.0})["choices"][0]["message"]["content"] != plain
    assert chat.complete({**base, "presence_penalty": 2.0})["choices"][0]["message"]["content"] != plain
    two = ('<|tool_call|>{"name": "add", "arguments": {"x": 1, "y": 2}}<|/tool_call|>'
           '<|tool_call|>{"name": "lookup", "arguments": {}}<|/tool_call|>')
    for parallel, names in ((True, ["add", "lookup"]), (False, ["add"])):
        job = chat.prepare({"messages": ASK, "tools": TOOLS, "parallel_tool_calls": parallel})
        message, finish = chat._message(job, Row(text=two, finish="stop"))
        assert [c["function"]["name"] for c in message["tool_calls"]] == names and finish == "tool_calls"


def test_max_tokens_is_capped_by_the_context(tiny):
    model, tok = tiny
    chat = ChatModel(model, tok)
    prompt = len(chat.prepare({"messages": ASK}).prompt_ids)
    chat.context = prompt + 5
    reply = chat.complete({"messages": ASK, "max_tokens": 10**6, "logit_bias": {"1": -100}})
    assert reply["usage"]["completion_tokens"] == 5 and reply["choices"][0]["finish_reason"] == "length"
    chat.context = prompt
    with pytest.raises(Exception, match="context is"):
        chat.prepare({"messages": ASK})


def test_response_format_json_object_and_schema(served):
    """The decode is constrained to JSON (of the schema): every reply the random model ends is a
    valid document (some run out of tokens inside a long string, which the model is free to write)."""
    c = client(served)
    ended = []
    for seed in range(6):
        obj = c.chat.completions.create(model="tiny-round-0", messages=ASK, max_tokens=120, seed=seed,
                                        temperature=0.7, response_format={"type": "json_object"})
        text = obj.choices[0].message.content
        assert text.startswith("{")
        if obj.choices[0].finish_reason == "stop":
            ended.append(json.loads(text))
    assert ended and all(isinstance(d, dict) for d in ended)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "unit": {"enum": ["years", "months"]},
                                               "ok": {"type": "boolean"}}, "required": ["age", "unit", "ok"],
              "additionalProperties": False}
    docs = []
    for seed in range(4):
        got = c.chat.completions.create(model="tiny-round-0", messages=ASK, max_tokens=200, seed=seed,
                                        response_format={"type": "json_schema",
                                                         "json_schema": {"name": "a", "schema": schema}})
        if got.choices[0].finish_reason == "stop":
            docs.append(json.loads(got.choices[0].message.content))
    assert docs
    for doc in docs:
        assert set(doc) == {"age", "unit", "ok"} and type(doc["age"]) is int and doc["unit"] in ("years", "months")
        assert type(doc["ok"]) is bool
    bad = {"type": "object", "properties": {"age": {"type": "string", "pattern": "^[0-9]+$"}}}
    status, err = _post(served, {"messages": ASK, "response_format": {"type": "json_schema",
                                                                      "json_schema": {"name": "a", "schema": bad}}})
    assert status == 400 and "response_format.json_schema.schema.properties.age.pattern" in err["error"]["message"]


def test_unknown_fields_and_models_are_refused_by_name(served):
    status, err = _post(served, {"messages": ASK, "functions": [], "model": "tiny-round-0"})
    assert status == 400 and "functions" in err["error"]["message"] and err["error"]["param"] == "functions"
    with pytest.raises(openai.NotFoundError) as e:
        client(served).chat.completions.create(model="gpt-4o", messages=ASK)
    assert "served: tiny-round-0" in str(e.value)
    status, err = _post(served, {"messages": ASK, "top_logprobs": 2})
    assert status == 400 and err["error"]["param"] == "top_logprobs"
    status, err = _post(served, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})
    assert status == 400 and "messages[0].content[0]" in err["error"]["message"]


def test_streaming_text_matches_the_whole_reply(served):
    c = client(served)
    kw = dict(model="tiny-round-0", messages=ASK, temperature=0, max_tokens=16, logit_bias={"1": -100})
    whole = c.chat.completions.create(**kw)
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    with_lp = list(c.chat.completions.create(stream=True, logprobs=True, **kw))
    streamed_lp = [e.logprob for ch in with_lp if ch.choices and ch.choices[0].logprobs
                   for e in ch.choices[0].logprobs.content]
    whole_lp = [e.logprob for e in c.chat.completions.create(logprobs=True, **kw).choices[0].logprobs.content]
    assert len(streamed_lp) == 16 and streamed_lp == pytest.approx(whole_lp)
    # raw: server-sent events closed by [DONE]
    u = urlparse(served)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({**kw, "stream": True}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    assert raw.rstrip().endswith("data: [DONE]")


def test_api_key(tiny):
    model, tok = tiny
    with serving(model, tok, api_key="s3cret") as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").chat.completions.create(model="flywheel", messages=ASK, max_tokens=2)
        status, err = _post(url, {"messages": ASK, "max_tokens": 2})
        assert status == 401 and "Bearer" in err["error"]["message"]
        ok = client(url, "s3cret").chat.completions.create(model="flywheel", messages=ASK, max_tokens=2)
        assert ok.usage.completion_tokens >= 1
        with urllib.request.urlopen(url.replace("/v1", "/health"), timeout=30) as r:
            assert json.loads(r.read())["status"] == "ok"
    with pytest.raises(EvalError, match="--api-key"):
        make_server(model, tok, host="0.0.0.0", port=0)


def test_concurrency_limit_queues_then_refuses(tiny):
    """One generation at a time and no queue: a request arriving while another runs gets 503."""
    model, tok = tiny
    long = {"messages": ASK, "max_tokens": 1500, "logit_bias": {"1": -100}}
    with serving(model, tok, max_concurrency=1, max_queue=0) as url:
        first = threading.Thread(target=_post, args=(url, long))
        first.start()
        time.sleep(1.0)
        status, err = _post(url, {"messages": ASK, "max_tokens": 2})
        first.join()
        assert status == 503 and "busy" in err["error"]["message"]
        assert _post(url, {"messages": ASK, "max_tokens": 2})[0] == 200


def test_log_dir_feeds_the_store(tiny, tmp_path):
    """Served conversations land in canonical JSONL that `flywheel ingest` takes; only the served
    reply is trained on (the request's earlier assistant turn is context)."""
    from data_pipeline.store import ExperienceStore
    from trainer.cli import main

    model, tok = tiny
    logs = tmp_path / "served"
    with serving(model, tok, model_name="r3", log_dir=logs, policy="runs/x/rounds/round-0003") as url:
        c = client(url)
        c.chat.completions.create(model="r3", messages=ASK, max_tokens=6, seed=1, n=2, user="agent-7")
        follow = ASK + [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"name": "ann"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "41"}]
        list(c.chat.completions.create(model="r3", messages=follow, tools=TOOLS, max_tokens=6, seed=2, stream=True))
    (log,) = logs.glob("served-*.jsonl")
    assert len(log.read_text().splitlines()) == 3
    store_dir = tmp_path / "store"
    assert main(["ingest", str(logs), "--store", str(store_dir)]) == 0
    trajs = ExperienceStore(store_dir).trajectories()
    assert len(trajs) == 3 and {t.policy for t in trajs} == {"runs/x/rounds/round-0003"}
    streamed = next(t for t in trajs if len(t.messages) == 4)
    assert streamed.messages[1].tool_calls[0].name == "lookup" and streamed.messages[2].role == "tool"
    assert streamed.metadata["context_messages"] == [1] and streamed.messages[-1].role == "assistant"
    assert streamed.started_at <= streamed.ended_at and streamed.messages[-1].token_ids
    assert {t.metadata.get("user") for t in trajs if len(t.messages) == 2} == {"agent-7"}


def test_sigterm_stops_the_cli_cleanly(tiny_model_dir):
    proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", "serve", "--checkpoint", str(tiny_model_dir),
                             "--port", "0", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FLYWHEEL_API_KEY": ""})
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert _post(url, {"messages": ASK, "max_tokens": 2})[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out


def test_cli_refuses_a_public_host_without_a_key(tiny_model_dir, capsys, monkeypatch):
    from trainer.cli import main

    monkeypatch.delenv("FLYWHEEL_API_KEY", raising=False)
    assert main(["serve", "--checkpoint", str(tiny_model_dir), "--host", "0.0.0.0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and "FLYWHEEL_API_KEY" in err and err.count("\n") == 1


HARNESS = """
import json, sys, urllib.request
endpoint, task, out = sys.argv[1:4]
if task == "crash":
    sys.exit(3)
body = {"messages": [{"role": "user", "content": "task " + task}], "temperature": 0, "max_tokens": 4}
req = urllib.request.Request(endpoint + "/chat/completions", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
ok = reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] >= 1
json.dump({"score": 1.0 if ok else 0.0, "success": ok, "duration_s": 5.0}, open(out, "w"))
"""


def test_external_suite_acts_through_the_served_checkpoint(tiny, tmp_path):
    model, tok = tiny
    (tmp_path / "harness.py").write_text(textwrap.dedent(HARNESS))
    (tmp_path / "suite.yaml").write_text(
        f"name: via-endpoint\ncommand: {sys.executable} harness.py {{endpoint}} {{task_id}} {{out}}\n"
        "tasks: [a, b, crash]\ntimeout_s: 120\n")
    cfg = EvalConfig(suites=[SuiteConfig(name=str(tmp_path / "suite.yaml"), episodes=3)])
    summary = evaluate(HFPolicy(model, tok, name="tiny"), cfg, tmp_path / "eval", checkpoint="tiny", progress=False)
    s = summary["suites"][str(tmp_path / "suite.yaml")]
    assert s["status_counts"] == {"ok": 2, "timeout": 0, "error": 1}
    assert s["per_task_success"] == {"a": 1.0, "b": 1.0, "crash": 0.0}


def test_developer_role_is_the_system_role_and_unknown_routes_keep_the_connection(served):
    """`developer` (the OpenAI API's newer system role) renders as system; a POST to a route the
    server does not have is a JSON 404 whose body is consumed, so the next request on the same
    keep-alive connection is answered."""
    from eval.serve import _chat_messages

    as_developer = _chat_messages({"messages": [{"role": "developer", "content": "Be brief."}, *ASK]})
    as_system = _chat_messages({"messages": [{"role": "system", "content": "Be brief."}, *ASK]})
    assert as_developer == as_system and as_developer[0]["role"] == "system"
    u = urlparse(served)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = json.dumps({"model": "flywheel", "input": "hi " * 200})  # a /v1/embeddings request
    conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 404 and "no route POST /v1/embeddings" in json.loads(r.read())["error"]["message"]
    conn.request("GET", "/v1/chat/completions")  # a known route, the wrong method: JSON too
    r = conn.getresponse()
    assert r.status == 405 and "error" in json.loads(r.read())
    chat = json.dumps({"messages": [{"role": "developer", "content": "Be brief."}, *ASK], "max_tokens": 4,
                       "temperature": 0})
    conn.request("POST", "/v1/chat/completions", body=chat, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["object"] == "chat.completion"
    conn.close()


@pytest.mark.slow
def test_inspect_ai_task_runs_its_tool_through_the_server(tiny, tmp_path, monkeypatch):
    """A small local inspect_ai task (no hub, no docker) with a tool, against the served tiny model
    through inspect's `openai-api/flywheel/NAME` provider: the forced call is parsed by the server and
    executed by inspect, and both inspect's .eval log and the server's --log-dir ingest."""
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
        task = Task(dataset=[Sample(input="What is 2+3? Use the add tool.", target="5"),
                             Sample(input="What is 1+1?", target="2")],
                    solver=[use_tools(add(), tool_choice=ToolFunction("add")), generate()], scorer=includes(),
                    message_limit=6)
        (log,) = inspect_eval(task, model="openai-api/flywheel/tiny", log_dir=str(tmp_path / "logs"),
                              display="none", max_tokens=300, seed=0)
    assert log.status == "success"
    for sample in log.samples:
        call = next(m for m in sample.messages if m.role == "assistant" and m.tool_calls).tool_calls[0]
        result = next(m for m in sample.messages if m.role == "tool")
        assert call.function == "add" and result.text == str(call.arguments["x"] + call.arguments["y"])
    assert main(["ingest", str(tmp_path / "logs"), "--store", str(tmp_path / "store")]) == 0
    samples = ExperienceStore(tmp_path / "store").trajectories()
    assert len(samples) == 2 and all(any(m.role == "tool" for m in t.messages) for t in samples)
    assert main(["ingest", str(tmp_path / "served"), "--store", str(tmp_path / "served-store")]) == 0
    served = ExperienceStore(tmp_path / "served-store").trajectories()
    assert len(served) == 4 and sum(bool(t.messages[-1].tool_calls) for t in served) == 2


@pytest.mark.real
def test_smollm2_forced_tool_call_in_hermes_form(real_model_dir):
    """SmolLM2 (ChatML; its template prints no tool calls): Hermes' `<tool_call>` marks, a call forced
    by tool_choice comes back as tool_calls with the arguments the model chose."""
    model, tok = load_checkpoint(real_model_dir)
    chat = ChatModel(model, tok)
    assert chat.fmt.open == "<tool_call>\n" and chat.fmt.source == "hermes marks"
    reply = chat.complete({"messages": [{"role": "user", "content": "What is 2+3?"}], "tools": TOOLS[1:],
                           "tool_choice": "required", "temperature": 0, "max_tokens": 120})
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "add" and json.loads(call["function"]["arguments"]) == {"x": 2, "y": 3}


def test_a_stream_whose_client_leaves_stops_generating(tiny):
    model, tok = tiny
    with serving(model, tok) as url:
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        body = {"messages": ASK, "stream": True, "max_tokens": 8000, "logit_bias": {"1": -100}}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.readline().startswith(b"data: ")
        health = url.replace("/v1", "/health")
        with urllib.request.urlopen(health, timeout=30) as h:
            assert json.loads(h.read())["running"] == 1
        r.close()  # the client goes away mid-stream
        conn.close()
        deadline = time.time() + 15
        while time.time() < deadline:
            with urllib.request.urlopen(health, timeout=30) as h:
                if json.loads(h.read())["running"] == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the generation went on after its client left")
