"""The memory arm with the real model (SmolLM2-135M-Instruct, `make real-model`), through
recipes/study-smollm2-memory.yaml cut to one short round: the memory block fits SmolLM2's own
tokenizer budget, its weights stay the base's, retrieval stays within the arm's own training episodes
and the report asks whether memory beats retrying. Marked `real` (`make test-real`)."""
from __future__ import annotations

import json

import pytest

from trainer.rundir import RunDir
from trainer.study import run_study
from tests.trainer.test_real_model import model_dir  # noqa: F401 (the fixture)

pytestmark = pytest.mark.real
RECIPE = "recipes/study-smollm2-memory.yaml"


def test_memory_arm_on_the_real_model(model_dir, tmp_path):  # noqa: F811
    overrides = [f"model.name_or_path={model_dir}", f"run_dir={tmp_path / 's'}", "train.rounds=1",
                 "collect.hours_per_round=0.5", "collect.suites.0.episodes=24", "collect.policy.batch_size=24",
                 "eval.suites.0.episodes=12", "eval.policy.batch_size=12", "curve.bootstrap=0"]
    report = run_study(RECIPE, overrides, arms_arg="memory,retry", seeds_arg="0", progress=False)
    run = RunDir(tmp_path / "s" / "arms" / "memory-seed0")
    assert run.manifest(1).adapter is None
    collected = {json.loads(x)["episode_id"] for x in (run.experience / "round-0001.jsonl").read_text().splitlines()}
    episodes = [json.loads(x) for x in (run.round_dir(1) / "eval" / "episodes.jsonl").read_text().splitlines()]
    recalled = [e for t in episodes for e in t["metadata"]["memory"]["episodes"]]
    assert recalled and set(recalled) <= collected
    stats = json.loads((run.round_dir(1) / "eval" / "memory.json").read_text())
    assert 0 < stats["mean_block_tokens"] <= 384 and stats["with_memory"] == len(episodes)
    assert "Does memory without gradients beat retrying?: **" in report.read_text()
