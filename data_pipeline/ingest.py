"""Logs into an experience store, as `flywheel ingest` does it (trainer/cli/ingest.py), and the
store's numbers for `flywheel store stats`."""
from __future__ import annotations

from pathlib import Path

from .errors import IngestError


def existing_store(root: str | Path):
    """The experience store at `root`; IngestError when there is none."""
    from .store import ExperienceStore

    root = Path(root)
    if not (root / "store.json").exists():
        raise IngestError(f"{root} is not an experience store (no store.json)")
    return ExperienceStore(root)


def ingest_logs(paths: list[str], store_dir: str | Path, fmt: str = "auto", heldout: str | None = None,
                tag: str = "", redact: bool = True, score: str | None = None,
                score_range: str | None = None, progress: bool = False) -> tuple[dict, str | None]:
    """Ingest the files / folders `paths` into the store at `store_dir` (created if missing).
    Returns (the summary as a dict, why nothing was stored or None): the second is set when records
    were read and every one was quarantined. `score` / `score_range` are inspect logs' options
    (NAME[:KEY], LO:HI). `progress`: a bar on stderr for long inputs."""
    from .adapters import inspect_ai
    from .heldout import HeldoutSpec
    from .store import ExperienceStore

    scoring = inspect_ai.ScoreOptions.parse(score, score_range)  # IngestError before touching the store
    spec = HeldoutSpec.load(heldout) if heldout else None
    store = ExperienceStore(store_dir)
    with inspect_ai.score_options(scoring):
        summary = store.ingest(paths, fmt=fmt, heldout=spec, tag=tag, redact=redact, progress=progress)
    d = summary.to_dict()
    if scoring.warnings:
        d["warnings"] = dict(scoring.warnings)
    return d, all_quarantined(d, store)


def all_quarantined(d: dict, store) -> str | None:
    """Why an ingest that read records stored none (every one quarantined): the largest quarantine
    group and its most common reason. None when a record was accepted or was already stored."""
    import re
    from collections import Counter

    if not d["read"] or d["accepted"] or d["duplicates"]:
        return None
    group, n = max(d["quarantine_reasons"].items(), key=lambda kv: kv[1])
    reasons = Counter(q["reason"] for q in store.quarantine()
                      if q["file"] in d["formats"] and re.sub(r"\[\d+\]", "[]", q["field"]) == group)
    reason = reasons.most_common(1)[0][0] if reasons else "see the store's quarantine.jsonl"
    return (f"read {d['read']} records and accepted none: all {d['quarantined']} quarantined; "
            f"largest group {group} x{n}: {reason}")


def store_stats(root: str | Path) -> dict:
    """`flywheel store stats DIR`: counts, interaction hours, formats and held-out spec of a store."""
    return existing_store(root).stats()
