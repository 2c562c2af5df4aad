"""flywheel serve: the OpenAI-compatible endpoint on the tiny model, called over HTTP, and an
external suite's harness acting through it ({endpoint})."""
from __future__ import annotations

import json
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
import torch

from eval.config import EvalConfig, SuiteConfig
from eval.evaluator import evaluate
from eval.policy import HFPolicy, load_checkpoint
from eval.serve import serving, split_reply

TOOL_REPLY = '<|tool_call|>{"name": "lookup", "arguments": {"name": "ann", "field": "age"}}<|/tool_call|>'
ASK = [{"role": "user", "content": "How old is ann?"}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_chat_completions_and_models_over_http(tiny):
    model, tok = tiny
    with serving(model, tok, model_name="tiny-round-0") as url:
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == "tiny-round-0"
        status, reply = _post(url, {"messages": ASK, "temperature": 0, "max_tokens": 8})
        assert status == 200 and reply["object"] == "chat.completion"
        choice = reply["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length", "tool_calls")
        assert 1 <= reply["usage"]["completion_tokens"] <= 8
        again = _post(url, {"messages": ASK, "temperature": 0, "max_tokens": 8})[1]
        assert again["choices"] == reply["choices"]  # greedy: the same reply
        assert _post(url, {"messages": []})[0] == 400
        assert _post(url, {"messages": ASK, "stream": True})[1]["error"]["message"].startswith("streaming")


def test_tool_call_replies_come_back_as_tool_calls(tiny):
    """A model taught one tool-call reply answers through the endpoint with OpenAI tool_calls."""
    _, tok = tiny
    from trainer.tiny import build_model

    model = build_model(tok)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    text = tok.apply_chat_template(ASK, tools=tools, tokenize=False, add_generation_prompt=True) + TOOL_REPLY + "<|end|>"
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, :len(tok(text[:-len(TOOL_REPLY + "<|end|>")], add_special_tokens=False)["input_ids"])] = -100
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):  # memorize the one reply (a few dozen steps)
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < 0.01:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with serving(model, tok) as url:
        status, reply = _post(url, {"messages": ASK, "tools": tools, "temperature": 0, "max_tokens": 40})
    assert status == 200, reply
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup" and json.loads(call["function"]["arguments"]) == {"name": "ann", "field": "age"}


def test_split_reply_keeps_text_and_malformed_calls():
    content, calls = split_reply('ok <|tool_call|>{"name": "add", "arguments": {"a": 1}}<|/tool_call|> <|tool_call|>{bad<|/tool_call|>')
    assert [c["function"]["name"] for c in calls] == ["add"] and "{bad" in content


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


def test_developer_role_is_the_system_role_and_unknown_routes_keep_the_connection(tiny):
    """`developer` (the OpenAI API's newer system role) renders as system; a POST to a route the
    server does not have is a JSON 404 whose body is consumed, so the next request on the same
    keep-alive connection is answered."""
    import http.client
    from urllib.parse import urlparse

    from eval.serve import _chat_messages

    as_developer = _chat_messages({"messages": [{"role": "developer", "content": "Be brief."}, *ASK]})
    as_system = _chat_messages({"messages": [{"role": "system", "content": "Be brief."}, *ASK]})
    assert as_developer == as_system and as_developer[0]["role"] == "system"
    model, tok = tiny
    with serving(model, tok) as url:
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        body = json.dumps({"model": "flywheel", "input": "hi " * 200})  # a /v1/responses request
        conn.request("POST", "/v1/responses", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 404 and "no route /v1/responses" in json.loads(r.read())["error"]["message"]
        chat = json.dumps({"messages": [{"role": "developer", "content": "Be brief."}, *ASK], "max_tokens": 4,
                           "temperature": 0})
        conn.request("POST", "/v1/chat/completions", body=chat, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["object"] == "chat.completion"
        conn.close()
