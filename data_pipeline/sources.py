"""Which files an ingest call reads, and with which adapter.

Folders are walked in sorted order. Files that are documentation or side data (licences,
SOURCE.md, READMEs, outcome files that adapters join in themselves) are skipped with a note and
are not counted as records. With `fmt="auto"` each file's format is detected from its name and
first bytes; a data-looking file no adapter recognises is read as one quarantined record, so it is
counted rather than silently ignored. (Export files of a stream format are then chained by
data_pipeline/streams.py's `chain`.)"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import adapters
from .adapters import HEAD_BYTES, LineWindow, Record, bad, line_window
from .errors import IngestError

_DOC_NAMES = ("license", "licence", "copying", "notice", "source.md", "readme", "index.md", "changelog", "authors")
_DATA_SUFFIXES = (".jsonl", ".json", ".traj", ".eval", ".ndjson", ".gz")


@dataclass
class Source:
    path: Path
    fmt: str
    window: LineWindow | None = None  # a live log: only these bytes (its new complete lines) are read
    sha256: str | None = None  # a live log: the hash identifying what is read (else the file's sha256)
    row: dict | None = None  # a live log: extra keys of its row in the batch manifest (its new watermark)

    def read(self) -> Iterator[Record]:
        mod = adapters.formats().get(self.fmt)
        if mod is None:
            yield bad("file", "<format>", f"no adapter recognises this file (tried: {', '.join(adapters.formats())})")
            return
        try:
            if self.window is None:
                yield from mod.read(self.path)
            else:
                with line_window(self.path, self.window):
                    yield from mod.read(self.path)
        except OSError as e:
            yield bad("file", "<file>", f"cannot read: {e}")


@dataclass
class Plan:
    files: list[Source] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def skip_note(path: Path) -> str | None:
    """Why a file is not a trajectory file, or None when it may be one."""
    name = path.name.lower()
    if name.startswith(_DOC_NAMES) or path.suffix.lower() in (".md", ".rst", ".txt", ".html", ".pdf", ".png", ".jpg"):
        return "documentation or licence, not trajectories"
    if path.suffix.lower() in (".py", ".sh", ".js", ".ts", ".ipynb"):  # e.g. the script that wrote the logs
        return "program source, not trajectories"
    if name.startswith("."):
        return "hidden file"
    from .adapters.atif import side_file_note as harbor_note
    from .adapters.openai_agents import side_file_note as responses_note
    from .adapters.swebench import side_file_note

    return side_file_note(path) or harbor_note(path) or responses_note(path)


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            yield p


def detect(path: Path) -> str | None:
    """Name of the first adapter that recognises the file, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None
    for name, mod in adapters.formats().items():
        try:
            if mod.detect(path, head):
                return name
        except Exception:  # a detector must never stop an ingest; the next one gets a go
            continue
    return None


def plan(paths: list, fmt: str = "auto") -> Plan:
    known = adapters.formats()
    if fmt != "auto" and fmt not in known:
        raise IngestError(f"unknown format {fmt!r}; known: auto, {', '.join(known)}")
    if not paths:
        raise IngestError("no input paths given")
    out = Plan()
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise IngestError(f"no such file or folder: {root}")
        if root.is_file() and not _readable(root):
            raise IngestError(f"cannot read {root}")
        for p in _walk(root):
            note = skip_note(p)
            if note:
                out.skipped.append((str(p), note))
                continue
            chosen = fmt if fmt != "auto" else detect(p)
            if chosen is None and p.suffix.lower() not in _DATA_SUFFIXES and root.is_dir():
                out.skipped.append((str(p), "not a known trajectory format"))
                continue
            out.files.append(Source(p, chosen or "unrecognised"))
    return out


def _readable(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
