"""`flywheel promote RUN_DIR --round N --reason TEXT`: make round N the promoted checkpoint by hand
(a rollback or a roll forward), recorded with who asked and why (trainer/promote.py)."""
from __future__ import annotations

import argparse
import json


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel promote", description=(
        "Make round N of a run the promoted checkpoint (RUN_DIR/promoted/: adapter, tokenizer, SERVING.md), "
        "rolling back or forward past the promotion gate. Recorded in RUN_DIR/promotion/history.jsonl with the "
        "user name of the environment and the reason. Refused for a round without a checkpoint or an evaluation."))
    ap.add_argument("run_dir", help="run directory (runs/<experiment>)")
    ap.add_argument("--round", type=int, required=True, help="the round to promote (0 = the base model)")
    ap.add_argument("--reason", required=True, help="why, in a few words (recorded with your user name)")
    ap.add_argument("--json", action="store_true", help="print the recorded entry as one JSON object")
    return ap


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from trainer import tracking
    from trainer.promote import promote_by_hand, promoted_dir
    from trainer.recipe import RESOLVED_NAME, load_recipe
    from trainer.rundir import RunDir

    verdict = promote_by_hand(a.run_dir, a.round, a.reason)
    run = RunDir(a.run_dir)  # W&B: the alias `promoted` follows the promotion by hand
    tracking.log_promotions_by_hand(load_recipe(run.root / RESOLVED_NAME), run)
    if a.json:
        print(json.dumps(verdict.to_dict(), sort_keys=True))
    else:
        was = "nothing" if verdict.incumbent is None else f"round {verdict.incumbent}"
        print(f"promoted round {verdict.round} (was {was}) by {verdict.by}: {verdict.reason}")
        print(f"serve it: {promoted_dir(run) / 'SERVING.md'}")
    return 0
