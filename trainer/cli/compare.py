"""`flywheel compare RUN_DIR...`: a table and an overlay plot of several runs (trainer/compare.py)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.curve_inputs import CurveInputError
from eval.curve_report import X_LABELS


def parser() -> argparse.ArgumentParser:
    from trainer.compare import METRICS

    ap = argparse.ArgumentParser(
        prog="flywheel compare",
        description="Compare experiments from their run directories (no W&B needed): a table of final held-out "
                    "score, curve parameters with intervals, interaction hours and GPU-hours, and an overlay plot.")
    ap.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories to compare")
    ap.add_argument("--metric", choices=METRICS, help="held-out metric (default: the first run's recipe curve.metric, else success_rate)")
    ap.add_argument("--x", choices=sorted(X_LABELS), help="x-axis of the curves (default: the first run's recipe curve.x, else hours)")
    ap.add_argument("--out", type=Path, default=Path("compare"), help="output folder (default ./compare)")
    ap.add_argument("--json", action="store_true", help="print compare.json to stdout instead of the table")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from trainer.compare import compare_runs, table_lines

    try:
        result = compare_runs(args.run_dirs, args.out, args.metric, args.x)
    except CurveInputError as e:
        print(f"flywheel compare: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"flywheel compare: error: {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return 2
    for row in result["runs"]:
        for note in row["notes"]:
            print(f"flywheel compare: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(table_lines(result)))
        for c in result["comparisons"]:
            print(f"- {c['arms'][0]} vs {c['arms'][1]}: {c['verdict']}: {c['text']}")
        print(f"\nwrote {args.out / 'compare.png'}, {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0
