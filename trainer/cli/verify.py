"""`flywheel verify RUN_DIR [--json]`: check every checksum a run directory promises (trainer/verify.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel verify", description=(
        "Check every checksum a run directory promises: the experience store's batches and hash index, and "
        "each round checkpoint's files and adapter. Exit 1 when anything is corrupted or missing, 0 when clean."))
    ap.add_argument("run_dir", help="run directory (or an experience store directory)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return ap


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from trainer.verify import verify

    result = verify(Path(a.run_dir))
    if a.json:
        print(json.dumps(result, sort_keys=True))
    else:
        c = result["checked"]
        for p in result["problems"]:
            print(f"CORRUPTED  {p['path']}: {p['problem']}")
        for n in result["notes"]:
            print(f"note       {n}")
        verdict = "ok" if result["ok"] else f"{len(result['problems'])} problem(s)"
        print(f"{result['path']}: {c['batches']} store batches, {c['rounds']} rounds checked: {verdict}")
    return 0 if result["ok"] else 1
