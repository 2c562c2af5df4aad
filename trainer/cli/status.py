"""`flywheel status RUN_DIR [--json]`: where a run stands: its Slurm jobs, schedule, last round and
score, promotion, and the new log records waiting (trainer/status.py)."""
from __future__ import annotations

import argparse
import json


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel status", description=(
        "Where a run stands: the chain's jobs and their states (squeue/sacct where Slurm is reachable, else the "
        "recorded ids and the jobs' own status files), the schedule of `submit --every` (every, next begin, "
        "stopped), the last round and its held-out score, the last promotion verdict, the promoted checkpoint, "
        "and how many new log records collect.logs has waiting."))
    ap.add_argument("run_dir", help="run directory")
    ap.add_argument("--json", action="store_true", help="print the status as one JSON object")
    return ap


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from trainer.status import render_status, run_status

    st = run_status(a.run_dir)
    print(json.dumps(st, sort_keys=True, default=str) if a.json else render_status(st))
    return 0
