"""Inspect AI eval logs: `.json` (one object with `samples`) and `.eval` (a zip of header.json
and samples/*.json). One trajectory per sample (and epoch). Score: the first scorer's value,
read as C=1, P=0.5, I/N=0, booleans and numbers in [0, 1] as they are. Interaction time: the
sample's `working_time` (else `total_time`); start from the first event timestamp. Tool schemas
from the first model event that lists them."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from . import MAX_RECORD_BYTES, Record, bad, parse_json_bytes
from .common import MappingError, head_text, iso_seconds, load_document, mapped, openai_tool_calls, require, text_of

NAME = "inspect"
_ROLE = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_LETTER = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}


def detect(path: Path, head: bytes) -> bool:
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                return "header.json" in z.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    text = head_text(path, head).lstrip()[:4096]
    return text.startswith("{") and '"eval"' in text and '"version"' in text and (
        '"plan"' in text or '"samples"' in text or '"status"' in text)


def _score(scores: Any) -> dict[str, Any]:
    if not isinstance(scores, dict) or not scores:
        return {}
    first = next(iter(scores.values()))
    v = first.get("value") if isinstance(first, dict) else first
    if isinstance(v, bool):
        return {"success": v, "score": float(v)}
    if isinstance(v, str) and v in _LETTER:
        return {"success": v == "C", "score": _LETTER[v]}
    if isinstance(v, (int, float)) and 0.0 <= v <= 1.0:
        return {"success": v >= 1.0, "score": float(v)}
    return {}


def _tools(events: list[Any]) -> list[dict[str, Any]]:
    for e in events:
        if isinstance(e, dict) and e.get("event") == "model" and e.get("tools"):
            return [{"type": "function", "function": {k: t.get(k) for k in ("name", "description", "parameters")}}
                    for t in e["tools"] if isinstance(t, dict)]
    return []


def sample(s: Any, path: Path, loc: str, header: dict[str, Any]) -> dict[str, Any]:
    msgs = require(s, "messages", list)
    messages = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in _ROLE:
            raise MappingError(f"{where}.role", f"unknown role {m.get('role') if isinstance(m, dict) else m!r}")
        msg = {"role": m["role"], "content": text_of(m.get("content")),
               "tool_calls": openai_tool_calls(m.get("tool_calls"), f"{where}.tool_calls")}
        if m["role"] == "tool":
            msg["tool_call_id"], msg["name"] = m.get("tool_call_id"), m.get("function")
        messages.append(msg)
    ev = header.get("eval") or {}
    events = s.get("events") if isinstance(s.get("events"), list) else []
    stamps = [t for t in (iso_seconds(e.get("timestamp")) for e in events if isinstance(e, dict)) if t is not None]
    duration = s.get("working_time", s.get("total_time"))
    task = str(ev.get("task") or "inspect")
    meta = {"epoch": s.get("epoch"), "target": s.get("target"), "scores": s.get("scores"),
            "eval_id": ev.get("eval_id"), "run_id": ev.get("run_id"), "total_time": s.get("total_time"),
            "sample_metadata": s.get("metadata")}
    tools = _tools(events)
    if tools:
        meta["tools"] = tools
    started = min(stamps) if stamps else iso_seconds((header.get("stats") or {}).get("started_at"))
    return {"episode_id": str(s.get("uuid") or f"{ev.get('eval_id')}/{s.get('id')}/epoch{s.get('epoch')}"),
            "task_id": f"{task}/{s.get('id')}", "suite": task, "policy": str(ev.get("model") or ""),
            "source_format": NAME, "started_at": started,
            "duration_s": float(duration) if isinstance(duration, (int, float)) else None,
            "messages": messages, "outcome": _score(s.get("scores")), "metadata": meta}


def _read_zip(path: Path) -> Iterator[Record]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as e:
        yield bad("file", "<file>", f"not a readable .eval zip: {e}")
        return
    with z:
        names = z.namelist()
        if "header.json" not in names:
            yield bad("file", "header.json", "an .eval log needs header.json")
            return
        header = _member(z, "header.json")
        if isinstance(header, Record):
            yield header
            return
        for name in sorted(n for n in names if n.startswith("samples/") and n.endswith(".json")):
            if z.getinfo(name).file_size > MAX_RECORD_BYTES:
                yield bad(name, "<record>", f"sample is over the {MAX_RECORD_BYTES >> 20} MiB limit")
                continue
            s = _member(z, name)
            yield s if isinstance(s, Record) else mapped(name, sample, s, path, name, header)


def _member(z: zipfile.ZipFile, name: str) -> Any:
    """One member parsed as JSON; a Record naming the member when the zip entry is damaged."""
    try:
        raw = z.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as e:
        return bad(name, "<file>", f"damaged .eval zip entry: {e}")
    return parse_json_bytes(name, raw)


def read(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"PK":
        yield from _read_zip(path)
        return
    doc = load_document(path)
    if isinstance(doc, Record):
        yield doc
        return
    samples = doc.get("samples") if isinstance(doc, dict) else None
    if not isinstance(samples, list):
        yield bad("file", "samples", "this Inspect log holds no samples (header-only logs have nothing to ingest)")
        return
    for i, s in enumerate(samples):
        yield mapped(f"samples[{i}]", sample, s, path, f"samples[{i}]", doc)
