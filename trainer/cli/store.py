"""`flywheel store stats DIR [--json]`: an experience store's numbers (data_pipeline/ingest.py)."""
from __future__ import annotations

import argparse
import json

from trainer.cli.common import IngestParser


def parser() -> argparse.ArgumentParser:
    p = IngestParser(prog="flywheel store", description="Inspect an experience store.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=IngestParser, metavar="ACTION", help="stats")
    st = sub.add_parser("stats", help="counts, interaction hours, formats, held-out spec",
                        description="Counts, interaction hours, formats and held-out spec of an experience store.")
    st.add_argument("dir", help="experience store directory (holds store.json)")
    st.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from data_pipeline.ingest import store_stats

    stats = store_stats(a.dir)
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
