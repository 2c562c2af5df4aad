"""flywheel submit --every on a real single-node Slurm, learning from live logs (`make test-slurm`).

Needs the live log source (`collect.logs`, data_pipeline/live.py, `trainer.round.RoundSkipped`): it
is skipped on a build without it. UNVERIFIED before the merge of branches `live` and `periodic`: it
is written against the agreed interfaces (issue 15) and first runs at the merge.

A deployment writes OpenAI-format logs into a folder:
1. wave 1 (12 records) before the submit: period 1 evaluates round 0 and trains round 1 on them;
2. nothing new before period 2: its round is skipped (train job state `skipped`, eval and refit
   no-ops, rounds/round-0002.skipped.json, no round-0002), and period 3 is queued for round 2 still;
3. wave 2 (6 records and a half-written last line) before period 3 begins: round 2 trains on exactly
   the 6 new records;
4. `--stop` ends it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.slurm.test_periodic_slurm import flywheel, log, schedule, wait_for_period
from tests.slurm.test_slurm_chain import cluster  # noqa: F401 (the cluster fixture)

pytestmark = pytest.mark.slurm

RECIPE = """\
experiment: periodic-logs
seed: 0
model: {{name_or_path: tiny}}
collect:
  logs: [logs/]
  suites: []
data: {{success_only: true, replay_ratio: 1.0}}
train: {{method: sft, max_steps: 3, batch_size: 2, epochs: 1}}
eval:
  suites:
    - {{name: maze, difficulty: 3, episodes: 10}}
  policy: {{batch_size: 10}}
slurm: {{eval_shards: 1, cpus_per_task: 1, time_train: "00:15:00", time_eval: "00:10:00"}}
tracking: {{wandb: {{mode: disabled}}}}
run_dir: {run_dir}
"""


def records(first: int, n: int) -> str:
    lines = []
    for i in range(first, first + n):
        lines.append(json.dumps({
            "id": f"deploy-{i}", "task_id": f"ticket-{i}", "success": True,
            "messages": [{"role": "user", "content": f"Ticket {i}: reset the password of user {i}."},
                         {"role": "assistant", "content": f"Done: the password of user {i} is reset."}]}))
    return "\n".join(lines) + "\n"


def test_periods_learn_what_the_deployment_logged_and_skip_when_nothing_is_new(cluster, tmp_path):  # noqa: F811
    pytest.importorskip("data_pipeline.live", reason="the live log source (branch `live`) is not in this build")
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    (logs / "agent.jsonl").write_text(records(0, 12))
    recipe = tmp_path / "deploy.yaml"
    recipe.write_text(RECIPE.format(run_dir=run_dir))
    t0 = time.time()
    log(flywheel(tmp_path, "submit", str(recipe), "--every", "60s").strip())

    # period 2 is queued once round 1 trained on wave 1; nothing new is written before it runs
    s = wait_for_period(run_dir, 2)
    m1 = json.loads((run_dir / "rounds" / "round-0001" / "manifest.json").read_text())
    assert m1["logs"]["accepted"] == 12, m1["logs"]
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

    # wave 2: six complete records and a half-written seventh, before period 3 begins
    assert time.time() < s["periods"][2]["begin"], "period 2 took longer than the period: wave 2 would race it"
    with (logs / "agent.jsonl").open("a") as f:
        f.write(records(12, 6) + records(18, 1)[:40])
    status = flywheel(tmp_path, "status", str(run_dir))
    log(status)
    assert "new log records waiting: 6" in status
    s = wait_for_period(run_dir, 4)
    m2 = json.loads((run_dir / "rounds" / "round-0002" / "manifest.json").read_text())
    assert m2["logs"]["accepted"] == 6, m2["logs"]
    assert not (run_dir / "rounds" / "round-0002.skipped.json").exists()
    log(flywheel(tmp_path, "submit", str(run_dir), "--stop"))
    assert schedule(run_dir)["stopped_at"]
    log(f"periodic logs slurm test total {time.time() - t0:.0f}s")
