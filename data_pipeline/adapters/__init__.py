"""Adapters: one module per log format, each turning a file into canonical trajectory dicts.

An adapter module defines `NAME`, `detect(path, head) -> bool` (head: the file's first bytes) and
`read(path) -> Iterator[Record]`, and `LINES = True` when its .jsonl files hold one record per line
read through `iter_jsonl` / `common.jsonl_objects` (a live log of it is then read from its
watermark on, see `line_window`), or `SESSION = True` when one .jsonl file is one conversation that
grows while the agent works (a live log of it is read once quiet, a resumed one as a continuation:
data_pipeline/live.py), or `STREAM = True` when a .jsonl file of it is a stream of export lines
whose records (traces, conversations) span lines and grow as they are appended (a live log of it is
read whole up to its last complete line, and a record extending one read before is stored as its
continuation; such an adapter reads through `common.read_bytes` / `jsonl_objects`, which keep to
the window). `_registry()` below is the whole list, in detection order (most
specific first). A record that cannot be mapped comes back as `Record(error=(field, reason))` and
goes to quarantine; nothing is dropped silently."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

HEAD_BYTES = 64 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a single record above this is quarantined, not stored


@dataclass
class Record:
    """One unit read from a source file: a canonical trajectory dict, or why there is none."""

    locator: str  # where in the file: "line 12", "record 3", "samples/x_epoch_1.json"
    data: dict[str, Any] | None = None
    error: tuple[str, str] | None = None  # (field, reason)
    excerpt: str = ""  # start of the raw record, kept (redacted) in quarantine for debugging


def bad(locator: str, field: str, reason: str, raw: bytes | str = b"") -> Record:
    if isinstance(raw, bytes):
        raw = raw[:1024].decode("utf-8", "replace")
    return Record(locator, error=(field, reason), excerpt=raw[:1024])


@dataclass(frozen=True)
class LineWindow:
    """The part of a JSON Lines file an adapter reads when a live log source (data_pipeline/live.py)
    asks for only what is new: bytes [start, end), whose first line is line `first_line` of the file
    (so locators name the file's real line numbers)."""

    start: int
    end: int
    first_line: int
    # a stream file's predecessor (the file it was rotated out of), read first as if its lines came
    # before: (its path, one past its last complete line); its lines' locators name it
    lead: tuple[str, int] | None = None


_WINDOWS: ContextVar[dict[str, LineWindow]] = ContextVar("line_windows", default={})


@contextmanager
def line_window(path: Path, window: LineWindow):
    """Within this block, the line readers of the adapters (`iter_jsonl`, `common.jsonl_objects`,
    `common.read_records`) read only `window` of `path`."""
    token = _WINDOWS.set({**_WINDOWS.get(), os.fspath(path): window})
    try:
        yield
    finally:
        _WINDOWS.reset(token)


def window_of(path: Path) -> LineWindow | None:
    return _WINDOWS.get().get(os.fspath(path))


def window_lines(path: Path, w: LineWindow) -> Iterator[tuple[str, bytes]]:
    """(locator, raw line) of the lines in bytes [w.start, w.end) of the file, after those of its lead."""
    if w.lead is not None and os.path.exists(w.lead[0]):  # gone (a rotation deleted it): the file alone
        lead = Path(w.lead[0])
        for lineno, raw in _lines(lead, 0, w.lead[1], 1):
            yield f"{lead.name} line {lineno}", raw
    for lineno, raw in _lines(path, w.start, w.end, w.first_line):
        yield f"line {lineno}", raw


def _lines(path: Path, start: int, end: int, first_line: int) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        f.seek(start)
        pos, lineno = start, first_line
        while pos < end:
            raw = f.readline(end - pos)
            if not raw:
                return
            pos += len(raw)
            yield lineno, raw
            lineno += 1


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any, bytes]]:
    """Yield (locator, parsed JSON or Record on failure, raw line) per non-blank line."""
    w = window_of(path)
    with open(path, "rb") as f:
        for loc, raw in (window_lines(path, w) if w else ((f"line {n}", raw) for n, raw in enumerate(f, 1))):
            if not raw.strip():
                continue
            yield loc, parse_json_bytes(loc, raw), raw


def parse_json_bytes(loc: str, raw: bytes) -> Any:
    """Decode and parse one JSON record; a Record describing the problem when that fails."""
    if len(raw) > MAX_RECORD_BYTES:
        return bad(loc, "<record>", f"record is {len(raw) / 2**20:.1f} MiB, over the "
                   f"{MAX_RECORD_BYTES / 2**20:.0f} MiB limit", raw)
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return bad(loc, "<encoding>", f"not valid UTF-8 at byte {e.start}", raw)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return bad(loc, "<json>", f"invalid JSON: {e.msg} at char {e.pos}", text)
    except RecursionError:
        return bad(loc, "<json>", "invalid JSON: nested too deeply", text)


def _registry() -> list:
    # detection order: the most specific signatures first; plain OpenAI chat last but one
    from . import (atif, claude_code, codex, flywheel, inspect_ai, mini_swe_agent, openai_agents, openai_chat, openhands,
                   openhands_eval, otel_genai, sharegpt, swe_agent, swebench, tau2_bench, tau_bench)

    del swebench  # side files only (see side_file_note in sources.py)
    return [atif, otel_genai, openai_agents, inspect_ai, claude_code, codex, tau2_bench, mini_swe_agent, openhands_eval,
            swe_agent, openhands, tau_bench, sharegpt, flywheel, openai_chat]


def formats() -> dict[str, Any]:
    """Adapter modules by name, in detection order."""
    return {m.NAME: m for m in _registry()}
