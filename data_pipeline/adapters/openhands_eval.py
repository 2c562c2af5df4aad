"""OpenHands evaluation `output.jsonl` (one instance per line: instance_id, instruction,
instance, metadata, history, metrics, error, test_result) and the older resolver output
(issue, history, success, result_explanation). Events are mapped as in `openhands.py`. Outcome:
top-level `success` / `score` / `reward` and `outcome.*` (common.log_outcome; `metadata` is the
run's configuration here, not read for outcomes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import head_text, jsonl_objects, log_outcome, mapped, require
from .openhands import events_to_messages

NAME = "openhands-eval"
LINES = True  # a .jsonl of this format is one record per line: a live log is read from its watermark on


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:65536]
    return text.startswith("{") and '"history"' in text and ('"instance_id"' in text or '"issue"' in text) \
        and ('"metrics"' in text or '"test_result"' in text or '"success"' in text)


def eval_record(rec: Any, path: Path, loc: str) -> dict[str, Any]:
    history = require(rec, "history", list)
    messages, stamps, model = events_to_messages(history)
    md = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    model = str((md.get("llm_config") or {}).get("model") or model)
    if isinstance(rec.get("issue"), dict):  # resolver output
        iss = rec["issue"]
        task_id, suite = f"{iss.get('owner')}/{iss.get('repo')}#{iss.get('number')}", "openhands-resolver"
    else:
        # the benchmark is the folder under evaluation/benchmarks/ (md["dataset"] is often a local path)
        parts = path.parts
        bench = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts[:-1] else "swe_bench"
        task_id, suite = str(require(rec, "instance_id", str)), bench.replace("_", "-")
    outcome = log_outcome(rec, metadata={})  # its `metadata` is the run's configuration, not an outcome
    metrics = rec.get("metrics") if isinstance(rec.get("metrics"), dict) else {}
    meta = {"error": rec.get("error"), "dataset": md.get("dataset"), "agent_class": md.get("agent_class"),
            "max_iterations": md.get("max_iterations"), "accumulated_cost": metrics.get("accumulated_cost"),
            "llm_latency_s": sum(x.get("latency", 0.0) for x in metrics.get("response_latencies") or []
                                 if isinstance(x, dict)),
            "patch": (rec.get("test_result") or {}).get("git_patch") if isinstance(rec.get("test_result"), dict)
            else rec.get("git_patch"), "result_explanation": rec.get("result_explanation")}
    return {"episode_id": f"openhands/{path.parent.name}/{path.stem}/{task_id}", "task_id": task_id, "suite": suite,
            "category": task_id.split("__")[0] if "__" in task_id else "", "policy": model,
            "source_format": NAME, "started_at": min(stamps) if stamps else None,
            "ended_at": max(stamps) if stamps else None, "messages": messages, "outcome": outcome, "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    for loc, obj in jsonl_objects(path):
        yield obj if isinstance(obj, Record) else mapped(loc, eval_record, obj, path, loc)
