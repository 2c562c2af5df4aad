"""flywheel submit --every on a real single-node Slurm (`make test-slurm`; needs root to start it).

A tiny quickstart experiment submitted with `--every 60s`:
1. period 1 (round 0's evaluation + round 1) runs at once; rerunning `submit --every` keeps the live
   chain and submits nothing;
2. period 1's last job queues period 2 (round 2) with sbatch --begin = period 1's begin + 60 s, and
   period 2's first job starts no earlier than that;
3. while period 2 runs, `submit --every 10m` (the same recipe) keeps the chain and lengthens the period
   from the next one on, so that period 3 is surely still waiting for its --begin when
4. `flywheel submit RUN_DIR --stop` cancels all of period 3's queued jobs, and no period 4 appears;
   `flywheel status RUN_DIR` shows the stopped schedule, the cancelled jobs and the last round's score.
"""
from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm.test_slurm_chain import ROOT, cluster, log  # noqa: F401 (the cluster fixture)

pytestmark = pytest.mark.slurm

OVERRIDES = [
    "collect.suites.0.episodes=16", "eval.suites.0.episodes=10", "collect.policy.batch_size=16",
    "eval.policy.batch_size=10", "train.max_steps=3", "train.batch_size=2", "train.epochs=1",
    "slurm.eval_shards=1", "slurm.cpus_per_task=1", "slurm.time_train=00:15:00", "slurm.time_eval=00:10:00",
    "tracking.wandb.mode=disabled",
]
PERIOD_TIMEOUT_S = 4 * 60


def flywheel(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=300)
    assert out.returncode == 0, f"flywheel {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def schedule(run_dir: Path) -> dict:
    return json.loads((run_dir / "slurm" / "schedule.json").read_text())


def squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-o", "%F|%T|%r"], capture_output=True, text=True, timeout=60).stdout
    return {line.split("|")[0]: line for line in out.splitlines()}


def wait_for_period(run_dir: Path, n: int, timeout_s: float = PERIOD_TIMEOUT_S) -> dict:
    """Wait until period n is recorded (the period before it handed over); fail with FAILED.md's reason."""
    t0 = time.time()
    while True:
        s = schedule(run_dir)
        # the schedule is rewritten after every sbatch of a period (a crash mid-period still knows what it
        # sent), so period n is whole only once the next-period job of n-1 has written its note
        if len(s["periods"]) >= n and any(f"queued period {n} " in note for note in s["notes"]):
            return s
        failed = run_dir / "slurm" / "FAILED.md"
        assert not failed.exists(), f"the chain failed before period {n} was queued:\n{failed.read_text()}"
        ids = set(s["periods"][-1]["jobs"].values())
        if not ids & set(squeue()):
            time.sleep(3)
            if any(f"queued period {n} " in note for note in schedule(run_dir)["notes"]):
                continue
            pytest.fail(f"no job of period {n - 1} is alive and period {n} was never queued: {s}")
        assert time.time() - t0 < timeout_s, f"period {n} not queued after {timeout_s:.0f}s"
        time.sleep(1)


def started_at(run_dir: Path, job: str) -> float:
    """Unix time the job's script stamped `JOB starts` into its log (slurm/job-lib.sh job_start)."""
    for p in (run_dir / "slurm" / "logs").glob(f"{job}-*.out"):
        m = re.search(rf"\[(\S+)Z\] {job} starts", p.read_text())
        if m:
            return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    raise AssertionError(f"no start of {job} in {run_dir / 'slurm' / 'logs'}")


def test_two_periods_a_minute_apart_then_stop(cluster, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    recipe = [str(ROOT / "recipes" / "quickstart.yaml"), f"run_dir={run_dir}", *OVERRIDES]
    t0 = time.time()

    # ---- period 1, and a rerun that keeps it -----------------------------------------------------------
    out = flywheel(tmp_path, "submit", *recipe, "--every", "60s")
    log(out.strip())
    assert "period 1 (round 1) submitted: eval-round-0000" in out
    s1 = schedule(run_dir)
    p1 = s1["periods"][0]
    assert s1["every_s"] == 60 and sorted(p1["jobs"]) == sorted(
        ["eval-round-0000", "refit-round-0000", "train-round-0001", "eval-round-0001", "refit-round-0001",
         "next-period-0001"])
    again = flywheel(tmp_path, "submit", *recipe, "--every", "60s")
    assert "kept the periodic chain: period 1" in again and "nothing submitted" in again, again
    assert schedule(run_dir)["periods"] == s1["periods"]  # never two chains

    # ---- period 2 waits for its --begin -----------------------------------------------------------------
    s2 = wait_for_period(run_dir, 2)
    p2 = s2["periods"][1]
    note = [x for x in s2["notes"] if "queued period 2 " in x][-1]
    log(f"period 2 queued {p2['submitted_at'] - t0:.0f}s after the submit: {note}")
    assert p2["round"] == 2 and p2["begin"] == pytest.approx(p1["begin"] + 60)
    assert sorted(p2["jobs"]) == ["eval-round-0002", "next-period-0002", "refit-round-0002", "train-round-0002"]
    # lengthen the period from period 3 on: the rerun keeps the chain and records the new period
    longer = flywheel(tmp_path, "submit", *recipe, "--every", "10m")
    assert "kept the periodic chain: period 2" in longer and "now 10m" in longer, longer

    s3 = wait_for_period(run_dir, 3)
    p3 = s3["periods"][2]
    log(f"period 3 queued {p3['submitted_at'] - t0:.0f}s after the submit")
    deferred = p2["submitted_at"] < p2["begin"]  # period 1 ended within the minute: period 2 had to wait
    log(f"period 2 began {started_at(run_dir, 'train-round-0002') - p2['begin']:+.0f}s after its begin time "
        f"({'deferred by --begin' if deferred else 'period 1 overran the minute: no wait'})")
    assert started_at(run_dir, "train-round-0002") >= int(p2["begin"])  # no earlier than its --begin
    assert started_at(run_dir, "eval-round-0000-shard-0") < p1["begin"] + 60  # period 1 began at once
    for r in (0, 1, 2):
        rd = run_dir / "rounds" / f"round-{r:04d}"
        assert json.loads((rd / "manifest.json").read_text())["round"] == r
        summary = json.loads((rd / "eval" / "summary.json").read_text())
        assert summary["episodes"] == 10 and 0.0 <= summary["success_rate"] <= 1.0
    assert p3["round"] == 3 and p3["begin"] == pytest.approx(p2["begin"] + 600)
    queue = squeue()
    assert p3["jobs"]["train-round-0003"] in queue and "BeginTime" in queue[p3["jobs"]["train-round-0003"]]

    # ---- status while period 3 waits, then --stop -----------------------------------------------------------
    status = flywheel(tmp_path, "status", str(run_dir))
    log(status)
    assert "schedule: every 10m, running; period 3 (round 3)" in status
    assert re.search(r"train-round-0003\s+\d+\s+PENDING", status)
    assert "last round: 2" in status and "held-out score (round 2): success" in status
    stopped = flywheel(tmp_path, "submit", str(run_dir), "--stop")
    log(stopped)
    assert "no new period will be queued" in stopped and "cancelled (queued, not started) in period 3" in stopped
    for name, job_id in p3["jobs"].items():
        assert f"{name} {job_id}" in stopped
    time.sleep(2)
    assert not set(p3["jobs"].values()) & set(squeue()), "period 3's jobs are still queued after --stop"
    assert (run_dir / "slurm" / "STOP").exists()
    final = schedule(run_dir)
    assert final["stopped_at"] and len(final["periods"]) == 3 and final["cancelled"] == p3["jobs"]
    status = flywheel(tmp_path, "status", str(run_dir))
    log(status)
    assert "every 10m, stopped" in status and "cancelled by --stop: " in status
    assert not (run_dir / "rounds" / "round-0003").exists()
    assert not (run_dir / "slurm" / "FAILED.md").exists()
    log(f"periodic slurm test total {time.time() - t0:.0f}s")
