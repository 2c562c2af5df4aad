"""Logs as a live source (`collect.logs`): at the start of every round, what is new in the deployed
agents' log folders, files or globs since the previous round goes into the experience store, once.

Each log file read so far has a *watermark* in the store: how far it was read (a byte offset just
past its last complete line), the sha256 of those bytes, and their line count. A watermark is the
`watermark` entry of the file's row in the `sources` of the batch manifest that read it, so it is
committed atomically with the trajectories it produced (the batch directory's rename): a killed
ingest leaves the old watermarks and no trajectories, and the rerun reads the same bytes again.
The store's watermarks are folded from all batch manifests at read time (`watermarks`): a row
that reads a file on from watermark W replaces W.

A file is recognised by its content, not its name: it continues the watermark whose offset and
prefix hash match its own first bytes. So an appended JSON Lines file gives only its new complete
lines (a half-written last line, without its newline, waits for the next round); a renamed or
rotated file (x -> x.1, a new x started) is not read twice; a truncated or rewritten file matches
no watermark and is read from its start (records stored before count as duplicates). Formats that
are whole documents (a .json file, an inspect .eval zip, any file not in a line format) are read
when new or changed (a watermark per content hash); the store's content-hash dedupe covers the
overlap. Quarantine entries name the original file and its real line numbers.

Session formats (an adapter with `SESSION = True`: one file is one conversation that grows while
the agent works, Claude Code sessions and Codex rollouts) are read whole, once the file has been
quiet: a new or changed session file whose mtime is less than `quiet_s` seconds old waits (counted
in `waiting_sessions`) for a later round, so a session still being written is not stored half done.
Its watermark (mode `session`) is the offset just past its last complete line and the hash of the
bytes before it. A session that grows after it was read (a resumed session) is recognised by that
prefix and read again, whole, as a *continuation*: one new trajectory per conversation in it (a
Claude Code sidechain is one) that has new messages, `episode_id` `<id>/resumed-line-<n>`, whose
messages already stored are context (`metadata.context_messages`: in the prompt, never in the
loss) and whose interaction time starts where the stored one ended. The store stays append-only,
no message is trained twice, and the interaction time of the two adds up to the session's. A
conversation without new messages, and a broken line already quarantined, give nothing again.

Stream formats (an adapter with `STREAM = True`: OTLP GenAI and Agents SDK export lines, where a
trace's spans and a conversation's traces arrive over many lines as the agent works) are read whole
up to the last complete line (a half-written one waits), with a watermark (mode `stream`) like a
line format's, after the stream file before them in their folder, and matched to the conversations
stored before (data_pipeline/streams.py): a conversation that a round cut in two, in one file or
across a rotation, is stored as its first part and the rest, never twice.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import adapters, sources
from .config import SESSION_QUIET_S
from .adapters import LineWindow, Record
from .errors import IngestError
from .store import sha256_file
from .streams import StreamIndex, StreamSource, continuation, is_line_file, is_stream_file, manifests, with_leads

WATERMARK = "watermark"  # key of a live log's entry in its batch-manifest source row
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
_GLOB_CHARS = set("*?[")


@dataclass
class LogFile:
    """One log file as this round sees it: what is new in it, and the watermark after reading it."""

    path: Path
    fmt: str
    mode: str  # lines: read from a watermark on (a line format); session: whole, a growth as a continuation;
    # stream: whole to its last complete line, a grown record as a continuation; document: whole when new or changed
    size: int
    mtime_ns: int
    start: int = 0  # first byte to read
    start_sha: str = EMPTY_SHA
    start_lines: int = 0
    end: int = 0  # one past the last complete line (a document: its size)
    end_sha: str = EMPTY_SHA  # sha256 of bytes [0, end)
    end_lines: int = 0
    new_records: int = 0  # non-blank complete lines in [start, end) (documents: 0, counted when read)
    waiting_bytes: int = 0  # a half-written last line (no newline yet)
    waiting_session: bool = False  # a session file changed less than quiet_s ago: read in a later round

    @property
    def lines_mode(self) -> bool:
        return self.mode == "lines"

    @property
    def new(self) -> bool:
        return self.end > self.start

    def source(self, index: "StreamIndex | None" = None, lead: tuple[str, int] | None = None) -> sources.Source:
        """What to read of the file; for a stream file, `index`: the stream conversations stored and
        read so far this round (its records are matched to them), `lead`: the file before it."""
        wm = {"offset": self.end, "sha256": self.end_sha, "lines": self.end_lines, "from_offset": self.start,
              "from_sha256": self.start_sha, "mode": self.mode, "size": self.size, "mtime_ns": self.mtime_ns}
        if self.mode == "session":
            stored = LineWindow(0, self.start, 1) if self.start else None
            return SessionSource(self.path, self.fmt, window=LineWindow(0, self.end, 1), sha256=self.end_sha,
                                 row={WATERMARK: wm}, stored=stored, first_line=self.start_lines + 1)
        if self.mode == "stream":
            stored = LineWindow(0, self.start, 1, lead) if self.start or lead else None
            return StreamSource(self.path, self.fmt, window=LineWindow(0, self.end, 1, lead), sha256=self.end_sha,
                                row={WATERMARK: wm}, stored=stored, first_line=self.start_lines + 1, index=index)
        window = LineWindow(self.start, self.end, self.start_lines + 1) if self.lines_mode else None
        return sources.Source(self.path, self.fmt, window=window, sha256=self.end_sha, row={WATERMARK: wm})


@dataclass
class SessionSource(sources.Source):
    """A session file's complete lines; when part of it was read before (`stored`: its bytes then),
    the continuation of each conversation in it (see the module's docstring)."""

    stored: LineWindow | None = None
    first_line: int = 1  # the first line not read before

    def read(self):
        if self.stored is None:
            yield from super().read()
            return
        before: dict[Any, dict[str, Any]] = {}
        errors = set()
        for rec in sources.Source(self.path, self.fmt, window=self.stored).read():
            if rec.data is not None:
                before[rec.data.get("task_id")] = rec.data
            else:
                errors.add((rec.locator, rec.error))
        for rec in super().read():
            if rec.data is None:
                if (rec.locator, rec.error) not in errors:  # else quarantined when first read
                    yield rec
                continue
            old = before.get(rec.data.get("task_id"))
            if old is None:  # a conversation the stored part did not have
                yield rec
                continue
            data = continuation(old, rec.data, self.first_line)
            if data is not None:
                yield Record(rec.locator, data=data)


# ---- where the logs are ----------------------------------------------------------------------------
def resolve(patterns: list[str], base_dir: str | Path | None) -> list[str]:
    """The patterns as absolute paths: relative ones against `base_dir` (the recipe's folder)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    out = []
    for p in patterns:
        q = Path(os.path.expanduser(p))
        out.append(os.path.normpath(q if q.is_absolute() else base / q))
    return out


def log_files(patterns: list[str], base_dir: str | Path | None = None,
              fmt: str = "auto") -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """([(file, format)], [(file, why skipped)]) of the folders, files and globs `patterns`. A glob
    matching nothing is no error (nothing has arrived yet); a missing folder or file is."""
    known = adapters.formats()
    if fmt != "auto" and fmt not in known:
        raise IngestError(f"unknown format {fmt!r} (ingest.format); known: auto, {', '.join(known)}")
    files: dict[Path, None] = {}
    for pattern in resolve(patterns, base_dir):
        if _GLOB_CHARS & set(pattern):
            roots = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        else:
            if not os.path.exists(pattern):
                raise IngestError(f"collect.logs: no such file or folder {pattern} (relative paths are resolved "
                                  "against the recipe file's folder; create it or fix the recipe)")
            roots = [Path(pattern)]
        for root in roots:
            for p in sources._walk(root):
                files.setdefault(p, None)
    chosen, skipped = [], []
    for p in files:
        note = sources.skip_note(p)
        if note:
            skipped.append((str(p), note))
            continue
        f = fmt if fmt != "auto" else sources.detect(p)
        if f is None and p.suffix.lower() not in sources._DATA_SUFFIXES:
            skipped.append((str(p), "not a known trajectory format"))
            continue
        chosen.append((p, f or "unrecognised"))
    return chosen, skipped


def is_session(fmt: str) -> bool:
    """Whether `fmt` is a session format: one file, one growing conversation (adapter `SESSION`)."""
    return bool(getattr(adapters.formats().get(fmt), "SESSION", False))


def _mode(path: Path, fmt: str) -> str:
    mod = adapters.formats().get(fmt)
    lines = is_line_file(path)
    if lines and getattr(mod, "LINES", False):
        return "lines"
    if is_stream_file(path, fmt):
        return "stream"
    return "session" if lines and getattr(mod, "SESSION", False) else "document"


# ---- the store's watermarks -----------------------------------------------------------------------
def watermarks(store_root: str | Path) -> list[dict[str, Any]]:
    """The current watermarks of a store (folded from its batch manifests, oldest first), each with
    the file's path and format as last read. Read without creating or locking the store."""
    tips: dict[tuple[int, str], dict[str, Any]] = {}
    for m in manifests(store_root):
        for row in m.get("sources", []):
            wm = row.get(WATERMARK)
            if not wm:
                continue
            if wm["from_offset"]:
                tips.pop((wm["from_offset"], wm["from_sha256"]), None)
            tips[(wm["offset"], wm["sha256"])] = {**wm, "path": row["path"], "format": row["format"]}
    return list(tips.values())


def _scan_lines(lf: LogFile, tips: list[dict[str, Any]]) -> None:
    """Find where `lf` continues (the longest watermark of its mode whose offset and prefix hash match
    its first bytes, else its start) and how far its complete lines go now: one pass over the file."""
    wanted: dict[int, set[str]] = {}
    for t in tips:
        # a stream file was a document before stream mode existed: its watermark then is a complete-line prefix too
        if (t["mode"] == lf.mode or (lf.mode, t["mode"]) == ("stream", "document")) and 0 < t["offset"] <= lf.size:
            wanted.setdefault(t["offset"], set()).add(t["sha256"])
    h = hashlib.sha256()
    pos = lines = 0
    new_records = 0
    with open(lf.path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                lf.waiting_bytes = len(raw)  # a half-written last line waits for its newline
                break
            h.update(raw)
            pos += len(raw)
            lines += 1
            if pos > lf.start and raw.strip():
                new_records += 1
            if pos in wanted and h.hexdigest() in wanted[pos]:
                lf.start, lf.start_sha, lf.start_lines = pos, h.hexdigest(), lines
                new_records = 0  # everything up to here was read before
    lf.end, lf.end_sha, lf.end_lines, lf.new_records = pos, h.hexdigest(), lines, new_records


def scan(store_root: str | Path, patterns: list[str], base_dir: str | Path | None = None,
         fmt: str = "auto", quiet_s: float = SESSION_QUIET_S,
         now: float | None = None) -> tuple[list[LogFile], list[tuple[str, str]]]:
    """Every log file of `patterns` with what is new in it for the store at `store_root`, and the
    files skipped (with why). Unchanged files (same path, size and mtime as their watermark) are
    not read; a session file modified less than `quiet_s` seconds before `now` waits."""
    tips = watermarks(store_root)
    now = time.time() if now is None else now
    by_path: dict[str, list[dict[str, Any]]] = {}
    for t in tips:
        by_path.setdefault(t["path"], []).append(t)
    files, skipped = log_files(patterns, base_dir, fmt)
    out = []
    for path, f in files:
        try:
            st = path.stat()
        except OSError as e:
            raise IngestError(f"collect.logs: cannot read {path}: {e.strerror}") from None
        known = by_path.get(str(path), [])
        same = [t for t in known if t.get("size") == st.st_size and t.get("mtime_ns") == st.st_mtime_ns]
        f = same[0]["format"] if same else f
        lf = LogFile(path, f, _mode(path, f), st.st_size, st.st_mtime_ns)
        if same:  # untouched since it was read: nothing new, and the same half line (if any) waits
            t = max(same, key=lambda t: t["offset"])
            lf.start = lf.end = t["offset"]
            lf.start_sha = lf.end_sha = t["sha256"]
            lf.start_lines = lf.end_lines = t.get("lines", 0)
            lf.waiting_bytes = st.st_size - t["offset"] if lf.mode != "document" else 0
        elif is_session(f) and now - st.st_mtime_ns / 1e9 < quiet_s:
            lf.waiting_session = True  # still being written (or just finished): a later round reads it
        elif lf.mode != "document":
            _scan_lines(lf, tips)
        else:
            sha = sha256_file(path)
            lf.end, lf.end_sha = st.st_size, sha
            if any(t["mode"] == "document" and t["sha256"] == sha and t["offset"] == st.st_size for t in tips):
                lf.start, lf.start_sha = lf.end, sha  # read before (maybe under another name)
        out.append(lf)
    return out, skipped


# ---- ingest and what waits --------------------------------------------------------------------------
def collect_logs(store, patterns: list[str], base_dir: str | Path | None = None, fmt: str = "auto",
                 tag: str = "logs", redact: bool = True, progress: bool = True,
                 quiet_s: float = SESSION_QUIET_S) -> dict[str, Any]:
    """Ingest what is new in the live logs `patterns` into `store` (an ExperienceStore), exactly
    once: one batch holding the new trajectories, quarantine entries and the files' new watermarks.
    `quiet_s` (collect.session_quiet_s): a session file is read once unmodified this long.
    Returns {"files" (files with something new), "read", "accepted", "duplicates", "quarantined",
    "waiting_bytes" (half-written last lines), "waiting_sessions" (session files still being
    written), "batch_id" (None: no trajectory stored), "skipped"}."""
    seen: dict[str, Any] = {}

    def plan(st) -> sources.Plan:  # under the store's lock: two ingests never read the same new bytes
        files, skipped = scan(st.root, patterns, base_dir, fmt, quiet_s)
        seen.update(files=files, skipped=skipped)
        return sources.Plan(files=_sources(st.root, files), skipped=skipped)

    summary = store.ingest_plan(None, tag=tag, redact=redact, progress=progress, make_plan=plan)
    files = seen.get("files", [])
    waiting = sum(lf.waiting_session for lf in files)
    if waiting and progress:
        print(f"{tag}: {waiting} session{'s' if waiting > 1 else ''} still being written, waiting (read once "
              f"unmodified for {quiet_s:g} s: collect.session_quiet_s)", file=sys.stderr)
    return {"files": sum(1 for lf in files if lf.new), "read": summary.read, "accepted": summary.accepted,
            "duplicates": summary.duplicates, "quarantined": summary.quarantined,
            "waiting_bytes": sum(lf.waiting_bytes for lf in files), "waiting_sessions": waiting,
            "batch_id": summary.batch_id, "skipped": len(seen.get("skipped", []))}


def pending(store_root: str | Path, patterns: list[str], base_dir: str | Path | None = None,
            fmt: str = "auto", quiet_s: float = SESSION_QUIET_S) -> dict[str, int]:
    """What the next round would read from the live logs, without reading it into the store:
    {"files": files with something new, "bytes": their new complete bytes, "records": new complete
    lines (a new or changed document or session: its records as its adapter reads them),
    "waiting_sessions": session files still being written}."""
    files, _ = scan(store_root, patterns, base_dir, fmt, quiet_s)
    new = [lf for lf in files if lf.new]
    records = sum(lf.new_records for lf in new if lf.lines_mode)
    for src in _sources(store_root, [lf for lf in files if not lf.lines_mode]):
        records += sum(1 for _ in src.read())
    return {"files": len(new), "bytes": sum(lf.end - lf.start for lf in new), "records": records,
            "waiting_sessions": sum(lf.waiting_session for lf in files)}


def _sources(store_root: str | Path, files: list[LogFile]) -> list[sources.Source]:
    """The sources of the files with something new; stream files last, oldest first (a file rotated
    out is read before the one that took its place), each read after the stream file before it in
    its folder (its `lead`: a conversation may go on from one into the other) and matched against
    one index of what was stored."""
    new = [lf for lf in files if lf.new]
    streams = with_leads([lf for lf in files if lf.mode == "stream"], lambda lf: lf.path, lambda lf: lf.fmt,
                         lambda lf: lf.mtime_ns, lambda lf: lf.end)
    index = StreamIndex.of_store(store_root) if any(lf.new for lf, _ in streams) else None
    return [lf.source() for lf in new if lf.mode != "stream"] + [lf.source(index, lead) for lf, lead in streams if lf.new]


def tagged_counts(store, tag: str) -> dict[str, Any] | None:
    """The counts of every batch `collect_logs` committed under `tag` (a round may have read its
    logs in more than one attempt: a killed round that reran), or None when there is none."""
    rows = [b for b in store.batches(include_empty=True) if b.tag == tag]
    if not rows:
        return None
    ms = [store.manifest(b.batch_id) for b in rows]
    stored = [b.batch_id for b in rows if b.count]
    return {"files": len({s["path"] for m in ms for s in m["sources"]}),
            "read": sum(m.get("read", 0) for m in ms), "accepted": sum(m["count"] for m in ms),
            "duplicates": sum(m.get("duplicates", 0) for m in ms),
            "quarantined": sum(m.get("quarantined_seen", m.get("quarantined", 0)) for m in ms),
            "batch_id": stored[-1] if stored else None}
