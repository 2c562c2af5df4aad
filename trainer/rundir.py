"""The run directory of one experiment and the atomic writes that keep it consistent.

    runs/<experiment>/
      recipe.resolved.yaml      resolved recipe, hash, code version
      base_model/               the tiny base model when model.name_or_path is 'tiny'
      store/                    the experience store (batches, quarantine, manifests)
      experience/round-0003.jsonl   episodes the policy collected for round 3 (canonical JSONL)
      rounds/round-0003/        adapter/, manifest.json, eval/ (summary.json, results.jsonl, episodes.jsonl)
      curve/                    curve.json, curve.png, curve.md
      report.md
      tracking/                 metrics.jsonl; wandb/ offline runs
      slurm/                    rendered scripts, job ids, logs

A checkpoint directory appears only complete: it is written under a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from data_pipeline.store import sha256_file
from trainer.cli import UserError


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dir_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def write_dir_atomically(final: Path, fill: Callable[[Path], None]) -> None:
    """Create directory `final` by filling a temporary sibling and renaming it: readers see either
    nothing or the complete directory, also after a crash at any point."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    store = property(lambda self: self.root / "store")
    base_model = property(lambda self: self.root / "base_model")
    experience = property(lambda self: self.root / "experience")
    curve = property(lambda self: self.root / "curve")
    report = property(lambda self: self.root / "report.md")
    tracking = property(lambda self: self.root / "tracking")

    def round_dir(self, r: int) -> Path:
        return self.root / "rounds" / f"round-{r:04d}"

    def work_dir(self, r: int) -> Path:
        """Intra-round trainer checkpoints (for resume); removed when the round completes."""
        return self.root / "rounds" / f".work-{r:04d}"

    def manifest(self, r: int) -> dict | None:
        p = self.round_dir(r) / "manifest.json"
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: corrupted manifest ({e}); run `flywheel verify {self.root}`") from None

    def eval_summary(self, r: int) -> dict | None:
        p = self.round_dir(r) / "eval" / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def completed_rounds(self) -> list[int]:
        rounds = self.root / "rounds"
        if not rounds.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in rounds.glob("round-*")
                      if (p / "manifest.json").exists())

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """One writer per experiment: a second `flywheel run/train` on the same run refuses."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text().strip() or "another process"
                raise UserError(f"{self.root} is in use by {holder}; wait for it to finish "
                                "(or kill it: the rerun resumes)") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"flywheel {what} (pid {os.getpid()})".encode())
            yield
        finally:
            os.close(fd)
