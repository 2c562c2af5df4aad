"""Fault set-ups shared by the fast and the slow reliability tests: a small tmpfs that fills up,
a read-only remount, a run directory with a synthetic checkpoint, CLI calls as subprocesses."""
from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


def flywheel(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`flywheel ARGS` as a subprocess (what a user runs), output captured as text."""
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import env

    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only); the test is skipped when mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_readonly(path: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount {path} read-only ({r.stderr.strip()})")


def fill_disk(path: Path, leave_bytes: int = 0) -> None:
    """Write a filler file until the file system holding `path` has `leave_bytes` free at most."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave_bytes))
        except OSError:
            pass


def incompressible_trajectories(path: Path, n: int, start: int = 0, text_bytes: int = 1500) -> Path:
    """n trajectories whose text is pseudo-random hex seeded by their number (parquet cannot
    shrink it, and the same number gives the same trajectory): fills a disk fast."""
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"episode_id": f"e{i}", "task_id": f"t{i}", "suite": "s",
                                "messages": [{"role": "user", "content": random.Random(i).randbytes(text_bytes // 2).hex()},
                                             {"role": "assistant", "content": "ok"}],
                                "outcome": {"success": True, "score": 1.0}}) + "\n")
    return path


def fake_checkpoint(run: Path, r: int, adapter_bytes: bytes = b"\1" * 4096) -> Path:
    """rounds/round-XXXX with an adapter and a manifest carrying its checksums, written the way
    train_round writes one (atomically, checksums over the folder)."""
    from trainer.rundir import atomic_write_json, dir_checksums, write_dir_atomically

    def fill(tmp: Path) -> None:
        (tmp / "adapter").mkdir()
        (tmp / "adapter" / "adapter_config.json").write_text('{"r": 4}')
        (tmp / "adapter" / "adapter_model.safetensors").write_bytes(adapter_bytes)
        atomic_write_json(tmp / "manifest.json", {"round": r, "adapter": "adapter", "checksums": dir_checksums(tmp)})

    write_dir_atomically(run / "rounds" / f"round-{r:04d}", fill)
    return run / "rounds" / f"round-{r:04d}"
