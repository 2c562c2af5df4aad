"""The agent trace formats read from real public samples under tests/fixtures/samples/ (each with
its SOURCE.md): ATIF (Harbor / Terminal-Bench; real harbor files + one synthetic v1.7 file),
OpenTelemetry GenAI spans as OTLP JSON (one file written by OpenTelemetry's own Python packages,
see tests/fixtures/otel-genai/make_real.py, and one synthetic file after the semantic conventions;
the real public Tempo / Jaeger exports in its subfolders are tested in test_otel_real_samples.py)
and OpenAI Agents SDK trace exports (written by the SDK itself, see
tests/fixtures/openai-agents/make_trace.py; real Responses-API captures are read in
test_agents_responses.py). Counts add up, tool calls are paired with their
results, copied context is marked, and values match the original files. Auto-detection picks the
right format for these files and the new detectors claim none of the shared samples."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline import sources
from data_pipeline.adapters import atif, formats, openai_agents, otel_genai
from data_pipeline.store import ExperienceStore
from tests.paths import TESTS
from tests.samples import shared_samples

SAMPLES = TESTS / "fixtures" / "samples"
ATIF = SAMPLES / "atif"
GOLDEN = ATIF / "harbor" / "tests" / "golden"
OTEL = SAMPLES / "otel-genai" / "synthetic-otlp-genai-traces.jsonl"
OTEL_REAL = SAMPLES / "otel-genai" / "otel-python-openai-v2-weather.jsonl"
AGENTS = SAMPLES / "openai-agents" / "agents-sdk-0.24.0-handoff-tools.jsonl"
# written by the real libraries in a real run against flywheel serve (tests/data_pipeline/test_traces_real.py)
OTEL_SERVED = SAMPLES / "otel-genai" / "generated-by-opentelemetry-instrumentation-openai-v2-2.4b0.json"
AGENTS_SERVED = SAMPLES / "openai-agents" / "generated-by-openai-agents-0.24.0.jsonl"
NEW = {"atif": atif, "otel-genai": otel_genai, "openai-agents": openai_agents}


def _ingest(tmp_path: Path, root: Path):
    store = ExperienceStore(tmp_path / "store")
    summary = store.ingest([root])
    trajs = list(store.trajectories(include_heldout=True))
    return store, summary, trajs


def _sample_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and sources.skip_note(p) is None]


@pytest.mark.parametrize("fmt", sorted(NEW))
def test_auto_detection_picks_the_format(fmt):
    files = _sample_files(SAMPLES / fmt)
    assert files
    for f in files:
        assert sources.detect(f) == fmt, f


@pytest.mark.skipif(not shared_samples().is_dir(), reason="shared trajectory samples not present")
def test_new_detectors_claim_no_shared_sample():
    for f in _sample_files(shared_samples()):
        with open(f, "rb") as fh:
            head = fh.read(64 * 1024)
        for name, mod in NEW.items():
            assert not mod.detect(f, head), f"{name} claims {f}"


def test_registry_has_the_new_formats():
    assert set(NEW) <= set(formats())


# ---- ATIF ------------------------------------------------------------------------------------
def test_atif_counts_add_up(tmp_path):
    store, s, trajs = _ingest(tmp_path, ATIF)
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert s.quarantined == 0, store.quarantine()
    assert set(s.formats.values()) == {"atif"}
    # 3 harbor files + the synthetic v1.7 file (root + 1 embedded subagent)
    assert s.read == 5 and s.accepted == 5
    assert {Path(p).name for p, _ in s.skipped} >= {"LICENSE", "SOURCE.md"}


def _one(trajs, pred):
    hits = [t for t in trajs if pred(t)]
    assert len(hits) == 1, len(hits)
    return hits[0]


def test_atif_terminus_tool_calls_results_and_token_metrics(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "terminus_2" / "hello-world-context-summarization.trajectory.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.episode_id == f"{doc['session_id']}/{f.name}")
    assert t.policy == doc["agent"]["model_name"] == "openai/gpt-4o" and t.category == "terminus-2"
    agent_steps = [s for s in doc["steps"] if s["source"] == "agent"]
    assistants = [m for m in t.messages if m.role == "assistant"]
    assert len(assistants) == len(agent_steps)
    step, mine = agent_steps[0], assistants[0]
    call = step["tool_calls"][0]
    assert mine.content == step["message"]
    assert (mine.tool_calls[0].id, mine.tool_calls[0].name, mine.tool_calls[0].arguments) == (
        call["tool_call_id"], call["function_name"], call["arguments"])
    assert mine.token_ids == step["metrics"]["completion_token_ids"]
    assert mine.logprobs == pytest.approx(step["metrics"]["logprobs"])
    # terminus-2 writes each command's output without source_call_id: it answers the step's call
    i = t.messages.index(mine)
    result = t.messages[i + 1]
    assert result.role == "tool" and result.tool_call_id == call["tool_call_id"] and result.name == "bash_command"
    assert result.content == step["observation"]["results"][0]["content"]
    # every call with a result is answered right after its step
    calls = {c.id for m in t.messages for c in m.tool_calls}
    assert {m.tool_call_id for m in t.messages if m.role == "tool"} <= calls
    # the summarisation handoff (a system step) references the subagent trajectories
    assert [r["step"] for r in t.metadata["subagent_refs"]] == [
        i for i, s in enumerate(doc["steps"]) if s.get("observation") and any(
            r.get("subagent_trajectory_ref") for r in s["observation"]["results"])]
    assert t.outcome.success is None  # ATIF has no reward field and no trial directory is beside it


def test_atif_copied_context_is_marked(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "terminus_2" / "hello-world-context-summarization-linear-history.trajectory.cont-1.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.episode_id.endswith(f.name))
    copied = [s for s in doc["steps"] if s.get("is_copied_context")]
    assert len(copied) == 4 and t.metadata["context_messages"] == [0, 1, 2, 3]
    assert t.messages[2].role == "assistant" and t.messages[2].content == copied[2]["message"]
    # agent steps without tool calls: their observation is environment feedback, a user turn
    assert [m.role for m in t.messages[4:6]] == ["assistant", "user"]
    assert t.messages[5].content == doc["steps"][4]["observation"]["results"][0]["content"]


def test_atif_openhands_tools_and_pairing(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "openhands" / "hello-world.trajectory.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.category == "openhands")
    assert [m.role for m in t.messages] == ["system", "user", "system", "system", "assistant", "tool", "assistant"]
    assert t.metadata["tools"][0]["function"]["name"] == doc["agent"]["tool_definitions"][0]["function"]["name"]
    res = doc["steps"][4]["observation"]["results"][0]
    assert t.messages[5].tool_call_id == res["source_call_id"] == t.messages[4].tool_calls[0].id
    assert t.messages[5].content == res["content"]
    assert t.messages[6].tool_calls[0].name == "finish"


def test_atif_embedded_subagents_synthetic(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    root = _one(trajs, lambda t: t.task_id == "synthetic/count-lines")
    child = _one(trajs, lambda t: t.task_id == "synthetic/count-lines/subagent/child-1")
    assert root.outcome.success is True and root.outcome.score == 1.0  # extra.reward
    assert child.metadata["parent"]["episode_id"] == root.episode_id and child.outcome.labeled is False
    assert root.messages[2].tool_calls[0].name == "delegate_task" and root.messages[3].tool_call_id == "call_delegate_1"
    assert root.metadata["reasoning"] == {"2": "A subagent with a shell can do this."}
    assert root.interaction_s == pytest.approx(9.0)
    assert [m.role for m in child.messages] == ["user", "assistant", "tool", "assistant"]


def test_atif_harbor_trial_directory_joins_task_and_reward(tmp_path):
    trial = tmp_path / "trials" / "hello-world__abc"
    (trial / "agent").mkdir(parents=True)
    (trial / "verifier").mkdir()
    src = GOLDEN / "openhands" / "hello-world.trajectory.json"
    (trial / "agent" / "trajectory.json").write_bytes(src.read_bytes())
    (trial / "result.json").write_text(json.dumps({"task_name": "hello-world"}))
    (trial / "verifier" / "reward.txt").write_text("1\n")
    (tmp_path / "trials" / "result.json").write_text(json.dumps({"n_trials": 1}))
    (trial / "config.json").write_text(json.dumps({"agent": {"name": "openhands"}}))
    store, s, trajs = _ingest(tmp_path, tmp_path / "trials")  # a whole harbor job folder
    assert (s.read, s.accepted, s.quarantined) == (1, 1, 0) and trajs[0].task_id == "hello-world"
    assert {Path(p).name for p, _ in s.skipped} == {"result.json", "config.json", "reward.txt"}
    recs = list(atif.read(trial / "agent" / "trajectory.json"))
    assert len(recs) == 1 and recs[0].data["task_id"] == "hello-world"
    assert recs[0].data["outcome"] == {"success": True, "score": 1.0}
    (trial / "verifier" / "reward.txt").write_text("7\n")
    rec = next(atif.read(trial / "agent" / "trajectory.json"))
    assert rec.error == ("verifier/reward.txt", "must lie in [0, 1], got 7.0")


def test_atif_malformed_records_are_quarantined_with_the_field(tmp_path):
    doc = json.loads((ATIF / "synthetic" / "synthetic-v1.7-embedded-subagent.trajectory.json").read_text())
    doc["steps"][2]["tool_calls"][0].pop("function_name")
    doc["subagent_trajectories"][0]["steps"][0]["source"] = "robot"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    recs = list(atif.read(f))
    assert [r.error[0] for r in recs] == ["steps[2].tool_calls[0].function_name", "<parent>"]
    doc["steps"][2]["tool_calls"][0]["function_name"] = "delegate_task"
    f.write_text(json.dumps(doc))
    recs = list(atif.read(f))
    assert recs[0].data is not None and recs[1].error == ("steps[0].source", "expected system, user or agent, got 'robot'")


# ---- OpenTelemetry GenAI (OTLP JSON) ----------------------------------------------------------
def _otel_lines():
    return [json.loads(line) for line in OTEL.read_text().splitlines()]


def test_otel_counts_and_conversation_grouping(tmp_path):
    store, s, trajs = _ingest(tmp_path, SAMPLES / "otel-genai")
    # 4 from the files here, 3 from the real exports in the subfolders (test_otel_real_samples.py), 2
    # Strands runs (test_otel_span_events.py); their generate.py is skipped as program source
    assert s.read == s.accepted + s.duplicates + s.quarantined == 9 and s.quarantined == 0, store.quarantine()
    assert ("program source, not trajectories" in dict((Path(p).name, why) for p, why in s.skipped)["generate.py"])
    conv = _one(trajs, lambda t: t.episode_id == "conversation conv_5j66UpCpwteGg4YSxUnt7lPY")
    assert len(conv.metadata["trace_ids"]) == 2  # two traces (two export lines), one conversation
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant", "user",
                                               "assistant", "tool", "assistant"]
    spans = [sp for line in _otel_lines() for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    attrs = {a["key"]: a["value"] for a in spans[1]["attributes"]}
    out = json.loads(attrs["gen_ai.output.messages"]["stringValue"])[0]["parts"][0]
    call = conv.messages[2].tool_calls[0]
    assert (call.id, call.name, call.arguments) == (out["id"], out["name"], out["arguments"])
    assert conv.messages[3].tool_call_id == call.id and conv.messages[3].name == "get_weather"
    assert conv.messages[3].content == "rainy, 57°F"
    assert conv.messages[0].content == "You are a helpful weather assistant."  # gen_ai.system_instructions
    assert conv.metadata["tools"][0]["function"]["name"] == "get_weather"
    assert conv.metadata["reasoning"] == {"6": "Lyon was not looked up; call the tool."}
    assert conv.policy == "gpt-4o-2024-08-06" and conv.messages[2].duration_s == pytest.approx(0.89)
    assert conv.outcome.labeled is False  # OpenTelemetry has no outcome
    lone = _one(trajs, lambda t: t.episode_id == "trace 0af7651916cd43dd8448eb211c80319c")
    assert [(m.role, m.content) for m in lone.messages] == [("user", "Say hi in French."), ("assistant", "Bonjour !")]
    assert lone.policy == "claude-sonnet-4-5"


def test_otel_real_export_of_the_opentelemetry_packages(tmp_path):
    _, _, trajs = _ingest(tmp_path, SAMPLES / "otel-genai")
    t = _one(trajs, lambda t: t.episode_id == "conversation conv_weather_0001")
    lines = [json.loads(line) for line in OTEL_REAL.read_text().splitlines()]
    spans = [sp for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    assert t.metadata["spans"] == len(spans) == 8 and len(t.metadata["trace_ids"]) == 2
    chats = [sp for sp in spans if sp["name"].startswith("chat")]
    attrs = [{a["key"]: a["value"] for a in sp["attributes"]} for sp in chats]
    last_in = json.loads(attrs[-1]["gen_ai.input.messages"]["stringValue"])
    last_out = json.loads(attrs[-1]["gen_ai.output.messages"]["stringValue"])
    assert len(t.messages) == len(last_in) + len(last_out) == 9  # the last call's whole context + its answer
    assert [m.role for m in t.messages] == [m["role"] for m in last_in + last_out]
    call = json.loads(attrs[0]["gen_ai.output.messages"]["stringValue"])[0]["parts"][0]
    assert (t.messages[2].tool_calls[0].id, t.messages[2].tool_calls[0].arguments) == (call["id"], call["arguments"])
    tool = next(sp for sp in spans if sp["name"] == "execute_tool get_weather")
    result = {a["key"]: a["value"] for a in tool["attributes"]}["gen_ai.tool.call.result"]["stringValue"]
    assert (t.messages[3].role, t.messages[3].tool_call_id, t.messages[3].content) == ("tool", call["id"], result)
    assert t.policy == attrs[-1]["gen_ai.response.model"]["stringValue"] and t.category == "weather-agent"
    dur = (int(chats[0]["endTimeUnixNano"]) - int(chats[0]["startTimeUnixNano"])) / 1e9
    assert t.messages[2].duration_s == pytest.approx(dur)


def test_otel_execute_tool_span_answers_a_call_no_message_answers(tmp_path):
    line = _otel_lines()[0]
    spans = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    del spans[3]  # the second chat span, whose input held the tool result
    f = tmp_path / "otlp.json"
    f.write_text(json.dumps(line))
    (rec,) = list(otel_genai.read(f))
    msgs = rec.data["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[3]["tool_call_id"] == "call_VSPygqKTWdrhaFErNvMV18Yl" and msgs[3]["content"] == "rainy, 57°F"
    # an execute_tool span whose call no captured message made is kept in metadata, not invented
    spans[2]["attributes"] = [a if a["key"] != "gen_ai.tool.call.id" else {**a, "value": {"stringValue": "call_x"}}
                              for a in spans[2]["attributes"]]
    f.write_text(json.dumps(line))
    (rec,) = list(otel_genai.read(f))
    assert [m["role"] for m in rec.data["messages"]] == ["system", "user", "assistant"]
    assert rec.data["metadata"]["unpaired_tool_spans"][0]["call.id"] == "call_x"


def test_otel_traces_without_genai_content_are_quarantined_with_the_reason(tmp_path):
    req = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [
        {"traceId": "S/kvNXezTaajzpKdDg5HNg==", "spanId": "APBnqgupArc=", "name": "chat gpt-4o", "kind": "SPAN_KIND_CLIENT",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}]},
        {"traceId": "AAAA", "spanId": "BBBB", "name": "GET", "attributes": [
            {"key": "http.request.method", "value": {"stringValue": "GET"}}]}]}]}]}
    f = tmp_path / "otlp.json"
    f.write_text(json.dumps(req))
    assert otel_genai.detect(f, f.read_bytes())
    recs = {r.locator: r.error for r in otel_genai.read(f)}
    assert recs["trace S/kvNXezTaajzpKdDg5HNg=="][0] == "gen_ai.input.messages"
    assert "content capture" in recs["trace S/kvNXezTaajzpKdDg5HNg=="][1]
    assert recs["trace AAAA"] == ("spans", "no GenAI span (no gen_ai.* attribute) among 1 spans")


def test_otel_any_values():
    kv = {"kvlistValue": {"values": [{"key": "path", "value": {"stringValue": "/r"}},
                                     {"key": "limit", "value": {"intValue": "200"}},
                                     {"key": "tags", "value": {"arrayValue": {"values": [{"boolValue": True}]}}}]}}
    assert otel_genai.any_value(kv) == {"path": "/r", "limit": 200, "tags": [True]}


def _otlp_spans(doc: dict) -> list[dict]:
    return [sp for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]


def test_otel_instrumentation_run_against_flywheel_serve(tmp_path):
    """The kept export of test_traces_real.py: the instrumented openai client's two chat spans and
    util-genai's execute_tool span, each a trace of its own (no enclosing span), are one conversation."""
    store, s, trajs = _ingest(tmp_path, OTEL_SERVED)
    assert s.read == s.accepted + s.duplicates + s.quarantined == 1 and s.quarantined == 0, store.quarantine()
    (t,) = trajs
    spans = _otlp_spans(json.loads(OTEL_SERVED.read_text()))
    assert [sp["name"] for sp in spans] == ["chat tiny", "execute_tool add", "chat tiny"]
    assert t.episode_id == f"trace {spans[0]['traceId']}" and len({sp["traceId"] for sp in spans}) == 3
    assert sorted(t.metadata["trace_ids"]) == sorted(sp["traceId"] for sp in spans)
    attrs = [{a["key"]: a["value"] for a in sp["attributes"]} for sp in spans]
    last_in = json.loads(attrs[2]["gen_ai.input.messages"]["stringValue"])
    assert [m.role for m in t.messages] == [m["role"] for m in last_in] + ["assistant"]
    (call,) = json.loads(attrs[0]["gen_ai.output.messages"]["stringValue"])[0]["parts"]
    (c,) = t.messages[2].tool_calls
    assert (c.id, c.name, c.arguments) == (call["id"], call["name"], call["arguments"])
    assert attrs[1]["gen_ai.tool.call.id"]["stringValue"] == call["id"]
    result = attrs[1]["gen_ai.tool.call.result"]["stringValue"]
    assert (t.messages[3].tool_call_id, t.messages[3].content) == (call["id"], result)
    assert result == last_in[3]["parts"][0]["response"]
    out = json.loads(attrs[2]["gen_ai.output.messages"]["stringValue"])[0]["parts"][0]["content"]
    assert t.messages[4].content == out


def test_otel_stitching_keeps_runs_apart(tmp_path):
    """Two runs of the same conversation, each three traces, are two conversations, not one; a trace
    of an execute_tool span whose call no model call made is not joined to either."""
    doc = json.loads(OTEL_SERVED.read_text())
    spans = _otlp_spans(doc)
    again = json.loads(json.dumps(spans))
    for i, sp in enumerate(again):
        sp["traceId"] = f"run2-{i}"
        sp["startTimeUnixNano"] = str(int(sp["startTimeUnixNano"]) + 10**12)
        sp["endTimeUnixNano"] = str(int(sp["endTimeUnixNano"]) + 10**12)
    stray = json.loads(json.dumps(spans[1]))
    stray["traceId"] = "stray"
    stray["attributes"] = [a if a["key"] != "gen_ai.tool.call.id" else {**a, "value": {"stringValue": "call_other"}}
                           for a in stray["attributes"]]
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans + again + [stray]
    f = tmp_path / "otlp.json"
    f.write_text(json.dumps(doc))
    recs = list(otel_genai.read(f))
    assert [r.locator for r in recs] == [f"trace {spans[0]['traceId']}", "trace run2-0", "trace stray"]
    assert [len(r.data["messages"]) for r in recs[:2]] == [5, 5]
    assert recs[1].data["metadata"]["trace_ids"] == ["run2-0", "run2-1", "run2-2"]
    assert recs[2].error[0] == "gen_ai.input.messages"  # a lone execute_tool span: no conversation


# ---- OpenAI Agents SDK -------------------------------------------------------------------------
def _agent_items():
    return [json.loads(line) for line in AGENTS.read_text().splitlines()]


def test_agents_sdk_trace_export(tmp_path):
    store, s, trajs = _ingest(tmp_path, AGENTS)
    assert s.read == s.accepted + s.duplicates + s.quarantined == 1 and s.quarantined == 0, store.quarantine()
    (t,) = trajs
    items = _agent_items()
    head = items[0]
    assert t.episode_id == head["id"] and t.task_id == head["metadata"]["task_id"] == "weather/paris-lyon"
    assert t.category == head["workflow_name"] and t.policy == "gpt-4o-mini"
    gens = [i["span_data"] for i in items if i.get("span_data", {}).get("type") == "generation"]
    funcs = [i["span_data"] for i in items if i.get("span_data", {}).get("type") == "function"]
    assert t.metadata["generations"] == len(gens) == 3 and t.metadata["spans"] == len(items) - 1
    assert t.metadata["handoffs"] == [{"from_agent": "Triage agent", "to_agent": "Weather agent"}]
    assert t.metadata["agents"] == ["Triage agent", "Weather agent"]
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "system", "assistant", "tool",
                                            "tool", "assistant"]
    assert t.messages[0].content == gens[0]["input"][0]["content"]
    assert t.messages[4].content == gens[1]["input"][0]["content"]  # the weather agent's instructions
    calls = t.messages[5].tool_calls
    out_calls = gens[1]["output"][0]["tool_calls"]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in out_calls]
    assert [(m.tool_call_id, m.content) for m in t.messages[6:8]] == [
        (out_calls[0]["id"], funcs[0]["output"]), (out_calls[1]["id"], funcs[1]["output"])]
    assert t.messages[-1].content == gens[2]["output"][0]["content"]
    assert t.outcome.labeled is False


def test_agents_sdk_function_spans_pair_calls_without_a_later_generation(tmp_path):
    items = [i for i in _agent_items() if not (i.get("span_data", {}).get("type") == "generation"
                                               and (i["span_data"]["output"][0].get("content") or "").startswith("Paris"))]
    f = tmp_path / "export.json"
    f.write_text(json.dumps({"data": items}))  # the exporter's payload shape
    (rec,) = list(openai_agents.read(f))
    msgs = rec.data["messages"]
    assert [m["role"] for m in msgs][-3:] == ["assistant", "tool", "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in msgs[-2:]] == [("call_w1", "rainy, 14°C"), ("call_w2", "sunny, 18°C")]


def test_agents_sdk_responses_api_trace_is_quarantined(tmp_path):
    items = [{"object": "trace", "id": "trace_1", "workflow_name": "Agent workflow", "group_id": None, "metadata": None},
             {"object": "trace.span", "id": "span_1", "trace_id": "trace_1", "parent_id": None,
              "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:01+00:00",
              "span_data": {"type": "response", "response_id": "resp_1", "usage": None}},
             {"object": "something"}]
    f = tmp_path / "export.jsonl"
    f.write_text("\n".join(json.dumps(i) for i in items))
    assert sources.detect(f) == "openai-agents"
    recs = list(openai_agents.read(f))
    assert recs[0].error == ("object", "expected a trace or trace.span export item, got 'something'")
    assert recs[1].error[0] == "span_data.input" and "response" in recs[1].error[1]


def test_agents_sdk_run_against_flywheel_serve(tmp_path):
    """The kept export of test_traces_real.py: a Runner.run on OpenAIChatCompletionsModel (one forced
    add call, its function span, an answer) and one on OpenAIResponsesModel (response ids only)."""
    items = [json.loads(line) for line in AGENTS_SERVED.read_text().splitlines()]
    store, s, trajs = _ingest(tmp_path, AGENTS_SERVED)
    assert s.read == s.accepted + s.duplicates + s.quarantined == 2 and s.quarantined == 1
    (q,) = store.quarantine()
    assert "Responses-API runs export only response ids" in str(q)
    (t,) = trajs
    head = items[0]
    spans = [i for i in items if i.get("trace_id") == head["id"]]
    gens = [i["span_data"] for i in spans if i["span_data"]["type"] == "generation"]
    (func,) = [i["span_data"] for i in spans if i["span_data"]["type"] == "function"]
    assert (t.episode_id, t.task_id, t.category) == (head["id"], "adder/2+3", "Adder workflow")
    assert t.metadata["generations"] == len(gens) == 2 and t.metadata["spans"] == len(spans)
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    (out_call,) = gens[0]["output"][0]["tool_calls"]
    (c,) = t.messages[2].tool_calls
    assert (c.id, c.name, c.arguments) == (out_call["id"], func["name"], json.loads(func["input"]))
    assert (t.messages[3].tool_call_id, t.messages[3].content) == (out_call["id"], func["output"])
    assert t.messages[4].content == gens[1]["output"][0]["content"]
