"""The study's memory arms on the tiny model, two short rounds: the memory arm never changes the
weights, retrieval only ever returns the arm's own earlier training episodes (never a held-out task,
never another arm's), both arms spend the same interaction budget, and the report asks the memory
questions and states their cost."""
import json

import pytest
import torch

from trainer.recipe import load_recipe
from trainer.round import base_model_path
from trainer.rundir import RunDir, dir_checksums
from trainer.study import run_study

RECIPE = "recipes/study-quickstart.yaml"
SMALL = ["train.rounds=2", "collect.hours_per_round=2", "collect.suites.0.episodes=48", "collect.policy.batch_size=24",
         "eval.suites.0.episodes=10", "eval.policy.batch_size=10", "train.epochs=1", "study.forgetting_episodes=0",
         "curve.bootstrap=0", "memory.k=3", "tracking.wandb.mode=disabled"]
ARMS = "memory,accumulate-memory,retry"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory-study") / "s"
    overrides = [*SMALL, f"run_dir={root}"]
    report = run_study(RECIPE, overrides, arms_arg=ARMS, seeds_arg="0", progress=False)
    return root, overrides, report


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _collected(run: RunDir) -> dict[int, set[str]]:
    return {r: {t["episode_id"] for t in _lines(run.experience / f"round-{r:04d}.jsonl")} for r in (1, 2)}


def test_the_memory_arm_keeps_the_base_weights_bit_for_bit(study, tmp_path):
    root, overrides, _ = study
    from eval.policy import load_checkpoint

    fresh = base_model_path(load_recipe(RECIPE, overrides), RunDir(tmp_path / "probe"))
    run = RunDir(root / "arms" / "memory-seed0")
    assert dir_checksums(run.base_model) == dir_checksums(fresh)
    base, _ = load_checkpoint(fresh)
    want = base.state_dict()
    for r in (0, 1, 2):
        m = run.manifest(r)
        assert m.adapter is None and not (run.round_dir(r) / "adapter").exists()
        from trainer.round import checkpoint_paths

        model, _ = load_checkpoint(*checkpoint_paths(run, m))
        got = model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # while the accumulate+memory arm did train
    assert RunDir(root / "arms" / "accumulate-memory-seed0").manifest(2).adapter == "adapter"


@pytest.mark.parametrize("arm", ["memory", "accumulate-memory"])
def test_retrieval_returns_only_the_arms_own_earlier_training_episodes(study, arm):
    root, _, _ = study
    run = RunDir(root / "arms" / f"{arm}-seed0")
    other = RunDir(root / "arms" / ("accumulate-memory-seed0" if arm == "memory" else "memory-seed0"))
    mine, theirs = _collected(run), _collected(other)
    assert not (mine[1] | mine[2]) & (theirs[1] | theirs[2])
    # collection: round 1 had an empty memory; round 2 recalled round 1's episodes only
    for t in _lines(run.experience / "round-0001.jsonl"):
        assert t["metadata"]["memory"]["episodes"] == []
    recalled = [e for t in _lines(run.experience / "round-0002.jsonl") for e in t["metadata"]["memory"]["episodes"]]
    assert recalled and set(recalled) <= mine[1]
    # held-out evaluation of round r: the arm's own episodes of rounds 1..r, never a held-out task
    for r, allowed in ((1, mine[1]), (2, mine[1] | mine[2])):
        episodes = _lines(run.round_dir(r) / "eval" / "episodes.jsonl")
        got = [e for t in episodes for e in t["metadata"]["memory"]["episodes"]]
        tasks = [x for t in episodes for x in t["metadata"]["memory"]["task_ids"]]
        heldout = {t["task_id"] for t in episodes}
        assert got and set(got) <= allowed
        assert not set(tasks) & heldout and all(int(x.rsplit("/s", 1)[1]) < 1_000_000_000 for x in tasks)
        stats = json.loads((run.round_dir(r) / "eval" / "memory.json").read_text())
        assert stats["episodes"] == len(episodes) and stats["library"] <= len(allowed)
    # round 0: nothing collected yet, an empty memory: the base policy's prompts as they are
    stats = json.loads((run.round_dir(0) / "eval" / "memory.json").read_text())
    assert stats["library"] == 0 and stats["with_memory"] == 0 and stats["mean_prompt_tokens"] == 0


def test_every_arm_spent_the_same_budget_and_the_report_asks_the_memory_questions(study):
    root, _, report = study
    hours = {a: [RunDir(root / "arms" / f"{a}-seed0").manifest(r).cumulative_interaction_hours for r in (1, 2)]
             for a in ARMS.split(",")}
    for r in (0, 1):
        values = [h[r] for h in hours.values()]
        assert min(values) >= 2.0 * (r + 1) and max(values) <= 1.05 * min(values), hours
    text = report.read_text()
    assert "Does memory without gradients beat retrying?: **" in text
    assert "Do gradients and memory add up?" not in text  # no plain accumulate arm ran
    costs = text.split("## Cost besides interaction time")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in costs.splitlines() if line.startswith("| ")}
    assert "CPU-h" in rows["accumulate-memory"] and "| none |" in rows["memory"].split("CPU")[0]
    block = int(rows["memory"].split("|")[5].split("/")[0])
    assert 0 < block <= 384  # memory.max_tokens
    study_json = json.loads((root / "study" / "study.json").read_text())
    assert study_json["arms"]["memory"]["0"]["cost"]["memory_library"] > 0
