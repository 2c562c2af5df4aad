"""`flywheel submit RECIPE [overrides] [--rounds K] [--dry-run] [--fork]`: the experiment as a chain
of Slurm jobs (trainer/submit.py); `--every DURATION`: one round per period, and `flywheel submit
RUN_DIR --stop` ends it (trainer/periodic.py).

`python -m trainer.cli.submit refit|eval-whole RECIPE --round R` and `next-period RECIPE --period K`
run the job-side steps that have no other command; the rendered job scripts call them."""
from __future__ import annotations

import argparse
import json
import sys

from trainer.cli.common import add_recipe, parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel submit", description=(
        "Render and submit the experiment as a chain of Slurm jobs: round 0 eval array -> refit 0 -> train 1 "
        "-> eval array 1 -> refit 1 -> ... (afterok). The scripts go to RUN_DIR/slurm/; rerunning continues the "
        "chain, keeping jobs that are still alive and never submitting a stage twice."))
    add_recipe(ap, recipe_help="recipe .yaml file (with --stop: the run directory, or its recipe)")
    ap.add_argument("--rounds", type=int, default=None, help="train rounds 1..K (default: train.rounds of the recipe)")
    ap.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch lines; submit nothing")
    ap.add_argument("--every", metavar="DURATION", default=None, help=(
        "periodic: one round per period (90s, 10m, 6h, 1d, 1h30m), exactly one period's chain queued "
        "(sbatch --begin); each period trains on what arrived since the last; rerunning keeps a live chain"))
    ap.add_argument("--stop", action="store_true", help=(
        "end the periodic chain of RUN_DIR: no new period is queued, the jobs of a period not yet started "
        "are cancelled, a running round finishes"))
    return ap


def main(argv: list[str]) -> int:
    ap = parser()
    args = parse(ap, argv)
    if args.stop:
        if args.every or args.rounds is not None or args.overrides or args.dry_run:
            ap.error("--stop takes only RUN_DIR (no overrides, --every, --rounds or --dry-run)")
        from trainer.periodic import stop, stop_message

        print(stop_message(stop(args.recipe)))
        return 0
    if args.every is not None:
        if args.rounds is not None:
            ap.error("--every runs one round per period until --stop; it takes no --rounds")
        from trainer.periodic import submit_every

        return submit_every(args.recipe, args.overrides, every=args.every, dry_run=args.dry_run, fork=args.fork)
    from trainer.submit import submit

    return submit(args.recipe, args.overrides, rounds=args.rounds, dry_run=args.dry_run, fork=args.fork)


def job_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainer.cli.submit", description=(
        "The job-side steps of a Slurm chain that have no other command: refit (merge round R's eval shards, "
        "refit the curve, rewrite report.md) and eval-whole (evaluate round R unsharded)."))
    ap.add_argument("step", choices=["refit", "eval-whole", "next-period"], help="the step to run")
    ap.add_argument("recipe", help="the run's recipe")
    ap.add_argument("--round", type=int, default=None, help="the round the step is for (refit, eval-whole)")
    ap.add_argument("--period", type=int, default=None, help="the period that ends (next-period)")
    return ap


def job_main(argv: list[str]) -> int:
    ap = job_parser()
    args = ap.parse_args(argv)
    if (args.period if args.step == "next-period" else args.round) is None:
        ap.error(f"{args.step} needs {'--period' if args.step == 'next-period' else '--round'}")
    if args.step == "next-period":
        from trainer.periodic import next_period

        print(json.dumps(next_period(args.recipe, args.period)))
        return 0
    from trainer.submit import eval_whole, refit

    result = (refit if args.step == "refit" else eval_whole)(args.recipe, args.round)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from trainer.cli import run_command

    sys.exit(run_command(sys.argv[1] if len(sys.argv) > 1 else "job", job_main, sys.argv[1:]))
