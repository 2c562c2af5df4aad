"""A tracing processor for the OpenAI Agents SDK that writes what `flywheel ingest` (and a live
`collect.logs` folder) reads as whole trajectories, also for agents on the Responses API:

    from agents import add_trace_processor
    from data_pipeline.agents_sdk import TraceLog

    add_trace_processor(TraceLog("/data/agent-logs"))

The SDK's own exporter uploads `trace.export()` and `span.export()` items, and a `response` span's
export holds only the response id: the model's input and output stay in memory (the span data's
`response` and `input`, which the SDK keeps "for other tracing processor implementations"). This
processor keeps them. When a trace ends it appends, under FOLDER:
- to `NAME-YYYY-MM-DD.responses.jsonl` (UTC date of the trace's end): each Response of the trace,
  `response.model_dump()` with the request's `input` added, one per line: the side file the
  openai-agents adapter joins to the response spans;
- then to `NAME-YYYY-MM-DD.jsonl`: the trace as one line `{"data": [trace, span, ...]}`, the payload
  the SDK's exporter posts.
A trace is written whole, after its Responses, so a reader never sees half of one; a trace still
open at `shutdown()` (the process exits inside it) is written as far as it got. Nothing here imports
the SDK: it calls this object by its method names (TracingProcessor's interface)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """A JSON-ready copy of what the SDK holds (pydantic models, TypedDicts, lists of them)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class TraceLog:
    """An Agents SDK TracingProcessor writing trace payloads and their Responses under `folder`."""

    def __init__(self, folder: str | Path, name: str = "agents"):
        self.folder, self.name = Path(folder), name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # ---- TracingProcessor ------------------------------------------------------------------
    def on_trace_start(self, trace: Any) -> None:
        exported = trace.export()
        if exported:
            with self._lock:
                self._items.setdefault(str(exported["id"]), []).insert(0, exported)

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        exported = span.export()
        if not exported:
            return
        tid = str(exported.get("trace_id"))
        data = span.span_data
        response = getattr(data, "response", None) if getattr(data, "type", None) == "response" else None
        with self._lock:
            self._items.setdefault(tid, []).append(exported)
            if response is not None:
                obj = _plain(response)
                obj["input"] = _plain(getattr(data, "input", None))
                self._responses.setdefault(tid, []).append(obj)

    def on_trace_end(self, trace: Any) -> None:
        self._write(str(trace.trace_id))

    def shutdown(self) -> None:
        with self._lock:
            open_traces = list(self._items)
        for tid in open_traces:
            self._write(tid)

    def force_flush(self) -> None:
        pass  # every ended trace is already on disk

    # ---- files -----------------------------------------------------------------------------
    def paths(self, day: str | None = None) -> tuple[Path, Path]:
        """(trace file, Responses file) of a UTC day (default: today)."""
        day = day or time.strftime("%Y-%m-%d", time.gmtime())
        return self.folder / f"{self.name}-{day}.jsonl", self.folder / f"{self.name}-{day}.responses.jsonl"

    def _write(self, tid: str) -> None:
        with self._lock:
            items = self._items.pop(tid, None)
            responses = self._responses.pop(tid, [])
            if not items:
                return
            traces, side = self.paths()
            if responses:
                with open(side, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in responses))
            with open(traces, "a", encoding="utf-8") as f:
                f.write(json.dumps({"data": items}, ensure_ascii=False, default=str) + "\n")
