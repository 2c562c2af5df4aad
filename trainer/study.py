"""`flywheel study RECIPE`: the experience study. Does the agent improve because it accumulates and
reuses experience, or would repeated sampling of the base policy do as well?

Arms (one normal run directory each, RUN_DIR/arms/<arm>-seed<k>/, run by `trainer.loop.run_experiment`
from the study recipe plus the arm's overrides, so `flywheel curve` / `flywheel compare` work on them):
  accumulate  every round trains on all experience so far (replay 1), continuing the adapter
  latest      every round trains only on the newest round's experience (replay 0), continuing the adapter
  reset       every round trains from the base on all experience so far (replay 1, adapter reset)
  retry       no training (`train.update_weights=false`): the base policy spends the same budget

The fair comparison. Every arm gets the same interaction budget per round on the SAME training tasks
(`collect.hours_per_round`: episodes run in seed order until the budget is spent), so after round r
every arm has consumed r x budget hours (checked within `study.budget_tolerance`, 5%). The learning
arms are scored on the held-out suite with one attempt per task (pass@1). The retry arm never learns;
its score after round r is best-of-k on the held-out tasks, k = 1 + round(T_r / T_eval), where T_r is
the interaction it has consumed and T_eval the hours of one base-policy pass over the held-out suite:
the attempts that the same interaction time buys. Best-of-k picks the success with an oracle
verifier, and the retry arm ALSO spends T_r on training tasks, so the control is generous; an arm
that beats it cannot owe its gain to repeated sampling. Best-of-k is the unbiased estimate from n =
max k samples per task (Chen et al. 2021, generalised to the expected best score of k samples).

Forgetting: every checkpoint is re-evaluated (pass@1, fresh sampling) on the earliest training tasks:
the first `study.forgetting_episodes` tasks of round 1, which every learning arm trained on in round 1
(its successes). `latest` drops them from its data after round 1; `accumulate` replays them.

Seeds (`study.seeds`): seed k sets the recipe seed (collection sampling, data order, LoRA init) and
eval.seed + k (held-out sampling); the held-out tasks and the base model are the same for every run.

Outputs: RUN_DIR/study/report.md, study.png (seed mean, range and per-seed points per arm; forgetting),
study.json (every number), curve/ (the fitted curves of all arms, ScaleRL-style arm comparison).
Locally the arms run in sequence and a rerun skips finished rounds; `--slurm` submits each arm's
job chain through `flywheel submit`, and `--report-only` writes the report once they are done.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import UserError
from trainer.config import ArmConfig
from trainer.model_check import require_loadable
from trainer.recipe import Recipe, load_recipe
from trainer.rundir import RunDir, atomic_write_json, atomic_write_text

# What each arm kind changes in the study recipe (applied after the user's overrides).
KIND_OVERRIDES = {
    "accumulate": ["data.replay_ratio=1", "train.adapter=continue", "train.update_weights=true"],
    "latest": ["data.replay_ratio=0", "train.adapter=continue", "train.update_weights=true"],
    "reset": ["data.replay_ratio=1", "train.adapter=reset", "train.update_weights=true"],
    "retry": ["train.update_weights=false"],
}
Z95 = 1.959963984540054


# ---- arms -----------------------------------------------------------------------------------------
def arm_label(arm: ArmConfig, seed: int) -> str:
    return f"{arm.name}-seed{seed}"


def arm_dir(study: Recipe, arm: ArmConfig, seed: int) -> Path:
    return study.run_path() / "arms" / arm_label(arm, seed)


def arm_overrides(study: Recipe, arm: ArmConfig, seed: int) -> list[str]:
    """The overrides that turn the study recipe into one arm's recipe (after the user's own)."""
    return [*KIND_OVERRIDES[arm.kind], *arm.overrides, f"seed={seed}", f"eval.seed={study.eval.seed + seed}",
            f"experiment={study.experiment}-{arm_label(arm, seed)}", f"run_dir={arm_dir(study, arm, seed)}"]


def check_study(study: Recipe, source: str) -> None:
    if not study.study.arms:
        raise UserError(f"{source}: key 'study.arms' is empty; list the arms, e.g. - {{name: accumulate, kind: accumulate}}")
    if study.collect.hours_per_round is None:
        raise UserError(f"{source}: key 'collect.hours_per_round' is not set; the study needs it so that every "
                        "arm gets the same interaction budget per round (e.g. collect.hours_per_round=16)")
    if study.train.rounds < 1:
        raise UserError(f"{source}: key 'train.rounds' must be at least 1 for a study")
    if any(a.kind == "retry" for a in study.study.arms):
        from eval.suites import SUITES

        external = [s.name for s in study.eval.suites if s.name not in SUITES]
        if external:
            raise UserError(f"{source}: key 'eval.suites': the retry arm needs built-in suites for its best-of-k "
                            f"attempts; external: {', '.join(external)}")


def select(study: Recipe, arms: str | None, seeds: str | None) -> tuple[list[ArmConfig], list[int]]:
    chosen = study.study.arms
    if arms:
        names = [a.strip() for a in arms.split(",") if a.strip()]
        known = {a.name: a for a in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"--arms: unknown arm(s) {', '.join(unknown)}; the recipe has {', '.join(known)}")
        chosen = [known[n] for n in names]
    seed_list = study.study.seeds
    if seeds:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seeds: {seeds!r} is not a comma-separated list of integers") from None
    return chosen, seed_list


def arm_finished(recipe: Recipe) -> bool:
    run = RunDir(recipe.run_path())
    rounds = range(recipe.train.rounds + 1)
    return all(run.manifest(r) is not None and run.eval_summary(r) is not None for r in rounds)


def run_arm(recipe: Recipe, progress: bool) -> float:
    """Run (or resume) one arm through the ordinary loop; returns the seconds it took now."""
    from trainer.loop import run_experiment

    t0 = time.time()
    if not arm_finished(recipe):
        run_experiment(recipe, progress=progress)
    return time.time() - t0


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
    from eval.policy import HFPolicy, load_checkpoint
    from trainer.round import checkpoint_paths, load_options

    base, adapter = checkpoint_paths(run, run.manifest(r))
    model, tokenizer = load_checkpoint(base, adapter, load_options(recipe))
    return HFPolicy(model, tokenizer, temperature=pc.temperature, constrained=pc.constrained,
                    max_new_tokens=pc.max_new_tokens, name=f"{recipe.experiment}/round-{r:04d}/{what}")


def retry_scores(recipe: Recipe, progress: bool = True) -> dict[str, Any]:
    """Best-of-k held-out scores of the retry arm after every round (study/retry.json)."""
    run = RunDir(recipe.run_path())
    rows0 = _results(run.round_dir(0) / "eval" / "results.jsonl")
    samples0 = max(sc.samples_per_task for sc in recipe.eval.suites)
    eval_pass_hours = sum(float(r.get("duration_s") or 0.0) for r in rows0) / samples0 / 3600.0
    rounds = [run.manifest(r) for r in range(recipe.train.rounds + 1)]
    ks = [retry_k(m["cumulative_interaction_hours"], eval_pass_hours) for m in rounds]
    per_task = heldout_samples(recipe, run, max(ks), progress)
    out = {"eval_pass_hours": eval_pass_hours, "samples_per_task": max(ks), "rounds": []}
    for m, k in zip(rounds, ks):
        success = {t: expected_best_of_k([float(x["success"]) for x in v], k) for t, v in sorted(per_task.items())}
        score = {t: expected_best_of_k([float(x["score"]) for x in v], k) for t, v in sorted(per_task.items())}
        out["rounds"].append({"round": m["round"], "hours": m["cumulative_interaction_hours"], "k": k,
                              "success_rate": float(np.mean(list(success.values()))),
                              "mean_score": float(np.mean(list(score.values()))), "tasks": len(success),
                              "per_task_success": success, "per_task": score})
    atomic_write_json(run.root / "study" / "retry.json", out)
    return out


# ---- forgetting: the earliest training tasks ---------------------------------------------------------
def earliest_tasks(recipe: Recipe, run: RunDir) -> list[tuple[Any, int, list[int]]]:
    """(suite config, difficulty, seeds) of the first `study.forgetting_episodes` tasks of round 1
    per collect suite, limited to the tasks round 1 actually attempted."""
    attempted: dict[str, list[int]] = {}
    for line in (run.experience / "round-0001.jsonl").read_text().splitlines():
        t = json.loads(line)
        attempted.setdefault(t["suite"], []).append(int(t["metadata"]["seed"]))
    out = []
    for sc in recipe.collect.suites:
        seeds = sorted(attempted.get(sc.name, []))[:recipe.study.forgetting_episodes]
        if seeds:
            out.append((sc, sc.difficulty, seeds))
    return out


def forgetting_scores(recipe: Recipe, progress: bool = True) -> list[dict] | None:
    """Success on the earliest training tasks after every round (pass@1, one seeded sampling
    stream per task, the same for every round); cached per round in study/forgetting/."""
    run = RunDir(recipe.run_path())
    if recipe.study.forgetting_episodes <= 0 or not (run.experience / "round-0001.jsonl").exists():
        return None
    tasks = earliest_tasks(recipe, run)
    by_checkpoint: dict[str, dict] = {}
    out = []
    for r in range(recipe.train.rounds + 1):
        path = run.root / "study" / "forgetting" / f"round-{r:04d}.json"
        key = _checkpoint_key(run, r)
        if path.exists():
            summary = json.loads(path.read_text())
        elif key in by_checkpoint:  # the same weights as an earlier round (retry, or nothing learnt)
            summary = {**by_checkpoint[key], "round": r}
            atomic_write_json(path, summary)
        else:
            summary = _evaluate_on(recipe, run, r, tasks, progress)
            atomic_write_json(path, summary)
        by_checkpoint.setdefault(key, summary)
        out.append(summary)
    return out


def _checkpoint_key(run: RunDir, r: int) -> str:
    m = run.manifest(r)
    if not m.get("adapter"):
        return "base"
    return json.dumps({k: v for k, v in m.get("checksums", {}).items() if k.startswith("adapter/")}, sort_keys=True)


def _evaluate_on(recipe: Recipe, run: RunDir, r: int, tasks, progress: bool) -> dict:
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
    return {"round": r, "success_rate": s["success_rate"], "ci95": s["ci95"], "episodes": s["episodes"],
            "per_task_success": s["per_task_success"]}


# ---- statistics ---------------------------------------------------------------------------------------
def wilson(p: float, n: int) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(max(p * (1 - p), 0.0) / n + Z95 ** 2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_of_proportions(p1: float, n1: int, p2: float, n2: int) -> dict[str, float]:
    """p1 - p2 with Newcombe's hybrid score 95% interval (method 10: from the two Wilson intervals).
    A proportion may be a mean of per-task values in [0, 1] (best-of-k): their variance is at most
    p(1 - p), so the interval is then conservative."""
    l1, u1 = wilson(p1, n1)
    l2, u2 = wilson(p2, n2)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"difference": d, "ci95": [lo, hi], "p1": p1, "n1": n1, "p2": p2, "n2": n2}


def budget_check(hours: dict[str, list[float]], tolerance: float) -> list[dict]:
    """Per round: every run's cumulative interaction hours against the median of all runs."""
    rows = []
    for r in range(min(len(v) for v in hours.values())):
        values = {name: v[r] for name, v in hours.items()}
        med = float(np.median(list(values.values())))
        worst = max(abs(h - med) / med for h in values.values()) if med > 0 else 0.0
        rows.append({"round": r, "median_hours": med, "min_hours": min(values.values()),
                     "max_hours": max(values.values()), "max_relative_deviation": worst,
                     "within_tolerance": worst <= tolerance})
    return rows


# ---- gathering the arms' numbers ---------------------------------------------------------------------------
def gather(study: Recipe, arms: list[ArmConfig], seeds: list[int], overrides: list[str], study_path: str,
           progress: bool) -> dict[str, Any]:
    """Per arm and seed: hours, held-out success (pass@1, or best-of-k for retry) and forgetting per
    round, with per-task values; runs the retry attempts and forgetting evaluations not done yet."""
    data: dict[str, Any] = {}
    for arm in arms:
        for seed in seeds:
            recipe = load_recipe(study_path, [*overrides, *arm_overrides(study, arm, seed)])
            if not arm_finished(recipe):
                continue
            data.setdefault(arm.name, {})[seed] = _arm_numbers(recipe, arm, progress)
    return data


def _arm_numbers(recipe: Recipe, arm: ArmConfig, progress: bool) -> dict[str, Any]:
    run = RunDir(recipe.run_path())
    rounds = []
    for r in range(recipe.train.rounds + 1):
        m, s = run.manifest(r), run.eval_summary(r)
        rounds.append({"round": r, "hours": m["cumulative_interaction_hours"], "adapter": m.get("adapter"),
                       "success_rate": s["success_rate"], "mean_score": s["mean_score"], "episodes": s["episodes"],
                       "per_task_success": s.get("per_task_success", {}), "per_task": s.get("per_task", {}),
                       "ci95": s["ci95"], "k": 1})
    if arm.kind == "retry":
        for row, best in zip(rounds, retry_scores(recipe, progress)["rounds"]):
            row.update({k: best[k] for k in ("success_rate", "mean_score", "per_task_success", "per_task", "k")})
            row["episodes"] = best["tasks"]
            row["ci95"] = list(wilson(best["success_rate"], best["tasks"]))
    return {"run_dir": str(run.root), "kind": arm.kind, "rounds": rounds,
            "forgetting": forgetting_scores(recipe, progress)}


def curve_points(data: dict[str, Any], metric: str) -> dict[str, list]:
    from eval.curve import CurvePoint

    task_key = "per_task_success" if metric == "success_rate" else "per_task"
    out: dict[str, list] = {}
    for arm, by_seed in data.items():
        for seed, numbers in sorted(by_seed.items()):
            for row in numbers["rounds"]:
                lo, hi = row["ci95"] if metric == "success_rate" else (None, None)
                out.setdefault(arm, []).append(CurvePoint(
                    x=row["hours"], score=row[metric], n=row["episodes"], lo=lo, hi=hi,
                    task_scores=dict(row[task_key]) or None, label=f"seed{seed} round-{row['round']}", arm=arm))
    return out


# ---- the report ------------------------------------------------------------------------------------------------
def final_comparison(data: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """Held-out success of arm a minus arm b at the final round, pooled over their seeds, with the
    per-seed differences."""
    if a not in data or b not in data:
        return None

    def pooled(arm: str) -> tuple[float, int, float]:
        finals = [numbers["rounds"][-1] for numbers in data[arm].values()]
        n = sum(f["episodes"] for f in finals)
        p = sum(f["success_rate"] * f["episodes"] for f in finals) / n
        return p, n, float(np.mean([f["hours"] for f in finals]))

    pa, na, ha = pooled(a)
    pb, nb, hb = pooled(b)
    out = difference_of_proportions(pa, na, pb, nb)
    out.update({"arms": [a, b], "hours": [ha, hb]})
    shared = sorted(set(data[a]) & set(data[b]))
    out["per_seed"] = {str(s): difference_of_proportions(
        data[a][s]["rounds"][-1]["success_rate"], data[a][s]["rounds"][-1]["episodes"],
        data[b][s]["rounds"][-1]["success_rate"], data[b][s]["rounds"][-1]["episodes"]) for s in shared}
    lo, hi = out["ci95"]
    out["verdict"] = "wins" if lo > 0 else "loses" if hi < 0 else "no_detectable_difference"
    return out


def verdict_text(c: dict[str, Any]) -> str:
    a, b = c["arms"]
    lo, hi = c["ci95"]
    nums = (f"{a} {100 * c['p1']:.1f}% ({c['n1']} episodes) vs {b} {100 * c['p2']:.1f}% ({c['n2']}); "
            f"difference {100 * c['difference']:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    signs = [v["difference"] for v in c["per_seed"].values()]
    seeds = (f"; per seed: {', '.join(f'{100 * d:+.1f}' for d in signs)} points "
             f"({sum(d > 0 for d in signs)} of {len(signs)} seeds favour {a})") if signs else ""
    if c["verdict"] == "wins":
        head = f"**{a} beats {b}** on held-out success at the final interaction budget"
    elif c["verdict"] == "loses":
        head = f"**{a} loses to {b}** on held-out success at the final interaction budget"
    else:
        head = f"**no detectable difference** between {a} and {b} on held-out success at the final interaction budget"
    return f"{head}: {nums}{seeds}."


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def seed_table(data: dict[str, Any], key: str = "rounds") -> list[str]:
    """Per arm and round: mean over seeds, [min, max], and every seed's value."""
    lines = ["| arm | round | interaction h (mean) | held-out success: mean [min, max] | per seed |", "|---|---|---|---|---|"]
    for arm, by_seed in data.items():
        n_rounds = min(len(v["rounds"]) for v in by_seed.values())
        for r in range(n_rounds):
            vals = {s: v["rounds"][r] for s, v in sorted(by_seed.items())}
            scores = [row["success_rate"] for row in vals.values()]
            hours = np.mean([row["hours"] for row in vals.values()])
            k = vals[next(iter(vals))]["k"]
            label = f"{arm} (best-of-{k})" if k > 1 else arm
            per = ", ".join(f"s{s}: {_pct(row['success_rate'])}" for s, row in vals.items())
            lines.append(f"| {label} | {r} | {hours:.1f} | {_pct(np.mean(scores))} [{_pct(min(scores))}, "
                         f"{_pct(max(scores))}] | {per} |")
    return lines


def forgetting_table(data: dict[str, Any]) -> list[str]:
    lines = ["| arm | " + " | ".join(f"round {r}" for r in range(_max_rounds(data))) + " | drop from best to final |",
             "|---|" + "---|" * (_max_rounds(data) + 1)]
    for arm, by_seed in data.items():
        runs = [v["forgetting"] for v in by_seed.values() if v["forgetting"]]
        if not runs:
            continue
        n = min(len(f) for f in runs)
        means = [float(np.mean([f[r]["success_rate"] for f in runs])) for r in range(n)]
        cells = [f"{_pct(m)} [{_pct(min(f[r]['success_rate'] for f in runs))}, "
                 f"{_pct(max(f[r]['success_rate'] for f in runs))}]" for r, m in enumerate(means)]
        drop = max(means[1:] or means) - means[-1]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {100 * drop:.1f} points |")
    return lines


def _max_rounds(data: dict[str, Any]) -> int:
    return max(len(v["rounds"]) for by_seed in data.values() for v in by_seed.values())


def budget_lines(check: list[dict], tolerance: float) -> list[str]:
    lines = ["| round | median h | min h | max h | max deviation | within tolerance |", "|---|---|---|---|---|---|"]
    for row in check:
        lines.append(f"| {row['round']} | {row['median_hours']:.2f} | {row['min_hours']:.2f} | {row['max_hours']:.2f} | "
                     f"{100 * row['max_relative_deviation']:.1f}% | {'yes' if row['within_tolerance'] else '**NO**'} |")
    ok = all(r["within_tolerance"] for r in check)
    lines.append("")
    lines.append(f"Every run consumed the same interaction budget within {100 * tolerance:g}% in every round."
                 if ok else f"**Budget check failed**: some run's interaction hours differ by more than "
                 f"{100 * tolerance:g}% from the median (raise `collect.suites[].episodes` so the budget is spent).")
    return lines


def plot_study(data: dict[str, Any], path: Path, title: str) -> None:
    """Left: held-out success against interaction hours (seed mean line, min-max band, per-seed
    points). Right: success on the earliest training tasks after each round."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (arm, by_seed) in enumerate(data.items()):
        color = f"C{i % 10}"
        n = min(len(v["rounds"]) for v in by_seed.values())
        grid = np.array([[v["rounds"][r]["success_rate"] for r in range(n)] for v in by_seed.values()])
        hours = np.array([[v["rounds"][r]["hours"] for r in range(n)] for v in by_seed.values()]).mean(0)
        ax.plot(hours, grid.mean(0), "-", color=color, lw=2, label=f"{arm} (mean of {len(by_seed)} seeds)")
        ax.fill_between(hours, grid.min(0), grid.max(0), color=color, alpha=0.15, lw=0)
        for v in by_seed.values():
            ax.plot([row["hours"] for row in v["rounds"]], [row["success_rate"] for row in v["rounds"]], "o",
                    color=color, ms=3, alpha=0.6)
        runs = [v["forgetting"] for v in by_seed.values() if v["forgetting"]]
        if runs:
            m = min(len(f) for f in runs)
            fg = np.array([[f[r]["success_rate"] for r in range(m)] for f in runs])
            ax2.plot(range(m), fg.mean(0), "-o", color=color, lw=2, ms=3, label=arm)
            ax2.fill_between(range(m), fg.min(0), fg.max(0), color=color, alpha=0.15, lw=0)
    ax.set_xlabel("cumulative interaction hours")
    ax.set_ylabel("held-out success (retry: best-of-k)")
    ax.set_title(title)
    ax2.set_xlabel("round")
    ax2.set_ylabel("success on round 1's training tasks")
    ax2.set_title("forgetting: the earliest tasks")
    for a in (ax, ax2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_study_report(study: Recipe, data: dict[str, Any], timings: dict[str, float], missing: list[str]) -> Path:
    from eval.curve_report import write_curve_outputs

    out = study.run_path() / "study"
    out.mkdir(parents=True, exist_ok=True)
    tol = study.study.budget_tolerance
    check = budget_check({f"{arm}-seed{s}": [r["hours"] for r in v["rounds"]]
                          for arm, by_seed in data.items() for s, v in by_seed.items()}, tol)
    curve = write_curve_outputs(curve_points(data, study.curve.metric), out / "curve", study.curve,
                                title=f"{study.experiment}: held-out {study.curve.metric} by arm",
                                image_link="curve/curve.png")
    plot_study(data, out / "study.png", f"{study.experiment}: held-out success by arm")
    kinds = {a.name: a.kind for a in study.study.arms}
    acc = next((n for n in data if kinds.get(n) == "accumulate"), None)
    retry = next((n for n in data if kinds.get(n) == "retry"), None)
    headline = final_comparison(data, acc, retry) if acc and retry else None
    others = [final_comparison(data, n, retry) for n in data if retry and n not in (acc, retry)]
    others += [final_comparison(data, acc, n) for n in data if acc and n not in (acc, retry)]
    lines = [f"# Experience study: {study.experiment}", ""]
    lines += ["## Verdict", ""]
    lines.append(verdict_text(headline) if headline else
                 "Accumulate vs retry: not available (both arms must have finished; missing: "
                 f"{', '.join(missing) or 'an accumulate or retry arm in study.arms'}).")
    lines += [""] + [f"- {verdict_text(c)}" for c in others if c]
    lines += ["", "Intervals: Newcombe's 95% interval of a difference of two proportions, episodes pooled over seeds "
              "(it covers episode sampling; the seed spread below shows run-to-run variation).", ""]
    lines += _design_lines(study, data)
    lines += ["", "## Interaction budget per round", ""] + budget_lines(check, tol)
    lines += ["", "## Held-out success per round and seed", "", "![study](study.png)", ""] + seed_table(data)
    lines += ["", "## Forgetting: success on the earliest training tasks", "",
              f"Each checkpoint re-evaluated (pass@1) on the first {study.study.forgetting_episodes} training tasks "
              "of round 1; mean over seeds [min, max].", ""] + forgetting_table(data)
    lines += ["", curve.get("markdown", "").replace("## Improvement curve", "## Fitted curves of all arms")]
    if not curve.get("comparisons"):
        # say why there is no curve comparison instead of leaving the section out silently
        reasons = sorted({str(rec.get("fit", {}).get("reason")) for rec in curve.get("arms", {}).values()
                          if rec.get("fit", {}).get("status") != "ok"})
        lines += ["", "**Comparison of arms** (ScaleRL-style): not possible: fewer than two arms have a fitted "
                  f"curve ({'; '.join(reasons) or 'no fits'}). The verdict above compares final held-out success."]
    lines += _run_lines(study, data, timings, missing)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_json(out / "study.json", {"budget_check": check, "headline": headline,
                                           "comparisons": [c for c in others if c], "timings_s": timings,
                                           "missing": missing, "arms": _strip_tasks(data)})
    return report


def _design_lines(study: Recipe, data: dict[str, Any]) -> list[str]:
    kinds = {a.name: a.kind for a in study.study.arms}
    retry = next((n for n in data if kinds.get(n) == "retry"), None)
    ks = ""
    if retry:
        any_seed = next(iter(data[retry].values()))
        ks = f" (here k = {', '.join(str(r['k']) for r in any_seed['rounds'])} for rounds 0..{len(any_seed['rounds']) - 1})"
    return ["## Design", "",
            f"Same base policy, same training tasks (seed order), {study.collect.hours_per_round:g} interaction hours "
            f"per round, {study.train.rounds} rounds, {max(len(v) for v in data.values())} seed(s) per arm.",
            "- accumulate: each round trains on all experience so far, continuing the adapter",
            "- latest: each round trains on the newest round's experience only, continuing the adapter",
            "- reset: each round trains from the base on all experience so far",
            "- retry: no training; it spends the same budget on training tasks and is scored by best-of-k on the "
            "held-out tasks, k = 1 + round(interaction hours so far / hours of one base pass over the held-out "
            f"suite){ks}: the attempts the same interaction time buys, picked by an oracle. A generous control.",
            "Learning arms are scored with one attempt per held-out task. Retry's best-of-k is estimated from all "
            "n = max k samples per task (unbiased), so its round-0 value averages n attempts where the other arms' "
            "round 0 is one evaluation of the same base policy."]


def _run_lines(study: Recipe, data: dict[str, Any], timings: dict[str, float], missing: list[str]) -> list[str]:
    lines = ["", "## Runs", "", "| run | directory | wall time (s) |", "|---|---|---|"]
    for arm, by_seed in data.items():
        for s, v in sorted(by_seed.items()):
            label = f"{arm}-seed{s}"
            lines.append(f"| {label} | `{v['run_dir']}` | {timings.get(label, 0.0):.0f} |")
    if missing:
        lines += ["", f"Not finished (left out): {', '.join(missing)}"]
    lines += ["", f"Total wall time of the arms: {sum(timings.values()):.0f} s. Each run directory works with "
              "`flywheel curve` and `flywheel compare`."]
    return lines


def _strip_tasks(data: dict[str, Any]) -> dict[str, Any]:
    drop = ("per_task_success", "per_task")
    out: dict[str, Any] = {}
    for arm, by_seed in data.items():
        out[arm] = {}
        for s, v in by_seed.items():
            rounds = [{k: x for k, x in row.items() if k not in drop} for row in v["rounds"]]
            forgetting = [{k: x for k, x in row.items() if k not in drop} for row in (v["forgetting"] or [])]
            out[arm][str(s)] = {**v, "rounds": rounds, "forgetting": forgetting}
    return out


# ---- the command -----------------------------------------------------------------------------------------------
def _timings(study: Recipe) -> dict[str, float]:
    p = study.run_path() / "study" / "timings.json"
    return json.loads(p.read_text()) if p.exists() else {}


def submit_arms(study_path: str, overrides: list[str], study: Recipe, arms, seeds, dry_run: bool) -> int:
    try:
        from trainer.submit import submit
    except ImportError as e:
        raise UserError(f"--slurm needs `flywheel submit` (trainer/submit.py), which is not available here ({e}); "
                        "run the study locally without --slurm") from None
    for seed in seeds:
        for arm in arms:
            print(f"== {arm_label(arm, seed)}: flywheel submit", flush=True)
            submit(study_path, [*overrides, *arm_overrides(study, arm, seed)], dry_run=dry_run)
    print(f"when the jobs are done: flywheel study {study_path} {' '.join(overrides)} --report-only")
    return 0


def run_study(study_path: str, overrides: list[str], arms_arg: str | None = None, seeds_arg: str | None = None,
              progress: bool = True, report_only: bool = False) -> Path:
    """Run (or resume) every selected arm x seed locally, then write the study report."""
    study = load_recipe(study_path, overrides)
    check_study(study, study_path)
    if not report_only:
        require_loadable(study)  # before any arm starts (each arm's run checks its own model again)
    arms, seeds = select(study, arms_arg, seeds_arg)
    timings = _timings(study)
    missing = []
    for seed in seeds:
        for arm in arms:
            recipe = load_recipe(study_path, [*overrides, *arm_overrides(study, arm, seed)])
            label = arm_label(arm, seed)
            if report_only:
                if not arm_finished(recipe):
                    missing.append(label)
                continue
            print(f"== {label} ({arm.kind}) -> {recipe.run_path()}", flush=True)
            timings[label] = timings.get(label, 0.0) + run_arm(recipe, progress)
            atomic_write_json(study.run_path() / "study" / "timings.json", timings)
    data = gather(study, arms, seeds, overrides, study_path, progress)
    if not data:
        raise UserError(f"no finished arm under {study.run_path() / 'arms'} to report on; run the study first")
    return write_study_report(study, data, timings, missing)


def submit_study(study_path: str, overrides: list[str], arms_arg: str | None = None, seeds_arg: str | None = None,
                 dry_run: bool = False) -> int:
    """`flywheel study --slurm`: submit each selected arm x seed's job chain with `flywheel submit`."""
    study = load_recipe(study_path, overrides)
    check_study(study, study_path)
    arms, seeds = select(study, arms_arg, seeds_arg)
    return submit_arms(study_path, overrides, study, arms, seeds, dry_run)
