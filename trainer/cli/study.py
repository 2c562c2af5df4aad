"""`flywheel study RECIPE [overrides] [--arms A,B] [--seeds 0,1] [--slurm [--dry-run]] [--report-only]`:
the experience study (trainer/study.py)."""
from __future__ import annotations

import argparse
import time

from trainer.cli.common import add_quiet, add_recipe, parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel study", description=(
        "Run the experience study: does the agent improve because it accumulates and reuses experience, or "
        "would repeated sampling of the base policy do as well? Each arm (accumulate, latest, reset, retry, memory, "
        "accumulate+memory, or one of these with its own overrides) x seed is one run directory under RUN_DIR/arms/, with the same interaction budget per round; the "
        "report goes to RUN_DIR/study/."))
    add_recipe(ap, "study recipe .yaml file (with a study: section)", "key.sub=value recipe overrides (every arm gets them)", fork=False)
    ap.add_argument("--arms", help="comma-separated arm names (default: all of study.arms)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: study.seeds)")
    ap.add_argument("--slurm", action="store_true", help="submit each arm's job chain with flywheel submit instead")
    ap.add_argument("--dry-run", action="store_true", help="with --slurm: print the jobs, submit nothing")
    ap.add_argument("--report-only", action="store_true", help="run nothing: write the report from finished arms")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run N arm x seed runs at a time, each in its own process with its share of the CPU threads "
                         "(logs in RUN_DIR/arms/<run>.log); a small model on a few cores: N = the cores")
    add_quiet(ap)
    return ap


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from trainer.study import run_study, submit_study

    if args.slurm:
        return submit_study(args.recipe, args.overrides, args.arms, args.seeds, args.dry_run)
    t0 = time.time()
    report = run_study(args.recipe, args.overrides, args.arms, args.seeds, not args.quiet, args.report_only,
                       jobs=args.jobs)
    print(f"\nstudy done in {time.time() - t0:.0f}s")
    print(f"report: {report.resolve()}")
    print(f"plot:   {(report.parent / 'study.png').resolve()}")
    return 0
