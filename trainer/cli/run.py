"""`flywheel run RECIPE [overrides]`: the whole loop on one machine (trainer/loop.py)."""
from __future__ import annotations

import argparse
import time

from trainer.cli.common import add_quiet, add_recipe, parse

DESCRIPTION = ("Run an experiment on one machine. Round 0 evaluates the base policy; each round then "
               "collects experience with the current policy, ingests it into the experience store, trains "
               "one round on it, evaluates the new checkpoint on the held-out suites, promotes it "
               "(RUN_DIR/promoted/) unless it is worse than the promoted one beyond noise, and refits the "
               "improvement curve and report. Rerunning the command continues where it stopped.")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel run", description=DESCRIPTION)
    add_recipe(ap, "recipe .yaml file", "key.sub=value recipe overrides, e.g. train.rounds=1")
    add_quiet(ap)
    return ap


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from trainer.loop import run_experiment
    from trainer.promote import promoted_dir, promoted_now
    from trainer.recipe import load_recipe
    from trainer.tracking import sync_command

    recipe = load_recipe(args.recipe, args.overrides)
    t0 = time.time()
    run = run_experiment(recipe, fork=args.fork, progress=not args.quiet)
    print(f"\ndone in {time.time() - t0:.0f}s")
    print(f"curve:  {(run.curve / 'curve.png').resolve()}")
    print(f"report: {run.report.resolve()}")
    promoted = promoted_now(run)
    if promoted is not None:
        print(f"deploy: round {promoted.round}, {promoted_dir(run) / 'SERVING.md'}")
    sync = sync_command(recipe, run)
    if sync:
        print(f"W&B:    {sync}")
    return 0
