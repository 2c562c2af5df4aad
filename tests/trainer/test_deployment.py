"""A deployment end to end (issue 15): a simulated deployed agent writes OpenAI-format logs into a
folder in three waves, and each period one round learns from what is new.

- wave 1: maze episodes of a fair agent, no outcome in the logs (the verifier labels them);
- wave 2: appended to the same open file, its last line left half-written;
- wave 3: the half-written line is finished, the file rotated (agent.jsonl -> agent.jsonl.1), and a
  bad release writes a new agent.jsonl: it walks away from the goal and its logger claims success.

Three rounds pick up exactly the new records (the counts in each manifest add up to what was
written, the store holds each record once), labels come from the verifier command (`label.command`,
recipes/live-logs/verify_maze.py) except where the log carries its own, the curve's x-axis is the
agents' interaction time from the logs' start/end times, and the round trained on the bad wave is
rejected by the promotion gate: promoted/ stays the checkpoint before it, and the report says so."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from data_pipeline.store import ExperienceStore
from tests.paths import REPO
from trainer.loop import run_experiment
from trainer.promote import promoted_dir, promoted_now, read_verdict
from trainer.recipe import load_recipe

SIM = REPO / "recipes" / "live-logs" / "simulate_deployment.py"
VERIFY = REPO / "recipes" / "live-logs" / "verify_maze.py"
WAVES = {1: 48, 2: 24, 3: 64}  # episodes written per wave

pytestmark = pytest.mark.slow  # four evaluations and three training rounds of the tiny model


def deploy(logs, wave: int, *flags: str) -> None:
    subprocess.run([sys.executable, str(SIM), str(logs), "--wave", str(wave), "--episodes", str(WAVES[wave]),
                    "--difficulty", "1", "--skill", "0.5", *flags], check=True, capture_output=True)


def recipe_for(tmp, rounds: int):
    doc = {"experiment": "deployment", "seed": 0, "run_dir": str(tmp / "run"),
           "model": {"name_or_path": "tiny"},
           "collect": {"logs": ["logs/"], "suites": []},
           "label": {"command": f"{sys.executable} {VERIFY}", "workers": 2, "timeout_s": 60},
           "data": {"success_only": True, "replay_ratio": 0.0},
           "train": {"method": "sft", "rounds": rounds, "learning_rate": 5e-3, "epochs": 3, "batch_size": 8,
                     "max_length": 512, "lora": {"r": 8, "alpha": 16}},
           "eval": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 64}], "policy": {"batch_size": 64}},
           "promote": {"margin": 0.0, "level": 0.05},
           "tracking": {"wandb": {"mode": "disabled"}}}
    path = tmp / "deploy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_recipe(path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployment")
    logs = tmp / "logs"  # relative to the recipe file: collect.logs: [logs/]
    deploy(logs, 1)
    run = run_experiment(recipe_for(tmp, 1), progress=False)  # period 1: round 0 evaluated, round 1 trained
    promoted_after = {1: promoted_now(run).round}
    deploy(logs, 2, "--open-line")
    run_experiment(recipe_for(tmp, 2), progress=False)  # period 2
    promoted_after[2] = promoted_now(run).round
    deploy(logs, 3, "--rotate", "--broken")
    run_experiment(recipe_for(tmp, 3), progress=False)  # period 3: the bad release's logs
    promoted_after[3] = promoted_now(run).round
    return tmp, run, promoted_after


def test_each_round_reads_exactly_the_new_records(deployment):
    tmp, run, _ = deployment
    logs = {r: run.manifest(r).logs for r in (1, 2, 3)}
    # wave 2's last line waited for wave 3 (it was half-written); the rotated file was not read again
    assert [logs[r]["accepted"] for r in (1, 2, 3)] == [WAVES[1], WAVES[2] - 1, 1 + WAVES[3]]
    for r in (1, 2, 3):
        assert logs[r]["read"] == logs[r]["accepted"] + logs[r]["duplicates"] + logs[r]["quarantined"]
        assert logs[r]["duplicates"] == 0 and logs[r]["quarantined"] == 0, logs[r]
    assert logs[2]["waiting_bytes"] > 0 and logs[3]["waiting_bytes"] == 0
    assert sorted(p.name for p in (tmp / "logs").iterdir() if not p.name.startswith(".")) == \
        ["agent.jsonl", "agent.jsonl.1"]
    store = ExperienceStore(run.store)
    written = sum(WAVES.values())
    assert store.stats()["trajectories"] == written  # every record once
    ids = [t.episode_id for t in store.trajectories()]
    assert len(set(ids)) == len(ids) == written


def test_labels_come_from_the_verifier_unless_the_log_has_its_own(deployment):
    _, run, _ = deployment
    labels = {r: run.manifest(r).labels for r in (1, 2, 3)}
    assert labels[1]["command"] == WAVES[1] and labels[1]["own"] == 0
    assert labels[2]["command"] == WAVES[2] - 1
    assert labels[3]["own"] == WAVES[3] and labels[3]["command"] == 1  # the broken logger's claims win
    for r in (1, 2, 3):
        assert labels[r]["quarantined"] == 0 and labels[r]["unlabeled_kept"] == 0
    # success_only SFT: the verifier's failures are not trained on; the broken wave's "successes" are
    m1, m3 = run.manifest(1), run.manifest(3)
    assert m1.trajectories_used == WAVES[1] and 0 < m1.metrics["rows"] < WAVES[1]
    assert m3.metrics["rows"] >= WAVES[3]


def test_the_curve_counts_the_agents_own_interaction_time(deployment):
    _, run, _ = deployment
    hours = [run.manifest(r).cumulative_interaction_hours for r in (0, 1, 2, 3)]
    assert hours[0] == 0 and hours[1] > 0 and hours[1] < hours[2] < hours[3]
    curve = json.loads((run.curve / "curve.json").read_text())
    assert "hours" in json.dumps(curve)


def test_the_bad_release_round_is_rejected_and_promoted_stays(deployment):
    _, run, promoted_after = deployment
    v3 = read_verdict(run, 3)
    assert v3 is not None and v3.decision == "rejected", v3
    assert v3.difference < 0 and v3.p_value < 0.05
    assert promoted_after[3] == promoted_after[2] == v3.incumbent
    promoted = promoted_now(run)
    assert promoted.round == promoted_after[2]
    serving = (promoted_dir(run) / "SERVING.md").read_text()
    assert "--enable-lora" in serving or promoted.round == 0
    report = run.report.read_text()
    assert "## Rounds" in report and f"Promoted now: **round {promoted.round}**" in report
    row3 = next(line for line in report.splitlines() if line.startswith("| 3 |"))
    assert "rejected" in row3 and f"| {1 + WAVES[3]} | own {WAVES[3]}, command 1 |" in row3, row3
    row1 = next(line for line in report.splitlines() if line.startswith("| 1 |"))
    assert f"{run.manifest(1).metrics['rows']} (of {WAVES[1]})" in row1, row1


def test_a_period_with_nothing_new_is_skipped(deployment):
    tmp, run, _ = deployment
    run_experiment(recipe_for(tmp, 4), progress=False)  # nothing written since period 3
    assert run.manifest(4) is None
    skipped = json.loads((run.root / "rounds" / "round-0004.skipped.json").read_text())
    assert "nothing new" in skipped["reason"]
