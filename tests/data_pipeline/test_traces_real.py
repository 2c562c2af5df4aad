"""The otel-genai and openai-agents adapters on what the real libraries write: a real agent run against
`flywheel serve` on the tiny model, recorded by the OpenAI Agents SDK's own tracing and by the official
OpenTelemetry OpenAI instrumentation, exported in the shapes those formats are shipped in, then
ingested. Needs the `traces` extra (`pip install -e '.[traces]'`); skipped without it.

The tiny model is random: it calls a tool only when tool_choice forces it, and its text is gibberish,
but every span, attribute and message shape is the libraries' own. With FLYWHEEL_REGENERATE_SAMPLES=1
the tests also write the exports to tests/fixtures/samples/<format>/generated-by-*.json[l] (the kept
fixtures that test_agent_formats.py reads without the extra)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

agents = pytest.importorskip("agents")
pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.instrumentation.openai_v2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.common.trace_encoder")
openai = pytest.importorskip("openai")

from data_pipeline import sources  # noqa: E402
from data_pipeline.store import ExperienceStore  # noqa: E402
from tests.paths import TESTS  # noqa: E402

SAMPLES = TESTS / "fixtures" / "samples"
REGENERATE = os.environ.get("FLYWHEEL_REGENERATE_SAMPLES") == "1"
ASK = "What is 2 + 3? Use the add tool."
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}}


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from eval.policy import load_checkpoint
    from eval.serve import serving

    model, tok = load_checkpoint(tiny_model_dir)
    with serving(model, tok, model_name="tiny") as url:
        yield url


def _ingest(tmp_path: Path, f: Path):
    store = ExperienceStore(tmp_path / "store")
    summary = store.ingest([f])
    return store, summary, list(store.trajectories(include_heldout=True))


def _keep(f: Path, fmt: str, name: str) -> None:
    if REGENERATE:
        shutil.copyfile(f, SAMPLES / fmt / name)


# ---- OpenAI Agents SDK ---------------------------------------------------------------------------
class Collect(agents.tracing.TracingProcessor):
    """Keeps what the SDK's BackendSpanExporter would post: `trace.export()` at trace start and
    `span.export()` at each span end (nothing leaves the machine)."""

    def __init__(self):
        self.items: list[dict] = []

    def _add(self, item) -> None:
        exported = item.export()
        if exported:
            self.items.append(exported)

    def on_trace_start(self, trace) -> None:
        self._add(trace)

    def on_trace_end(self, trace) -> None:
        pass

    def on_span_start(self, span) -> None:
        pass

    def on_span_end(self, span) -> None:
        self._add(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


@agents.function_tool
def add(x: int, y: int) -> int:
    """Add two integers."""
    return x + y


def test_agents_sdk_run_against_flywheel_serve(served, tmp_path):
    """Two real Runner.run calls: on OpenAIChatCompletionsModel (generation spans with the messages) and
    on OpenAIResponsesModel (response spans with only a response id: quarantined with that reason)."""
    from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner,
                        set_trace_processors, set_tracing_disabled, trace)

    from data_pipeline.agents_sdk import TraceLog

    proc = Collect()
    log = TraceLog(tmp_path / "agent-logs")  # flywheel's processor: traces and their Responses
    set_tracing_disabled(False)
    set_trace_processors([proc, log])  # replaces the default exporter to OpenAI's backend

    async def run() -> tuple:
        client = openai.AsyncOpenAI(base_url=served, api_key="unused", max_retries=0, timeout=120)
        settings = ModelSettings(tool_choice="add", max_tokens=200, temperature=0)  # the random model needs forcing
        chat = Agent(name="Adder", instructions="Add numbers with the add tool.", tools=[add], model_settings=settings,
                     model=OpenAIChatCompletionsModel(model="tiny", openai_client=client))
        with trace("Adder workflow", group_id="thread_1", metadata={"task_id": "adder/2+3"}):
            first = await Runner.run(chat, ASK, max_turns=3)  # tool_choice resets after the call: then text
        # the second model call of a Responses run would end `incomplete` (the random model writes up to
        # max_output_tokens), which the SDK raises on: stop at the tool's result instead
        responses = chat.clone(model=OpenAIResponsesModel(model="tiny", openai_client=client),
                               tool_use_behavior="stop_on_first_tool")
        second = await Runner.run(responses, ASK, max_turns=2)
        return first, second

    try:
        first, second = asyncio.run(run())
    finally:
        set_trace_processors([])
    f = tmp_path / "agents-trace.jsonl"
    f.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in proc.items))
    assert sources.detect(f) == "openai-agents"
    store, s, trajs = _ingest(tmp_path, f)
    assert s.read == s.accepted + s.quarantined + s.duplicates == 2 and s.accepted == 1 and s.quarantined == 1
    (q,) = store.quarantine()
    assert "Responses-API runs export only response ids" in str(q), q
    (t,) = trajs
    heads = [i for i in proc.items if i["object"] == "trace"]
    spans = [i for i in proc.items if i["object"] == "trace.span" and i["trace_id"] == heads[0]["id"]]
    gens = [sp["span_data"] for sp in spans if sp["span_data"]["type"] == "generation"]
    (func,) = [sp["span_data"] for sp in spans if sp["span_data"]["type"] == "function"]
    assert t.episode_id == heads[0]["id"] and t.task_id == "adder/2+3" and t.category == "Adder workflow"
    assert t.metadata["generations"] == len(gens) == 2 and t.metadata["spans"] == len(spans)
    assert t.metadata["agents"] == ["Adder"] and t.policy == "tiny"
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    (call,) = t.messages[2].tool_calls
    (out_call,) = gens[0]["output"][0]["tool_calls"]
    assert (call.id, call.name, call.arguments) == (out_call["id"], "add", json.loads(func["input"]))
    args = json.loads(func["input"])
    assert (t.messages[3].tool_call_id, t.messages[3].name, t.messages[3].content) == (
        call.id, "add", func["output"]) and func["output"] == str(args["x"] + args["y"])
    assert t.messages[4].content == gens[1]["output"][0]["content"] == first.final_output
    assert second.final_output == str(sum(json.loads(next(
        i["span_data"]["input"] for i in proc.items if i.get("trace_id") == heads[1]["id"]
        and i["span_data"]["type"] == "function")).values()))
    _keep(f, "openai-agents", f"generated-by-openai-agents-{agents.__version__}.jsonl")

    # ---- flywheel's TraceLog kept what the export drops: the Responses run is a trajectory too
    traces, side = log.paths()
    assert traces.exists() and side.exists()
    payloads = [json.loads(x) for x in traces.read_text().splitlines()]
    assert len(payloads) == 2  # one line per trace, written whole when it ended
    assert sorted(i["id"] for p in payloads for i in p["data"] if i["object"] == "trace") == \
        sorted(h["id"] for h in heads)
    assert sorted(json.dumps(i, sort_keys=True) for p in payloads for i in p["data"]) == \
        sorted(json.dumps(i, sort_keys=True) for i in proc.items)  # the same items the SDK exports
    kept = [json.loads(x) for x in side.read_text().splitlines()]
    resp_spans = [i for i in proc.items if i.get("span_data", {}).get("type") == "response"]
    assert [r["id"] for r in kept] == [i["span_data"]["response_id"] for i in resp_spans]
    assert kept[0]["input"] and kept[0]["object"] == "response"
    store2, s2, trajs2 = _ingest(tmp_path / "with-responses", log.folder)
    assert s2.read == s2.accepted + s2.quarantined + s2.duplicates == 2 and (s2.accepted, s2.quarantined) == (2, 0)
    assert [p for p, _ in s2.skipped] == [str(side)]  # a side file, not records of its own
    r = next(x for x in trajs2 if x.episode_id == heads[1]["id"])
    # the Response's input and output, then the function span's result (the run stopped on it)
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool"] and r.messages[1].content == ASK
    (rcall,) = r.messages[2].tool_calls
    (fn,) = [i["span_data"] for i in proc.items if i.get("trace_id") == heads[1]["id"]
             and i["span_data"]["type"] == "function"]
    assert rcall.name == "add" and rcall.arguments == json.loads(fn["input"])
    assert (r.messages[3].tool_call_id, r.messages[3].content) == (rcall.id, fn["output"])
    assert r.policy == "tiny" and r.metadata["response_ids"] == [kept[0]["id"]]


# ---- OpenTelemetry GenAI -------------------------------------------------------------------------
def test_otel_openai_instrumentation_against_flywheel_serve(served, tmp_path, monkeypatch):
    """The `openai` client, instrumented by opentelemetry-instrumentation-openai-v2 (content on the
    spans), calls flywheel serve twice: a forced tool call, then an answer after the tool's result;
    the tool run is an execute_tool span of opentelemetry-util-genai's TelemetryHandler. No enclosing
    span, as with the instrumentation on its own: each is a trace of its own, one conversation."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util.genai.handler import TelemetryHandler

    provider = TracerProvider(resource=Resource.create({"service.name": "adder-agent"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        genai = TelemetryHandler(tracer_provider=provider)
        client = openai.OpenAI(base_url=served, api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "system", "content": "Add numbers with the add tool."}, {"role": "user", "content": ASK}]
        first = client.chat.completions.create(model="tiny", messages=messages, tools=[ADD], max_tokens=200, seed=0,
                                               tool_choice={"type": "function", "function": {"name": "add"}})
        msg = first.choices[0].message
        (tc,) = msg.tool_calls
        messages.append(msg.model_dump(exclude_none=True))
        args = json.loads(tc.function.arguments)
        with genai.tool(tc.function.name, tool_call_id=tc.id, tool_type="function") as tool:
            tool.arguments = args
            result = str(args["x"] + args["y"])
            tool.tool_result = result
        messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})
        second = client.chat.completions.create(model="tiny", messages=messages, tools=[ADD], max_tokens=16, seed=0)
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    provider.shutdown()
    # protobuf's JSON mapping of the OTLP request (what an OTLP/HTTP JSON exporter or collector writes)
    f = tmp_path / "otlp.json"
    f.write_text(MessageToJson(encode_spans(spans)) + "\n")
    assert sources.detect(f) == "otel-genai"
    assert [sp.name for sp in spans] == ["chat tiny", "execute_tool add", "chat tiny"]
    assert len({sp.context.trace_id for sp in spans}) == 3  # no enclosing span: three traces
    store, s, trajs = _ingest(tmp_path, f)
    assert s.read == s.accepted + s.quarantined + s.duplicates == 1 and s.quarantined == 0, store.quarantine()
    (t,) = trajs
    assert len(t.metadata["trace_ids"]) == 3 and t.metadata["spans"] == 3 and t.metadata["provider"] == "openai"
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert [m.content for m in t.messages[:2]] == [messages[0]["content"], ASK]
    (call,) = t.messages[2].tool_calls
    assert (call.id, call.name, call.arguments) == (tc.id, "add", args)
    assert (t.messages[3].tool_call_id, t.messages[3].name, t.messages[3].content) == (tc.id, "add", result)
    assert t.messages[4].content == second.choices[0].message.content
    assert t.policy == "tiny" and t.category == "adder-agent" and t.outcome.labeled is False
    chat = spans[0]
    assert t.messages[2].duration_s == pytest.approx((chat.end_time - chat.start_time) / 1e9)
    _keep(f, "otel-genai", "generated-by-opentelemetry-instrumentation-openai-v2-"
          f"{_version('opentelemetry-instrumentation-openai-v2')}.json")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
