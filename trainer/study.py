"""`flywheel study RECIPE`: the experience study. Does the agent improve because it accumulates and
reuses experience, or would repeated sampling of the base policy do as well?

Arms (one normal run directory each, RUN_DIR/arms/<arm>-seed<k>/, run by `trainer.loop.run_experiment`
from the study recipe plus the arm's overrides, so `flywheel curve` / `flywheel compare` work on them):
  accumulate  every round trains on all experience so far (replay 1), continuing the adapter
  latest      every round trains only on the newest round's experience (replay 0), continuing the adapter
  reset       every round trains from the base on all experience so far (replay 1, adapter reset)
  retry       no training (`train.update_weights=false`): the base policy spends the same budget
  memory      no training either (gradient-free): the base policy with the k most similar episodes the
              arm collected so far in its prompt (eval/memory.py), in collection and evaluation alike
  accumulate+memory  accumulate's gradient rounds and memory's retrieval together
Any arm may add overrides, e.g. a curriculum arm: {name: curriculum, kind: accumulate,
overrides: [collect.curriculum=adaptive]} (compared with the fixed-mix arm of its kind).

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

Modules: this one runs the arms and gathers their results; trainer/study_controls.py holds the
study's records (`ArmResult`, best-of-k, forgetting) and measures the retry arm's best-of-k and the
forgetting check; trainer/study_report.py holds the
statistics and writes the report.

Outputs: RUN_DIR/study/report.md, study.png (seed mean, range and per-seed points per arm; forgetting),
study.json (every number), curve/ (the fitted curves of all arms, ScaleRL-style arm comparison).
Locally the arms run in sequence, or `--jobs N` at a time (each in its own process with its share of
the CPU threads, its output in RUN_DIR/arms/<arm>-seed<k>.log: a small model uses one core well and
two poorly, so two runs side by side on two cores take about half the time); a rerun skips finished
rounds. `--slurm` submits each arm's job chain through `flywheel submit`, and `--report-only` writes
the report once they are done.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from eval.stats import Z95, wilson_interval
from trainer.errors import UserError
from trainer.config import ArmConfig
from trainer.model_check import require_loadable
from trainer.recipe import Recipe, load_recipe
from trainer.rundir import RunDir, atomic_write_json
from trainer.study_controls import ArmResult, ArmRound, arm_cost, forgetting_scores, retry_scores

# What each arm kind changes in the study recipe (applied after the user's overrides).
KIND_OVERRIDES = {
    "accumulate": ["data.replay_ratio=1", "train.adapter=continue", "train.update_weights=true", "memory.enabled=false"],
    "latest": ["data.replay_ratio=0", "train.adapter=continue", "train.update_weights=true", "memory.enabled=false"],
    "reset": ["data.replay_ratio=1", "train.adapter=reset", "train.update_weights=true", "memory.enabled=false"],
    "retry": ["train.update_weights=false", "memory.enabled=false"],
    "memory": ["train.update_weights=false", "memory.enabled=true"],
    "accumulate+memory": ["data.replay_ratio=1", "train.adapter=continue", "train.update_weights=true",
                          "memory.enabled=true"],
}

# Arms are compared as trained: no promotion gate, so every round trains on the previous one, and a
# noisy rejection cannot give one arm another lineage than its kind says (an arm's own overrides may
# turn it back on).
NO_GATE = ["promote.enabled=false"]


# ---- arms -----------------------------------------------------------------------------------------
def arm_label(arm: ArmConfig, seed: int) -> str:
    return f"{arm.name}-seed{seed}"


def arm_dir(study: Recipe, arm: ArmConfig, seed: int) -> Path:
    return study.run_path() / "arms" / arm_label(arm, seed)


def arm_overrides(study: Recipe, arm: ArmConfig, seed: int) -> list[str]:
    """The overrides that turn the study recipe into one arm's recipe (after the user's own)."""
    return [*KIND_OVERRIDES[arm.kind], *NO_GATE, *arm.overrides, f"seed={seed}", f"eval.seed={study.eval.seed + seed}",
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


# ---- gathering the arms' numbers ---------------------------------------------------------------------------
def gather(study: Recipe, arms: list[ArmConfig], seeds: list[int], overrides: list[str], study_path: str,
           progress: bool) -> dict[str, dict[int, ArmResult]]:
    """Per arm and seed: hours, held-out success (pass@1, or best-of-k for retry) and forgetting per
    round, with per-task values; runs the retry attempts and forgetting evaluations not done yet."""
    data: dict[str, dict[int, ArmResult]] = {}
    for arm in arms:
        for seed in seeds:
            recipe = load_recipe(study_path, [*overrides, *arm_overrides(study, arm, seed)])
            if not arm_finished(recipe):
                continue
            data.setdefault(arm.name, {})[seed] = _arm_numbers(recipe, arm, progress)
    return data


def _arm_numbers(recipe: Recipe, arm: ArmConfig, progress: bool) -> ArmResult:
    run = RunDir(recipe.run_path())
    rounds = []
    for r in range(recipe.train.rounds + 1):
        m, s = run.manifest(r), run.eval_summary(r)
        rounds.append(ArmRound(round=r, hours=m.cumulative_interaction_hours, adapter=m.adapter,
                               success_rate=s.success_rate, mean_score=s.mean_score, episodes=s.episodes,
                               per_task_success=s.per_task_success if s.per_task_success is not None else {},
                               per_task=s.per_task if s.per_task is not None else {}, ci95=s.ci95, k=1))
    if arm.kind == "retry":
        for i, best in enumerate(retry_scores(recipe, progress).rounds):
            rounds[i] = dataclasses.replace(
                rounds[i], success_rate=best.success_rate, mean_score=best.mean_score,
                per_task_success=best.per_task_success, per_task=best.per_task, k=best.k, episodes=best.tasks,
                ci95=list(wilson_interval(best.success_rate, best.tasks, Z95)))
    return ArmResult(run_dir=str(run.root), kind=arm.kind, rounds=rounds, forgetting=forgetting_scores(recipe, progress),
                     cost=arm_cost(run, recipe.train.rounds))


# ---- the command -----------------------------------------------------------------------------------------------
def _timings(study: Recipe) -> dict[str, float]:
    p = study.run_path() / "study" / "timings.json"
    return json.loads(p.read_text()) if p.exists() else {}


def submit_arms(study_path: str, overrides: list[str], study: Recipe, arms, seeds, dry_run: bool) -> int:
    """`flywheel study --slurm`: each arm x seed's job chain, submitted as `flywheel submit` does."""
    from trainer.submit import submit

    for seed in seeds:
        for arm in arms:
            print(f"== {arm_label(arm, seed)}: flywheel submit", flush=True)
            submit(study_path, [*overrides, *arm_overrides(study, arm, seed)], dry_run=dry_run)
    print(f"when the jobs are done: flywheel study {study_path} {' '.join(overrides)} --report-only")
    return 0


def run_study(study_path: str, overrides: list[str], arms_arg: str | None = None, seeds_arg: str | None = None,
              progress: bool = True, report_only: bool = False, jobs: int = 1) -> Path:
    """Run (or resume) every selected arm x seed locally (`jobs` at a time), then write the study report."""
    study = load_recipe(study_path, overrides)
    check_study(study, study_path)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: at least 1")
    if not report_only:
        require_loadable(study)  # before any arm starts (each arm's run checks its own model again)
    arms, seeds = select(study, arms_arg, seeds_arg)
    timings = _timings(study)
    missing = []
    todo: list[tuple[str, ArmConfig, list[str]]] = []
    for seed in seeds:
        for arm in arms:
            arm_args = [*overrides, *arm_overrides(study, arm, seed)]
            recipe = load_recipe(study_path, arm_args)
            label = arm_label(arm, seed)
            if report_only:
                if not arm_finished(recipe):
                    missing.append(label)
                continue
            if jobs > 1:
                if not arm_finished(recipe):  # a finished one's controls are measured by gather() if missing
                    todo.append((label, arm, arm_args))
                continue
            print(f"== {label} ({arm.kind}) -> {recipe.run_path()}", flush=True)
            timings[label] = timings.get(label, 0.0) + run_arm(recipe, progress)
            atomic_write_json(study.run_path() / "study" / "timings.json", timings)
    if todo:
        run_in_parallel(study, study_path, todo, jobs, timings)
    data = gather(study, arms, seeds, overrides, study_path, progress)
    if not data:
        raise UserError(f"no finished arm under {study.run_path() / 'arms'} to report on; run the study first")
    from trainer.study_report import write_study_report

    return write_study_report(study, data, timings, missing)


def run_in_parallel(study: Recipe, study_path: str, todo: list[tuple[str, ArmConfig, list[str]]], jobs: int,
                    timings: dict[str, float]) -> None:
    """Run the arm x seed runs `jobs` at a time, each in a fresh process with os.cpu_count() / jobs
    threads, its output in RUN_DIR/arms/<label>.log; each also measures its retry and forgetting
    controls (cached in its run directory), so the report that follows only reads them. A failed
    run stops the study after the runs in flight end, naming the run and its log."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = study.run_path() / "arms"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"== {len(todo)} run(s), {jobs} at a time, {threads} thread(s) each; logs: {logs}/<run>.log", flush=True)
    failed: list[str] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < jobs and not failed:
                label, arm, arm_args = queue.pop(0)
                log = logs / f"{label}.log"
                print(f"== {label} ({arm.kind}) started; log: {log}", flush=True)
                pending[pool.submit(_arm_job, study_path, arm_args, arm.model_dump(), str(log), threads)] = label
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                label = pending.pop(future)
                try:
                    seconds = future.result()
                except Exception as e:  # the run's own error, with its log to read
                    failed.append(f"{label}: {e} (log: {logs / f'{label}.log'})")
                    continue
                timings[label] = timings.get(label, 0.0) + seconds
                atomic_write_json(study.run_path() / "study" / "timings.json", timings)
                print(f"== {label} done in {seconds:.0f}s", flush=True)
            if failed:
                queue.clear()
    if failed:
        raise UserError("study run(s) failed: " + "; ".join(failed) + "; rerun the study to resume them")


def _arm_job(study_path: str, arm_args: list[str], arm: dict, log: str, threads: int) -> float:
    """One arm x seed run in a worker process: the loop, then its retry and forgetting controls."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with open(log, "a", buffering=1) as out:  # everything the run and its libraries print, file descriptors too
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        t0 = time.time()
        recipe = load_recipe(study_path, arm_args)
        run_arm(recipe, progress=False)
        _arm_numbers(recipe, ArmConfig(**arm), progress=False)  # fills the caches the report reads
        sys.stdout.flush()
        sys.stderr.flush()
        return time.time() - t0


def submit_study(study_path: str, overrides: list[str], arms_arg: str | None = None, seeds_arg: str | None = None,
                 dry_run: bool = False) -> int:
    """`flywheel study --slurm`: submit each selected arm x seed's job chain with `flywheel submit`."""
    study = load_recipe(study_path, overrides)
    check_study(study, study_path)
    arms, seeds = select(study, arms_arg, seeds_arg)
    return submit_arms(study_path, overrides, study, arms, seeds, dry_run)
