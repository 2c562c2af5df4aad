"""`flywheel dataset build --store DIR --kind sft|kto|dpo|rl --out DIR [--all-scores] [--min-score X]
[--unlabeled skip|imitate]`: a training dataset from an experience store (data_pipeline/dataset_build.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.cli.common import IngestParser, add_quiet, parse
from trainer.methods import METHODS


def parser() -> argparse.ArgumentParser:
    p = IngestParser(prog="flywheel dataset", description="Build a training dataset from an experience store.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=IngestParser, metavar="ACTION", help="build")
    b = sub.add_parser("build", help="write a datasets.Dataset (save_to_disk) for TRL",
                       description="Write a datasets.Dataset (save_to_disk) for TRL, with provenance.json; "
                                   "held-out tasks never enter it.")
    b.add_argument("--store", required=True, help="experience store directory")
    b.add_argument("--kind", required=True, choices=list(dict.fromkeys(m.DATASET for m in METHODS.values())),
                   help="which method's rows (rl: the prompts of grpo)")
    b.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    b.add_argument("--batches", nargs="*", help="batch ids to use (default: all)")
    b.add_argument("--all-scores", action="store_true", help="sft: keep failures too, with a weight column")
    b.add_argument("--min-score", type=float, default=0.0, help="sft: drop trajectories scoring below this (default 0)")
    b.add_argument("--unlabeled", choices=["skip", "imitate"], default="skip",
                   help="sft: trajectories without an outcome are skipped (default) or all imitated")
    b.add_argument("--json", action="store_true", help="print the provenance as one JSON object")
    add_quiet(b)
    return p


def main(argv: list[str]) -> int:
    a = parse(parser(), argv)
    from data_pipeline.dataset_build import build_dataset_dir

    prov = build_dataset_dir(a.store, a.kind, a.out, batches=a.batches, all_scores=a.all_scores,
                             min_score=a.min_score, unlabeled=a.unlabeled)
    if a.json:
        print(json.dumps({"out": str(Path(a.out)), **prov}, sort_keys=True))
    else:
        skipped = f"; {prov['unlabeled_skipped']} unlabeled skipped" if prov.get("unlabeled_skipped") else ""
        print(f"{a.kind}: {prov['rows']} rows from {prov['trajectories']} trajectories in "
              f"{len(prov['batches'])} batches -> {Path(a.out)}{skipped}")
    return 0
