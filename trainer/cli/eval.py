"""`flywheel eval RECIPE --checkpoint DIR [--suite NAME] [--shard I/N] [--merge-shards N] [--json]
[overrides]`: one checkpoint on the held-out suites (eval/checkpoint_eval.py)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from eval.errors import EvalError
from eval.records import EvalSummary
from trainer.cli.common import add_quiet, add_recipe, parse


def shard_arg(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise EvalError(f"--shard {text}: expected I/N with 0 <= I < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel eval", description="Evaluate a checkpoint on held-out suites. "
                                 "Results go to DIR/eval/ (summary.json, results.jsonl, episodes.jsonl).")
    add_recipe(ap, "recipe .yaml, a run's recipe.resolved.yaml, or the run directory", "key.sub=value recipe overrides, e.g. eval.suites.0.episodes=50", fork=False)
    ap.add_argument("--checkpoint", required=True, help="round checkpoint dir (rounds/round-XXXX) or model folder")
    ap.add_argument("--suite", action="append", default=[], help="evaluate only this suite (repeatable); "
                    "results then go to DIR/eval-NAME/ so the full evaluation stays")
    ap.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                    help="evaluate tasks I, I+N, ...; writes DIR/eval/shards/I-of-N.json; merges when all N exist")
    ap.add_argument("--merge-shards", type=int, default=None, metavar="N", help="only merge N finished shards")
    ap.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL for external suites' {endpoint} "
                    "(default: serve the checkpoint in-process while they run)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default DIR/eval)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    add_quiet(ap)
    return ap


def load_eval_recipe(path: str | Path, overrides: list[str]):
    """The recipe of a .yaml file, a run's recipe.resolved.yaml or a run directory (its resolved recipe)."""
    from trainer.recipe import RESOLVED_NAME, load_recipe

    path = Path(path)
    if path.is_dir() and (path / RESOLVED_NAME).is_file():
        path = path / RESOLVED_NAME
    return load_recipe(path, overrides)


def print_summary(summary: EvalSummary, out: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
        return
    for name, s in summary.suites.items():
        lo, hi = s.ci95
        passes = " ".join(f"pass@{j}={v:.3f}" for j, v in s.pass_at_k.items())
        print(f"{name}: success {s.success_rate:.3f} [{lo:.3f}, {hi:.3f}] mean score {s.mean_score:.3f} "
              f"{passes} on {s.episodes} episodes ({s.tasks} tasks)")
    print(f"results: {out}")


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from eval.checkpoint_eval import evaluate_checkpoint
    from trainer.round import load_options

    recipe = load_eval_recipe(args.recipe, args.overrides)
    from trainer.round import memory_wrapper

    summary, out, shard_file = evaluate_checkpoint(
        recipe.eval, load_options(recipe), args.checkpoint, experiment=recipe.experiment, out=args.out,
        suites=args.suite, shard=args.shard, merge_only=args.merge_shards, endpoint=args.endpoint,
        progress=not args.quiet, wrap=memory_wrapper(recipe, args.checkpoint))
    if summary is None:
        print(json.dumps({"shard": list(args.shard), "result": str(shard_file), "merged": False}) if args.json
              else f"shard {args.shard[0]}/{args.shard[1]}: {shard_file}")
        return 0
    print_summary(summary, out, args.json)
    return 0
