"""The collection curriculum (collect.curriculum, trainer/curriculum.py): the schedule functions on
their own, the recipe checks, and short runs (three rounds) whose collection difficulty moves by the
rule while the held-out suite stays the same tasks at the same difficulty every round.

The runs are fast: the real loop (collection, ingest, selection, finalize, held-out evaluation,
report) with a stand-in for the model's policy (uniform over the maze's valid moves, each episode
with its own seeded generator, as in test_recipe_keys_used.py) and a stand-in for the fit (no
training: a curriculum decides what is collected, not how it is trained on)."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from trainer import curriculum
from trainer.curriculum import adaptive_difficulty, clamp, horizon_difficulty, suite_range
from trainer.recipe import RecipeError, load_recipe
from trainer.rundir import RunDir

BUDGET_H = 8.0  # hours per round: the longest maze episode here (d5: 36 steps of 30 s) is under 4% of it


# ---- the schedules ------------------------------------------------------------------------------------------
def test_horizon_runs_from_the_range_min_in_round_one_to_its_max_in_the_last_round():
    assert [horizon_difficulty(r, 5, 1, 5) for r in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [horizon_difficulty(r, 3, 1, 5) for r in (1, 2, 3)] == [1, 3, 5]
    # rounded half up: 2 + 3 * 1/2 = 3.5 -> 4 (round-half-even would give 4 here and 2 for 2.5 elsewhere)
    assert [horizon_difficulty(r, 3, 2, 5) for r in (1, 2, 3)] == [2, 4, 5]
    assert [horizon_difficulty(r, 4, 1, 2) for r in (1, 2, 3, 4)] == [1, 1, 2, 2]  # 1.33 -> 1, 1.67 -> 2
    assert horizon_difficulty(1, 1, 3, 7) == 3  # a one-round run collects at the min
    assert horizon_difficulty(9, 5, 1, 5) == 5  # rounds past train.rounds stay at the max
    assert horizon_difficulty(4, 6, 4, 4) == 4  # a one-point range is fixed


def test_adaptive_steps_up_above_the_band_down_below_it_and_stays_inside():
    band = [0.2, 0.8]
    assert adaptive_difficulty(3, 0.9, band, 1, 5) == (4, "up")
    assert adaptive_difficulty(3, 0.1, band, 1, 5) == (2, "down")
    assert adaptive_difficulty(3, 0.5, band, 1, 5) == (3, "stay")
    assert adaptive_difficulty(3, 0.8, band, 1, 5) == (3, "stay")  # the band's edges keep the difficulty
    assert adaptive_difficulty(3, 0.2, band, 1, 5) == (3, "stay")


def test_adaptive_is_clamped_into_the_range():
    band = [0.2, 0.8]
    assert adaptive_difficulty(5, 1.0, band, 1, 5) == (5, "up")  # the band asks, the range refuses
    assert adaptive_difficulty(1, 0.0, band, 1, 5) == (1, "down")
    assert adaptive_difficulty(9, 0.5, band, 1, 5) == (5, "stay")  # from outside the range: back into it
    assert clamp(0, 1, 5) == 1 and clamp(7, 1, 5) == 5 and clamp(3, 1, 5) == 3


def test_the_default_range_is_two_either_side_of_the_suites_difficulty_within_its_bounds():
    assert suite_range(3, None) == (1, 5)
    assert suite_range(1, None) == (1, 3)
    assert suite_range(50, None) == (48, 50)
    assert suite_range(3, [2, 9]) == (2, 9)  # the recipe's range wins, for every suite


# ---- the recipe keys ----------------------------------------------------------------------------------------
def _recipe_file(tmp_path, **collect):
    import yaml

    doc = {"experiment": "curr", "model": {"name_or_path": "tiny"},
           "collect": {"suites": [{"name": "maze", "difficulty": 3, "episodes": 4}], **collect}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("collect, key, words", [
    ({"curriculum_band": [0.8, 0.2]}, "collect.curriculum_band", "0 <= lo < hi <= 1"),
    ({"curriculum_band": [0.2, 0.5, 0.8]}, "collect.curriculum_band", "[lo, hi]"),
    ({"curriculum_band": [-0.1, 0.5]}, "collect.curriculum_band", "0 <= lo < hi <= 1"),
    ({"curriculum_range": [0, 4]}, "collect.curriculum_range", "1 <= min <= max <= 50"),
    ({"curriculum_range": [5, 3]}, "collect.curriculum_range", "1 <= min <= max <= 50"),
    ({"curriculum_range": [2, 51]}, "collect.curriculum_range", "1 <= min <= max <= 50"),
    ({"curriculum": "adaptiv"}, "collect.curriculum", "did you mean 'adaptive'"),
    ({"curriculum": "horizon", "suites": [{"name": "maze", "difficulty": 2}, {"name": "maze", "difficulty": 5}]},
     "collect.suites[1].name", "listed twice"),
])
def test_bad_curriculum_keys_are_refused_naming_the_key(tmp_path, collect, key, words):
    with pytest.raises(RecipeError) as e:
        load_recipe(_recipe_file(tmp_path, **collect))
    assert f"key '{key}'" in str(e.value) and words in str(e.value)


def test_the_same_suite_twice_is_fine_without_a_curriculum(tmp_path):
    two = [{"name": "maze", "difficulty": 2}, {"name": "maze", "difficulty": 5}]
    assert load_recipe(_recipe_file(tmp_path, suites=two)).collect.curriculum == "fixed"


# ---- short runs ------------------------------------------------------------------------------------------------
class _UniformPolicy:
    """Stands in for eval.policy.HFPolicy: uniform over the valid actions, with each episode's own generator."""

    def __init__(self, model, tokenizer, **settings):
        self.name = settings.get("name", "policy")

    def act(self, conversations, valid_actions, rngs):
        return [str(rng.choice(valid)) if valid else "" for valid, rng in zip(valid_actions, rngs)]


def _stand_in_fit(recipe, run, r):
    """The fit stage without training: fit.json as the real stage writes it, no adapter (the parent's
    weights, here the base, carry on)."""
    from trainer.round import FIT_RESULT, round_learning_rate, _selection
    from trainer.rundir import atomic_write_json

    metrics = {"rows": _selection(run, r).rows, "learning_rate": round_learning_rate(recipe, r), "fit_s": 0.0,
               "gpus": 0}
    atomic_write_json(run.work_dir(r) / FIT_RESULT, metrics)
    return metrics


def _run(tmp_path_factory, name: str, overrides: list[str]):
    """Three rounds of a maze run (collect d3, evaluate d3) under `overrides`; returns the recipe, the
    run directory and what the loop printed."""
    import eval.policy
    import trainer.round
    from trainer.loop import run_experiment

    import yaml

    root = tmp_path_factory.mktemp(name)
    doc = {"experiment": name, "seed": 0, "run_dir": str(root / "run"), "model": {"name_or_path": "tiny"},
           "collect": {"suites": [{"name": "maze", "difficulty": 3, "episodes": 400}],
                       "policy": {"batch_size": 32}, "hours_per_round": BUDGET_H},
           "data": {"success_only": False}, "train": {"rounds": 3},
           "eval": {"suites": [{"name": "maze", "difficulty": 3, "episodes": 8}], "policy": {"batch_size": 8}},
           "curve": {"bootstrap": 10}, "promote": {"enabled": False}, "tracking": {"wandb": {"mode": "disabled"}}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    recipe = load_recipe(path, overrides)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(eval.policy, "HFPolicy", _UniformPolicy)
        mp.setattr(eval.policy, "load_checkpoint", lambda base, adapter, load: (None, None))
        mp.setattr(trainer.round, "fit_round", _stand_in_fit)
        run_experiment(recipe, progress=False)
    return recipe, RunDir(recipe.run_path()), out.getvalue()


@pytest.fixture(scope="module")
def horizon(tmp_path_factory):
    return _run(tmp_path_factory, "horizon", ["collect.curriculum=horizon"])


@pytest.fixture(scope="module")
def adaptive_up(tmp_path_factory):
    # any success above 1% steps up; the range [2, 4] stops it at 4
    return _run(tmp_path_factory, "adaptive-up", ["collect.curriculum=adaptive", "collect.curriculum_band=[0.0,0.01]",
                                                   "collect.curriculum_range=[2,4]"])


@pytest.fixture(scope="module")
def adaptive_down(tmp_path_factory):
    # nothing reaches 99%: steps down every round (default range [1, 5])
    return _run(tmp_path_factory, "adaptive-down", ["collect.curriculum=adaptive", "collect.curriculum_band=[0.99,1.0]"])


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _collected(run, r):
    """(difficulties, success rate) of round r's collected maze episodes."""
    episodes = _jsonl(run.experience / f"round-{r:04d}.jsonl")
    assert episodes, f"round {r} collected nothing"
    return {e["metadata"]["difficulty"] for e in episodes}, sum(bool(e["outcome"]["success"]) for e in episodes) / len(episodes)


def _check_collection_follows_the_record(recipe, run):
    """Every round's episodes are at the difficulty its manifest records, with task ids saying so,
    and the record is what the files alone give again (a rerun computes the same difficulty)."""
    for r in (1, 2, 3):
        record = run.manifest(r).curriculum["maze"]
        difficulties, _ = _collected(run, r)
        assert difficulties == {record["difficulty"]}
        assert all(e["task_id"].startswith(f"maze/d{record['difficulty']}/s")
                   for e in _jsonl(run.experience / f"round-{r:04d}.jsonl"))
        assert curriculum.record(recipe, run, r) == run.manifest(r).curriculum  # from the files, not memory


def _check_heldout_never_changed(recipe, run):
    """A curriculum never changes the held-out suite: the same task ids, all at the configured
    difficulty, in every round's evaluation."""
    tasks = []
    for r in range(recipe.train.rounds + 1):
        rows = _jsonl(run.round_dir(r) / "eval" / "results.jsonl")
        tasks.append(sorted(row["task_id"] for row in rows))
    assert len(tasks[0]) == 8 and all(t.startswith("maze/d3/s1") for t in tasks[0])
    assert all(t == tasks[0] for t in tasks)


def _check_budget_per_round(recipe, run):
    """Every round spent the same interaction budget, within study.budget_tolerance, whatever its difficulty."""
    for r in (1, 2, 3):
        spent = run.manifest(r).interaction_hours_new
        assert abs(spent - BUDGET_H) / BUDGET_H <= recipe.study.budget_tolerance, (r, spent)


def test_horizon_run_climbs_from_the_range_min_to_its_max(horizon):
    recipe, run, printed = horizon
    assert [run.manifest(r).curriculum["maze"]["difficulty"] for r in (1, 2, 3)] == [1, 3, 5]  # range [1, 5]
    assert {run.manifest(r).curriculum["maze"]["rule"] for r in (1, 2, 3)} == {"horizon"}
    assert run.manifest(0).curriculum is None
    _check_collection_follows_the_record(recipe, run)
    _check_heldout_never_changed(recipe, run)
    _check_budget_per_round(recipe, run)
    # harder tasks, longer episodes: fewer of them in the same hours
    counts = [len(_jsonl(run.experience / f"round-{r:04d}.jsonl")) for r in (1, 2, 3)]
    assert counts[0] > counts[1] > counts[2]
    assert "round 3:" in printed and "collected at maze d5 (horizon)" in printed
    report = run.report.read_text()
    assert "collect difficulty" in report and "maze d5 (horizon)" in report


def test_adaptive_run_steps_up_after_a_round_above_the_band_and_stops_at_the_range_max(adaptive_up):
    recipe, run, printed = adaptive_up
    records = [run.manifest(r).curriculum["maze"] for r in (1, 2, 3)]
    assert [(c["difficulty"], c["rule"]) for c in records] == [(3, "start"), (4, "up"), (4, "up")]
    for r, c in ((2, records[1]), (3, records[2])):  # the previous round's own episodes decided
        difficulties, success = _collected(run, r - 1)
        assert c["previous_difficulty"] == difficulties.pop() and c["previous_success"] == pytest.approx(success)
        assert success > 0.01
    _check_collection_follows_the_record(recipe, run)
    _check_heldout_never_changed(recipe, run)
    _check_budget_per_round(recipe, run)
    assert "collected at maze d4 (up, " in printed


def test_adaptive_run_steps_down_after_a_round_below_the_band(adaptive_down):
    recipe, run, _ = adaptive_down
    records = [run.manifest(r).curriculum["maze"] for r in (1, 2, 3)]
    assert [(c["difficulty"], c["rule"]) for c in records] == [(3, "start"), (2, "down"), (1, "down")]
    assert records[0]["previous_success"] is None and records[0]["range"] == [1, 5]
    _check_collection_follows_the_record(recipe, run)
    _check_heldout_never_changed(recipe, run)
    _check_budget_per_round(recipe, run)


def test_a_rerun_of_a_round_computes_the_same_difficulty(adaptive_down, tmp_path):
    """Round 3 redone from scratch in a copy of the run (its checkpoint, evaluation and experience
    removed): the difficulty comes from round 2's recorded experience, so it is the same."""
    import shutil

    import eval.policy
    import trainer.round
    from trainer.round import prepare_round

    recipe, run, _ = adaptive_down
    copy = RunDir(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    before = run.manifest(3).curriculum
    shutil.rmtree(copy.round_dir(3))
    (copy.experience / "round-0003.jsonl").unlink()
    recipe = recipe.model_copy(update={"run_dir": str(copy.root)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eval.policy, "HFPolicy", _UniformPolicy)
        mp.setattr(eval.policy, "load_checkpoint", lambda base, adapter, load: (None, None))
        mp.setattr(trainer.round, "fit_round", _stand_in_fit)
        assert prepare_round(recipe, copy, 3, progress=False).curriculum == before
    assert _collected(copy, 3)[0] == {before["maze"]["difficulty"]}


def test_the_studys_forgetting_check_uses_round_ones_difficulty(horizon):
    """The forgetting check re-evaluates round 1's own training tasks: under a curriculum at the
    difficulty round 1 collected them at (horizon: the range min), not the suite's configured one."""
    from trainer.study_controls import earliest_tasks

    recipe, run, _ = horizon
    tasks = earliest_tasks(recipe, run)
    assert [(sc.name, difficulty) for sc, difficulty, _ in tasks] == [("maze", 1)]
    assert recipe.collect.suites[0].difficulty == 3
