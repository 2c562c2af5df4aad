"""`flywheel dataset build --store DIR --kind sft|kto|dpo|rl --out DIR [--all-scores] [--min-score X]
[--unlabeled drop|keep] [--label-file FILE] [--label-command CMD]`: a training dataset from an
experience store (data_pipeline/dataset_build.py), labels applied as a recipe's `label` section does."""
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
                                   "held-out tasks never enter it. Reads the store batch by batch (memory bounded).")
    b.add_argument("--store", required=True, help="experience store directory")
    b.add_argument("--kind", required=True, choices=list(dict.fromkeys(m.DATASET for m in METHODS.values())),
                   help="which method's rows (rl: the prompts of grpo)")
    b.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    b.add_argument("--batches", nargs="*", help="batch ids to use (default: all)")
    b.add_argument("--all-scores", action="store_true", help="sft: keep failures too, with a weight column")
    b.add_argument("--min-score", type=float, default=0.0, help="sft: drop trajectories scoring below this (default 0)")
    b.add_argument("--unlabeled", choices=["drop", "keep"], default="drop",
                   help="trajectories still without an outcome after labelling: dropped (default), or kept: "
                        "sft imitates them (weight 1); never a kto/dpo negative")
    b.add_argument("--label-file", help="side file of labels (.jsonl/.json/.csv): episode_id or task_id -> "
                                        "score in [0, 1] and/or success (data_pipeline/labels.py)")
    b.add_argument("--label-command", help="verifier: a shell command reading one trajectory as JSON on stdin "
                                           "and printing a score in [0, 1]; cached in the store")
    b.add_argument("--label-timeout", type=float, default=60.0, help="seconds per --label-command call (default 60)")
    b.add_argument("--label-workers", type=int, default=4, help="--label-command calls in parallel (default 4)")
    b.add_argument("--json", action="store_true", help="print the provenance as one JSON object")
    add_quiet(b)
    return p


def main(argv: list[str]) -> int:
    a = parse(parser(), argv)
    from data_pipeline.dataset_build import build_dataset_dir

    prov = build_dataset_dir(a.store, a.kind, a.out, batches=a.batches, all_scores=a.all_scores,
                             min_score=a.min_score, unlabeled=a.unlabeled, label_file=a.label_file,
                             label_command=a.label_command, label_timeout_s=a.label_timeout,
                             label_workers=a.label_workers, progress=not a.quiet)
    if a.json:
        print(json.dumps({"out": str(Path(a.out)), **prov}, sort_keys=True))
    else:
        dropped = f"; {prov['unlabeled_dropped']} unlabeled dropped" if prov.get("unlabeled_dropped") else ""
        kept = f"; {prov['unlabeled_kept']} unlabeled kept" if prov.get("unlabeled_kept") else ""
        labels = prov.get("labels") or {}
        by = ", ".join(f"{labels[k]} {k}" for k in ("own", "file", "command") if labels.get(k))
        quarantined = f", {labels['quarantined']} quarantined" if labels.get("quarantined") else ""
        print(f"{a.kind}: {prov['rows']} rows from {prov['trajectories']} trajectories in "
              f"{len(prov['batches'])} batches -> {Path(a.out)}{dropped}{kept}"
              f"{'; labels: ' + by + quarantined if by or quarantined else ''}")
    return 0
