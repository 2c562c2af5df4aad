"""The experience store: an append-only directory of ingest batches.

Layout of `root/`:
    store.json              format version and the held-out spec (merged on every change)
    batches/batch-000001/   trajectories.parquet, quarantine.jsonl, manifest.json (written last; its
                            `sources` rows carry live logs' watermarks, see data_pipeline/live.py)
    index/                  content hashes of every stored trajectory and quarantined record, so a
                            new ingest dedupes without reading old batches
    .lock                   fcntl lock: concurrent ingests run one after the other

One `ingest` call commits at most one batch, by renaming a fully written and fsynced temporary
directory into `batches/`; a crash before that rename leaves the store exactly as it was, and the
leftover temporary directory is removed by the next writer. The hash index is derived data: any
committed batch it does not cover yet is folded in when the store is next written.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .adapters import Record
from .errors import IngestError
from .heldout import HeldoutSpec
from .redact import redact_json, redact_text
from .schema import Outcome, SchemaError, Trajectory, trajectory_from_dict
from . import sources, streams

STORE_VERSION = 1
_HASH_BYTES = 16  # prefix of the sha256 content hash kept in the index (collisions ~ n^2 / 2^129)

ROW_SCHEMA = pa.schema([
    ("content_hash", pa.string()), ("episode_id", pa.string()), ("task_id", pa.string()),
    ("suite", pa.string()), ("category", pa.string()), ("source_format", pa.string()),
    ("policy", pa.string()), ("started_at", pa.float64()), ("ended_at", pa.float64()),
    ("duration_s", pa.float64()), ("interaction_s", pa.float64()), ("success", pa.bool_()),
    ("score", pa.float64()), ("n_messages", pa.int32()), ("source_file", pa.string()),
    ("source_record", pa.string()),
    ("trajectory", pa.string()),  # the whole canonical trajectory as JSON (Trajectory.to_dict())
])


@dataclass
class BatchInfo:
    batch_id: str
    created_at: float  # unix seconds
    count: int  # trajectories stored in this batch
    tag: str
    interaction_s: float  # summed interaction time of the batch's trajectories, seconds
    sources: list[dict[str, Any]]  # per source file: path, sha256, format, read/accepted/... counts
    checksums: dict[str, str]  # file name in the batch directory -> sha256
    quarantined: int = 0  # new quarantine entries recorded with this batch
    duplicates: int = 0
    heldout_seen: int = 0
    path: Path | None = None

    @classmethod
    def from_manifest(cls, m: dict[str, Any], path: Path) -> "BatchInfo":
        return cls(batch_id=m["batch_id"], created_at=m["created_at"], count=m["count"], tag=m.get("tag", ""),
                   interaction_s=m["interaction_s"], sources=m["sources"], checksums=m["checksums"],
                   quarantined=m.get("quarantined", 0), duplicates=m.get("duplicates", 0),
                   heldout_seen=m.get("heldout_seen", 0), path=path)


@dataclass
class IngestSummary:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)  # field (indices dropped) -> count
    redactions: dict[str, int] = field(default_factory=dict)  # secret kind -> count
    heldout_seen: int = 0
    batch_id: str | None = None  # None when nothing new was stored
    formats: dict[str, str] = field(default_factory=dict)  # source file -> format used
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not a trajectory file)
    interaction_s: float = 0.0  # of the accepted trajectories
    with_outcome: int = 0  # accepted trajectories whose log gave an outcome (success or score); the rest are unlabeled

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = [list(s) for s in self.skipped]
        return d


# ---- rows -----------------------------------------------------------------------------------
def _message_dict(m) -> dict[str, Any]:
    return {"role": m.role, "content": m.content,
            "tool_calls": [{"name": c.name, "arguments": c.arguments, "id": c.id} for c in m.tool_calls],
            "tool_call_id": m.tool_call_id, "name": m.name, "reward": m.reward, "duration_s": m.duration_s,
            "token_ids": m.token_ids, "logprobs": m.logprobs}


def canonical_dict(t: Trajectory) -> dict[str, Any]:
    """`t.to_dict()` without dataclasses.asdict's deep copies (ingest's hot path)."""
    return {"episode_id": t.episode_id, "task_id": t.task_id, "messages": [_message_dict(m) for m in t.messages],
            "suite": t.suite, "category": t.category, "source_format": t.source_format, "policy": t.policy,
            "started_at": t.started_at, "ended_at": t.ended_at, "duration_s": t.duration_s,
            "outcome": {"success": t.outcome.success, "score": t.outcome.score}, "metadata": t.metadata}


def content_hash(d: dict[str, Any]) -> str:
    """`Trajectory.content_hash()` computed from the canonical dict (same bytes, same digest)."""
    body = {"task_id": d["task_id"], "suite": d["suite"],
            "messages": [{k: v for k, v in m.items() if k != "duration_s"} for m in d["messages"]],
            "outcome": d["outcome"]}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _reason_key(field_path: str) -> str:
    """`messages[3].tool_calls[0].arguments` -> `messages[].tool_calls[].arguments` for counting."""
    return re.sub(r"\[\d+\]", "[]", field_path)


class _Rows:
    """Column buffers of one batch being built."""

    def __init__(self):
        self.cols: dict[str, list] = {name: [] for name in ROW_SCHEMA.names}

    def add(self, t: Trajectory, h: str, text: str, src: str, loc: str):
        c = self.cols
        for name, v in (("content_hash", h), ("episode_id", t.episode_id), ("task_id", t.task_id),
                        ("suite", t.suite), ("category", t.category), ("source_format", t.source_format),
                        ("policy", t.policy), ("started_at", t.started_at), ("ended_at", t.ended_at),
                        ("duration_s", t.duration_s), ("interaction_s", t.interaction_s),
                        ("success", t.outcome.success), ("score", t.outcome.score),
                        ("n_messages", len(t.messages)), ("source_file", src), ("source_record", loc),
                        ("trajectory", text)):
            c[name].append(v)

    def __len__(self) -> int:
        return len(self.cols["content_hash"])

    def table(self) -> pa.Table:
        return pa.table({n: pa.array(v, type=ROW_SCHEMA.field(n).type) for n, v in self.cols.items()},
                        schema=ROW_SCHEMA)


# ---- files ----------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    _write_durable(tmp, data)
    os.replace(tmp, path)
    _fsync_path(path.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashIndex:
    """Persistent set of content hashes (trajectories) and quarantine keys, appended per batch.

    `covered.txt` lists the batches whose hashes are in the `.bin` files; it is appended after
    them, so a crash in between only means a batch's hashes are folded in again (harmless)."""

    def __init__(self, root: Path):
        self.dir = root / "index"
        self.dir.mkdir(exist_ok=True)
        self.traj: set[bytes] = self._load("trajectories.bin")
        self.quarantine: set[bytes] = self._load("quarantine.bin")
        covered = self.dir / "covered.txt"
        self.covered = set(covered.read_text().split()) if covered.exists() else set()

    def _load(self, name: str) -> set[bytes]:
        p = self.dir / name
        if not p.exists():
            return set()
        data = p.read_bytes()
        whole = len(data) - len(data) % _HASH_BYTES  # a torn last record from a crash is ignored
        return {data[i:i + _HASH_BYTES] for i in range(0, whole, _HASH_BYTES)}

    def add_batch(self, batch_id: str, traj_hashes: Iterable[bytes], quarantine_keys: Iterable[bytes]) -> None:
        for name, items, target in (("trajectories.bin", list(traj_hashes), self.traj),
                                    ("quarantine.bin", list(quarantine_keys), self.quarantine)):
            p = self.dir / name
            with open(p, "ab") as f:
                size = f.tell()
                if size % _HASH_BYTES:  # cut a torn record before appending after it
                    f.truncate(size - size % _HASH_BYTES)
                f.write(b"".join(items))
                f.flush()
                os.fsync(f.fileno())
            target.update(items)
        with open(self.dir / "covered.txt", "a") as f:
            f.write(batch_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.covered.add(batch_id)


# write failures a user fixes by freeing space or fixing rights (anything else is a bug: traceback)
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                   errno.EPERM: "permission denied"}


def os_error_message(e: OSError, store_root: Path) -> str:
    """One line a user can act on for a failed write: the path and whether the disk is full."""
    where = e.filename or store_root
    why = _STORAGE_ERRNOS.get(e.errno, e.strerror or str(e))
    return (f"ingest stopped at {where}: {why}; the experience store {store_root} keeps its last committed batch "
            f"(free space or fix permissions, then rerun: nothing is ingested twice)")


def _hash_key(hexdigest: str) -> bytes:
    return bytes.fromhex(hexdigest)[:_HASH_BYTES]


# ---- the store --------------------------------------------------------------------------------
class ExperienceStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise IngestError(f"store path {self.root} exists and is not a directory")
        try:
            (self.root / "batches").mkdir(parents=True, exist_ok=True)
            (self.root / "index").mkdir(exist_ok=True)
        except OSError as e:
            raise IngestError(f"cannot create store at {self.root}: {e}") from None
        meta = self.root / "store.json"
        if not meta.exists():
            with self._lock():
                if not meta.exists():
                    self._write_meta({"version": STORE_VERSION, "heldout": HeldoutSpec().to_dict()})
        self._meta()  # fail early on a foreign or damaged store

    # -- metadata and locking ----------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        p = self.root / "store.json"
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IngestError(f"{p} is unreadable; is {self.root} an experience store? ({e})") from None
        if not isinstance(m, dict) or m.get("version") != STORE_VERSION:
            raise IngestError(f"{p}: unsupported store version {m.get('version') if isinstance(m, dict) else m!r}")
        return m

    def _write_meta(self, m: dict[str, Any]) -> None:
        _replace_durable(self.root / "store.json", json.dumps(m, indent=2, sort_keys=True).encode())

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @property
    def heldout(self) -> HeldoutSpec:
        return HeldoutSpec.from_dict(self._meta().get("heldout", {}))

    def set_heldout(self, spec: HeldoutSpec) -> None:
        """Record held-out tasks in the store, merged with those already recorded."""
        with self._lock():
            self._merge_heldout(spec)

    def _merge_heldout(self, spec: HeldoutSpec | None) -> HeldoutSpec:
        m = self._meta()
        merged = HeldoutSpec.from_dict(m.get("heldout", {})).merged(spec)
        if merged.to_dict() != m.get("heldout"):
            m["heldout"] = merged.to_dict()
            self._write_meta(m)
        return merged

    # -- reading -------------------------------------------------------------------------------
    def _batch_dirs(self) -> list[Path]:
        d = self.root / "batches"
        return sorted(p for p in d.iterdir() if p.name.startswith("batch-") and (p / "manifest.json").exists())

    def batches(self, include_empty: bool = False) -> list[BatchInfo]:
        """Committed batches, oldest first. Batches that only recorded quarantine entries (count 0)
        are left out unless `include_empty`."""
        out = []
        for p in self._batch_dirs():
            info = BatchInfo.from_manifest(json.loads((p / "manifest.json").read_text()), p)
            if info.count or include_empty:
                out.append(info)
        return out

    def manifest(self, batch_id: str) -> dict[str, Any]:
        p = self.root / "batches" / batch_id / "manifest.json"
        if not p.exists():
            raise IngestError(f"store {self.root} has no batch {batch_id!r}")
        return json.loads(p.read_text())

    def table(self, batch_ids: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Stored rows of the given batches (all when None) as one Arrow table; see ROW_SCHEMA."""
        ids = [b.batch_id for b in self.batches()] if batch_ids is None else list(batch_ids)
        tables = []
        for bid in ids:
            self.manifest(bid)  # names the missing batch
            p = self.root / "batches" / bid / "trajectories.parquet"
            if p.exists():
                tables.append(pq.read_table(p, columns=columns, schema=ROW_SCHEMA))
        if not tables:
            schema = ROW_SCHEMA if columns is None else pa.schema([ROW_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables)

    def trajectories(self, batch_ids: list[str] | None = None, include_heldout: bool = False) -> list[Trajectory]:
        """Trajectories of the given batches (all when None), in ingest order; held-out tasks
        (by the store's current spec) are left out unless `include_heldout`."""
        spec = self.heldout
        tbl = self.table(batch_ids, ["trajectory", "content_hash"])
        ids = self._row_batch_ids(batch_ids)
        out = []
        for text, h, bid in zip(tbl.column("trajectory").to_pylist(), tbl.column("content_hash").to_pylist(), ids):
            t = trajectory_from_dict(json.loads(text))
            if include_heldout or not spec.matches(t):
                # provenance for dataset builders: which batch the trajectory came from
                t.metadata["store_batch_id"] = bid
                t.metadata["content_hash"] = h
                out.append(t)
        return out

    def iter_trajectories(self, batch_ids: list[str] | None = None, include_heldout: bool = False,
                          rows_at_once: int = 512) -> Iterator[Trajectory]:
        """`trajectories()` one at a time: the same trajectories in the same order, read batch by
        batch and `rows_at_once` Parquet rows at a time, so memory holds a slice, not the store."""
        spec = self.heldout
        ids = [b.batch_id for b in self.batches()] if batch_ids is None else list(batch_ids)
        for bid in ids:
            self.manifest(bid)  # names the missing batch
            p = self.root / "batches" / bid / "trajectories.parquet"
            if not p.exists():
                continue
            f = pq.ParquetFile(p)
            for rb in f.iter_batches(batch_size=rows_at_once, columns=["trajectory", "content_hash"]):
                for text, h in zip(rb.column(0).to_pylist(), rb.column(1).to_pylist()):
                    t = trajectory_from_dict(json.loads(text))
                    if include_heldout or not spec.matches(t):
                        t.metadata["store_batch_id"] = bid
                        t.metadata["content_hash"] = h
                        yield t

    def _row_batch_ids(self, batch_ids: list[str] | None) -> list[str]:
        infos = {b.batch_id: b for b in self.batches()}
        ids = list(infos) if batch_ids is None else batch_ids
        return [bid for bid in ids for _ in range(infos[bid].count if bid in infos else 0)]

    def quarantine(self, batch_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Quarantine entries: file, record, field, reason, redacted excerpt."""
        ids = [b.batch_id for b in self.batches(include_empty=True)] if batch_ids is None else batch_ids
        out = []
        for bid in ids:
            p = self.root / "batches" / bid / "quarantine.jsonl"
            if p.exists():
                out += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]
        return out

    def stats(self) -> dict[str, Any]:
        """Counts of the store. `success_rate` is over the `labeled` trajectories (those whose log
        gave a success or a score); `unlabeled` ones are neither successes nor failures."""
        infos = self.batches(include_empty=True)
        tbl = self.table([b.batch_id for b in infos if b.count],
                         ["task_id", "suite", "source_format", "interaction_s", "success", "score"])
        spec = self.heldout
        task_ids, suites = tbl.column("task_id").to_pylist(), tbl.column("suite").to_pylist()
        n = tbl.num_rows
        outcomes = [Outcome(success=s, score=x) for s, x in zip(tbl.column("success").to_pylist(),
                                                                  tbl.column("score").to_pylist())]
        labeled = sum(o.labeled for o in outcomes)
        successes = sum(o.succeeded for o in outcomes)
        return {
            "store": str(self.root), "trajectories": n, "batches": sum(1 for b in infos if b.count),
            "quarantined": sum(b.quarantined for b in infos),
            "heldout_trajectories": sum(1 for t, s in zip(task_ids, suites) if spec.matches(t, s)),
            "interaction_hours": sum(b.interaction_s for b in infos) / 3600.0,
            "labeled": labeled, "unlabeled": n - labeled, "successes": successes,
            "success_rate": successes / labeled if labeled else None,
            "formats": dict(Counter(tbl.column("source_format").to_pylist())),
            "suites": dict(Counter(suites)), "heldout": spec.to_dict(),
        }

    # -- writing ---------------------------------------------------------------------------------
    def ingest(self, paths: list[str | Path], fmt: str = "auto", heldout: HeldoutSpec | None = None,
               tag: str = "", redact: bool = True, progress: bool = False) -> IngestSummary:
        """Read trajectory logs (files or folders) into one new batch. Appends only; records already
        stored (same content hash) count as duplicates; unusable records go to quarantine.
        `progress`: a bar on stderr for long inputs (many files or megabytes)."""
        plan = streams.chain(sources.plan(paths, fmt))  # raises IngestError on missing paths / unknown format
        return self.ingest_plan(plan, heldout, tag, redact, progress=progress)

    def ingest_plan(self, plan: "sources.Plan | None", heldout: HeldoutSpec | None = None, tag: str = "",
                    redact: bool = True, progress: bool = False, make_plan=None) -> IngestSummary:
        """`ingest` of planned sources (sources.plan, or data_pipeline/live.py's new parts of live
        logs). A batch is committed when it stores a trajectory or a quarantine entry, or when a
        source carries a watermark row (a live log read on: committed with what it produced).
        `make_plan(store)`, when given, makes the plan under the store's lock (instead of `plan`)."""
        try:
            with self._lock():
                try:
                    self._clean_leftovers()
                    index = self._index()
                    spec = self._merge_heldout(heldout)
                    if make_plan is not None:
                        plan = make_plan(self)
                    with _ProgressBar(plan, tag or "ingest", progress) as bar:
                        return _Ingest(self, index, spec, redact, tag, bar).run(plan)
                except OSError as e:
                    if e.errno in _STORAGE_ERRNOS:
                        self._clean_leftovers(quiet=True)  # give back the space of the half-written batch
                    raise
        except OSError as e:  # disk full, read-only, permissions: the store keeps its last commit
            if e.errno not in _STORAGE_ERRNOS:
                raise
            raise IngestError(os_error_message(e, self.root)) from None

    def _clean_leftovers(self, quiet: bool = False) -> None:
        try:
            entries = list((self.root / "batches").iterdir())
        except OSError:
            if quiet:
                return
            raise
        for p in entries:
            if p.name.startswith(".tmp-") or (p.name.startswith("batch-") and not (p / "manifest.json").exists()):
                shutil.rmtree(p, ignore_errors=True)

    def _index(self) -> _HashIndex:
        index = _HashIndex(self.root)
        for p in self._batch_dirs():
            if p.name not in index.covered:  # committed but not folded in (crash after the rename)
                hashes = []
                if (p / "trajectories.parquet").exists():
                    col = pq.read_table(p / "trajectories.parquet", columns=["content_hash"]).column(0)
                    hashes = [_hash_key(h) for h in col.to_pylist()]
                keys = [_hash_key(q["key"]) for q in self.quarantine([p.name])]
                index.add_batch(p.name, hashes, keys)
        return index

    def _next_batch_id(self) -> str:
        dirs = self._batch_dirs()
        last = int(dirs[-1].name.split("-")[1]) if dirs else 0
        return f"batch-{last + 1:06d}"


class _ProgressBar:
    """A bar on stderr over the bytes of a long ingest (over 20 files or 4 MiB), its postfix the
    records read; nothing for short inputs or when not enabled (--quiet)."""

    FILES, BYTES = 20, 4 << 20

    def __init__(self, plan: "sources.Plan", desc: str, enabled: bool):
        self.bar, self.records = None, 0
        if not enabled:
            return
        total = sum(self._bytes(src) for src in plan.files)
        if len(plan.files) > self.FILES or total > self.BYTES:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"{desc}: {len(plan.files)} files",
                            leave=False)

    @staticmethod
    def _bytes(src: "sources.Source") -> int:
        if src.window is not None:
            return src.window.end - src.window.start
        try:
            return src.path.stat().st_size
        except OSError:
            return 0

    def record(self) -> None:
        self.records += 1
        if self.bar is not None and self.records % 500 == 0:
            self.bar.set_postfix(records=self.records, refresh=False)

    def file(self, src: "sources.Source") -> None:
        if self.bar is not None:
            self.bar.update(self._bytes(src))

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


class _Ingest:
    """One ingest call: reads every planned file, validates, redacts, dedupes, commits one batch."""

    def __init__(self, store: ExperienceStore, index: _HashIndex, spec: HeldoutSpec, redact: bool, tag: str,
                 bar: "_ProgressBar"):
        self.store, self.index, self.spec, self.redact, self.tag, self.bar = store, index, spec, redact, tag, bar
        self.summary = IngestSummary()
        self.rows = _Rows()
        self.new_hashes: set[bytes] = set()
        self.quarantine_lines: list[bytes] = []
        self.quarantine_keys: list[bytes] = []
        self._qkeys: set[bytes] = set()
        self.reasons: Counter = Counter()
        self.redactions: Counter = Counter()

    def run(self, plan: "sources.Plan") -> IngestSummary:
        s = self.summary
        s.skipped = list(plan.skipped)
        source_rows = []
        for src in plan.files:
            counts = Counter()
            file_sha = src.sha256 or sha256_file(src.path)
            s.formats[str(src.path)] = src.fmt
            for rec in src.read():
                counts["read"] += 1
                counts[self._one(rec, src, file_sha)] += 1
                self.bar.record()
            source_rows.append({"path": str(src.path), "sha256": file_sha, "format": src.fmt,
                                "bytes": src.path.stat().st_size, **{k: counts[k] for k in
                                                                     ("read", "accepted", "duplicates", "quarantined")},
                                **(src.row or {})})
            self.bar.file(src)
        s.read = s.accepted + s.duplicates + s.quarantined
        s.quarantine_reasons = dict(self.reasons)
        s.redactions = dict(self.redactions)
        if len(self.rows) or self.quarantine_lines or any(src.row for src in plan.files):
            s.batch_id = self._commit(source_rows)
            if not len(self.rows):
                s.batch_id = None  # only quarantine entries or watermarks were new: no trajectory batch
        return s

    def _one(self, rec: Record, src: "sources.Source", file_sha: str) -> str:
        if rec.error is not None:
            self._quarantine(rec, src, file_sha, *rec.error)
            return "quarantined"
        try:
            t = trajectory_from_dict(rec.data)
        except SchemaError as e:
            self._quarantine(rec, src, file_sha, e.field, e.problem)
            return "quarantined"
        except (TypeError, ValueError, RecursionError) as e:  # e.g. non-JSON values inside arguments
            self._quarantine(rec, src, file_sha, "<record>", f"cannot be read as a trajectory: {e}")
            return "quarantined"
        if not t.source_format:
            t.source_format = src.fmt
        d = canonical_dict(t)
        try:
            text = json.dumps(d, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            self._quarantine(rec, src, file_sha, "<record>", f"not JSON-serialisable: {e}")
            return "quarantined"
        if self.redact:
            text, redacted = redact_json(text, self.redactions)
            if redacted is not None:
                d = redacted
                t = trajectory_from_dict(redacted)
        if self.spec.matches(t):
            self.summary.heldout_seen += 1  # seen, whether new or a duplicate
        h = content_hash(d)
        key = _hash_key(h)
        if key in self.index.traj or key in self.new_hashes:
            self.summary.duplicates += 1
            return "duplicates"
        self.new_hashes.add(key)
        self.rows.add(t, h, text, str(src.path), rec.locator)
        self.summary.accepted += 1
        self.summary.with_outcome += t.outcome.labeled
        self.summary.interaction_s += t.interaction_s
        return "accepted"

    def _quarantine(self, rec: Record, src: "sources.Source", file_sha: str, field_path: str, reason: str) -> None:
        self.summary.quarantined += 1
        self.reasons[_reason_key(field_path)] += 1
        key_hex = hashlib.sha256(f"{file_sha}\0{rec.locator}\0{field_path}\0{reason}".encode()).hexdigest()
        key = _hash_key(key_hex)
        if key in self.index.quarantine or key in self._qkeys:
            return  # already recorded by an earlier call
        excerpt = rec.excerpt
        if not excerpt and rec.data is not None:
            excerpt = json.dumps(rec.data, ensure_ascii=False, default=str)[:1024]
        entry = {"file": str(src.path), "file_sha256": file_sha, "format": src.fmt, "record": rec.locator,
                 "field": field_path, "reason": redact_text(reason, self.redactions) if self.redact else reason,
                 "excerpt": (redact_text(excerpt, self.redactions) if self.redact else excerpt)[:300],
                 "key": key_hex}
        self.quarantine_keys.append(key)
        self._qkeys.add(key)
        self.quarantine_lines.append(json.dumps(entry, ensure_ascii=False).encode() + b"\n")

    def _commit(self, source_rows: list[dict[str, Any]]) -> str:
        batches = self.store.root / "batches"
        batch_id = self.store._next_batch_id()
        tmp = batches / f".tmp-{batch_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        checksums = {}
        if len(self.rows):
            p = tmp / "trajectories.parquet"
            with open(p, "wb") as f:
                pq.write_table(self.rows.table(), f)
                f.flush()
                os.fsync(f.fileno())
            checksums[p.name] = sha256_file(p)
        if self.quarantine_lines:
            data = b"".join(self.quarantine_lines)
            _write_durable(tmp / "quarantine.jsonl", data)
            checksums["quarantine.jsonl"] = hashlib.sha256(data).hexdigest()
        s = self.summary
        manifest = {"batch_id": batch_id, "created_at": time.time(), "tag": self.tag, "count": len(self.rows),
                    "read": s.read, "duplicates": s.duplicates, "quarantined": len(self.quarantine_lines),
                    "quarantined_seen": s.quarantined, "heldout_seen": s.heldout_seen,
                    "interaction_s": s.interaction_s, "redactions": s.redactions,
                    "quarantine_reasons": s.quarantine_reasons, "sources": source_rows, "skipped": s.to_dict()["skipped"],
                    "checksums": checksums, "heldout": self.spec.to_dict(), "store_version": STORE_VERSION}
        _write_durable(tmp / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode())
        _fsync_path(tmp)
        os.rename(tmp, batches / batch_id)  # the commit point
        _fsync_path(batches)
        self.index.add_batch(batch_id, self.new_hashes, self.quarantine_keys)
        return batch_id
