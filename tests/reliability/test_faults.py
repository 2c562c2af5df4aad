"""Faults around real training rounds (slow: each trains the tiny model): a damaged parent
adapter is refused, a disk that fills up during a round fails clearly and keeps the previous
checkpoint, and two `flywheel train` processes on one experiment never run together."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults  # noqa: E402
import harness  # noqa: E402
from trainer.verify import verify  # noqa: E402

pytestmark = pytest.mark.reliability  # run by make test-reliability


def train(run_dir: Path, r: int) -> subprocess.CompletedProcess:
    return faults.flywheel("train", str(harness.RECIPE), *harness.TINY, f"run_dir={run_dir}", "--round", str(r))


@pytest.mark.slow
def test_a_damaged_parent_adapter_is_refused(tmp_path):
    run = tmp_path / "run"
    assert train(run, 1).returncode == 0
    adapter = run / "rounds" / "round-0001" / "adapter" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-8] ^= 0x01  # inside the weights: the file still loads, as garbage
    adapter.write_bytes(bytes(data))
    r = train(run, 2)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(adapter) in r.stderr and "corrupted" in r.stderr
    assert not (run / "rounds" / "round-0002").exists()


@pytest.mark.slow
@pytest.mark.parametrize("room_kb", [16, 120])  # 16: collect fails; 120: the trainer's checkpoint save fails
def test_a_disk_filling_up_during_a_round_fails_clearly_and_keeps_round_1(tmp_path, room_kb):
    with faults.small_tmpfs(tmp_path / "mnt", size="64m") as mnt:
        run = mnt / "run"
        assert train(run, 1).returncode == 0
        before = harness.adapter_digest(run / "rounds" / "round-0001")
        faults.fill_disk(mnt, leave_bytes=room_kb << 10)
        r = train(run, 2)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        # the path is named when the OS reports one (a plain file.write() does not carry it)
        assert "disk is full" in r.stderr
        assert harness.adapter_digest(run / "rounds" / "round-0001") == before
        assert not (run / "rounds" / "round-0002").exists()
        (mnt / "filler").unlink()
        assert verify(run)["ok"], verify(run)["problems"]
        assert train(run, 2).returncode == 0  # with room again, the round completes


@pytest.mark.slow
def test_two_train_processes_on_one_experiment_the_second_refuses(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.cli", "train", str(harness.RECIPE), *harness.TINY, f"run_dir={run}",
           "--round", "1"]
    first = subprocess.Popen(cmd, cwd=harness.REPO, env=harness.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "flywheel train" not in ((run / ".lock").read_text()
                                                              if (run / ".lock").exists() else ""):
        time.sleep(0.2)
    second = subprocess.run(cmd, cwd=harness.REPO, env=harness.env(), capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and "in use by flywheel train (pid" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert verify(run)["ok"]
