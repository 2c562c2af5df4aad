"""Command-line entry points of the data side, dispatched by `flywheel` (trainer/cli.py):

    flywheel ingest PATH... --store DIR [--format auto|NAME] [--heldout FILE] [--tag TAG] [--no-redact] [--json]
                    [--score NAME[:KEY]] [--score-range LO:HI]
    flywheel store stats DIR [--json]
    flywheel dataset build --store DIR --kind sft|kto|dpo|rl --out DIR [--all-scores] [--min-score X]
                           [--unlabeled skip|imitate]

Each returns an exit code; user mistakes raise `IngestError` (printed without traceback)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import IngestError


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so the dispatcher prints one clean message."""

    def error(self, message: str):
        raise IngestError(f"{message}\n{self.format_usage().strip()}")


def _print_summary(d: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(d, sort_keys=True))
        return
    print(f"read {d['read']}: accepted {d['accepted']}, duplicates {d['duplicates']}, quarantined {d['quarantined']}"
          f" -> batch {d['batch_id'] or '(nothing new)'}")
    for path, fmt in d["formats"].items():
        print(f"  {fmt:<16} {path}")
    for path, note in d["skipped"]:
        print(f"  {'skipped':<16} {path} ({note})")
    if d["quarantine_reasons"]:
        print("quarantine reasons: " + ", ".join(f"{k} x{v}" for k, v in sorted(d["quarantine_reasons"].items())))
    if d["redactions"]:
        print("redacted: " + ", ".join(f"{k} x{v}" for k, v in sorted(d["redactions"].items())))
    for k, v in sorted(d.get("warnings", {}).items()):
        print(f"warning: {k} (x{v})")
    print(f"held-out trajectories seen: {d['heldout_seen']}")


def _all_quarantined(d: dict, store) -> str | None:
    """Why an ingest that read records stored none (every one quarantined): the largest quarantine
    group and its most common reason. None when a record was accepted or was already stored."""
    import re
    from collections import Counter

    if not d["read"] or d["accepted"] or d["duplicates"]:
        return None
    group, n = max(d["quarantine_reasons"].items(), key=lambda kv: kv[1])
    reasons = Counter(q["reason"] for q in store.quarantine()
                      if q["file"] in d["formats"] and re.sub(r"\[\d+\]", "[]", q["field"]) == group)
    reason = reasons.most_common(1)[0][0] if reasons else "see the store's quarantine.jsonl"
    return (f"read {d['read']} records and accepted none: all {d['quarantined']} quarantined; "
            f"largest group {group} x{n}: {reason}")


def ingest_main(argv: list[str]) -> int:
    p = _Parser(prog="flywheel ingest", description="Ingest trajectory logs into an experience store")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders of trajectory logs")
    p.add_argument("--store", required=True, help="experience store directory (created if missing)")
    p.add_argument("--format", default="auto", help="auto (detect per file) or an adapter name")
    p.add_argument("--heldout", help="held-out task file (JSON/YAML spec or one task id per line)")
    p.add_argument("--tag", default="", help="label recorded in the batch manifest")
    p.add_argument("--no-redact", action="store_true", help="store secrets as found (not recommended)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--score", metavar="NAME[:KEY]",
                   help="inspect logs: the scorer whose value is the outcome (default: the first scorer of each "
                        "sample); NAME:KEY takes entry KEY of a dict-valued score (without it such samples get no "
                        "outcome and a warning)")
    p.add_argument("--score-range", metavar="LO:HI",
                   help="inspect logs: numeric scores lie in [LO, HI] and are mapped onto [0, 1] (default: "
                        "[0, 1] as is; a score outside the range is quarantined)")
    a = p.parse_args(argv)
    from .adapters import inspect_ai
    from .heldout import HeldoutSpec
    from .store import ExperienceStore

    scoring = inspect_ai.ScoreOptions.parse(a.score, a.score_range)  # IngestError before touching the store
    spec = HeldoutSpec.load(a.heldout) if a.heldout else None
    store = ExperienceStore(a.store)
    with inspect_ai.score_options(scoring):
        summary = store.ingest(a.paths, fmt=a.format, heldout=spec, tag=a.tag, redact=not a.no_redact)
    d = summary.to_dict()
    if scoring.warnings:
        d["warnings"] = dict(scoring.warnings)
    _print_summary(d, a.json)
    why = _all_quarantined(d, store)
    if why:  # exit 2: the samples did not silently vanish
        print(f"flywheel ingest: error: {why}", file=sys.stderr)
        return 2
    return 0


def store_main(argv: list[str]) -> int:
    p = _Parser(prog="flywheel store", description="Inspect an experience store")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    st = sub.add_parser("stats", help="counts, interaction hours, formats, held-out spec")
    st.add_argument("dir")
    st.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from .store import ExperienceStore

    root = Path(a.dir)
    if not (root / "store.json").exists():
        raise IngestError(f"{root} is not an experience store (no store.json)")
    stats = ExperienceStore(root).stats()
    if a.json:
        print(json.dumps(stats, sort_keys=True))
    else:
        for k in ("trajectories", "batches", "quarantined", "heldout_trajectories", "interaction_hours"):
            print(f"{k:<22} {stats[k]}")
        print(f"{'success_rate':<22} {stats['success_rate']} ({stats['successes']} of {stats['labeled']} labeled)")
        print(f"{'unlabeled':<22} {stats['unlabeled']} (no outcome: neither successes nor failures)")
        print(f"{'formats':<22} {json.dumps(stats['formats'])}")
        print(f"{'heldout':<22} {json.dumps(stats['heldout'])}")
    return 0


_LABEL_HINT = ("label them (an outcome field: outcome.success / outcome.score, or metadata.success / "
               "metadata.reward)")


def _no_rows_message(a: argparse.Namespace, trajs: list, root: Path) -> str:
    """Why `dataset build` produced no rows, and the way forward: no trajectory has an outcome
    (label them, or imitate them), none succeeded (sft), none pairs up (dpo)."""
    from .builders import outcome_counts

    c = outcome_counts(trajs)
    head = f"no {a.kind} rows: {c['trajectories']} usable trajectories in {root} (held-out tasks excluded)"
    if not c["trajectories"] or a.kind == "rl":
        return f"{head}; nothing written"
    imitate = a.kind == "sft" and a.unlabeled == "imitate"
    if not c["labeled"] and not imitate:
        way = ("or build with --unlabeled imitate to imitate them all" if a.kind == "sft" else
               "or build --kind sft --unlabeled imitate to imitate them all (--kind rl needs no outcome)")
        return f"{head}, 0 with an outcome (all unlabeled); {_LABEL_HINT}, {way}; nothing written"
    head += f", {c['labeled']} with an outcome ({c['successes']} successful, {c['unlabeled']} unlabeled)"
    if a.kind == "sft" and not a.all_scores and not c["successes"] and not imitate:
        why = "none successful: build with --all-scores to keep failures weighted by score"
    else:
        why = {"sft": f"none kept has an assistant turn and scores at least --min-score {a.min_score}",
               "kto": "no labeled trajectory has an assistant turn",
               "dpo": "no task has two labeled trajectories with different scores and the same prompt"}[a.kind]
    return f"{head}; {why}; nothing written"


def dataset_main(argv: list[str]) -> int:
    p = _Parser(prog="flywheel dataset", description="Build a training dataset from an experience store")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="write a datasets.Dataset (save_to_disk) for TRL")
    b.add_argument("--store", required=True)
    from trainer.methods import METHODS  # the trainer's side of the CLI (moving to trainer/cli/): kinds per method

    b.add_argument("--kind", required=True, choices=list(dict.fromkeys(m.DATASET for m in METHODS.values())))
    b.add_argument("--out", required=True)
    b.add_argument("--batches", nargs="*", help="batch ids to use (default: all)")
    b.add_argument("--all-scores", action="store_true", help="sft: keep failures too, with a weight column")
    b.add_argument("--min-score", type=float, default=0.0, help="sft: drop trajectories scoring below this")
    b.add_argument("--unlabeled", choices=["skip", "imitate"], default="skip",
                   help="sft: trajectories without an outcome are skipped (default) or all imitated")
    b.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from . import builders
    from .store import ExperienceStore

    root = Path(a.store)
    if not (root / "store.json").exists():
        raise IngestError(f"{root} is not an experience store (no store.json)")
    store = ExperienceStore(root)
    trajs = store.trajectories(a.batches)
    spec = store.heldout
    if a.kind == "sft":
        ds = builders.build_sft(trajs, success_only=not a.all_scores, min_score=a.min_score, heldout=spec,
                                unlabeled=a.unlabeled)
    else:
        ds = getattr(builders, f"build_{a.kind}")(trajs, heldout=spec)
    if len(ds) == 0:  # datasets cannot reload an empty save, and a trainer cannot use one
        raise IngestError(_no_rows_message(a, trajs, root))
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise IngestError(f"output folder {out} exists and is not empty")
    ds.save_to_disk(str(out))
    prov = builders.provenance(ds)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))
    if a.json:
        print(json.dumps({"out": str(out), **prov}, sort_keys=True))
    else:
        skipped = f"; {prov['unlabeled_skipped']} unlabeled skipped" if prov.get("unlabeled_skipped") else ""
        print(f"{a.kind}: {prov['rows']} rows from {prov['trajectories']} trajectories in "
              f"{len(prov['batches'])} batches -> {out}{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(ingest_main(sys.argv[1:]))
