"""The experience study's records (an arm x seed run's numbers, `ArmResult`) and its controls,
measured on each arm's run directory: the retry arm's best-of-k
on the held-out tasks (study/retry.json) and every checkpoint's success on the earliest training
tasks (study/forgetting/round-XXXX.json). See trainer/study.py for the design."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from eval.records import Record
from trainer.recipe import Recipe
from trainer.records import RoundManifest
from trainer.rundir import RunDir, atomic_write_json, atomic_write_text


@dataclasses.dataclass(kw_only=True)
class BestOfK(Record):
    """The retry arm's held-out score after one round: best-of-k over n = max k samples per task."""

    round: int
    hours: float  # cumulative interaction hours of the round
    k: int  # attempts per task that the hours buy
    success_rate: float  # mean over tasks of the expected best-of-k success
    mean_score: float  # mean over tasks of the expected best-of-k score
    tasks: int  # held-out tasks
    per_task_success: dict[str, float]  # task id -> expected best-of-k success
    per_task: dict[str, float]  # task id -> expected best-of-k score


@dataclasses.dataclass(kw_only=True)
class RetryScores(Record):
    """RUN_DIR/study/retry.json of the retry arm."""

    FILE: ClassVar[str] = "retry.json"

    eval_pass_hours: float  # hours of one base-policy pass over the held-out suite
    samples_per_task: int  # n = the largest k
    rounds: list[BestOfK]

    def __post_init__(self) -> None:
        self.rounds = [BestOfK.of(r) for r in self.rounds]


@dataclasses.dataclass(kw_only=True)
class ForgettingScore(Record):
    """RUN_DIR/study/forgetting/round-XXXX.json: one checkpoint's pass@1 on the earliest training tasks."""

    round: int | None = None
    success_rate: float | None = None  # fraction of the tasks solved
    ci95: list[float] | None = None  # Wilson interval
    episodes: int | None = None
    per_task_success: dict[str, float] | None = None  # task id -> 0/1

    @staticmethod
    def path(run: RunDir, r: int) -> Path:
        return run.root / "study" / "forgetting" / f"round-{r:04d}.json"


# ---- held-out best-of-k of the retry arm -----------------------------------------------------------
def expected_best_of_k(values: list[float], k: int) -> float:
    """Expected best of k values drawn without replacement from `values` (n >= k): for 0/1 values
    this is the unbiased pass@k of Chen et al. (2021); for scores, the expected best score."""
    n = len(values)
    if k > n:
        raise ValueError(f"best-of-{k} needs at least {k} samples, got {n}")
    v = np.sort(np.asarray(values, dtype=float))
    # P(the i-th smallest is the best of a random k-subset) = C(i-1, k-1) / C(n, k), i = 1..n
    weights = np.array([math.comb(i - 1, k - 1) for i in range(1, n + 1)], dtype=float) / math.comb(n, k)
    return float((weights * v).sum())


def retry_k(hours: float, eval_pass_hours: float) -> int:
    """Attempts per held-out task that `hours` of interaction buys on top of the first one."""
    return 1 + int(round(hours / eval_pass_hours)) if eval_pass_hours > 0 else 1


def _results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def heldout_samples(recipe: Recipe, run: RunDir, n: int, progress: bool) -> dict[str, list[dict]]:
    """n samples per held-out task of the base policy: the evaluator's own round-0 episodes first,
    then further samples, each from the evaluator's seeding (eval.seed * 1000 + sample), cached in
    study/retry/sample-XXXX.jsonl."""
    per_task: dict[str, list[dict]] = {}
    for row in _results(run.round_dir(0) / "eval" / "results.jsonl"):
        per_task.setdefault(row["task_id"], []).append(row)
    have = min(len(v) for v in per_task.values())
    cache = run.root / "study" / "retry"
    policy = None
    for j in range(have, n):
        path = cache / f"sample-{j:04d}.jsonl"
        if not path.exists():
            policy = policy or _policy(recipe, run, 0, recipe.eval.policy, "retry")
            _write_rows(path, _heldout_pass(recipe, policy, j, progress))
        for row in _results(path):
            per_task[row["task_id"]].append(row)
    return per_task


def _heldout_pass(recipe: Recipe, policy, sample: int, progress: bool) -> list[dict]:
    from eval.rollout import run_episodes
    from eval.suites import get_suite

    rows = []
    for sc in recipe.eval.suites:
        suite = get_suite(sc.name)
        trajs = run_episodes(suite, sc.difficulty, suite.heldout_seeds(sc.episodes), policy,
                             batch_size=recipe.eval.policy.batch_size, rng_seed=recipe.eval.seed * 1000 + sample,
                             desc=f"retry sample {sample}", progress=progress)
        rows += [{"suite": sc.name, "task_id": t.task_id, "success": bool(t.outcome.success), "score": t.score,
                  "duration_s": t.duration_s} for t in trajs]
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _policy(recipe: Recipe, run: RunDir, r: int, pc, what: str):
    """Round r's acting policy as its held-out evaluation had it (a memory arm: with the memory of rounds 1..r)."""
    from trainer.round import checkpoint_policy

    return checkpoint_policy(recipe, run, run.manifest(r), pc, f"{recipe.experiment}/round-{r:04d}/{what}",
                             memory_upto=r)


def retry_scores(recipe: Recipe, progress: bool = True) -> RetryScores:
    """Best-of-k held-out scores of the retry arm after every round (study/retry.json)."""
    run = RunDir(recipe.run_path())
    rows0 = _results(run.round_dir(0) / "eval" / "results.jsonl")
    samples0 = max(sc.samples_per_task for sc in recipe.eval.suites)
    eval_pass_hours = sum(float(r.get("duration_s") or 0.0) for r in rows0) / samples0 / 3600.0
    rounds: list[RoundManifest] = [run.manifest(r) for r in range(recipe.train.rounds + 1)]
    ks = [retry_k(m.cumulative_interaction_hours, eval_pass_hours) for m in rounds]
    per_task = heldout_samples(recipe, run, max(ks), progress)
    out = RetryScores(eval_pass_hours=eval_pass_hours, samples_per_task=max(ks), rounds=[])
    for m, k in zip(rounds, ks):
        success = {t: expected_best_of_k([float(x["success"]) for x in v], k) for t, v in sorted(per_task.items())}
        score = {t: expected_best_of_k([float(x["score"]) for x in v], k) for t, v in sorted(per_task.items())}
        out.rounds.append(BestOfK(round=m.round, hours=m.cumulative_interaction_hours, k=k,
                                  success_rate=float(np.mean(list(success.values()))),
                                  mean_score=float(np.mean(list(score.values()))), tasks=len(success),
                                  per_task_success=success, per_task=score))
    atomic_write_json(run.root / "study" / RetryScores.FILE, out.to_dict())
    return out


# ---- forgetting: the earliest training tasks ---------------------------------------------------------
def earliest_tasks(recipe: Recipe, run: RunDir) -> list[tuple[Any, int, list[int]]]:
    """(suite config, difficulty, seeds) of the first `study.forgetting_episodes` tasks of round 1
    per collect suite, limited to the tasks round 1 actually attempted, at the difficulty round 1
    collected them at (its episodes record it; under collect.curriculum it is not the suite's own)."""
    attempted: dict[str, list[int]] = {}
    difficulty: dict[str, int] = {}
    for line in (run.experience / "round-0001.jsonl").read_text().splitlines():
        t = json.loads(line)
        attempted.setdefault(t["suite"], []).append(int(t["metadata"]["seed"]))
        if t["metadata"].get("difficulty") is not None:
            difficulty.setdefault(t["suite"], int(t["metadata"]["difficulty"]))
    out = []
    for sc in recipe.collect.suites:
        seeds = sorted(attempted.get(sc.name, []))[:recipe.study.forgetting_episodes]
        if seeds:
            out.append((sc, difficulty.get(sc.name, sc.difficulty), seeds))
    return out


def forgetting_scores(recipe: Recipe, progress: bool = True) -> list[ForgettingScore] | None:
    """Success on the earliest training tasks after every round (pass@1, one seeded sampling
    stream per task, the same for every round); cached per round in study/forgetting/."""
    run = RunDir(recipe.run_path())
    if recipe.study.forgetting_episodes <= 0 or not (run.experience / "round-0001.jsonl").exists():
        return None
    tasks = earliest_tasks(recipe, run)
    by_checkpoint: dict[str, ForgettingScore] = {}
    out = []
    for r in range(recipe.train.rounds + 1):
        path = ForgettingScore.path(run, r)
        key = _checkpoint_key(run, r, recipe)
        if path.exists():
            summary = ForgettingScore.load(path)
        elif key in by_checkpoint:  # the same weights as an earlier round (retry, or nothing learnt)
            summary = dataclasses.replace(by_checkpoint[key], round=r)
            atomic_write_json(path, summary.to_dict())
        else:
            summary = _evaluate_on(recipe, run, r, tasks, progress)
            atomic_write_json(path, summary.to_dict())
        by_checkpoint.setdefault(key, summary)
        out.append(summary)
    return out


def _checkpoint_key(run: RunDir, r: int, recipe: Recipe | None = None) -> str:
    """Rounds with the same key act alike: the same weights, and no memory (a memory arm's policy
    differs every round by what it remembers, whatever its weights)."""
    m = run.manifest(r)
    if recipe is not None and recipe.memory.enabled:
        return f"memory-round-{r}"
    if not m.adapter:
        return "base"
    return json.dumps({k: v for k, v in (m.checksums or {}).items() if k.startswith("adapter/")}, sort_keys=True)


def _evaluate_on(recipe: Recipe, run: RunDir, r: int, tasks, progress: bool) -> ForgettingScore:
    from eval.evaluator import summarize
    from eval.rollout import run_episodes
    from eval.suites import get_suite

    policy = _policy(recipe, run, r, recipe.eval.policy, "earliest-tasks")
    samples: dict[str, list[tuple[bool, float]]] = {}
    for sc, difficulty, seeds in tasks:
        trajs = run_episodes(get_suite(sc.name), difficulty, seeds, policy, batch_size=recipe.eval.policy.batch_size,
                             rng_seed=recipe.eval.seed * 1000 + 777, desc=f"round {r} earliest tasks", progress=progress)
        for t in trajs:
            samples.setdefault(t.task_id, []).append((bool(t.outcome.success), t.score))
    s = summarize(samples, 1)
    return ForgettingScore(round=r, success_rate=s.success_rate, ci95=s.ci95, episodes=s.episodes,
                           per_task_success=s.per_task_success)


# ---- what an arm's run gives the report ------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class ArmRound(Record):
    """One round of one arm x seed run as the study scores it (pass@1; the retry arm: best-of-k)."""

    round: int | None = None
    hours: float | None = None  # cumulative interaction hours
    adapter: str | None = None  # the checkpoint's adapter folder; None: the base policy
    success_rate: float | None = None  # held-out success (retry: expected best-of-k)
    mean_score: float | None = None
    episodes: int | None = None  # held-out episodes (retry: tasks)
    per_task_success: dict[str, float] | None = None  # task id -> success
    per_task: dict[str, float] | None = None  # task id -> score
    ci95: list[float] | None = None  # Wilson interval of success_rate
    k: int | None = None  # attempts per held-out task (1: pass@1)


@dataclasses.dataclass(kw_only=True)
class ArmCost(Record):
    """The cost of an arm x seed run that is not interaction time: training compute for gradient arms,
    prompt tokens for memory arms ("as good, at what cost")."""

    train_hours: float = 0.0  # device-hours of training over all rounds (fit wall time x devices)
    train_device: str = "cpu"  # gpu when any round trained on GPUs (then train_hours are GPU-hours)
    memory_block_tokens: float | None = None  # mean memory block per held-out episode, final round
    memory_prompt_tokens: float | None = None  # mean prompt tokens the memory added per held-out episode (every step)
    memory_collect_prompt_tokens: float | None = None  # the same per training episode, over all rounds
    memory_library: int | None = None  # past episodes the final round's memory held


def arm_cost(run: RunDir, rounds: int) -> ArmCost:
    """Training device-hours from the round manifests (metrics fit_s, gpus: CPU processes count as 1
    device), memory tokens from eval/memory.json (or its shards) and the experience's metadata."""
    hours, gpu = 0.0, False
    for r in range(1, rounds + 1):
        m = run.manifest(r)
        metrics = (m.metrics or {}) if m else {}
        devices = int(metrics.get("gpus") or 0)
        gpu |= devices > 0
        hours += float(metrics.get("fit_s") or 0.0) / 3600.0 * max(devices, int(metrics.get("processes") or 1))
    cost = ArmCost(train_hours=hours, train_device="gpu" if gpu else "cpu")
    final = _memory_stats(run.round_dir(rounds) / "eval")
    if final is not None:
        cost.memory_block_tokens = final["mean_block_tokens"]
        cost.memory_prompt_tokens = final["mean_prompt_tokens"]
        cost.memory_library = final["library"]
        used = [json.loads(line).get("metadata", {}).get("memory", {}).get("prompt_tokens", 0)
                for p in sorted(run.experience.glob("round-*.jsonl")) for line in p.read_text().splitlines() if line]
        cost.memory_collect_prompt_tokens = float(np.mean(used)) if used else 0.0
    return cost


def _memory_stats(eval_dir: Path) -> dict | None:
    """eval/memory.json, or the episode-weighted mean of its shards' (eval/memory-shards/*.json)."""
    whole = eval_dir / "memory.json"
    if whole.exists():
        return json.loads(whole.read_text())
    parts = [json.loads(p.read_text()) for p in sorted((eval_dir / "memory-shards").glob("*.json"))]
    n = sum(p["episodes"] for p in parts)
    if not n:
        return None
    mean = {k: sum(p[k] * p["episodes"] for p in parts) / n for k in ("mean_block_tokens", "mean_prompt_tokens",
                                                                       "mean_entries")}
    return {**mean, "episodes": n, "library": max(p["library"] for p in parts)}


@dataclasses.dataclass(kw_only=True)
class ArmResult(Record):
    """An arm x seed run's numbers: every round's held-out score and the forgetting check (None when
    it is off). study.json's "arms" holds them without the per-task values."""

    run_dir: str | None = None
    kind: str | None = None  # accumulate, latest, reset, retry, memory, accumulate+memory
    rounds: list[ArmRound] = dataclasses.field(default_factory=list)
    forgetting: list[ForgettingScore] | None = None
    cost: ArmCost | None = None  # what the arm spent besides interaction time

    def __post_init__(self) -> None:
        self.rounds = [ArmRound.of(r) for r in self.rounds]
        if self.cost is not None:
            self.cost = ArmCost.of(self.cost)
        if self.forgetting is not None:
            self.forgetting = [ForgettingScore.of(f) for f in self.forgetting]

    def without_tasks(self) -> dict:
        drop = ("per_task_success", "per_task")
        plain = self.to_dict()
        rounds = [{k: x for k, x in row.items() if k not in drop} for row in plain["rounds"]]
        forgetting = [{k: x for k, x in row.items() if k not in drop} for row in (plain["forgetting"] or [])]
        return {**plain, "rounds": rounds, "forgetting": forgetting}
