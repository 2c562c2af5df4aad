"""data_pipeline.agents_sdk.TraceLog on its own (the real SDK drives it in test_traces_real.py): two
traces whose spans interleave are each written whole, as one payload line, after their Responses;
a trace still open at shutdown is written as far as it got; what it writes ingests."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from data_pipeline.agents_sdk import TraceLog


@dataclass
class Trace:  # the SDK's Trace, as TraceLog uses it
    trace_id: str

    def export(self) -> dict[str, Any]:
        return {"object": "trace", "id": self.trace_id, "workflow_name": "w", "group_id": None, "metadata": None}


@dataclass
class Data:
    type: str
    response: Any = None
    input: Any = None


class Response:  # a pydantic-like Response
    def __init__(self, rid: str):
        self.rid = rid

    def model_dump(self, mode: str = "json", exclude_none: bool = True) -> dict[str, Any]:
        return {"object": "response", "id": self.rid, "model": "m", "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi " + self.rid}]}]}


@dataclass
class Span:
    sid: str
    trace_id: str
    span_data: Data

    def export(self) -> dict[str, Any]:
        body = {"type": self.span_data.type}
        if self.span_data.type == "response":
            body["response_id"] = self.span_data.response.rid
        return {"object": "trace.span", "id": self.sid, "trace_id": self.trace_id, "parent_id": None,
                "started_at": "2026-12-02T10:00:00+00:00", "ended_at": "2026-12-02T10:00:01+00:00",
                "span_data": body, "error": None}


def test_traces_written_whole_after_their_responses(tmp_path):
    log = TraceLog(tmp_path / "logs")
    a, b = Trace("trace_a"), Trace("trace_b")
    log.on_trace_start(a)
    log.on_trace_start(b)
    log.on_span_end(Span("s1", "trace_a", Data("response", Response("resp_1"), [{"role": "user", "content": "q1"}])))
    log.on_span_end(Span("s2", "trace_b", Data("agent")))
    traces, side = log.paths()
    assert not traces.exists() and not side.exists()  # nothing before a trace ends
    log.on_trace_end(a)
    lines = traces.read_text().splitlines()
    assert len(lines) == 1 and [i["id"] for i in json.loads(lines[0])["data"]] == ["trace_a", "s1"]
    (resp,) = [json.loads(x) for x in side.read_text().splitlines()]
    assert resp["id"] == "resp_1" and resp["input"] == [{"role": "user", "content": "q1"}]
    # the process stops inside trace_b: shutdown writes what it has
    log.shutdown()
    lines = traces.read_text().splitlines()
    assert [i["id"] for i in json.loads(lines[1])["data"]] == ["trace_b", "s2"]
    log.shutdown()  # nothing left: nothing written twice
    assert len(traces.read_text().splitlines()) == 2

    from data_pipeline.store import ExperienceStore
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([log.folder])
    assert s.read == s.accepted + s.quarantined + s.duplicates == 2
    assert s.accepted == 1 and s.quarantined == 1  # trace_b has no model call: quarantined with the reason
    (t,) = store.trajectories()
    assert [(m.role, m.content) for m in t.messages] == [("user", "q1"), ("assistant", "hi resp_1")]
