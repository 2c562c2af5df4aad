"""`flywheel track RUN_DIR`: log a run's finished stages not logged yet (trainer/tracking.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel track", description=(
        "Log every finished stage of a run directory that is not logged yet (trainings, evaluations run as "
        "their own jobs, the latest curve) to W&B and tracking/metrics.jsonl, with the run's own recipe."))
    ap.add_argument("run_dir", type=Path, help="run directory (holds recipe.resolved.yaml)")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from trainer.tracking import track_run

    for rec in track_run(args.run_dir):
        wb = rec.get("wandb") or {}
        print(f"{rec['job']} round {rec['round']}: " + (f"W&B run {wb.get('id')} ({wb.get('mode')})" if wb.get("id")
                                                       else "local record only"))
    return 0
