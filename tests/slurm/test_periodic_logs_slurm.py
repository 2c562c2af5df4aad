"""The deployment of issue 15 on a real single-node Slurm (`make test-slurm`): `flywheel submit
--every` learns from what a simulated deployment logs, period by period.

The deployment (recipes/live-logs/simulate_deployment.py) writes OpenAI-format maze logs without
outcomes into a folder; the verifier (recipes/live-logs/verify_maze.py, `label.command`) labels them.
1. wave 1 (48 records) before the submit: period 1 evaluates round 0 and trains round 1 on them,
   labelled by the verifier, and the gate promotes it or keeps round 0;
2. nothing new before period 2: its round is skipped (train job state `skipped`, eval and refit
   no-ops, rounds/round-0002.skipped.json, no round-0002), and period 3 is queued for round 2 still;
3. wave 2 before period 3 begins: a bad release (walks away from the goal, its logger claims
   success) appended with a half-written last line: round 2 trains on exactly its complete records
   and the gate rejects it; promoted/ stays the checkpoint before it;
4. `--stop` ends it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm.test_periodic_slurm import PERIOD_TIMEOUT_S, flywheel, log, schedule, wait_for_period
from tests.slurm.test_slurm_chain import ROOT, cluster  # noqa: F401 (the cluster fixture)

pytestmark = pytest.mark.slurm

RECIPE = """\
experiment: periodic-logs
seed: 0
model: {{name_or_path: tiny}}
collect:
  logs: [logs/]
  suites: []
label: {{command: "{python} {verify}", workers: 1, timeout_s: 120}}
data: {{success_only: true, replay_ratio: 0.0}}
train: {{method: sft, learning_rate: 5.0e-3, epochs: 3, batch_size: 8, max_length: 512, lora: {{r: 8, alpha: 16}}}}
eval:
  suites:
    - {{name: maze, difficulty: 1, episodes: 64}}
  policy: {{batch_size: 64}}
slurm: {{eval_shards: 1, cpus_per_task: 1, time_train: "00:15:00", time_eval: "00:10:00"}}
tracking: {{wandb: {{mode: disabled}}}}
run_dir: {run_dir}
"""


SIM = ROOT / "recipes" / "live-logs" / "simulate_deployment.py"
VERIFY = ROOT / "recipes" / "live-logs" / "verify_maze.py"
WAVE1, WAVE2 = 48, 64


def deploy(logs: Path, wave: int, episodes: int, *flags: str) -> None:
    subprocess.run([sys.executable, str(SIM), str(logs), "--wave", str(wave), "--episodes", str(episodes),
                    "--difficulty", "1", "--skill", "0.5", *flags], check=True, capture_output=True)


def test_periods_learn_what_the_deployment_logged_and_gate_a_bad_release(cluster, tmp_path):  # noqa: F811
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    deploy(logs, 1, WAVE1)
    recipe = tmp_path / "deploy.yaml"
    recipe.write_text(RECIPE.format(run_dir=run_dir, python=sys.executable, verify=VERIFY))
    t0 = time.time()
    log(flywheel(tmp_path, "submit", str(recipe), "--every", "60s").strip())

    # period 2 is queued once round 1 trained on wave 1 (and was gated); nothing new before it runs
    s = wait_for_period(run_dir, 2)
    m1 = json.loads((run_dir / "rounds" / "round-0001" / "manifest.json").read_text())
    assert m1["logs"]["accepted"] == m1["logs"]["read"] == WAVE1, m1["logs"]
    assert m1["labels"]["command"] == WAVE1 and m1["labels"]["own"] == 0, m1["labels"]
    v1 = json.loads((run_dir / "promotion" / "round-0001.json").read_text())
    incumbent = 1 if v1["promoted"] else 0
    # a longer period from period 3 on, so that wave 2 surely lands before period 3 begins
    flywheel(tmp_path, "submit", str(recipe), "--every", "3m")
    s = wait_for_period(run_dir, 3)
    assert s["periods"][1]["round"] == 2 and s["periods"][2]["round"] == 2  # the skipped round is not consumed
    st = json.loads((run_dir / "slurm" / "status" / "train-round-0002.json").read_text())
    assert st["state"] == "skipped", st
    assert (run_dir / "rounds" / "round-0002.skipped.json").exists() and not (run_dir / "rounds" / "round-0002").exists()
    for name in ("eval-round-0002-shard-0", "refit-round-0002"):
        assert json.loads((run_dir / "slurm" / "status" / f"{name}.json").read_text())["state"] == "skipped"
    assert not (run_dir / "slurm" / "FAILED.md").exists()

    # wave 2, before period 3 begins: the bad release, its last line half-written
    assert time.time() < s["periods"][2]["begin"], "period 2 took longer than the period: wave 2 would race it"
    deploy(logs, 2, WAVE2, "--broken", "--open-line")
    status = flywheel(tmp_path, "status", str(run_dir))
    log(status)
    assert f"new log records waiting: {WAVE2 - 1}" in status
    s = wait_for_period(run_dir, 4, timeout_s=3 * 60 + 2 * PERIOD_TIMEOUT_S)  # period 3's begin, then its round
    m2 = json.loads((run_dir / "rounds" / "round-0002" / "manifest.json").read_text())
    assert m2["logs"]["accepted"] == WAVE2 - 1 and m2["logs"]["waiting_bytes"] > 0, m2["logs"]
    assert m2["labels"]["own"] == WAVE2 - 1, m2["labels"]  # the broken logger's claims
    assert m2["parent"] == f"round-{incumbent:04d}"
    assert not (run_dir / "rounds" / "round-0002.skipped.json").exists()
    v2 = json.loads((run_dir / "promotion" / "round-0002.json").read_text())
    assert v2["decision"] == "rejected" and v2["incumbent"] == incumbent, v2
    assert json.loads((run_dir / "promoted" / "PROMOTED.json").read_text())["round"] == incumbent
    status = flywheel(tmp_path, "status", str(run_dir))
    log(status)
    assert "promotion: round 2 rejected" in status and f"promoted checkpoint: round {incumbent}" in status
    report = (run_dir / "report.md").read_text()
    assert "rejected" in next(line for line in report.splitlines() if line.startswith("| 2 |"))
    log(flywheel(tmp_path, "submit", str(run_dir), "--stop"))
    assert schedule(run_dir)["stopped_at"]
    log(f"periodic deployment slurm test total {time.time() - t0:.0f}s")
