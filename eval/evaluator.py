"""The evaluation of one checkpoint on the held-out suites.

Built-in suites run their held-out seeds in lock-step batches through the policy (one forward pass
per step for the whole batch); external suites run the user's harness per task. Per checkpoint the
results go next to it, in `eval/`: `summary.json` (per suite and overall: success rate, mean score,
pass@k, 95% intervals, per-task scores), `results.jsonl` (one line per task) and
`episodes.jsonl` (the held-out episodes as canonical trajectories). Same checkpoint + same eval
seed gives the same numbers: every episode samples from its own seeded generator.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from eval.config import EvalConfig, SuiteConfig
from eval.errors import EvalError
from eval.rollout import Policy, run_episodes, write_jsonl
from eval.suites import SUITES, get_suite


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved near 0 and 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean of scores in [0, 1]."""
    if len(values) < 2:
        return (0.0, 1.0)
    m, se = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    return (max(0.0, m - z * se), min(1.0, m + z * se))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples with c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(task_samples: dict[str, list[tuple[bool, float]]], k: int) -> dict[str, Any]:
    """Aggregate per-task samples (success, score) into the summary numbers of one suite."""
    tasks = sorted(task_samples)
    flat = [s for t in tasks for s in task_samples[t]]
    n = len(flat)
    succ = sum(1 for ok, _ in flat if ok)
    scores = [sc for _, sc in flat]
    per_task = {t: float(np.mean([sc for _, sc in task_samples[t]])) for t in tasks}
    out = {
        "episodes": n,
        "tasks": len(tasks),
        "success_rate": succ / n if n else 0.0,
        "ci95": list(wilson_interval(succ, n)),
        "mean_score": float(np.mean(scores)) if n else 0.0,
        "mean_score_ci95": list(mean_interval(scores)),
        "per_task": per_task,
        "per_task_success": {t: float(np.mean([ok for ok, _ in task_samples[t]])) for t in tasks},
    }
    if k > 1:
        # pass@j for j = 1..k, averaged over tasks (the high-resolution view of early checkpoints)
        out["pass_at_k"] = {str(j): float(np.mean([pass_at_k(len(task_samples[t]), sum(ok for ok, _ in task_samples[t]), j)
                                                    for t in tasks])) for j in (1, k) if j <= k}
    return out


def evaluate_builtin(suite_cfg: SuiteConfig, policy: Policy, eval_cfg: EvalConfig, progress: bool = True):
    suite = get_suite(suite_cfg.name)
    seeds = suite.heldout_seeds(suite_cfg.episodes)
    trajs = []
    for sample in range(suite_cfg.samples_per_task):
        trajs += run_episodes(suite, suite_cfg.difficulty, seeds, policy, batch_size=eval_cfg.policy.batch_size,
                              rng_seed=eval_cfg.seed * 1000 + sample, desc=f"eval {suite.name}", progress=progress)
    samples: dict[str, list[tuple[bool, float]]] = {}
    for t in trajs:
        samples.setdefault(t.task_id, []).append((bool(t.outcome.success), t.score))
    return summarize(samples, suite_cfg.samples_per_task), trajs


def evaluate_external(suite_cfg: SuiteConfig, checkpoint: str, out_dir: Path, eval_cfg: EvalConfig):
    from eval.external import load_external_suite

    suite = load_external_suite(suite_cfg.name)
    results = suite.run(checkpoint=checkpoint, endpoint=None, out_dir=out_dir / suite.name)
    samples = {r.task_id: [(bool(r.success), float(r.score))] for r in results}
    summary = summarize(samples, 1)
    summary["status_counts"] = {s: sum(r.status == s for r in results) for s in ("ok", "timeout", "error")}
    return summary, [r.to_dict() for r in results]


def evaluate(policy: Policy, eval_cfg: EvalConfig, out_dir: Path, checkpoint: str = "",
             progress: bool = True) -> dict[str, Any]:
    """Evaluate `policy` on every suite of `eval_cfg`; write `out_dir` atomically; return the summary."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    suites: dict[str, Any] = {}
    all_samples: dict[str, list[tuple[bool, float]]] = {}
    episodes, results = [], []
    for sc in eval_cfg.suites:
        if sc.name in SUITES:
            summary, trajs = evaluate_builtin(sc, policy, eval_cfg, progress)
            episodes += trajs
            for t in trajs:
                all_samples.setdefault(t.task_id, []).append((bool(t.outcome.success), t.score))
                results.append({"suite": sc.name, "task_id": t.task_id, "success": t.outcome.success,
                                "score": t.score, "steps": t.metadata.get("steps"), "duration_s": t.duration_s})
        elif sc.name.endswith((".yaml", ".yml")):
            summary, rows = evaluate_external(sc, checkpoint, tmp, eval_cfg)
            for r in rows:
                all_samples.setdefault(r["task_id"], []).append((bool(r["success"]), float(r["score"])))
                results.append({"suite": sc.name, **r})
        else:
            raise EvalError(f"eval.suites: unknown suite {sc.name!r}; built-in: {', '.join(sorted(SUITES))}, "
                            "or a path to an external suite .yaml")
        suites[sc.name] = summary
    overall = summarize(all_samples, max(s.samples_per_task for s in eval_cfg.suites))
    overall["suites"] = suites
    overall["checkpoint"] = checkpoint
    overall["seed"] = eval_cfg.seed
    write_jsonl(episodes, tmp / "episodes.jsonl")
    with open(tmp / "results.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    (tmp / "summary.json").write_text(json.dumps(overall, indent=2, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return overall
