"""Every built-in suite: solvable by its scripted solver, disjoint train/held-out seeds, a horizon
that grows with difficulty, deterministic generation, small action sets, and a random policy that
does worse than the solver."""
from __future__ import annotations

import json

import pytest

from data_pipeline.schema import trajectory_from_dict
from eval.envs.base import HELDOUT_SEED_START, Env, Suite
from eval.rollout import RandomPolicy, run_episodes
from eval.suites import SUITES

ALL = sorted(SUITES)
TOP_DIFFICULTY = 10
CATEGORIES = {"games", "optimization", "formal_math", "software", "science", "knowledge"}


def as_valid(env: Env, action) -> str:
    """The string form an action takes in valid_actions() (tool calls are listed as JSON)."""
    if isinstance(action, dict):
        from eval.envs.lookup import action_string
        return action_string(action)
    return action


def play(suite: Suite, env: Env, actions) -> tuple[int, bool]:
    """Apply actions; returns (steps taken, done at the last one). Each must be a listed valid action."""
    res = None
    for k, action in enumerate(actions):
        assert as_valid(env, action) in env.valid_actions(), f"step {k}: {action!r} not in valid actions"
        res = env.step(action)
        assert res.duration_s > 0
        assert not res.done or k == len(actions) - 1, f"episode ended early at step {k}"
    return len(actions), bool(res and res.done)


def test_one_suite_per_category():
    assert {s.category for s in SUITES.values()} == CATEGORIES
    for name, suite in SUITES.items():
        env = suite.make_env(1)
        assert env.suite == name and env.category == suite.category and env.system_prompt


@pytest.mark.parametrize("name", ALL)
def test_scripted_solver_reaches_success(name):
    suite = SUITES[name]
    for difficulty in sorted({1, suite.default_difficulty, 5}):
        for seed in suite.heldout_seeds(20):
            env = suite.make_env(difficulty)
            env.reset(seed)
            steps, done = play(suite, env, suite.solve(env))
            success, score = env.outcome()
            assert done and success and score == 1.0, (name, difficulty, seed)
            assert steps <= env.max_steps


@pytest.mark.parametrize("name", ALL)
def test_train_and_heldout_seeds_never_overlap(name):
    suite = SUITES[name]
    train, heldout = suite.train_seeds(5000), suite.heldout_seeds(5000)
    assert not set(train) & set(heldout)
    assert max(train) < HELDOUT_SEED_START <= min(heldout)
    env = suite.make_env(suite.default_difficulty)
    assert not {env.task_id(s) for s in train} & {env.task_id(s) for s in heldout}


@pytest.mark.parametrize("name", ALL)
def test_horizon_grows_with_difficulty(name):
    suite = SUITES[name]
    budgets, solved_in = [], []
    for d in (1, 3, 5, TOP_DIFFICULTY):
        env = suite.make_env(d)
        env.reset(HELDOUT_SEED_START)
        budgets.append(env.max_steps)
        solved_in.append(len(suite.solve(env)))
    assert budgets == sorted(budgets) and budgets[0] < budgets[-1]
    assert budgets[-1] >= 100, f"top difficulty gives only {budgets[-1]} steps"
    assert solved_in[0] <= 8, "difficulty 1 takes a few steps"
    assert solved_in[-1] > solved_in[0]


@pytest.mark.parametrize("name", ALL)
def test_generation_is_deterministic_and_seed_dependent(name):
    suite = SUITES[name]
    d = suite.default_difficulty

    def task(seed):  # first observation and the solver's plan: the plan shows what the observation hides
        env = suite.make_env(d)
        return env.reset(seed), json.dumps(suite.solve(env))

    first = [task(s) for s in suite.train_seeds(30)]
    assert first == [task(s) for s in suite.train_seeds(30)]
    assert len(set(first)) >= 25, "different seeds give different tasks"


@pytest.mark.parametrize("name", ALL)
def test_observations_and_action_sets_are_small(name):
    """Constrained decoding over a handful of short actions turns an untrained model into a random policy."""
    suite = SUITES[name]
    env = suite.make_env(suite.default_difficulty)
    for seed in suite.train_seeds(10):
        obs = env.reset(seed)
        for action in suite.solve(env):
            assert "\n" not in obs and len(obs) <= 300, obs
            valid = env.valid_actions()
            assert 1 <= len(valid) <= 12, valid
            obs = env.step(action).observation


@pytest.mark.parametrize("name", ALL)
def test_invalid_action_costs_a_step_and_says_why(name):
    suite = SUITES[name]
    env = suite.make_env(suite.default_difficulty)
    first = env.reset(3)
    res = env.step("fly to the moon")
    assert not res.done and res.reward == 0.0 and res.observation != first
    assert any(w in res.observation for w in ("invalid", "does not apply", "not a tool call"))


@pytest.mark.parametrize("name", ALL)
def test_random_policy_does_worse_than_the_solver(name):
    suite = SUITES[name]
    seeds = suite.heldout_seeds(100)
    trajs = run_episodes(suite, suite.default_difficulty, seeds, RandomPolicy(), rng_seed=0, progress=False)
    rate = sum(t.outcome.success for t in trajs) / len(trajs)
    mean_score = sum(t.outcome.score for t in trajs) / len(trajs)
    print(f"\n[random policy] {name} d={suite.default_difficulty}: success {rate:.2f}, mean score {mean_score:.2f}")
    assert rate < 1.0  # the solver succeeds on every task (test above)
    for seed, t in zip(seeds[:10], trajs):
        env = suite.make_env(suite.default_difficulty)
        env.reset(seed)
        assert t.metadata["steps"] <= env.max_steps
    again = run_episodes(suite, suite.default_difficulty, seeds[:10], RandomPolicy(), rng_seed=0, progress=False)
    assert [t.outcome for t in again] == [t.outcome for t in trajs[:10]]


class ReplayPolicy:
    """Plays the scripted plan of the one episode it is given at a time."""

    name = "scripted"

    def __init__(self, plan: list):
        self.plan = plan

    def act(self, conversations, valid_actions, rngs):
        (conv,) = conversations
        return [self.plan[sum(m["role"] == "assistant" for m in conv)]]


@pytest.mark.parametrize("name", ALL)
def test_solved_episodes_log_as_canonical_trajectories(name):
    suite = SUITES[name]
    d = suite.default_difficulty
    for seed in suite.train_seeds(5):
        env = suite.make_env(d)
        env.reset(seed)
        (t,) = run_episodes(suite, d, [seed], ReplayPolicy(suite.solve(env)), progress=False)
        assert t.outcome.success and t.duration_s > 0
        assert trajectory_from_dict(json.loads(json.dumps(t.to_dict()))).content_hash() == t.content_hash()
