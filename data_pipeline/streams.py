"""Stream formats: an adapter with `STREAM = True` (OTLP GenAI and Agents SDK export lines) writes a
line per export batch, so one trace or conversation spans lines, grows as lines are appended, and,
when the exporter rotates its file, goes on in the next file. Read naively, a conversation read
half-way through and read again later is stored twice (the part and the whole), and one cut by a
rotation is two records that overlap.

Here a stream file is read after the stream file before it in its folder (by modification time:
the file it took the place of; its `lead`, LineWindow.lead), and each conversation read is matched
to the conversations stored before (`StreamIndex`: from the `stream` entries of the batch
manifests' source rows, plus what this ingest has read so far): one stored as it is is not given
again, one that extends a stored one (its messages begin with all of that one's) is given as its
continuation (`continuation`: the stored messages are context, never trained on again; its time is
what the two cover together less what the part counted), the rest are new. A part once continued is
never continued again. Used by data_pipeline/live.py (collect.logs, with the store's index) and by
the store's one-shot ingest of a folder (`chain`, an index of that ingest only, so ingesting the
same files again gives duplicates, as for any format)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import adapters, sources
from .adapters import LineWindow, Record

LINE_SUFFIXES = (".jsonl", ".ndjson")


def is_line_file(path: Path) -> bool:
    """A plain (uncompressed) JSON Lines file: a rotated x.jsonl.1 is one too, x.jsonl.gz is not."""
    suffixes = [x.lower() for x in path.suffixes]
    return any(x in LINE_SUFFIXES for x in suffixes) and not any(x in (".gz", ".zst", ".bz2", ".xz") for x in suffixes)


def is_stream_file(path: Path, fmt: str) -> bool:
    """A plain JSON Lines file of a stream format (adapter `STREAM`)."""
    return bool(getattr(adapters.formats().get(fmt), "STREAM", False)) and is_line_file(path)


def with_leads(files: list, path, fmt, mtime_ns, end) -> list[tuple[Any, tuple[str, int] | None]]:
    """Stream files in the order to read them, each with its lead: per folder and format, oldest first
    (by modification time, then name), the lead of each being the one before it (its path, and `end`:
    one past its last complete line; none when it has none). `path`, `fmt`, `mtime_ns`, `end`: how to
    read those of an item."""
    out, last = [], {}
    for f in sorted(files, key=lambda f: (mtime_ns(f), str(path(f)))):
        group = (path(f).parent, fmt(f))
        before = last.get(group)
        out.append((f, (str(path(before)), end(before)) if before is not None and end(before) > 0 else None))
        last[group] = f
    return out


@dataclass
class StreamSource(sources.Source):
    """A stream file's complete lines (an adapter with `STREAM`: OTLP or Agents SDK export lines,
    where one trace or conversation spans lines and grows as lines are appended). Each record read
    is matched to the conversations stored before (`index`: those the stream files of the same
    folder gave, and `stored`: what this file's bytes read before give again): one stored as it is
    is not given again, one that extends a stored one (its messages begin with all of that one's)
    is given as its continuation (`continuation`), so a conversation stored half-way through, in
    this file or in the file it was rotated out of, is never stored twice. What it gives is added to
    the index and listed in its manifest row (`stream`), for the next files and rounds."""

    stored: LineWindow | None = None
    first_line: int = 1
    index: "StreamIndex | None" = None

    def read(self):
        index = self.index if self.index is not None else StreamIndex()
        folder = str(self.path.parent)
        mine = StreamIndex()  # this file's records read before (and its lead's), as index entries
        errors = set()
        if self.stored is not None:
            for rec in sources.Source(self.path, self.fmt, window=self.stored).read():
                if rec.data is not None:
                    mine.add(_entry(folder, rec.data))
                else:
                    errors.add((rec.locator, rec.error))
        now = []
        for rec in super().read():
            if rec.data is None:
                if (rec.locator, rec.error) not in errors:  # else quarantined when first read
                    yield rec
                continue
            now.append((rec, [message_key(m) for m in rec.data.get("messages") or []]))

        fresh: set[tuple] = set()  # what this read gave: for the files read after it, not for itself
        seen: set[tuple] = set()  # stored conversations this read gave again as they are (they may grow in a later file)

        def candidates(keys: list[str]) -> list[dict[str, Any]]:
            found = {_ident(e): e for e in index.lookup(folder, keys)}
            found.update((_ident(e), e) for e in mine.lookup(folder, keys))
            return [e for k, e in found.items() if k not in index.claimed and k not in fresh and k not in seen]

        given = self.row.setdefault("stream", []) if self.row is not None else []
        done = set()
        # first what was stored before as it is (by its messages: its id may change as it grows) ...
        for i, (rec, keys) in enumerate(now):
            sig = _sig(keys)
            e = next((e for e in candidates(keys) if e["n"] == len(keys) and e["sig"] == sig), None)
            if e is not None:
                seen.add(_ident(e))
                done.add(i)
        # ... then what grew: the longest conversation stored before that it begins with
        for i, (rec, keys) in enumerate(now):
            if i in done:
                continue
            grown = [e for e in candidates(keys) if e["n"] < len(keys) and e["sig"] == _sig(keys[:e["n"]])]
            best = max(grown, key=lambda e: e["n"]) if grown else None
            entry = _entry(folder, rec.data, keys, best)
            entry["covers"] = sorted({_idhash(e) for e in grown})  # covered this round and after
            index.add(entry)
            given.append(_pack(entry))
            fresh.add(_ident(entry))
            index.claimed.update(_ident(e) for e in grown)
            if best is None:
                yield rec
                continue
            # named by file and line: a conversation may go on in more than one file
            data = continuation(best, rec.data, self.first_line, shared=best["n"],
                                where=f"{self.path.name}-line-{self.first_line}")
            if data is not None:
                yield Record(rec.locator, data=data)


class StreamIndex:
    """The conversations that the stream files of a store's live logs gave, from the `stream` entries
    of its batch manifests' source rows, found by folder and first messages; and those a round has
    matched already (`claimed`: one stored conversation is continued once)."""

    def __init__(self, entries: list[dict[str, Any]] = ()):
        self._by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.claimed: set[tuple] = set()
        for e in entries:
            self.add(e)

    @classmethod
    def of_store(cls, store_root: str | Path) -> "StreamIndex":
        entries = [_unpack(e, str(Path(row["path"]).parent)) for m in manifests(store_root)
                   for row in m.get("sources", []) for e in row.get("stream") or []]
        index = cls(entries)
        covered = {h for e in entries for h in e["covers"]}  # continued in an earlier round: never again
        index.claimed.update(_ident(e) for e in entries if _idhash(e) in covered)
        return index

    def add(self, e: dict[str, Any]) -> None:
        self._by.setdefault((e["folder"], e["head"]), []).append(e)

    def lookup(self, folder: str, keys: list[str]) -> list[dict[str, Any]]:
        """The entries of `folder` that may be a prefix of a conversation with these message keys."""
        return self._by.get((folder, _sig(keys[:1])), []) + self._by.get((folder, _sig(keys[:2])), []) * (len(keys) > 1)


def _sig(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def _entry(folder: str, data: dict[str, Any], keys: list[str] | None = None,
           grew: dict[str, Any] | None = None) -> dict[str, Any]:
    """An index entry of a conversation as read: where, how it starts (`head`: its first two
    messages), how many messages and their signature, its id and times (with those of the stored
    conversation it `grew` from: the time counted for the two together)."""
    keys = keys if keys is not None else [message_key(m) for m in data.get("messages") or []]
    start, end = data.get("started_at"), data.get("ended_at")
    if grew is not None:
        start = min((t for t in (start, grew["started_at"]) if isinstance(t, (int, float))), default=start)
        end = max((t for t in (end, grew["ended_at"]) if isinstance(t, (int, float))), default=end)
    return {"folder": folder, "head": _sig(keys[:2]), "n": len(keys), "sig": _sig(keys),
            "episode_id": data.get("episode_id"), "started_at": start, "ended_at": end,
            "duration_s": data.get("duration_s"), "covers": []}


def _fmt(v: Any) -> str:
    return "" if v is None else repr(float(v)) if isinstance(v, (int, float)) else str(v)


def _pack(e: dict[str, Any]) -> str:
    """An index entry as its manifest row keeps it, one line: head, n, sig, started, ended, duration,
    the entries it continued (their _idhash, comma-separated), id."""
    return "\t".join([e["head"], str(e["n"]), e["sig"], _fmt(e["started_at"]), _fmt(e["ended_at"]),
                      _fmt(e["duration_s"]), ",".join(e.get("covers") or ()), _fmt(e["episode_id"])])


def _unpack(line: str, folder: str) -> dict[str, Any]:
    head, n, sig, start, end, dur, covers, eid = line.split("\t", 7)
    return {"folder": folder, "head": head, "n": int(n), "sig": sig, "started_at": _num(start), "ended_at": _num(end),
            "duration_s": _num(dur), "covers": covers.split(",") if covers else [], "episode_id": eid or None}


def _idhash(e: dict[str, Any]) -> str:
    """`_ident` as its manifest entry keeps it (without the folder, the row's)."""
    return hashlib.sha256("\t".join(str(x) for x in _ident(e)[1:]).encode()).hexdigest()[:16]


def _num(v: str) -> float | str | None:
    try:
        return float(v) if v else None
    except ValueError:
        return v


def _ident(e: dict[str, Any]) -> tuple:
    return e["folder"], _fmt(e["episode_id"]), e["n"], e["sig"], _fmt(e["started_at"])


def message_key(m: dict[str, Any]) -> str:
    """What a message says (not when or how it was timed); an empty value and a missing one are alike."""
    return json.dumps({k: m.get(k) for k in ("role", "content", "tool_calls", "tool_call_id") if m.get(k) not in (None, [], "")},
                      sort_keys=True, default=str)


def continuation(old: dict[str, Any], new: dict[str, Any], first_line: int,
                 shared: int | None = None, where: str | None = None) -> dict[str, Any] | None:
    """`new` (a grown conversation) as the continuation of `old` (what the store has of it): the
    messages they share (`shared`, else counted) are context, its time is what the two cover together
    less what `old` counted; its id ends `/resumed-WHERE` (default `line-FIRST_LINE`); None when nothing is new."""
    msgs, before = new.get("messages") or [], old.get("messages") or []
    if shared is None:
        shared = 0
        while shared < min(len(msgs), len(before)) and msgs[shared] == before[shared]:
            shared += 1
    if shared == len(msgs):
        return None
    meta = dict(new.get("metadata") or {})
    meta["context_messages"] = sorted(set(meta.get("context_messages") or []) | set(range(shared)))
    meta["resumed"] = {"episode_id": old.get("episode_id"), "from_line": first_line, "stored_messages": shared}
    out = {**new, "episode_id": f"{new.get('episode_id') or new.get('task_id')}/resumed-{where or f'line-{first_line}'}",
           "metadata": meta}
    ended = old.get("ended_at")
    if isinstance(ended, (int, float)) and isinstance(new.get("started_at"), (int, float)):
        out["started_at"] = max(new["started_at"], ended)
    if isinstance(old.get("duration_s"), (int, float)) and isinstance(new.get("duration_s"), (int, float)):
        out["duration_s"] = max(0.0, new["duration_s"] - old["duration_s"])
    elif new.get("duration_s") is None and all(isinstance(d.get(k), (int, float)) for d in (old, new)
                                               for k in ("started_at", "ended_at")):
        # the time the two cover together less what the stored part counted: the grown one may start
        # earlier than the part (a stream's outermost span is exported last), or later (the rest of it,
        # in the file the part was rotated out of), so not just "from where the part ended"
        both = max(new["ended_at"], old["ended_at"]) - min(new["started_at"], old["started_at"])
        out["duration_s"] = max(0.0, both - max(0.0, old["ended_at"] - old["started_at"]))
    return out


def manifests(store_root: str | Path):
    """The committed batch manifests of a store, oldest first."""
    batches = Path(store_root) / "batches"
    if not batches.is_dir():
        return
    for d in sorted(p for p in batches.iterdir() if p.name.startswith("batch-")):
        try:
            yield json.loads((d / "manifest.json").read_text())
        except FileNotFoundError:
            continue  # not committed


def chain(plan: sources.Plan) -> sources.Plan:
    """Stream files (OTLP / Agents SDK export lines, adapter `STREAM`) of one folder and format are
    read oldest first, each after the one before it (its lead: an exporter that rotated its file may
    have cut a conversation in two), matched to what the ones before gave (data_pipeline/live.py's
    StreamSource): a conversation across two files is one conversation, not two that overlap."""
    streams = [s for s in plan.files if s.window is None and is_stream_file(s.path, s.fmt)]
    if not streams:
        return plan
    index = StreamIndex()
    stats = {id(s): s.path.stat() for s in streams}
    chained = [StreamSource(s.path, s.fmt, window=LineWindow(0, stats[id(s)].st_size, 1, lead), index=index,
                            stored=LineWindow(0, 0, 1, lead) if lead else None)
               for s, lead in with_leads(streams, lambda s: s.path, lambda s: s.fmt, lambda s: stats[id(s)].st_mtime_ns,
                                         lambda s: _complete(s.path, stats[id(s)].st_size))]
    plan.files = [s for s in plan.files if id(s) not in stats] + chained
    return plan


def _complete(path: Path, size: int) -> int:
    """One past the last newline of the file's first `size` bytes (its complete lines)."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read(size - max(0, size - 65536))
    cut = tail.rfind(b"\n")
    if cut >= 0:
        return size - len(tail) + cut + 1
    return _complete(path, size - len(tail)) if size > len(tail) else 0
