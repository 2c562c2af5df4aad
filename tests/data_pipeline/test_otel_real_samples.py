"""The otel_genai adapter on real public trace exports (tests/fixtures/samples/otel-genai/*/ with
SOURCE.md there): a Grafana Tempo export of a kagent Helm agent run (Google ADK + OpenLLMetry, the
older `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` attributes, ADK's `call_llm` / `generate_content`
spans around each `openai.chat` span) and a Jaeger export of a LangGraph / LiteLLM (Claude) supervisor
that calls a detector agent (current `gen_ai.input.messages` / `gen_ai.output.messages`). Each is
ingested through the real ingest path; the values asserted are read from the files themselves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline import sources
from data_pipeline.adapters import openai_agents, otel_genai
from data_pipeline.store import ExperienceStore
from tests.paths import TESTS

OTEL = TESTS / "fixtures" / "samples" / "otel-genai"
TEMPO = OTEL / "agentevals-dev-agentevals" / "tempo_export_with_batches.json"
JAEGER = OTEL / "ponchotitlan-packet-panic-agntcy" / "get-inventory.json"
AGENTS = TESTS / "fixtures" / "samples" / "openai-agents"


def _ingest(tmp_path: Path, f: Path):
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([f])
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert s.quarantined == 0, store.quarantine()
    assert set(s.formats.values()) == {"otel-genai"}
    return s, {t.episode_id: t for t in store.trajectories(include_heldout=True)}


def _paired(t) -> None:
    """Every tool call is answered by one tool message with its id, right after the calls."""
    calls = [c for m in t.messages for c in m.tool_calls]
    answers = [m for m in t.messages if m.role == "tool"]
    assert sorted(c.id for c in calls) == sorted(m.tool_call_id for m in answers)
    for i, m in enumerate(t.messages):
        if m.tool_calls:
            ids = [x.tool_call_id for x in t.messages[i + 1:i + 1 + len(m.tool_calls)]]
            assert ids == [c.id for c in m.tool_calls]


# ---- Tempo (batches, OpenLLMetry attributes) -----------------------------------------------------
def _tempo_spans(doc: dict) -> list[dict]:
    return [dict(sp, _attrs={a["key"]: next(iter(a["value"].values())) for a in sp["attributes"]})
            for b in doc["batches"] for ss in b.get("scopeSpans") or b.get("instrumentationLibrarySpans")
            for sp in ss["spans"]]


def test_detection_of_the_real_exports():
    for f in (TEMPO, JAEGER):
        assert sources.detect(f) == "otel-genai", f
        assert not openai_agents.detect(f, f.read_bytes()[:65536])
    # the Agents SDK's {"data": [...]} payloads stay theirs
    for f in sorted(AGENTS.glob("*.json*")):
        assert not otel_genai.detect(f, f.read_bytes()[:65536]), f


def test_tempo_export_kagent_openllmetry(tmp_path):
    s, trajs = _ingest(tmp_path, TEMPO)
    assert s.read == s.accepted == 1
    doc = json.loads(TEMPO.read_text())
    spans = _tempo_spans(doc)
    assert len(spans) == 86 and "batches" in doc
    (t,) = trajs.values()
    chats = sorted((sp for sp in spans if sp["name"] == "openai.chat"), key=lambda sp: sp["startTimeUnixNano"])
    first, second = (sp["_attrs"] for sp in chats)
    assert t.episode_id == f"conversation {first['gen_ai.conversation.id']}" == \
        "conversation ctx-eff35888-55ab-4eb0-b90d-7b21f711f91f"
    # one assistant turn per model call: ADK's call_llm / generate_content layers add none
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert len([sp for sp in spans if sp["name"] in ("call_llm", "generate_content gpt-4.1-mini")]) == 4
    assert t.messages[0].content == first["gen_ai.prompt.0.content"]
    assert t.messages[0].content.startswith("# Helm AI Agent System Prompt")
    assert t.messages[1].content == first["gen_ai.prompt.1.content"] == "list all helm releases\n"
    (call,) = t.messages[2].tool_calls
    assert (call.id, call.name, call.arguments) == (
        first["gen_ai.completion.0.tool_calls.0.id"], first["gen_ai.completion.0.tool_calls.0.name"],
        json.loads(first["gen_ai.completion.0.tool_calls.0.arguments"])) == (
        "call_w0eKlvnaE7S9GQJeSSs0gn05", "helm_list_releases", {})
    _paired(t)
    tool = t.messages[3]
    assert (tool.tool_call_id, tool.name) == (call.id, "helm_list_releases")
    assert tool.content == second["gen_ai.prompt.3.content"] and second["gen_ai.prompt.3.tool_call_id"] == call.id
    assert tool.content.startswith("NAME       \tNAMESPACE\tREVISION") and "kagent-crds" in tool.content
    # the execute_tool span saw the same result (ADK's own attribute)
    ex = next(sp["_attrs"] for sp in spans if sp["name"] == "execute_tool helm_list_releases")
    assert ex["gen_ai.tool.call.id"] == call.id
    assert json.loads(ex["gcp.vertex.agent.tool_response"])["content"][0]["text"] == tool.content
    # the resent history (system, user, call, result) is not repeated
    assert t.messages[4].content == second["gen_ai.completion.0.content"]
    assert t.messages[4].content.startswith("There are two Helm releases currently deployed")
    assert t.policy == second["gen_ai.response.model"] == "gpt-4.1-mini-2025-04-14"
    for m, sp in zip((t.messages[2], t.messages[4]), chats):
        assert m.duration_s == pytest.approx((sp["endTimeUnixNano"] - sp["startTimeUnixNano"]) / 1e9)
    assert t.started_at == pytest.approx(min(sp["startTimeUnixNano"] for sp in spans) / 1e9)
    assert t.ended_at == pytest.approx(max(sp["endTimeUnixNano"] for sp in spans) / 1e9)
    assert 4 < t.interaction_s < 5
    assert t.metadata["provider"] == first["gen_ai.system"] == "openai"  # the chat span's, not ADK's "gemini"
    assert t.metadata["trace_ids"] == ["dd547580319ab0312cee07f1def50dad"] and t.metadata["spans"] == 86
    # ADK's call_llm spans carry the same two model calls (gcp.vertex.agent.llm_request / llm_response)
    # around the openai.chat spans: read once, from the innermost span
    assert t.metadata["layered_inference_spans"] == 2
    # the tool schemas OpenLLMetry wrote as llm.request.functions.N.*
    tools = {tl["function"]["name"]: tl["function"] for tl in t.metadata["tools"]}
    assert len(tools) == 10 and tools["helm_list_releases"]["description"] == first["llm.request.functions.1.description"]
    assert tools["helm_list_releases"]["parameters"] == json.loads(first["llm.request.functions.1.parameters"])


def test_tempo_layers_with_messages_are_read_once(tmp_path):
    """ADK's call_llm and generate_content spans enclose the openai.chat span of the same model call:
    when they carry messages too, only the innermost span is read."""
    doc = json.loads(TEMPO.read_text())
    spans = [sp for b in doc["batches"] for ss in b["instrumentationLibrarySpans"] for sp in ss["spans"]]
    chats = {sp["spanId"]: sp for sp in spans if sp["name"] == "openai.chat"}
    by_id = {sp["spanId"]: sp for sp in spans}
    for chat in chats.values():
        a = {x["key"]: x["value"] for x in chat["attributes"]}
        inputs = [{"role": a[f"gen_ai.prompt.{i}.role"]["stringValue"], "parts": [{"type": "text", "content": "x"}]}
                  for i in range(2)]
        outer = by_id[chat["parentSpanId"]]  # generate_content, then call_llm above it
        for layer in (outer, by_id[outer["parentSpanId"]]):
            assert layer["name"] in ("generate_content gpt-4.1-mini", "call_llm")
            layer["attributes"] = layer["attributes"] + [
                {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(inputs)}},
                {"key": "gen_ai.output.messages", "value": {"stringValue": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "layer"}]}])}}]
    f = tmp_path / "tempo.json"
    f.write_text(json.dumps(doc))
    (rec,) = list(otel_genai.read(f))
    msgs = rec.data["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert all(m["content"] != "layer" for m in msgs)
    assert rec.data["metadata"]["layered_inference_spans"] == 4


def test_tempo_adk_spans_alone_give_the_same_conversation(tmp_path):
    """Without the OpenLLMetry attributes on the openai.chat spans, ADK's own call_llm spans
    (gcp.vertex.agent.llm_request / llm_response, google-genai Contents) give the same messages."""
    doc = json.loads(TEMPO.read_text())
    (full,) = list(otel_genai.read(TEMPO))
    for b in doc["batches"]:
        for ss in b["instrumentationLibrarySpans"]:
            for sp in ss["spans"]:
                if sp["name"] == "openai.chat":
                    sp["attributes"] = [a for a in sp["attributes"]
                                        if not a["key"].startswith(("gen_ai.prompt.", "gen_ai.completion."))]
    f = tmp_path / "tempo.json"
    f.write_text(json.dumps(doc))
    (adk,) = list(otel_genai.read(f))
    strip = [{k: v for k, v in m.items() if k != "duration_s"} for m in full.data["messages"]]
    assert [{k: v for k, v in m.items() if k != "duration_s"} for m in adk.data["messages"]] == strip
    assert "layered_inference_spans" not in adk.data["metadata"]
    assert adk.data["policy"] == "gpt-4.1-mini"  # call_llm has only the request model
    assert {tl["function"]["name"] for tl in adk.data["metadata"]["tools"]} >= {"helm_list_releases", "ask_user"}
    assert adk.data["messages"][2]["duration_s"] == pytest.approx(1.903611, abs=1e-6)  # the call_llm span


# ---- Jaeger (current conventions, a supervisor calling a detector agent) ------------------------
def _jaeger_spans() -> tuple[dict, list[dict]]:
    doc = json.loads(JAEGER.read_text())
    (trace,) = doc["data"]
    for sp in trace["spans"]:
        sp["_attrs"] = {x["key"]: x["value"] for x in sp["tags"]}
    return trace, sorted(trace["spans"], key=lambda sp: sp["startTime"])


def test_jaeger_export_supervisor_and_detector(tmp_path):
    s, trajs = _ingest(tmp_path, JAEGER)
    trace, spans = _jaeger_spans()
    assert len(spans) == 77
    main_id = f"trace {trace['traceID']}"
    assert s.read == s.accepted == 2 and set(trajs) == {main_id, f"{main_id} / agent LangGraph"}
    sup, det = trajs[main_id], trajs[f"{main_id} / agent LangGraph"]
    chats = [sp for sp in spans if sp["_attrs"].get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 4
    procs = {k: v["serviceName"] for k, v in trace["processes"].items()}
    sup_chats = [sp for sp in chats if procs[sp["processID"]] == "packetpanic.supervisor"]
    det_chats = [sp for sp in chats if procs[sp["processID"]] == "packetpanic.detector"]
    assert len(sup_chats) == len(det_chats) == 2

    # the supervisor: user -> query_detector -> the detector's answer -> final answer
    assert [m.role for m in sup.messages] == ["system", "user", "assistant", "tool", "assistant"]
    a0, a1 = sup_chats[0]["_attrs"], sup_chats[1]["_attrs"]
    assert sup.messages[0].content == json.loads(a0["gen_ai.system_instructions"])[0]["content"]
    assert sup.messages[0].content.startswith("Eres el Agente Supervisor de un NOC")
    assert sup.messages[1].content == "Hola! Dime porfavor cuál es mi inventario de red"
    out = json.loads(a0["gen_ai.output.messages"])[0]["parts"][0]
    (call,) = sup.messages[2].tool_calls
    assert (call.id, call.name, call.arguments) == (out["id"], out["name"], out["arguments"])
    assert (call.id, call.name) == ("toolu_01UW7nyANTMrrg6xYJNawrHF", "query_detector")
    assert call.arguments["instruction"].startswith("Obtener el inventario completo de dispositivos de red")
    _paired(sup)
    resp = json.loads(a1["gen_ai.input.messages"])[2]["parts"][0]
    assert (sup.messages[3].tool_call_id, sup.messages[3].content) == (call.id, resp["response"])
    assert sup.messages[4].content == json.loads(a1["gen_ai.output.messages"])[0]["parts"][0]["content"]
    assert sup.messages[4].content.startswith("## 📋 Inventario de Red")
    # model "unknown" in gen_ai.*.model: LangChain's ls_model_name names it
    assert a1["gen_ai.response.model"] == "unknown"
    assert sup.policy == a1["traceloop.association.properties.ls_model_name"] == "anthropic/claude-opus-4-5-20251101"
    assert sup.category == "packetpanic.supervisor" and sup.metadata["sub_agents"] == [det.episode_id]
    assert sup.started_at == pytest.approx(min(sp["startTime"] for sp in spans) / 1e6)
    assert sup.ended_at == pytest.approx(max(sp["startTime"] + sp["duration"] for sp in spans) / 1e6)
    assert sup.messages[2].duration_s == pytest.approx(sup_chats[0]["duration"] / 1e6)

    # the detector: its own conversation, the supervisor's instruction as its user turn
    assert [m.role for m in det.messages] == ["system", "user", "assistant", "tool", "assistant"]
    d0, d1 = det_chats[0]["_attrs"], det_chats[1]["_attrs"]
    assert det.messages[0].content.startswith("Eres un Agente Detector de un NOC")
    assert det.messages[1].content == call.arguments["instruction"]
    (dcall,) = det.messages[2].tool_calls
    dout = json.loads(d0["gen_ai.output.messages"])[0]["parts"][0]
    assert (dcall.id, dcall.name, dcall.arguments) == (dout["id"], "pyats_list_devices", {})
    _paired(det)
    # the tool's result: the MCP text part of the execute_tool span's ToolMessage
    ex = next(sp["_attrs"] for sp in spans if sp["operationName"] == "execute_tool pyats_list_devices")
    result = json.loads(ex["gen_ai.tool.call.result"])["output"]["kwargs"]
    assert json.loads(ex["gen_ai.tool.call.arguments"])["kwargs"]["tool_call_id"] == dcall.id
    assert det.messages[3].content == result["content"][0]["text"]
    devices = json.loads(det.messages[3].content)["devices"]
    assert sorted(devices) == ["R1", "R2", "SW1", "SW2"] and devices["SW1"]["type"] == "switch"
    final = json.loads(d1["gen_ai.output.messages"])[0]["parts"][0]["content"]
    assert det.messages[4].content == final == sup.messages[3].content  # its answer is the supervisor's tool result
    assert det.policy == "anthropic/claude-opus-4-5-20251101" and det.category == "LangGraph"
    assert det.metadata["parent_episode"] == sup.episode_id
    assert {tl["function"]["name"] for tl in det.metadata["tools"]} >= {"pyats_list_devices"}
    assert sup.started_at < det.started_at < det.ended_at < sup.ended_at
    assert det.messages[2].duration_s == pytest.approx(det_chats[0]["duration"] / 1e6)


def test_jaeger_tags_references_and_processes(tmp_path):
    doc = {"data": [{"traceID": "t1", "spans": [
        {"traceID": "t1", "spanID": "a", "operationName": "invoke_agent bot", "references": [],
         "startTime": 1_000_000, "duration": 5_000_000, "processID": "p1",
         "tags": [{"key": "gen_ai.operation.name", "type": "string", "value": "invoke_agent"},
                  {"key": "gen_ai.agent.name", "type": "string", "value": "bot"}]},
        {"traceID": "t1", "spanID": "b", "operationName": "chat m", "processID": "p1",
         "references": [{"refType": "FOLLOWS_FROM", "traceID": "t1", "spanID": "x"},
                        {"refType": "CHILD_OF", "traceID": "t1", "spanID": "a"}],
         "startTime": 2_000_000, "duration": 1_500_000,
         "tags": [{"key": "gen_ai.request.model", "type": "string", "value": "m"},
                  {"key": "gen_ai.usage.input_tokens", "type": "int64", "value": "12"},
                  {"key": "error", "type": "bool", "value": True},
                  {"key": "gen_ai.prompt.0.role", "type": "string", "value": "user"},
                  {"key": "gen_ai.prompt.0.content", "type": "string", "value": "hi"},
                  {"key": "gen_ai.completion.0.role", "type": "string", "value": "assistant"},
                  {"key": "gen_ai.completion.0.content", "type": "string",
                   "value": json.dumps([{"type": "text", "text": "hello"}])}]}],
        "processes": {"p1": {"serviceName": "svc", "tags": [{"key": "host", "type": "string", "value": "h"}]}}}],
        "total": 0, "limit": 0, "offset": 0, "errors": None}
    f = tmp_path / "jaeger.json"
    f.write_text(json.dumps(doc))
    assert sources.detect(f) == "otel-genai"
    spans = {sp["spanId"]: sp for sp in otel_genai._spans(doc, "file")}
    b = spans["b"]
    assert b["parentSpanId"] == "a" and b["_resource"] == {"host": "h", "service.name": "svc"}
    assert (b["startTimeUnixNano"], b["endTimeUnixNano"]) == (2_000_000_000, 3_500_000_000)
    assert b["_attrs"]["gen_ai.usage.input_tokens"] == 12 and b["status"]["code"] == 2
    (rec,) = list(otel_genai.read(f))
    d = rec.data
    assert [(m["role"], m["content"]) for m in d["messages"]] == [("user", "hi"), ("assistant", "hello")]
    assert (d["started_at"], d["ended_at"], d["policy"], d["category"]) == (1.0, 6.0, "m", "bot")
    assert d["messages"][1]["duration_s"] == pytest.approx(1.5)


def test_openllmetry_attributes_as_messages():
    a = {"gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
         "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "weather in Paris and Lyon?",
         "gen_ai.prompt.2.role": "assistant",
         "gen_ai.prompt.2.tool_calls.0.id": "c1", "gen_ai.prompt.2.tool_calls.0.name": "w",
         "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
         "gen_ai.prompt.2.tool_calls.1.id": "c2", "gen_ai.prompt.2.tool_calls.1.name": "w",
         "gen_ai.prompt.2.tool_calls.1.arguments": '{"city": "Lyon"}',
         "gen_ai.prompt.3.role": "tool", "gen_ai.prompt.3.content": "rain", "gen_ai.prompt.3.tool_call_id": "c1",
         "gen_ai.prompt.4.role": "tool", "gen_ai.prompt.4.content": "sun", "gen_ai.prompt.4.tool_call_id": "c2",
         "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Rain, then sun.",
         "gen_ai.completion.0.finish_reason": "stop"}
    assert otel_genai._is_inference(a)
    ins = otel_genai._inputs({"_attrs": a, "spanId": "s"}, [])
    assert [(m["role"], m["content"]) for m in ins] == [("system", "be brief"), ("user", "weather in Paris and Lyon?"),
                                                       ("assistant", ""), ("tool", "rain"), ("tool", "sun")]
    assert [(c["id"], c["arguments"]) for c in ins[2]["tool_calls"]] == [("c1", {"city": "Paris"}), ("c2", {"city": "Lyon"})]
    assert [m["tool_call_id"] for m in ins[3:]] == ["c1", "c2"]
    (out,) = otel_genai._messages(otel_genai._raw_messages(a, "completion", "s"), "out", [])
    assert (out["role"], out["content"], out["tool_calls"]) == ("assistant", "Rain, then sun.", [])
