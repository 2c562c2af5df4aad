"""Command-line entry points of the data side, dispatched by `flywheel` (trainer/cli.py):

    flywheel ingest PATH... --store DIR [--format auto|NAME] [--heldout FILE] [--tag TAG] [--no-redact] [--json]
    flywheel store stats DIR [--json]
    flywheel dataset build --store DIR --kind sft|kto|dpo|rl --out DIR [--all-scores] [--min-score X]

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
    print(f"held-out trajectories seen: {d['heldout_seen']}")


def ingest_main(argv: list[str]) -> int:
    p = _Parser(prog="flywheel ingest", description="Ingest trajectory logs into an experience store")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders of trajectory logs")
    p.add_argument("--store", required=True, help="experience store directory (created if missing)")
    p.add_argument("--format", default="auto", help="auto (detect per file) or an adapter name")
    p.add_argument("--heldout", help="held-out task file (JSON/YAML spec or one task id per line)")
    p.add_argument("--tag", default="", help="label recorded in the batch manifest")
    p.add_argument("--no-redact", action="store_true", help="store secrets as found (not recommended)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    a = p.parse_args(argv)
    from .heldout import HeldoutSpec
    from .store import ExperienceStore

    spec = HeldoutSpec.load(a.heldout) if a.heldout else None
    summary = ExperienceStore(a.store).ingest(a.paths, fmt=a.format, heldout=spec, tag=a.tag, redact=not a.no_redact)
    _print_summary(summary.to_dict(), a.json)
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
        for k in ("trajectories", "batches", "quarantined", "heldout_trajectories", "interaction_hours", "success_rate"):
            print(f"{k:<22} {stats[k]}")
        print(f"{'formats':<22} {json.dumps(stats['formats'])}")
        print(f"{'heldout':<22} {json.dumps(stats['heldout'])}")
    return 0


def dataset_main(argv: list[str]) -> int:
    p = _Parser(prog="flywheel dataset", description="Build a training dataset from an experience store")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="write a datasets.Dataset (save_to_disk) for TRL")
    b.add_argument("--store", required=True)
    b.add_argument("--kind", required=True, choices=["sft", "kto", "dpo", "rl"])
    b.add_argument("--out", required=True)
    b.add_argument("--batches", nargs="*", help="batch ids to use (default: all)")
    b.add_argument("--all-scores", action="store_true", help="sft: keep failures too, with a weight column")
    b.add_argument("--min-score", type=float, default=0.0, help="sft: drop trajectories scoring below this")
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
        ds = builders.build_sft(trajs, success_only=not a.all_scores, min_score=a.min_score, heldout=spec)
    else:
        ds = getattr(builders, f"build_{a.kind}")(trajs, heldout=spec)
    if len(ds) == 0:  # datasets cannot reload an empty save, and a trainer cannot use one
        raise IngestError(f"no {a.kind} rows can be built from {len(trajs)} usable trajectories in {root} "
                          "(held-out tasks excluded); nothing written")
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise IngestError(f"output folder {out} exists and is not empty")
    ds.save_to_disk(str(out))
    prov = builders.provenance(ds)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))
    if a.json:
        print(json.dumps({"out": str(out), **prov}, sort_keys=True))
    else:
        print(f"{a.kind}: {prov['rows']} rows from {prov['trajectories']} trajectories in "
              f"{len(prov['batches'])} batches -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(ingest_main(sys.argv[1:]))
