"""The memory plan of `flywheel recipe show` against the measured peak of a real SFT round.

    python bench/memory.py --model DIR                       # SmolLM2 (make real-model) on the CPU
    python bench/memory.py --model DIR --max-length 2048 --batch-size 2 --gradient-checkpointing

One process: the plan of `recipes/smollm2.yaml` with the same model, batch and sequence length
(trainer.memory_plan), then the round's own SFT trainer (packed rows of --max-length tokens, so every
micro-batch holds batch x max_length tokens, the plan's assumption) trains --steps optimizer steps.
Measured: on a GPU, torch's peak allocated memory; on the CPU, the peak resident set (VmHWM) minus
the resident set just before the model was loaded (the interpreter and libraries are no part of a
round's plan). The last stdout line is one JSON object: plan_gb, measured_gb, ratio (plan /
measured), the plan's parts and the settings.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2.yaml"


def rss_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start) of this process, in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError(f"no {field} in /proc/self/status")


def packed_rows(tmp: Path, n: int):
    """Maze episodes long enough to fill packed rows (the round's own SFT data path)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import build_dataset

    return build_dataset(tmp, n, [4, 5, 6])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="local model folder (e.g. the one make real-model prints)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    import torch

    from trainer.common import quiet_libraries
    from trainer.memory_plan import memory_plan
    from trainer.recipe import load_recipe
    from trainer.methods.sft import build_trainer

    quiet_libraries()
    recipe = load_recipe(RECIPE, [f"model.name_or_path={args.model}", f"model.dtype={args.dtype}",
                                  f"train.max_length={args.max_length}", f"train.batch_size={args.batch_size}",
                                  f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
                                  f"train.max_steps={args.steps}", "train.sft.packing=true", "train.save_steps=1000000"])
    plan = memory_plan(recipe)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-memory-") as tmp:
        dataset = packed_rows(Path(tmp), 16)
        on_gpu = torch.cuda.is_available()
        before = torch.cuda.memory_allocated() / 1e9 if on_gpu else rss_gb("VmRSS")
        from trainer.round import load_options

        trainer = build_trainer(Path(args.model), None, dataset, recipe.train, 0, Path(tmp) / "work",
                                recipe.train.learning_rate, load=load_options(recipe))
        trainer.train()
        peak = torch.cuda.max_memory_allocated() / 1e9 if on_gpu else rss_gb("VmHWM")
    measured = peak - before
    for line in plan.lines():
        print(line)
    print(f"measured peak of the round: {measured:.2f} GB ({'GPU allocated' if on_gpu else 'CPU resident set'}, "
          f"above {before:.2f} GB before the model loaded); plan / measured = {plan.total_gb / measured:.2f}")
    print(json.dumps({"plan_gb": round(plan.total_gb, 3), "measured_gb": round(measured, 3),
                      "ratio": round(plan.total_gb / measured, 3), "weights_gb": round(plan.weights_gb, 3),
                      "lora_gb": round(plan.lora_gb, 3), "activations_gb": round(plan.activations_gb, 3),
                      "activations_gb_with_checkpointing": round(plan.activations_gb_with_checkpointing, 3),
                      "logits_gb": round(plan.logits_gb, 3), "max_length": args.max_length,
                      "batch_size": args.batch_size, "gradient_checkpointing": args.gradient_checkpointing,
                      "dtype": args.dtype, "device": "cuda" if on_gpu else "cpu"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
