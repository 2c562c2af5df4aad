"""The experience study: four arms on the tiny model, one short round each. Every arm consumed the
same interaction budget, the retry arm never changed the weights, the report says who won, and a
rerun skips what is done (marked slow: four arms, `pytest -m slow tests/trainer/test_study.py`). Plus the
statistics and the recipe checks on their own, fast."""
import json
import math

import pytest

from trainer.errors import UserError
from trainer.recipe import load_recipe
from trainer.round import base_model_path
from trainer.rundir import RunDir, dir_checksums
from eval.stats import difference_of_proportions
from trainer.cli.study import main
from trainer.study import arm_overrides, run_study
from trainer.study_controls import expected_best_of_k, retry_k
from trainer.study_report import budget_check, final_comparison

RECIPE = "recipes/study-quickstart.yaml"
# Budget 4 h: base episodes are ~9 min, so one episode's overshoot is under 5% of it.
TINY = ["train.rounds=1", "collect.hours_per_round=4", "collect.suites.0.episodes=64", "collect.policy.batch_size=32",
        "eval.suites.0.episodes=12", "eval.policy.batch_size=12", "train.epochs=1", "study.forgetting_episodes=6",
        "curve.bootstrap=20"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "s"
    overrides = TINY + [f"run_dir={root}"]
    recipe = load_recipe(RECIPE, overrides)
    base_before = dir_checksums(base_model_path(recipe, RunDir(root / "base-probe")))
    report = run_study(RECIPE, overrides, seeds_arg="0", progress=False)
    return root, overrides, recipe, report, base_before


def _arm_run(recipe, name, seed=0):
    arm = next(a for a in recipe.study.arms if a.name == name)
    return load_recipe(RECIPE, [*TINY, f"run_dir={recipe.run_path()}", *arm_overrides(recipe, arm, seed)])


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_every_arm_consumed_the_same_interaction_budget(study):
    root, _, recipe, _, _ = study
    hours = {}
    for arm in recipe.study.arms:
        run = RunDir(root / "arms" / f"{arm.name}-seed0")
        assert run.completed_rounds() == [0, 1]
        hours[arm.name] = run.manifest(1)["cumulative_interaction_hours"]
    assert all(h >= 4.0 for h in hours.values())  # the budget was spent, not cut short by the task pool
    assert max(hours.values()) <= 1.05 * min(hours.values()), hours
    check = json.loads((root / "study" / "study.json").read_text())["budget_check"]
    assert [row["within_tolerance"] for row in check] == [True, True]


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_retry_arm_never_changed_the_weights(study):
    root, _, recipe, _, base_before = study
    run = RunDir(root / "arms" / "retry-seed0")
    for r in run.completed_rounds():
        m = run.manifest(r)
        assert m["adapter"] is None and not (run.round_dir(r) / "adapter").exists()
    # its base folder holds the same bytes as a freshly built base, and its store holds the experience
    assert dir_checksums(run.base_model) == base_before
    assert run.manifest(1)["trajectories_used"] > 0 and run.manifest(1)["metrics"]["rows"] == 0
    # a learning arm did train on the same round
    acc = RunDir(root / "arms" / "accumulate-seed0")
    assert acc.manifest(1)["adapter"] == "adapter" and acc.manifest(1)["metrics"]["rows"] > 0


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_retry_is_scored_by_best_of_k_from_its_budget(study):
    root, *_ = study
    retry = json.loads((root / "arms" / "retry-seed0" / "study" / "retry.json").read_text())
    k = [row["k"] for row in retry["rounds"]]
    assert k[0] == 1 and k[1] == retry_k(retry["rounds"][1]["hours"], retry["eval_pass_hours"]) and k[1] >= 2
    # best-of-k can only help: never below the single attempt at round 0
    assert retry["rounds"][1]["success_rate"] >= retry["rounds"][0]["success_rate"]
    # n = max k samples per task: the evaluator's round-0 episodes plus n - 1 cached further passes
    samples = sorted((root / "arms" / "retry-seed0" / "study" / "retry").glob("sample-*.jsonl"))
    assert retry["samples_per_task"] == k[-1] and len(samples) == k[-1] - 1
    per_task = retry["rounds"][0]["per_task_success"]
    assert math.isclose(retry["rounds"][0]["success_rate"], sum(per_task.values()) / len(per_task))


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_report_states_the_verdict_with_intervals(study):
    root, _, _, report, _ = study
    text = report.read_text()
    assert report == root / "study" / "report.md" and (root / "study" / "study.png").stat().st_size > 1000
    verdict = text.split("## Verdict")[1].split("##")[0].replace("**", "")
    assert any(w in verdict for w in ("accumulate beats retry", "accumulate loses to retry",
                                      "no detectable difference between accumulate and retry"))
    assert "95% CI [" in verdict
    for section in ("## Interaction budget per round", "## Held-out success per round and seed",
                    "## Forgetting: success on the earliest training tasks", "## Fitted curves of all arms",
                    "Comparison of arms"):
        assert section in text
    headline = json.loads((root / "study" / "study.json").read_text())["headline"]
    assert headline["arms"] == ["accumulate", "retry"] and headline["ci95"][0] <= headline["difference"] <= headline["ci95"][1]


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_forgetting_is_measured_on_round_one_training_tasks(study):
    root, *_ = study
    run = RunDir(root / "arms" / "latest-seed0")
    first = json.loads((run.root / "study" / "forgetting" / "round-0000.json").read_text())
    collected = {json.loads(x)["task_id"] for x in (run.experience / "round-0001.jsonl").read_text().splitlines()}
    assert first["episodes"] == 6 and set(first["per_task_success"]) <= collected


@pytest.mark.slow  # four arms on the tiny model: ~2 min of CPU
def test_rerun_skips_finished_arms(study, capsys):
    root, overrides, *_ = study
    stamp = (root / "arms" / "reset-seed0" / "rounds" / "round-0001" / "manifest.json").stat().st_mtime
    assert main([RECIPE, *overrides, "--seeds", "0", "--arms", "reset,retry", "--quiet"]) == 0
    assert (root / "arms" / "reset-seed0" / "rounds" / "round-0001" / "manifest.json").stat().st_mtime == stamp
    assert "report:" in capsys.readouterr().out


def test_study_refuses_a_recipe_without_budget(tmp_path):
    with pytest.raises(UserError, match="collect.hours_per_round"):
        run_study("recipes/quickstart.yaml", ["study.arms=[{name: a, kind: accumulate}]", f"run_dir={tmp_path}"])
    with pytest.raises(UserError, match="unknown arm"):
        run_study(RECIPE, [f"run_dir={tmp_path}"], arms_arg="accumulate,bogus")


# ---- the statistics -------------------------------------------------------------------------------
def test_best_of_k_is_unbiased_pass_at_k_on_successes():
    from eval.evaluator import pass_at_k

    values = [1, 0, 0, 1, 0, 0, 0]
    for k in range(1, 8):
        assert math.isclose(expected_best_of_k(values, k), pass_at_k(7, 2, k))
    assert math.isclose(expected_best_of_k([0.2, 0.5, 0.9], 3), 0.9)
    assert math.isclose(expected_best_of_k([0.2, 0.5, 0.9], 1), (0.2 + 0.5 + 0.9) / 3)


def test_retry_k_grows_with_interaction_hours():
    assert [retry_k(h, 10.0) for h in (0.0, 4.9, 10.0, 31.0)] == [1, 1, 2, 4]


def test_difference_of_proportions_interval():
    d = difference_of_proportions(0.6, 300, 0.3, 300)
    assert math.isclose(d["difference"], 0.3) and 0.2 < d["ci95"][0] < 0.3 < d["ci95"][1] < 0.4
    tie = difference_of_proportions(0.3, 40, 0.3, 40)
    assert tie["ci95"][0] < 0 < tie["ci95"][1]


def test_budget_check_flags_an_arm_off_by_more_than_the_tolerance():
    ok = budget_check({"a": [0, 10.0, 20.0], "b": [0, 10.3, 20.4], "c": [0, 10.1, 19.8]}, 0.05)
    assert all(r["within_tolerance"] for r in ok)
    bad = budget_check({"a": [0, 10.0], "b": [0, 11.0], "c": [0, 10.0]}, 0.05)
    assert bad[1]["within_tolerance"] is False and math.isclose(bad[1]["max_relative_deviation"], 0.1)


def test_final_comparison_says_when_accumulate_loses():
    def arm(p, n=100):
        return {0: {"rounds": [{"success_rate": p, "episodes": n, "hours": 10.0}]}}

    lost = final_comparison({"accumulate": arm(0.2), "retry": arm(0.6)}, "accumulate", "retry")
    assert lost["verdict"] == "loses" and lost["ci95"][1] < 0
    won = final_comparison({"accumulate": arm(0.7), "retry": arm(0.3)}, "accumulate", "retry")
    assert won["verdict"] == "wins"


def test_jobs_run_the_arms_side_by_side_with_a_log_each(tmp_path, capsys):
    """`flywheel study --jobs 2`: two runs at a time in their own processes, each with its log; the
    report is the same kind of report, and a rerun (sequential) finds them done."""
    root = tmp_path / "s"
    overrides = ["train.rounds=1", "collect.hours_per_round=1", "collect.suites.0.episodes=16",
                 "collect.policy.batch_size=16", "eval.suites.0.episodes=6", "eval.policy.batch_size=6",
                 "train.epochs=1", "study.forgetting_episodes=2", "curve.bootstrap=0",
                 "tracking.wandb.mode=disabled", f"run_dir={root}"]
    assert main([RECIPE, *overrides, "--seeds", "0", "--arms", "memory,retry,accumulate", "--jobs", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 run(s), 2 at a time" in out
    for label in ("memory-seed0", "retry-seed0", "accumulate-seed0"):
        assert f"== {label} done in" in out
        log = (root / "arms" / f"{label}.log").read_text()
        assert "round 1:" in log and "round 0:" in log  # the run's own lines went to its log
        assert RunDir(root / "arms" / label).completed_rounds() == [0, 1]
    # the controls were measured in the workers: the report only read them
    assert (root / "arms" / "retry-seed0" / "study" / "retry.json").exists()
    assert (root / "arms" / "accumulate-seed0" / "study" / "forgetting" / "round-0001.json").exists()
    timings = json.loads((root / "study" / "timings.json").read_text())
    assert set(timings) == {"memory-seed0", "retry-seed0", "accumulate-seed0"} and min(timings.values()) > 0
    assert "Does memory without gradients beat retrying?" in (root / "study" / "report.md").read_text()
    stamp = (root / "arms" / "memory-seed0" / "rounds" / "round-0001" / "manifest.json").stat().st_mtime
    assert main([RECIPE, *overrides, "--seeds", "0", "--arms", "memory", "--quiet"]) == 0
    assert (root / "arms" / "memory-seed0" / "rounds" / "round-0001" / "manifest.json").stat().st_mtime == stamp


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="--jobs 0"):
        run_study(RECIPE, [f"run_dir={tmp_path}"], jobs=0)
