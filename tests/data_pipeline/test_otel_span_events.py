"""GenAI content in span events (data_pipeline/adapters/otel_events.py): the Strands Agents SDK's real
exports (tests/fixtures/samples/otel-genai/strands-agents/, SOURCE.md there: two runs against
`flywheel serve` on SmolLM2), the same export as Jaeger stores it (events as span logs), and the
v1.27 `gen_ai.content.prompt` / `completion` events. The values asserted are read from the files."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from data_pipeline import sources
from data_pipeline.adapters.otel_genai import any_value, attributes
from data_pipeline.store import ExperienceStore
from tests.paths import TESTS

STRANDS = TESTS / "fixtures" / "samples" / "otel-genai" / "strands-agents"
DEFAULT = STRANDS / "generated-by-strands-agents-1.62.0.json"
LATEST = STRANDS / "generated-by-strands-agents-1.62.0-latest-conventions.json"


def _ingest(tmp_path: Path, f: Path):
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([f])
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert (s.read, s.accepted) == (1, 1), store.quarantine()
    (t,) = store.trajectories(include_heldout=True)
    return t


def _spans(f: Path) -> list[dict]:
    doc = json.loads(f.read_text())
    return [sp for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]


def _events(sp: dict, name: str) -> list[dict]:
    return [attributes(e.get("attributes")) for e in sp.get("events", []) if e["name"] == name]


def _attr(sp: dict, key: str):
    return next(any_value(a["value"]) for a in sp["attributes"] if a["key"] == key)


def _check_strands(t, f: Path, question: str):
    spans = _spans(f)
    tool = next(sp for sp in spans if sp["name"] == "execute_tool add")
    call_id = _attr(tool, "gen_ai.tool.call.id")
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert t.messages[0].content == "You are a calculator. Use the add tool."
    assert t.messages[1].content == question
    (call,) = t.messages[2].tool_calls
    assert (call.id, call.name) == (call_id, "add")
    assert t.messages[3].tool_call_id == call_id  # paired by the id the files carry
    # the last chat span's output is the final answer; the outer layers (cycles, invoke_agent) are not read
    chats = [sp for sp in spans if sp["name"] == "chat"]
    assert len(chats) == 2 and t.metadata["layered_inference_spans"] == 3
    assert t.metadata["agents"] == ["Strands Agents"] and t.metadata["service"] == "strands-add-agent"
    assert sources.detect(f) == "otel-genai"
    return chats, call


def test_strands_default_conventions_per_message_events(tmp_path):
    t = _ingest(tmp_path, DEFAULT)
    chats, call = _check_strands(t, DEFAULT, "What is 2 + 3? Use the add tool.")
    (choice,) = _events(chats[0], "gen_ai.choice")
    (use,) = json.loads(choice["message"])
    assert call.arguments == use["toolUse"]["input"] == {"x": 2, "y": 3}
    (tool_result,) = _events(chats[1], "gen_ai.tool.message")
    (block,) = json.loads(tool_result["content"])
    assert t.messages[3].content == block["toolResult"]["content"][0]["text"] == "5"
    (answer,) = _events(chats[1], "gen_ai.choice")
    assert t.messages[4].content == json.loads(answer["message"])[0]["text"]


def test_strands_latest_conventions_operation_details_events(tmp_path):
    t = _ingest(tmp_path, LATEST)
    chats, call = _check_strands(t, LATEST, "What is 4 + 1? Use the add tool.")
    details = _events(chats[0], "gen_ai.client.inference.operation.details")
    out = next(json.loads(d["gen_ai.output.messages"]) for d in details if "gen_ai.output.messages" in d)
    assert call.arguments == out[0]["parts"][0]["arguments"] == {"x": 1, "y": 1}  # what SmolLM2 asked
    assert t.messages[3].content == "2"  # the tool's [{"text": "2"}] blocks
    last = next(json.loads(d["gen_ai.output.messages"]) for d in
                _events(chats[1], "gen_ai.client.inference.operation.details") if "gen_ai.output.messages" in d)
    assert t.messages[4].content == last[0]["parts"][0]["content"]


def _as_jaeger(f: Path) -> dict:
    """The OTLP export as Jaeger's query API returns it: hex ids, µs, tags, span events as logs whose
    `event` field is the event's name."""
    def hexid(b64: str) -> str:
        return base64.b64decode(b64).hex()

    def tags(attrs: dict) -> list[dict]:
        return [{"key": k, "type": "string", "value": v if isinstance(v, str) else json.dumps(v)}
                for k, v in attrs.items()]

    doc = json.loads(f.read_text())
    spans = []
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                start, end = int(sp["startTimeUnixNano"]) // 1000, int(sp["endTimeUnixNano"]) // 1000
                spans.append({
                    "traceID": hexid(sp["traceId"]), "spanID": hexid(sp["spanId"]), "operationName": sp["name"],
                    "references": ([{"refType": "CHILD_OF", "traceID": hexid(sp["traceId"]),
                                     "spanID": hexid(sp["parentSpanId"])}] if sp.get("parentSpanId") else []),
                    "startTime": start, "duration": end - start, "tags": tags(attributes(sp["attributes"])),
                    "logs": [{"timestamp": int(e["timeUnixNano"]) // 1000,
                              "fields": [{"key": "event", "type": "string", "value": e["name"]}]
                              + tags(attributes(e.get("attributes")))} for e in sp.get("events", [])],
                    "processID": "p1"})
    return {"data": [{"traceID": spans[0]["traceID"], "spans": spans,
                      "processes": {"p1": {"serviceName": "strands-add-agent", "tags": []}}}]}


@pytest.mark.parametrize("f", [DEFAULT, LATEST], ids=["default", "latest"])
def test_the_same_run_as_a_jaeger_export_reads_the_same(tmp_path, f):
    jaeger = tmp_path / "jaeger.json"
    jaeger.write_text(json.dumps(_as_jaeger(f)))
    assert sources.detect(jaeger) == "otel-genai"
    a, b = _ingest(tmp_path / "otlp", f), _ingest(tmp_path / "jaeger", jaeger)
    strip = lambda t: [(m.role, m.content, [(c.id, c.name, c.arguments) for c in m.tool_calls], m.tool_call_id)
                       for m in t.messages]  # noqa: E731
    assert strip(a) == strip(b)
    assert b.interaction_s == pytest.approx(a.interaction_s, abs=1e-3)


def _otlp(spans: list[dict]) -> dict:
    def kv(attrs: dict) -> list[dict]:
        return [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
                for k, v in attrs.items()]
    return {"resourceSpans": [{"resource": {"attributes": kv({"service.name": "demo"})}, "scopeSpans": [{
        "scope": {"name": "demo"}, "spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": s["id"], "parentSpanId": s.get("parent", ""),
             "name": s["name"], "startTimeUnixNano": str(s["start"]), "endTimeUnixNano": str(s["end"]),
             "attributes": kv(s["attrs"]),
             "events": [{"name": n, "timeUnixNano": str(s["start"]), "attributes": kv(a)} for n, a in s["events"]]}
            for s in spans]}]}]}


def test_v1_27_prompt_and_completion_events_with_anthropic_blocks(tmp_path):
    """gen_ai.content.prompt / completion events (one JSON message, or a list of them; content given as
    Anthropic blocks: tool_use, then tool_result), as Mirascope and early instrumentations wrote them."""
    first = {"id": "b7ad6b7169203331", "name": "chat claude", "start": 1_000_000_000, "end": 2_000_000_000,
             "attrs": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-5-sonnet"},
             "events": [("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps({"role": "user", "content": "Weather in Oslo?"})}),
                        ("gen_ai.content.completion", {"gen_ai.completion": json.dumps({"role": "assistant", "content": [
                            {"type": "text", "text": "Checking."},
                            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]})})]}
    second = {"id": "c7ad6b7169203332", "name": "chat claude", "start": 3_000_000_000, "end": 4_000_000_000,
              "attrs": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-5-sonnet"},
              "events": [("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps([
                  {"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                                    {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                                     "input": {"city": "Oslo"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                "content": [{"type": "text", "text": "4 C, rain"}]}]}])}),
                  ("gen_ai.content.completion", {"gen_ai.completion": "Rainy, 4 C."})]}
    f = tmp_path / "v127.json"
    f.write_text(json.dumps(_otlp([first, second])))
    t = _ingest(tmp_path, f)
    assert [(m.role, m.content) for m in t.messages] == [
        ("user", "Weather in Oslo?"), ("assistant", "Checking."), ("tool", "4 C, rain"), ("assistant", "Rainy, 4 C.")]
    assert [(c.id, c.name, c.arguments) for c in t.messages[1].tool_calls] == [("toolu_1", "weather", {"city": "Oslo"})]
    assert t.messages[2].tool_call_id == "toolu_1"


def test_attributes_win_over_events_and_events_without_content_are_still_quarantined(tmp_path):
    base = {"id": "d7ad6b7169203333", "name": "chat m", "start": 1, "end": 2,
            "attrs": {"gen_ai.operation.name": "chat",
                      "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "attr"}]}]),
                      "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}])},
            "events": [("gen_ai.user.message", {"content": "event"})]}
    f = tmp_path / "both.json"
    f.write_text(json.dumps(_otlp([base])))
    assert [m.content for m in _ingest(tmp_path / "a", f).messages] == ["attr", "ok"]
    bare = dict(base, attrs={"gen_ai.operation.name": "chat"}, events=[("gen_ai.choice", {"finish_reason": "stop"}),
                                                                     ("exception", {"exception.message": "x"})])
    g = tmp_path / "bare.json"
    g.write_text(json.dumps(_otlp([bare])))
    store = ExperienceStore(tmp_path / "b")
    s = store.ingest([g])
    assert (s.read, s.quarantined) == (1, 1)
    assert "no message content" in store.quarantine()[0]["reason"]
