"""`flywheel submit RECIPE [overrides] [--rounds K] [--dry-run]`: the experiment as a chain of Slurm jobs.

    round 0 eval array -> refit 0 -> train 1 -> eval array 1 -> refit 1 -> train 2 -> ...   (afterok)

- train round r: `flywheel train --stage prepare` once, `--stage fit` on nodes x GPUs (srun + torchrun
  with a c10d rendezvous on the head node, or the deepspeed launcher), `--stage finalize` once.
- eval array of round r: one element per task shard of round r's checkpoint; a failed element is
  retried once in the job, then recorded as missing (the chain goes on).
- refit r: merges the shards into eval/summary.json, gates round r (promoted/ or rejected, before
  round r + 1 picks its parent), refits the curve, rewrites report.md.

The scripts are rendered from the templates in slurm/ into RUN_DIR/slurm/ next to the resolved recipe,
so the run is self-contained; job ids go to RUN_DIR/slurm/jobs.json. Rerunning the command continues
the chain: stages whose output exists are skipped, jobs still pending or running (squeue) are kept and
depended on, everything else is submitted again. Nothing is ever submitted twice for the same stage
while its job is alive.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys

from trainer.errors import UserError
from trainer.model_check import require_loadable, warn_unloadable
from trainer.recipe import load_recipe
from trainer.recipe_fork import write_resolved
from trainer.rundir import RunDir, atomic_write_json
# The pieces, by seam: what this build's commands support, the scripts, the chain of jobs.
from trainer.sbatch import Context, make_context, stage_name
from trainer.job_capabilities import Capabilities
from trainer.slurm_chain import Decision, alive_jobs, plan, print_dry_run, stage_status
from trainer.slurm_chain import read_jobs as _read_jobs
from trainer.slurm_chain import submit_chain


@contextlib.contextmanager
def _submit_lock(ctx: Context):
    """One `flywheel submit` per run directory at a time (two would both submit the missing stages)."""
    ctx.slurm_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(ctx.slurm_dir / ".submit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `flywheel submit` is submitting {ctx.run_dir}; wait for it") from None
        yield
    finally:
        os.close(fd)


def _summary_line(decisions: list[Decision]) -> str:
    parts = []
    for d in decisions:
        mark = {"done": "done", "alive": f"kept {d.job_id}", "submit": f"submitted {d.job_id}"}[d.action]
        parts.append(f"{d.stage.name}: {mark}" + (f" after {','.join(d.after)}" if d.after and d.action == "submit" else ""))
    return "\n".join(parts)



def submit(recipe_path: str, overrides: list[str] = (), rounds: int | None = None, dry_run: bool = False,
           fork: bool = False) -> int:
    """`flywheel submit`: render the experiment's job chain and submit what is not done or alive
    (`dry_run`: print the scripts and sbatch lines, submit nothing); rounds 1..`rounds` (default
    train.rounds of the recipe)."""
    overrides = list(overrides) + ([f"train.rounds={rounds}"] if rounds is not None else [])
    recipe = load_recipe(recipe_path, overrides)
    ctx = make_context(recipe)
    run = RunDir(ctx.run_dir)
    if dry_run:  # it only shows the jobs, maybe on a machine that is not the cluster
        warn_unloadable(recipe, "the jobs would stop at their start; a real submit refuses it")
        jobs = _read_jobs(ctx)["jobs"]
        alive: dict[str, str] = {}
        if jobs and shutil.which("squeue"):
            # A dry run only looks: without a reachable controller it plans as if no job were alive.
            try:
                alive = alive_jobs()
            except UserError as e:
                print(f"warning: {e}; planning as if none of the recorded jobs were alive", file=sys.stderr)
        print_dry_run(ctx, plan(ctx, run, jobs, alive))
        return 0
    if not shutil.which("sbatch"):
        raise UserError("sbatch is not on PATH: run flywheel submit on a Slurm login node (or --dry-run to see the jobs)")
    require_loadable(recipe)  # on the login node, before the run directory is written or any job queued
    with _submit_lock(ctx):
        from trainer.periodic import refuse_second_chain

        refuse_second_chain(ctx)
        write_resolved(recipe, ctx.run_dir, fork=fork)
        from trainer.round import ensure_round0

        # Round 0 (the base checkpoint) exists before its eval array starts; cheap, done here once.
        ensure_round0(recipe, run)
        decisions = plan(ctx, run, _read_jobs(ctx)["jobs"], alive_jobs())
        if not any(d.action == "submit" for d in decisions):
            print(f"nothing to submit: {_summary_line(decisions)}")
            return 0
        submit_chain(ctx, decisions)
    print(_summary_line(decisions))
    print(f"job ids: {ctx.slurm_dir / 'jobs.json'}; logs: {ctx.slurm_dir / 'logs'}; "
          f"watch: squeue -u $USER; a stopped chain leaves {ctx.slurm_dir / 'FAILED.md'}")
    return 0


# ---- job-side steps that have no other command --------------------------------------------------
def _missing_shards(ctx: Context, r: int) -> list[dict]:
    out = []
    for i in range(ctx.recipe.slurm.eval_shards):
        st = stage_status(ctx, f"{stage_name('eval', r)}-shard-{i}") or {}
        if st.get("state") == "missing":
            out.append({"shard": f"{i}/{ctx.recipe.slurm.eval_shards}", "reason": st.get("reason", "")})
    return out


def merge_shards(ctx: Context, run: RunDir, r: int) -> str:
    """Round r's shard results -> eval/summary.json. The last shard to finish merges them itself;
    this covers shards that finished together (each saw the other missing). A round with a missing
    shard stays unevaluated (the curve leaves it out) and the chain goes on."""
    if run.eval_summary(r) is not None:
        return "summary present"
    from eval.evaluator import merge_shards as merge, missing_shards

    n, out = ctx.recipe.slurm.eval_shards, run.round_dir(r) / "eval"
    absent = missing_shards(out, n)
    if absent:
        return f"shards {absent} of {n} missing: round {r} left unevaluated"
    merge(out, n)
    return "merged"


def refit(recipe_path: str, r: int) -> dict:
    """The refit job: merge round r's eval shards, gate round r (trainer/promote.py: promoted or
    rejected, before round r + 1 picks its parent), refit the curve, rewrite report.md."""
    from trainer.loop import gate_round, refresh_curve_and_report

    recipe = load_recipe(recipe_path)
    ctx = make_context(recipe, caps=Capabilities())
    run = RunDir(ctx.run_dir)
    merged = merge_shards(ctx, run, r)
    missing = _missing_shards(ctx, r)
    if missing:  # recorded next to the checkpoint, so the report's reader sees the gap
        atomic_write_json(run.round_dir(r) / "eval" / "missing_shards.json", missing)
    verdict = gate_round(recipe, run, r)  # None: gate off, or round r left unevaluated
    refresh_curve_and_report(recipe, run)
    return {"round": r, "eval": merged, "missing_shards": missing,
            "promotion": None if verdict is None else verdict.decision}


def eval_whole(recipe_path: str, r: int) -> dict:
    """A build without `flywheel eval --shard`: evaluate round r's checkpoint in one job."""
    from trainer.loop import evaluate_round

    recipe = load_recipe(recipe_path)
    run = RunDir(make_context(recipe, caps=Capabilities()).run_dir)
    s = evaluate_round(recipe, run, r, progress=False)
    return {"round": r, "success_rate": s.success_rate, "episodes": s.episodes}
