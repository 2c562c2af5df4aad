"""`flywheel verify RUN_DIR [--json]`: check every checksum a run directory promises.

What is checked:
  store/batches/batch-*/    manifest.json readable; every file its `checksums` lists exists with
                            that sha256; no unlisted file; the row count equals the manifest's
                            `count`; no trajectory stored twice across batches
  store/index/              every hash it holds belongs to a stored trajectory, and every batch it
                            claims to cover is in it (a batch not yet covered is only a note: the
                            next ingest folds it in)
  rounds/round-*/           manifest.json readable; every file its `checksums` lists exists with
                            that sha256; the adapter folder it names is there and complete

A problem names the path and what is wrong; exit 1 when there is any, 0 when clean. The same
checks serve the trainer: `check_checkpoint(round_dir)` raises `CheckpointCorrupted` (a
`UserError`) before a round trains on a damaged parent adapter.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from data_pipeline.store import sha256_file
from trainer.errors import UserError
from trainer.records import RoundManifest

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what PEFT needs to load one
_HASH_BYTES = 16  # prefix length of the store's hash index entries (data_pipeline/store.py)


class CheckpointCorrupted(UserError):
    """A checkpoint's files do not match its manifest's checksums (or are missing)."""


@dataclass
class Problem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _read_json(path: Path, problems: list[Problem]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(str(path), "missing"))
        return None
    except (OSError, ValueError) as e:
        problems.append(Problem(str(path), f"unreadable or corrupted ({e})"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "corrupted (not a JSON object)"))
        return None
    return data


def _check_files(folder: Path, checksums: dict, problems: list[Problem]) -> None:
    """Each listed file exists under `folder` with the listed sha256."""
    for rel, want in sorted(checksums.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(Problem(str(p), "missing (listed in the manifest's checksums)"))
        elif sha256_file(p) != want:
            problems.append(Problem(str(p), "corrupted: sha256 differs from the manifest's checksum"))


# ---- checkpoints --------------------------------------------------------------------------------
def checkpoint_problems(round_dir: Path) -> list[Problem]:
    round_dir = Path(round_dir)
    problems: list[Problem] = []
    data = _read_json(round_dir / RoundManifest.FILE, problems)
    if data is None:
        return problems
    m = RoundManifest.from_dict(data)
    checksums = m.checksums
    if not isinstance(checksums, dict):
        return [Problem(str(round_dir / RoundManifest.FILE), "has no checksums")]
    _check_files(round_dir, checksums, problems)
    if m.adapter:
        adapter = round_dir / m.adapter
        for name in ADAPTER_FILES:
            if not (adapter / name).is_file():
                problems.append(Problem(str(adapter / name), "missing (the checkpoint's adapter is incomplete)"))
            elif f"{m.adapter}/{name}" not in checksums:
                problems.append(Problem(str(adapter / name), "not covered by the manifest's checksums"))
    return problems


def check_checkpoint(round_dir: Path) -> None:
    """Raise CheckpointCorrupted naming every damaged file of the checkpoint in `round_dir`.
    Call it on the parent before training on its adapter (and before evaluating one)."""
    problems = checkpoint_problems(round_dir)
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise CheckpointCorrupted(f"checkpoint {round_dir} is damaged; refusing to use it:\n  {lines}\n"
                                  f"restore it or delete the round directory to retrain it")


def rounds_problems(run_root: Path) -> list[Problem]:
    rounds = Path(run_root) / "rounds"
    if not rounds.is_dir():
        return []
    problems: list[Problem] = []
    for d in sorted(rounds.glob("round-*")):
        problems += checkpoint_problems(d)
    return problems


# ---- the experience store -----------------------------------------------------------------------
def _parquet_hashes(path: Path, problems: list[Problem]) -> list[str] | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=["content_hash"]).column(0).to_pylist()
    except Exception as e:  # any damage pyarrow reports: the checksum names it too
        problems.append(Problem(str(path), f"unreadable parquet ({type(e).__name__}: {e})"))
        return None


def store_problems(store_root: Path, notes: list[str] | None = None) -> list[Problem]:
    """Consistency of an experience store's committed batches and its hash index."""
    root = Path(store_root)
    problems: list[Problem] = []
    notes = notes if notes is not None else []
    if not (root / "store.json").is_file():
        return [Problem(str(root / "store.json"), "missing: not an experience store")]
    _read_json(root / "store.json", problems)
    batches = root / "batches"
    stored: dict[str, str] = {}  # content hash -> batch it is in
    committed: set[str] = set()
    for d in sorted(batches.glob("batch-*")) if batches.is_dir() else []:
        if not (d / "manifest.json").exists():
            problems.append(Problem(str(d), "batch directory without manifest.json (half-written batch visible)"))
            continue
        m = _read_json(d / "manifest.json", problems)
        if m is None:
            continue
        committed.add(d.name)
        checksums = m.get("checksums") or {}
        _check_files(d, checksums, problems)
        for p in sorted(d.iterdir()):
            if p.name != "manifest.json" and p.name not in checksums:
                problems.append(Problem(str(p), "file not listed in the batch manifest's checksums"))
        hashes = _parquet_hashes(d / "trajectories.parquet", problems) \
            if (d / "trajectories.parquet").is_file() else ([] if m.get("count", 0) == 0 else None)
        if hashes is None:
            continue
        if len(hashes) != m.get("count"):
            problems.append(Problem(str(d / "trajectories.parquet"),
                                    f"holds {len(hashes)} trajectories, manifest says {m.get('count')}"))
        for h in hashes:
            if h in stored:
                problems.append(Problem(str(d), f"trajectory {h[:16]} stored twice (also in {stored[h]})"))
            stored[h] = d.name
    problems += _index_problems(root, committed, stored, notes)
    return problems


def _index_problems(root: Path, committed: set[str], stored: dict[str, str], notes: list[str]) -> list[Problem]:
    index = root / "index"
    problems: list[Problem] = []
    covered_file = index / "covered.txt"
    covered = set(covered_file.read_text().split()) if covered_file.is_file() else set()
    for bid in sorted(covered - committed):
        problems.append(Problem(str(covered_file), f"covers {bid}, which is not a committed batch"))
    lagging = sorted(committed - covered)
    if lagging:
        notes.append(f"{index}: not yet covering {', '.join(lagging)} (folded in by the next ingest)")
    traj_bin = index / "trajectories.bin"
    if not traj_bin.is_file():
        return problems
    data = traj_bin.read_bytes()
    whole = len(data) - len(data) % _HASH_BYTES  # a torn last entry is cut by the next writer
    in_index = {data[i:i + _HASH_BYTES] for i in range(0, whole, _HASH_BYTES)}
    stored_keys = {bytes.fromhex(h)[:_HASH_BYTES]: bid for h, bid in stored.items()}
    unknown = in_index - set(stored_keys)
    if unknown:
        problems.append(Problem(str(traj_bin), f"{len(unknown)} hashes of trajectories no batch holds"))
    missing = sum(1 for k, bid in stored_keys.items() if bid in covered and k not in in_index)
    if missing:
        problems.append(Problem(str(traj_bin), f"{missing} stored trajectories missing from the index"))
    return problems


# ---- the run directory --------------------------------------------------------------------------
def verify(path: Path) -> dict:
    """{'path', 'ok', 'problems': [{'path', 'problem'}], 'notes', 'checked': {...}} for a run
    directory (store/ and rounds/) or a bare experience store."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    notes: list[str] = []
    problems: list[Problem] = []
    checked = {"batches": 0, "rounds": 0}
    stores = [root] if (root / "store.json").exists() else [root / "store"] if (root / "store").is_dir() else []
    for s in stores:
        problems += store_problems(s, notes)
        checked["batches"] = len(list((s / "batches").glob("batch-*")))
    problems += rounds_problems(root)
    checked["rounds"] = len(list((root / "rounds").glob("round-*"))) if (root / "rounds").is_dir() else 0
    if not stores and not checked["rounds"]:
        raise UserError(f"{root} holds neither an experience store nor rounds/: nothing to verify")
    return {"path": str(root), "ok": not problems, "problems": [asdict(p) for p in problems],
            "notes": notes, "checked": checked}
