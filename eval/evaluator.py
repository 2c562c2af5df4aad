"""The evaluation of one checkpoint on the held-out suites.

Built-in suites run their held-out seeds in lock-step batches through the policy (one forward pass
per step for the whole batch); external suites run the user's harness per task. Per checkpoint the
results go next to it, in `eval/`: `summary.json` (per suite and overall: success rate, mean score,
pass@k, 95% intervals, per-task scores), `results.jsonl` (one line per task and sample) and
`episodes.jsonl` (the held-out episodes as canonical trajectories).

The summary is a function of the result rows alone (`summarize_rows`), so an evaluation split into
shards (`evaluate(..., shard=(i, n))`: every n-th task from i, written to `eval/shards/`) and
merged (`merge_shards`) gives the summary an unsharded run gives.

Numbers and their intervals (all 95%):
- `success_rate` with `ci95`: Wilson interval over all episodes (samples of a task counted apart).
- `mean_score` with `mean_score_ci95`: normal interval of the mean.
- `pass_at_k` {j: value} for j = 1, 2, 4, ..., k (k = samples per task) with `pass_at_k_ci95`: the
  unbiased estimator (Chen et al. 2021) per task, averaged over tasks, and a percentile bootstrap
  over tasks (tasks are the unit that varies, so it is the honest interval when k > 1).
High-resolution mode for early checkpoints whose success is near zero: `samples_per_task` = k > 1
(PassUntil, Hu et al. 2023, samples many times per task instead of once): pass@1 is then measured
in steps of 1/(tasks x k) rather than 1/tasks, and pass@k shows a task solved once in k tries.

Same checkpoint + same eval seed gives the same numbers: every episode samples from its own
generator, seeded by (eval seed, sample, task seed), whatever the batch it runs in (see
eval/policy.py for the float-rounding caveat).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from eval.config import EvalConfig, SuiteConfig
from eval.errors import EvalError
from eval.records import EvalSummary, SuiteSummary
from eval.rollout import Policy, run_episodes, write_jsonl
from eval.stats import wilson_interval
from eval.suites import SUITES, get_suite

BOOTSTRAP_RESAMPLES = 1000
Shard = tuple[int, int]  # (index i, count n): tasks i, i + n, i + 2n, ...


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


def pass_k_values(k: int) -> list[int]:
    """The j of the pass@j curve reported for k samples per task: 1, 2, 4, ..., and k."""
    return sorted({1, k} | {2 ** e for e in range(1, max(k, 1).bit_length()) if 2 ** e <= k})


def bootstrap_interval(per_task: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile 95% interval of the mean of per-task values, resampling tasks."""
    if len(per_task) == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng([seed, len(per_task)])
    means = per_task[rng.integers(len(per_task), size=(resamples, len(per_task)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def summarize(task_samples: dict[str, list[tuple[bool, float]]], k: int, seed: int = 0) -> SuiteSummary:
    """Aggregate per-task samples (success, score) into the summary numbers of one suite."""
    return SuiteSummary.from_dict(_numbers(task_samples, k, seed))


def _numbers(task_samples: dict[str, list[tuple[bool, float]]], k: int, seed: int) -> dict[str, Any]:
    tasks = sorted(task_samples)
    flat = [s for t in tasks for s in task_samples[t]]
    n = len(flat)
    succ = sum(1 for ok, _ in flat if ok)
    scores = [sc for _, sc in flat]
    out: dict[str, Any] = {
        "episodes": n,
        "tasks": len(tasks),
        "samples_per_task": k,
        "success_rate": succ / n if n else 0.0,
        "ci95": list(wilson_interval(succ / n if n else 0.0, n)),
        "mean_score": float(np.mean(scores)) if n else 0.0,
        "mean_score_ci95": list(mean_interval(scores)),
        "per_task": {t: float(np.mean([sc for _, sc in task_samples[t]])) for t in tasks},
        "per_task_success": {t: float(np.mean([ok for ok, _ in task_samples[t]])) for t in tasks},
        "pass_at_k": {},
        "pass_at_k_ci95": {},
    }
    for j in pass_k_values(k):
        # tasks with fewer than j samples (an external suite beside k-sample built-ins) have no pass@j
        values = np.array([pass_at_k(len(s), sum(ok for ok, _ in s), j)
                           for s in (task_samples[t] for t in tasks) if len(s) >= j])
        out["pass_at_k"][str(j)] = float(values.mean()) if len(values) else 0.0
        out["pass_at_k_ci95"][str(j)] = list(bootstrap_interval(values, seed + j))
    return out


# ---- result rows -------------------------------------------------------------------------------
def shard_indices(total: int, shard: Shard | None) -> list[int]:
    i, n = shard or (0, 1)
    return list(range(i, total, n))


def _builtin_rows(sc: SuiteConfig, policy: Policy, eval_cfg: EvalConfig, shard: Shard | None, progress: bool):
    suite = get_suite(sc.name)
    seeds = suite.heldout_seeds(sc.episodes)
    picked = shard_indices(len(seeds), shard)
    rows, trajs = [], []
    for sample in range(sc.samples_per_task):
        got = run_episodes(suite, sc.difficulty, [seeds[i] for i in picked], policy,
                           batch_size=eval_cfg.policy.batch_size, rng_seed=eval_cfg.seed * 1000 + sample,
                           desc=f"eval {suite.name}", progress=progress)
        for i, t in zip(picked, got):
            rows.append({"suite": sc.name, "task_id": t.task_id, "task_index": i, "sample": sample,
                         "success": bool(t.outcome.success), "score": t.score, "steps": t.metadata.get("steps"),
                         "duration_s": t.duration_s})
        trajs += got
    return rows, trajs


def _external_rows(sc: SuiteConfig, checkpoint: str, endpoint: str | None, out_dir: Path, eval_cfg: EvalConfig,
                   shard: Shard | None, policy: Policy, progress: bool = False):
    from eval.external import load_external_suite

    suite = load_external_suite(sc.name)
    if "timeout_s" not in suite.config.model_fields_set:  # the suite file's own time-out wins
        suite.config = suite.config.model_copy(update={"timeout_s": eval_cfg.timeout_s})
    ids = suite.task_ids
    picked = shard_indices(len(ids), shard)
    with _endpoint_for(suite, endpoint, policy) as url:
        results = suite.run(checkpoint=checkpoint, endpoint=url, out_dir=out_dir / suite.name,
                            task_ids=[ids[i] for i in picked], progress=progress)
    return [{"suite": sc.name, "task_index": i, "sample": 0, **r.to_dict()} for i, r in zip(picked, results)]


def _endpoint_for(suite, endpoint: str | None, policy: Policy):
    """The endpoint an external harness acts through: the given one, or, when its command uses
    {endpoint} and none was given, `flywheel serve`'s server on the policy's model for the suite's run."""
    from eval.external import _placeholders

    if endpoint or "endpoint" not in _placeholders(suite.config.command):
        return nullcontext(endpoint)
    if not hasattr(policy, "model"):
        raise EvalError(f"{suite.path}: command uses {{endpoint}}; give --endpoint (policy {policy.name} has no model to serve)")
    from eval.serve import serving

    return serving(policy.model, policy.tokenizer, model_name=policy.name)


def collect_rows(policy: Policy, eval_cfg: EvalConfig, work_dir: Path, checkpoint: str = "",
                 shard: Shard | None = None, progress: bool = True, endpoint: str | None = None):
    """Run every suite of `eval_cfg` (only the shard's tasks); returns (result rows, episodes)."""
    from eval.external import is_external_suite

    rows, episodes = [], []
    for sc in eval_cfg.suites:
        if sc.name in SUITES:
            got, trajs = _builtin_rows(sc, policy, eval_cfg, shard, progress)
            rows += got
            episodes += trajs
        elif is_external_suite(sc.name):
            rows += _external_rows(sc, checkpoint, endpoint, work_dir, eval_cfg, shard, policy, progress)
        else:
            raise EvalError(f"eval.suites: unknown suite {sc.name!r}; built-in: {', '.join(sorted(SUITES))}, "
                            "or a path to an external suite .yaml")
    return rows, episodes


def summarize_rows(rows: list[dict[str, Any]], eval_cfg: EvalConfig, checkpoint: str) -> EvalSummary:
    """The summary of result rows: per suite, and overall (over every task of every suite)."""
    suites: dict[str, SuiteSummary] = {}
    everything: dict[str, list[tuple[bool, float]]] = {}
    for sc in eval_cfg.suites:
        samples: dict[str, list[tuple[bool, float]]] = {}
        mine = [r for r in rows if r["suite"] == sc.name]
        for r in mine:
            samples.setdefault(r["task_id"], []).append((bool(r["success"]), float(r["score"])))
            everything.setdefault(r["task_id"], []).append((bool(r["success"]), float(r["score"])))
        suites[sc.name] = summarize(samples, sc.samples_per_task, eval_cfg.seed)
        if "status" in (mine[0] if mine else {}):
            suites[sc.name].status_counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "timeout", "error")}
    overall = _numbers(everything, max(s.samples_per_task for s in eval_cfg.suites), eval_cfg.seed)
    return EvalSummary.from_dict({**overall, "suites": suites, "checkpoint": checkpoint, "seed": eval_cfg.seed})


def _row_order(eval_cfg: EvalConfig):
    order = {sc.name: k for k, sc in enumerate(eval_cfg.suites)}
    return lambda r: (order[r["suite"]], r["sample"], r["task_index"])


def _write_outputs(folder: Path, rows, episodes, summary: EvalSummary) -> None:
    """results.jsonl, episodes.jsonl (trajectories or already-serialized lines), summary.json last."""
    with open(folder / "results.jsonl.tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    with open(folder / "episodes.jsonl.tmp", "w", encoding="utf-8") as f:
        for e in episodes:
            f.write((e if isinstance(e, str) else json.dumps(e.to_dict(), ensure_ascii=False)) + "\n")
    (folder / f"{EvalSummary.FILE}.tmp").write_text(summary.to_json())
    for name in ("results.jsonl", "episodes.jsonl", EvalSummary.FILE):
        os.replace(folder / f"{name}.tmp", folder / name)


# ---- whole evaluations, shards and their merge -------------------------------------------------
def evaluate(policy: Policy, eval_cfg: EvalConfig, out_dir: Path, checkpoint: str = "",
             progress: bool = True, endpoint: str | None = None) -> EvalSummary:
    """Evaluate `policy` on every suite of `eval_cfg`; write `out_dir` atomically; return the summary."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, episodes = collect_rows(policy, eval_cfg, tmp, checkpoint, None, progress, endpoint)
    summary = summarize_rows(rows, eval_cfg, checkpoint)
    _write_outputs(tmp, rows, episodes, summary)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return summary


def shard_name(shard: Shard) -> str:
    return f"{shard[0]}-of-{shard[1]}"


def evaluate_shard(policy: Policy, eval_cfg: EvalConfig, out_dir: Path, shard: Shard, checkpoint: str = "",
                   progress: bool = True, endpoint: str | None = None) -> Path:
    """Evaluate shard (i, n) of the tasks; writes out_dir/shards/i-of-n.json (+ .episodes.jsonl)."""
    i, n = shard
    if not 0 <= i < n:
        raise EvalError(f"--shard {i}/{n}: need 0 <= I < N")
    folder = Path(out_dir) / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    name = shard_name(shard)
    rows, episodes = collect_rows(policy, eval_cfg, folder / name, checkpoint, shard, progress, endpoint)
    write_jsonl(episodes, folder / f"{name}.episodes.jsonl.tmp")
    os.replace(folder / f"{name}.episodes.jsonl.tmp", folder / f"{name}.episodes.jsonl")
    doc = {"shard": i, "of": n, "checkpoint": checkpoint, "eval": eval_cfg.model_dump(mode="json"), "rows": rows}
    (folder / f"{name}.json.tmp").write_text(json.dumps(doc, sort_keys=True))
    os.replace(folder / f"{name}.json.tmp", folder / f"{name}.json")
    return folder / f"{name}.json"


def missing_shards(out_dir: Path, n: int) -> list[int]:
    return [i for i in range(n) if not (Path(out_dir) / "shards" / f"{shard_name((i, n))}.json").exists()]


def _numbers_config(doc: dict) -> dict:
    """The part of a shard's eval config its numbers depend on (batch size does not change them)."""
    cfg = json.loads(json.dumps(doc["eval"]))
    cfg.get("policy", {}).pop("batch_size", None)
    return cfg


def merge_shards(out_dir: Path, n: int) -> EvalSummary:
    """Merge the n shards in out_dir/shards into out_dir's summary.json, results.jsonl and
    episodes.jsonl: the same files, with the same numbers, as an unsharded evaluation."""
    out_dir = Path(out_dir)
    missing = missing_shards(out_dir, n)
    if missing:
        raise EvalError(f"{out_dir / 'shards'}: cannot merge {n} shards: missing " +
                        ", ".join(f"{shard_name((i, n))}.json" for i in missing))
    docs, pairs = [], []
    for i in range(n):
        path = out_dir / "shards" / f"{shard_name((i, n))}.json"
        try:
            doc = json.loads(path.read_text())
            eval_cfg = EvalConfig.model_validate(doc["eval"])
        except (ValueError, KeyError) as e:
            raise EvalError(f"{path}: not a shard result ({e})") from None
        if docs and (_numbers_config(doc), doc["checkpoint"]) != (_numbers_config(docs[0]), docs[0]["checkpoint"]):
            raise EvalError(f"{path}: evaluated another checkpoint or eval config than shard 0; rerun it")
        docs.append(doc)
        lines = (out_dir / "shards" / f"{shard_name((i, n))}.episodes.jsonl").read_text(encoding="utf-8").splitlines()
        builtin = iter(lines)
        pairs += [(r, next(builtin) if r["suite"] in SUITES else None) for r in doc["rows"]]
    eval_cfg = EvalConfig.model_validate(docs[0]["eval"])
    pairs.sort(key=lambda p: _row_order(eval_cfg)(p[0]))
    rows = [r for r, _ in pairs]
    summary = summarize_rows(rows, eval_cfg, docs[0]["checkpoint"])
    _write_outputs(out_dir, rows, [e for _, e in pairs if e is not None], summary)
    return summary
