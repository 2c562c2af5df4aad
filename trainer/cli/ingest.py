"""`flywheel ingest PATH... --store DIR [--format auto|NAME] [--heldout FILE] [--tag TAG] [--no-redact]
[--json] [--score NAME[:KEY]] [--score-range LO:HI]`: trajectory logs into an experience store
(data_pipeline/ingest.py). Exit 2 when records were read and every one was quarantined."""
from __future__ import annotations

import argparse
import json
import sys

from trainer.cli.common import IngestParser, add_quiet, parse


def parser() -> argparse.ArgumentParser:
    p = IngestParser(prog="flywheel ingest", description=(
        "Ingest trajectory logs into an experience store: each file is read by its format's adapter, records "
        "are validated, redacted and deduplicated, held-out tasks are marked, and bad records are quarantined "
        "with a reason. Exit 2 when records were read and every one was quarantined."))
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders of trajectory logs")
    p.add_argument("--store", required=True, help="experience store directory (created if missing)")
    p.add_argument("--format", default="auto", help="auto (detect per file, the default) or an adapter name")
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
    add_quiet(p)
    return p


def print_summary(d: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(d, sort_keys=True))
        return
    print(f"read {d['read']}: accepted {d['accepted']}, duplicates {d['duplicates']}, quarantined {d['quarantined']}"
          f" -> batch {d['batch_id'] or '(nothing new)'}")
    if d["accepted"]:
        unlabeled = d["accepted"] - d["with_outcome"]
        print(f"with an outcome: {d['with_outcome']} of {d['accepted']} accepted"
              + (f" ({unlabeled} unlabeled: label them with label.file / label.command, or train on them "
                 "with data.unlabeled: keep)" if unlabeled else ""))
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


def main(argv: list[str]) -> int:
    a = parse(parser(), argv)
    from data_pipeline.ingest import ingest_logs

    summary, why = ingest_logs(a.paths, a.store, fmt=a.format, heldout=a.heldout, tag=a.tag,
                               redact=not a.no_redact, score=a.score, score_range=a.score_range,
                               progress=not a.quiet)
    print_summary(summary, a.json)
    if why:  # exit 2: the samples did not silently vanish
        print(f"flywheel ingest: error: {why}", file=sys.stderr)
        return 2
    return 0
