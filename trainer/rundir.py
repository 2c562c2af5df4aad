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

from data_pipeline.atomic import atomic_write_json, atomic_write_text  # noqa: F401 - the run directory's writes
from data_pipeline.store import sha256_file
from eval.records import EvalSummary
from trainer.errors import UserError
from trainer.records import RoundManifest


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

    def manifest(self, r: int) -> RoundManifest | None:
        try:
            return RoundManifest.read(self.round_dir(r))
        except (json.JSONDecodeError, TypeError) as e:
            p = self.round_dir(r) / RoundManifest.FILE
            raise UserError(f"{p}: corrupted manifest ({e}); run `flywheel verify {self.root}`") from None

    def eval_summary(self, r: int) -> EvalSummary | None:
        return EvalSummary.read(self.round_dir(r) / "eval")

    def completed_rounds(self) -> list[int]:
        rounds = self.root / "rounds"
        if not rounds.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in rounds.glob("round-*")
                      if (p / RoundManifest.FILE).exists())

    def _bare_round0(self, p: Path) -> bool:
        """Round 0's directory holding only its manifest (no eval yet): the recipe alone decides it."""
        if p.name not in (self.round_dir(0).name, f".{self.round_dir(0).name}.tmp"):
            return False
        return all(q.name == RoundManifest.FILE for q in p.rglob("*"))

    def produced(self) -> list[Path]:
        """What the run has produced under its recipe: committed store batches, collected experience,
        rounds (beyond a bare round 0), work dirs, failure records, submitted Slurm jobs. Empty when
        it failed before producing anything; its recipe then does not lock the directory."""
        rounds = self.root / "rounds"
        found = sorted(self.store.glob("batches/batch-*/manifest.json"))
        found += sorted(self.experience.glob("*")) if self.experience.is_dir() else []
        found += sorted(p for p in rounds.iterdir() if not self._bare_round0(p)) if rounds.is_dir() else []
        jobs = self.root / "slurm" / "jobs.json"
        return found + ([jobs] if jobs.exists() else [])

    def clear_unproduced(self) -> None:
        """Remove what the recipe alone built (a bare round 0, the tiny base model), so that a
        replacing recipe builds its own. Only for a run that `produced` nothing."""
        if self.produced():  # a guard, never reached through write_resolved: results are never removed
            raise RuntimeError(f"{self.root} holds results; refusing to clear it")
        for p in (self.round_dir(0), self.round_dir(0).with_name(f".{self.round_dir(0).name}.tmp"), self.base_model):
            shutil.rmtree(p, ignore_errors=True)

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
