"""`python -m trainer.cli.external SUITE.yaml --out DIR [--checkpoint DIR] [--endpoint URL] [--task ID]`:
run one external suite by hand (eval/external.py), to try a harness before a recipe names it.
Prints one JSON line per task; exit 0 when every task ran ok, 1 otherwise, 2 on a bad suite file."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.cli.external", description=(
        "Run one external suite by hand: its command once per task, each result printed as one JSON line. "
        "Exit 0 when every task ran ok, 1 otherwise, 2 on a bad suite file."))
    p.add_argument("suite", help="external suite YAML")
    p.add_argument("--out", required=True, type=Path, help="folder for per-task results")
    p.add_argument("--checkpoint", help="checkpoint directory given to {checkpoint}")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL given to {endpoint}")
    p.add_argument("--task", action="append", dest="tasks", help="run only this task id (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from eval.external import ExternalSuiteError, load_external_suite

    try:
        results = load_external_suite(args.suite).run(args.checkpoint, args.endpoint, args.out, args.tasks, progress=True)
    except ExternalSuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(json.dumps(r.to_dict()))
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
