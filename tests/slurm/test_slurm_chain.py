"""flywheel submit on a real single-node Slurm (`make test-slurm`; needs root to install and start it).

1. A two-round chain of the quickstart experiment with tiny settings: round 0 eval array -> refit ->
   train 1 (prepare, a 2-process DeepSpeed ZeRO-2 fit over gloo under srun + torchrun, finalize) ->
   eval array (2 elements) -> refit -> train 2 -> ... . Checks checkpoints, eval results, the curve and
   report, the job record, and that resubmitting submits nothing.
2. The same chain in a second run directory, with `scontrol requeue` of round 1's training job once
   its fit has saved an intra-round checkpoint: the job restarts, the fit resumes from that
   checkpoint, and the chain ends with the same checkpoints and scores as the uninterrupted one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2
SHARDS = 2
MAX_STEPS = 30
OVERRIDES = [
    "collect.suites.0.episodes=32", "eval.suites.0.episodes=20", "collect.policy.batch_size=32",
    "eval.policy.batch_size=20", f"train.max_steps={MAX_STEPS}", "train.save_steps=5", "train.batch_size=2",
    "train.nproc=2", "train.deepspeed=zero2", f"slurm.eval_shards={SHARDS}", "slurm.cpus_per_task=1",
    "slurm.time_train=00:30:00", "slurm.time_eval=00:15:00", "slurm.signal_seconds=60",
    "tracking.wandb.mode=disabled",
]
CHAIN_TIMEOUT_S = 15 * 60


def log(msg: str) -> None:
    print(f"[slurm-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting a local Slurm needs root")
    t0 = time.time()
    out = subprocess.run(["bash", str(ROOT / "slurm" / "setup-local-cluster.sh")], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, f"setup-local-cluster.sh failed:\n{out.stdout}\n{out.stderr}"
    log(f"cluster up in {time.time() - t0:.0f}s")


def submit(run_dir: Path, cwd: Path) -> str:
    cmd = [sys.executable, "-m", "trainer.cli", "submit", str(ROOT / "recipes" / "quickstart.yaml"),
           f"run_dir={run_dir}", *OVERRIDES, "--rounds", str(ROUNDS)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_API_KEY": "planted-key-never-in-scripts-0123"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, f"flywheel submit failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def status(run_dir: Path, name: str) -> dict:
    p = run_dir / "slurm" / "status" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def alive(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True, timeout=60).stdout.split()
    return [j for j in job_ids if j in out]


def wait_for_chain(run_dir: Path, on_tick=None) -> float:
    """Wait until the last refit completed; fail with the chain's own reason if it stops."""
    t0 = time.time()
    last = f"refit-round-{ROUNDS:04d}"
    jobs = json.loads((run_dir / "slurm" / "jobs.json").read_text())["jobs"]
    ids = [j["job_id"] for j in jobs.values()]
    while status(run_dir, last).get("state") != "completed":
        failed = run_dir / "slurm" / "FAILED.md"
        if not alive(ids):
            time.sleep(3)  # the last job may have written its status just now
            if status(run_dir, last).get("state") == "completed":
                break
            reason = failed.read_text() if failed.exists() else "no FAILED.md"
            pytest.fail(f"the chain stopped before {last} completed:\n{reason}")
        assert time.time() - t0 < CHAIN_TIMEOUT_S, f"chain not done after {CHAIN_TIMEOUT_S}s"
        if on_tick:
            on_tick()
        time.sleep(1)
    return time.time() - t0


def check_chain(run_dir: Path) -> None:
    from safetensors.torch import load_file

    for r in range(ROUNDS + 1):
        m = json.loads((run_dir / "rounds" / f"round-{r:04d}" / "manifest.json").read_text())
        assert m["round"] == r
        summary = json.loads((run_dir / "rounds" / f"round-{r:04d}" / "eval" / "summary.json").read_text())
        assert summary["episodes"] == 20 and 0.0 <= summary["success_rate"] <= 1.0
        for i in range(SHARDS):
            assert status(run_dir, f"eval-round-{r:04d}-shard-{i}")["state"] == "completed"
        assert status(run_dir, f"refit-round-{r:04d}")["state"] == "completed"
        if r > 0:
            assert m["metrics"]["steps"] == MAX_STEPS and m["trajectories_used"] > 0
            assert load_file(run_dir / "rounds" / f"round-{r:04d}" / "adapter" / "adapter_model.safetensors")
            assert status(run_dir, f"train-round-{r:04d}")["state"] == "completed"
    curve = json.loads((run_dir / "curve" / "curve.json").read_text())
    assert json.dumps(curve).count("round") >= 1 and (run_dir / "curve" / "curve.png").exists()
    report = (run_dir / "report.md").read_text()
    assert f"| {ROUNDS} |" in report  # the last round's row of the checkpoint table
    assert not (run_dir / "slurm" / "FAILED.md").exists()
    jobs = json.loads((run_dir / "slurm" / "jobs.json").read_text())["jobs"]
    assert len(jobs) == 3 * ROUNDS + 2
    for script in (run_dir / "slurm").glob("*.sbatch"):
        assert "planted-key-never-in-scripts" not in script.read_text()
    for logfile in (run_dir / "slurm" / "logs").glob("*.out"):
        assert "planted-key-never-in-scripts" not in logfile.read_text(errors="replace")


def test_two_round_chain_and_a_requeued_round(cluster, tmp_path):
    from safetensors.torch import load_file
    import torch

    t_start = time.time()
    clean, requeued = tmp_path / "clean", tmp_path / "requeued"

    # ---- 1. the uninterrupted chain -------------------------------------------------------------
    log(submit(clean, tmp_path).strip())
    took = wait_for_chain(clean)
    log(f"clean chain done in {took:.0f}s")
    check_chain(clean)
    again = submit(clean, tmp_path)
    assert again.startswith("nothing to submit"), again  # a rerun of a finished chain duplicates nothing

    # ---- 2. the same chain, round 1's training requeued mid-fit -----------------------------------
    log(submit(requeued, tmp_path).strip())
    train1 = json.loads((requeued / "slurm" / "jobs.json").read_text())["jobs"]["train-round-0001"]["job_id"]
    work = requeued / "rounds" / ".work-0001"
    state = {"requeued_at": None, "checkpoint": None}

    def requeue_once_checkpointed() -> None:
        if state["requeued_at"] is not None:
            return
        ckpts = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        done = [p for p in ckpts if (p / "trainer_state.json").exists()]
        if done and int(done[-1].name.split("-")[-1]) < MAX_STEPS:
            state["checkpoint"] = done[-1].name
            subprocess.run(["scontrol", "requeue", train1], check=True, timeout=60)
            state["requeued_at"] = time.time()
            log(f"requeued job {train1} with {done[-1].name} saved")

    took = wait_for_chain(requeued, on_tick=requeue_once_checkpointed)
    log(f"requeued chain done in {took:.0f}s")
    assert state["requeued_at"] is not None, "round 1's fit finished before a checkpoint could be caught"
    check_chain(requeued)
    st = status(requeued, "train-round-0001")
    assert st["restarts"] >= 1, st
    m1 = json.loads((requeued / "rounds" / "round-0001" / "manifest.json").read_text())
    assert m1["metrics"].get("resumed_from_step", 0) > 0, m1["metrics"]  # resumed, not restarted
    train_log = next((requeued / "slurm" / "logs").glob(f"train-round-0001-{train1}.out")).read_text()
    assert train_log.count("train-round-0001 starts") >= 2

    # ---- 3. same result as the uninterrupted chain ---------------------------------------------------
    for r in range(1, ROUNDS + 1):
        a = json.loads((clean / "rounds" / f"round-{r:04d}" / "manifest.json").read_text())
        b = json.loads((requeued / "rounds" / f"round-{r:04d}" / "manifest.json").read_text())
        assert a["trajectories_used"] == b["trajectories_used"] and a["store_batches"] == b["store_batches"]
        wa = load_file(clean / "rounds" / f"round-{r:04d}" / "adapter" / "adapter_model.safetensors")
        wb = load_file(requeued / "rounds" / f"round-{r:04d}" / "adapter" / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.allclose(wa[k], wb[k], atol=1e-5), f"round {r} {k} differs after the requeue"
    for r in range(ROUNDS + 1):
        sa = json.loads((clean / "rounds" / f"round-{r:04d}" / "eval" / "summary.json").read_text())
        sb = json.loads((requeued / "rounds" / f"round-{r:04d}" / "eval" / "summary.json").read_text())
        assert sa["success_rate"] == sb["success_rate"], f"round {r}: {sa['success_rate']} vs {sb['success_rate']}"
    log(f"slurm integration test total {time.time() - t_start:.0f}s")
