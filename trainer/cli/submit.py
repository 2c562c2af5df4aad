"""`flywheel submit RECIPE [overrides] [--rounds K] [--dry-run] [--fork]`: the experiment as a chain
of Slurm jobs (trainer/submit.py).

`python -m trainer.cli.submit refit|eval-whole RECIPE --round R` runs the job-side steps that have
no other command; the rendered job scripts call it."""
from __future__ import annotations

import argparse
import json
import sys

from trainer.cli.common import add_recipe


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel submit", description=(
        "Render and submit the experiment as a chain of Slurm jobs: round 0 eval array -> refit 0 -> train 1 "
        "-> eval array 1 -> refit 1 -> ... (afterok). The scripts go to RUN_DIR/slurm/; rerunning continues the "
        "chain, keeping jobs that are still alive and never submitting a stage twice."))
    add_recipe(ap)
    ap.add_argument("--rounds", type=int, default=None, help="train rounds 1..K (default: train.rounds of the recipe)")
    ap.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch lines; submit nothing")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from trainer.submit import submit

    return submit(args.recipe, args.overrides, rounds=args.rounds, dry_run=args.dry_run, fork=args.fork)


def job_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainer.cli.submit", description=(
        "The job-side steps of a Slurm chain that have no other command: refit (merge round R's eval shards, "
        "refit the curve, rewrite report.md) and eval-whole (evaluate round R unsharded)."))
    ap.add_argument("step", choices=["refit", "eval-whole"], help="the step to run")
    ap.add_argument("recipe", help="the run's recipe")
    ap.add_argument("--round", type=int, required=True, help="the round the step is for")
    return ap


def job_main(argv: list[str]) -> int:
    args = job_parser().parse_args(argv)
    from trainer.submit import eval_whole, refit

    result = (refit if args.step == "refit" else eval_whole)(args.recipe, args.round)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from trainer.cli import run_command

    sys.exit(run_command(sys.argv[1] if len(sys.argv) > 1 else "job", job_main, sys.argv[1:]))
