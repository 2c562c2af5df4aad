"""The promotion gate in the loop, on the tiny model: a round made deliberately worse (trained on
mislabelled episodes that walk away from the goal) is rejected by `flywheel run`'s gate, promoted/ stays the previous
promoted checkpoint, and the next round trains and collects from that checkpoint on the data new since
the last round (the rejected round's data is not new again)."""
from __future__ import annotations

import pytest
import yaml

from trainer.loop import run_experiment
from trainer.promote import promoted_dir, promoted_now, read_history, read_verdict
from trainer.recipe import load_recipe
from trainer.round import prepare_round


def _recipe(tmp_path, rounds: int):
    doc = {"experiment": "gate-loop", "seed": 0, "run_dir": str(tmp_path / "run"),
           "model": {"name_or_path": "tiny"},
           "collect": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 32}], "policy": {"batch_size": 32}},
           "train": {"method": "sft", "rounds": rounds, "learning_rate": 5e-3, "epochs": 3, "batch_size": 8,
                     "max_length": 512, "lora": {"r": 8, "alpha": 16}},
           "eval": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 64}], "policy": {"batch_size": 64}},
           "tracking": {"wandb": {"mode": "disabled"}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_recipe(path)


class AwayPolicy:
    """Walks away from the goal whenever an open move allows it (the observation says where the goal
    lies): the behaviour a round made deliberately worse learns."""

    name = "away"

    def act(self, conversations, valid_actions, rngs):
        out = []
        for conv, valid in zip(conversations, valid_actions):
            text = next(m["content"] for m in reversed(conv) if m["role"] == "user")
            toward = set(text.split("goal:")[-1].split(".")[0].split())
            away = [m for m in valid if m not in toward]
            out.append(away[0] if away else valid[0])
        return out


def _mislabelled_experience(path, n: int = 128) -> None:
    """Round 2's experience: the away-walker's episodes on training mazes, all marked successful (a
    broken labeller), so SFT imitates walking away from the goal."""
    from eval.rollout import run_episodes, write_jsonl
    from eval.suites import get_suite

    suite = get_suite("maze")
    trajs = run_episodes(suite, 1, suite.train_seeds(n, offset=10_000), AwayPolicy(), batch_size=n, rng_seed=0,
                         progress=False)
    for t in trajs:
        t.outcome.success, t.outcome.score = True, 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajs, path)


pytestmark = pytest.mark.slow  # three rounds of training and four evaluations: minutes on 2 CPU cores


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate-loop")
    run = run_experiment(_recipe(tmp, 1), progress=False)  # rounds 0 and 1, each gated
    before = promoted_now(run).round
    # round 2 made deliberately worse: its collected experience replaced by mislabelled away-walks
    _mislabelled_experience(run.experience / "round-0002.jsonl")
    run_experiment(_recipe(tmp, 2), progress=False)  # trains, evaluates and gates round 2
    return tmp, run, before


def test_the_destroyed_round_is_rejected_and_promoted_stays(gated_run):
    tmp, run, before = gated_run
    assert read_verdict(run, 0).promoted
    v2 = read_verdict(run, 2)
    assert v2 is not None and v2.decision == "rejected", v2
    assert v2.incumbent == before and v2.difference < 0 and v2.p_value < 0.05
    assert promoted_now(run).round == before
    assert (promoted_dir(run) / "SERVING.md").exists()
    assert [(v.round, v.decision) for v in read_history(run)][-1] == (2, "rejected")
    report = run.report.read_text()
    assert f"| 2 | {before} |" in report and "rejected: worse than round" in report
    assert f"Promoted now: **round {before}**" in report


def test_the_next_round_starts_from_the_promoted_checkpoint(gated_run):
    tmp, run, before = gated_run
    recipe = _recipe(tmp, 3)
    sel = prepare_round(recipe, run, 3, progress=False)
    assert sel.parent == f"round-{before:04d}"
    # data new since the last round (2), not since the promoted parent: round 2's batch is old now
    new = set(sel.new_batches)
    assert new == {b for b in sel.batches_seen if b not in set(run.manifest(2).batches_seen)}
    assert new and not new & set(run.manifest(2).new_batches)
    if before >= 1:  # it trains on top of the promoted adapter, not the destroyed one
        assert sel.parent_adapter == str(run.round_dir(before) / "adapter")
