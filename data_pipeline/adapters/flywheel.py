"""flywheel's own canonical JSONL: one `Trajectory.to_dict()` per line (what the built-in
environments log). The canonical schema is described in data_pipeline/SCHEMA.md. Outcome:
`outcome.{success,score,reward}`, and where a hand-written line puts it, top-level `reward` /
`score` / `success` or `metadata.{success,score,reward}` (common.log_outcome)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from . import Record, iter_jsonl
from .common import log_outcome, mapped

NAME = "flywheel"
LINES = True  # a .jsonl of this format is one record per line: a live log is read from its watermark on


def detect(path: Path, head: bytes) -> bool:
    first = head.lstrip()[:4096]
    return first.startswith(b"{") and b'"episode_id"' in first and b'"messages"' in first


def read(path: Path) -> Iterator[Record]:
    for loc, obj, raw in iter_jsonl(path):
        if isinstance(obj, Record):
            yield obj
        elif not isinstance(obj, dict):
            yield Record(loc, error=("<record>", f"expected a JSON object, got {type(obj).__name__}"),
                         excerpt=raw[:1024].decode("utf-8", "replace"))
        else:
            yield mapped(loc, _with_outcome, obj)


def _with_outcome(obj: dict) -> dict:
    outcome = log_outcome(obj)
    if outcome == obj.get("outcome"):
        return obj  # the usual line (the built-in environments' logs): as it is
    return {**obj, "outcome": outcome}
