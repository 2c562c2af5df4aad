"""`flywheel train RECIPE [overrides] [--round R] [--stage all|prepare|fit|finalize]`: one training
round of an experiment (trainer/round.py)."""
from __future__ import annotations

import argparse
import json

from trainer.cli.common import add_quiet, add_recipe, parse
from trainer.round import STAGES



def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel train", description=(
        "Run the next training round of an experiment: collect experience with the parent checkpoint, ingest "
        "it, select the data, train, and write the new checkpoint. --stage splits the round for "
        "multi-process and Slurm jobs; a rerun continues where a killed round stopped."))
    add_recipe(ap, "recipe .yaml file (or a run's recipe.resolved.yaml)")
    ap.add_argument("--round", type=int, default=None, help="round to run (default: the next one)")
    ap.add_argument("--stage", choices=STAGES, default="all",
                    help="prepare: collect+ingest+select+dataset; fit: train (every rank under torchrun); "
                         "finalize: write the checkpoint; all: the three in turn (default)")
    add_quiet(ap)
    return ap


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from trainer.recipe import load_recipe
    from trainer.round import train_command

    result = train_command(load_recipe(args.recipe, args.overrides), args.round, args.stage, fork=args.fork,
                           progress=not args.quiet)
    if result is not None:
        print(json.dumps(result))
    return 0
