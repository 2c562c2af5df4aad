"""The whole loop on one machine (`flywheel run RECIPE`, trainer/cli/run.py).

Round 0 evaluates the base policy. Each round then: the current policy collects experience on
training tasks (canonical JSONL) -> ingest into the experience store -> one training round on the
selected experience -> evaluation of the new checkpoint on the held-out suites -> the promotion
gate (trainer/promote.py: promoted/ holds the checkpoint to deploy, and the next round trains
from it) -> the point (cumulative interaction hours, held-out success) joins the curve, which is
refitted, and the report is rewritten. Every stage is resumable: rerunning the command continues where it stopped.
A round with nothing new (collect.logs brought nothing, no suite to collect from) stops the run
with a message (trainer.round.RoundSkipped); rerun once new logs have arrived.
"""
from __future__ import annotations

import time
from pathlib import Path

from eval.config import EvalConfig
from eval.records import EvalSummary
from trainer import tracking
from trainer.curriculum import summary as curriculum_summary
from trainer.model_check import require_loadable
from trainer.promote import Verdict, gate, report_promoted_line, report_rows
from trainer.recipe import Recipe, load_recipe
from trainer.recipe_fork import write_resolved
from trainer.common import set_progress
from trainer.round import (RoundSkipped, checkpoint_paths, checkpoint_policy, ensure_round0, load_options,
                           prepare_round, train_round)
from trainer.rundir import RunDir, atomic_write_json


def evaluate_round(recipe: Recipe, run: RunDir, r: int, eval_cfg: EvalConfig | None = None,
                   progress: bool = True) -> EvalSummary:
    """Held-out evaluation of round r's checkpoint (skipped when its summary exists)."""
    done = run.eval_summary(r)
    if done is not None:
        return done
    from eval.evaluator import evaluate

    eval_cfg = eval_cfg or recipe.eval
    manifest = run.manifest(r)
    base, adapter = checkpoint_paths(run, manifest)
    # memory (memory.enabled): what the run collected up to this round, in every held-out prompt
    policy = checkpoint_policy(recipe, run, manifest, eval_cfg.policy, f"{recipe.experiment}/round-{r:04d}",
                               memory_upto=r)
    out = run.round_dir(r) / "eval"
    summary = evaluate(policy, eval_cfg, out, checkpoint=str(adapter or base), progress=progress)
    write_memory_stats(policy, out)
    return summary


def write_memory_stats(policy, out) -> None:
    """eval/memory.json beside the summary: what the memory gave and cost (a memory policy only)."""
    stats = getattr(policy, "stats", None)
    if stats is not None:
        atomic_write_json(Path(out) / "memory.json", stats())


def refresh_curve_and_report(recipe: Recipe, run: RunDir) -> dict:
    """Refit the curve over every evaluated round and rewrite curve/ and report.md."""
    from eval.curve_inputs import points_from_run
    from eval.curve_report import write_curve_outputs
    from eval.report import write_report

    from eval.curve_inputs import run_axis

    axis, why = run_axis(run.root, recipe.curve.x)  # logs without interaction time: episodes instead of hours
    cfg = recipe.curve if axis == recipe.curve.x else recipe.curve.model_copy(update={"x": axis})
    points, _ = points_from_run(run.root, axis, recipe.curve.metric, arm=recipe.experiment)
    result = write_curve_outputs({recipe.experiment: points}, run.curve, cfg,
                                 title=f"{recipe.experiment}: held-out {recipe.curve.metric}")
    write_report(run.root, f"flywheel run: {recipe.experiment}", result.get("markdown", ""),
                 extra=[f"Curve axis: {why}.", ""] if why else [],
                 rounds=report_rows(recipe, run), promoted=report_promoted_line(recipe, run),
                 metric=recipe.curve.metric)
    return result


def gate_round(recipe: Recipe, run: RunDir, r: int, echo: bool = True) -> Verdict | None:
    """The promotion gate after round r's evaluation (trainer/promote.py), printed as one line."""
    verdict = gate(recipe, run, r)
    if verdict is not None and echo:
        print(f"  gate: {verdict.line()}", flush=True)
    if verdict is not None:
        tracking.log_gate(recipe, run, r)  # W&B: the verdict, and the `promoted` alias on its checkpoint
    return verdict


def run_experiment(recipe: Recipe, fork: bool = False, progress: bool = True) -> RunDir:
    require_loadable(recipe)  # a model that cannot load stops here, before the run directory is touched
    run = RunDir(recipe.run_path())
    with run.lock("run"):
        write_resolved(recipe, run.root, fork=fork)
        ensure_round0(recipe, run)
        with tracking.stage(recipe, run, "eval", 0):  # W&B run per (experiment, job, round) + local record
            summary = evaluate_round(recipe, run, 0, progress=progress)
        _log(run, 0, summary, time.time())
        gate_round(recipe, run, 0)
        refresh_curve_and_report(recipe, run)
        tracking.log_curve(recipe, run, 0)
        for r in range(1, recipe.train.rounds + 1):
            t0 = time.time()
            if run.manifest(r) is None:
                set_progress(progress)
                try:  # collect and ingest first: a round with nothing new stops the run here, cleanly
                    prepare_round(recipe, run, r, progress=progress)
                except RoundSkipped as e:
                    print(str(e), flush=True)
                    return run
            with tracking.stage(recipe, run, "train", r):
                train_round(recipe, run, r, progress=progress)
            with tracking.stage(recipe, run, "eval", r):
                summary = evaluate_round(recipe, run, r, progress=progress)
            _log(run, r, summary, t0)
            gate_round(recipe, run, r)
            refresh_curve_and_report(recipe, run)
            tracking.log_curve(recipe, run, r)
    return run


def _log(run: RunDir, r: int, summary: EvalSummary, t0: float) -> None:
    m = run.manifest(r)
    line = (f"round {r}: {m.cumulative_interaction_hours:.1f} interaction h, "
            f"{m.trajectories_used} trajectories -> held-out success {summary.success_rate:.3f} "
            f"[{summary.ci95[0]:.3f}, {summary.ci95[1]:.3f}] on {summary.episodes} episodes "
            f"({time.time() - t0:.0f}s)")
    collected = curriculum_summary(m.curriculum)
    if collected:  # collect.curriculum: the difficulty this round's training tasks had, and why
        line += f"; collected at {collected}"
    print(line, flush=True)  # the record of tracking/metrics.jsonl is written by tracking.stage

