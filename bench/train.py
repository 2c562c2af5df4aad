"""SFT training throughput of flywheel's round against a plain `SFTTrainer`, same data, same model,
same run, in trained tokens per second (tokens that carry loss: assistant, never prompt or pad).

    python bench/train.py            # 8 difficulties x 32 maze episodes, tiny model
    python bench/train.py --quick    # a short run (about a minute of CPU time)
    python bench/train.py --model /path/to/hf-model --max-length 4096   # on a GPU machine

1. Data: random-policy maze episodes of difficulties 1..8 (2 to 50+ moves each: the length spread of
   agent logs), logged as canonical JSONL, ingested through the experience store and built into the
   SFT dataset exactly as a round does.
2. flywheel: the round's own trainer (`trainer.methods.sft.build_trainer`: assistant-only loss, packing
   best-fit decreasing into rows of --max-length tokens, padding-free).
3. baseline: `SFTTrainer` with default settings (padded batches of --baseline-batch trajectories)
   on the same rows tokenized with the same assistant mask, so both optimise the same loss, and
   the same LoRA and LR.
Both train one epoch over the same trajectories; the first step (warm-up) is left out of the
timing. Each prints its non-pad token share per batch. The last stdout line is one JSON object:
flywheel_tokens_per_s, baseline_tokens_per_s, speedup, nonpad_share (flywheel, mean per batch),
baseline_nonpad_share and the raw figures; on a GPU also mfu, baseline_mfu and peak_memory_gb.

On a GPU without network (--from-config): `python bench/train.py --from-config qwen3-8b/config.json
--max-length 4096 --gradient-checkpointing` builds random bf16 weights of that shape on the GPU
(throughput and memory do not depend on the weights), with the tiny tokenizer.

On the CPU the padding-free batch attends through a block-diagonal mask over the whole packed row
(the varlen FlashAttention kernels that skip the blocks are a GPU feature), so the CPU speedup
comes from not computing padding, and understates what a GPU gets.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_dataset(root: Path, per_difficulty: int, difficulties: list[int]):
    """Maze episodes -> experience store -> SFT dataset (all episodes: the length spread matters here)."""
    from data_pipeline.builders import build_sft
    from data_pipeline.store import ExperienceStore
    from eval.rollout import RandomPolicy, run_episodes, write_jsonl
    from eval.suites import get_suite

    suite = get_suite("maze")
    trajs = []
    for d in difficulties:
        trajs += run_episodes(suite, d, suite.train_seeds(per_difficulty, offset=0), RandomPolicy(),
                              batch_size=per_difficulty, rng_seed=d, progress=False)
    write_jsonl(trajs, root / "episodes.jsonl")
    store = ExperienceStore(root / "store")
    store.ingest([root / "episodes.jsonl"], fmt="flywheel", tag="bench")
    return build_sft(store.trajectories(), success_only=False)


class Meter:
    """Hooks a trainer: trained tokens per micro-batch (at training_step, as the round counts them),
    non-pad share per batch (at the collator) and wall time per optimizer step."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.tokens, self.step_tokens, self.step_s, self.nonpad = 0, [], [], []
        self.processed = 0  # non-pad input tokens (what the FLOPs are spent on)
        collate, step = trainer.data_collator, trainer.training_step

        def collator(features):
            batch = collate(features)
            mask = batch.get("attention_mask")
            # padding-free batches carry no mask: one flattened row, nothing padded
            self.nonpad.append(float(mask.sum()) / mask.numel() if mask is not None else 1.0)
            self.processed += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
            return batch

        def training_step(model, inputs, *args, **kwargs):
            self.tokens += int((inputs["labels"][..., 1:] != -100).sum())
            return step(model, inputs, *args, **kwargs)

        meter = self

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                meter._t0, meter._tok0 = time.perf_counter(), meter.tokens

            def on_step_end(self, args, state, control, **kwargs):
                meter.step_s.append(time.perf_counter() - meter._t0)
                meter.step_tokens.append(meter.tokens - meter._tok0)

        trainer.data_collator, trainer.training_step = collator, training_step
        trainer.add_callback(Timer())

    def summary(self) -> dict:
        s, t = self.step_s[1:] or self.step_s, self.step_tokens[1:] or self.step_tokens  # step 1 = warm-up
        import torch

        return {"tokens_per_s": sum(t) / sum(s), "steps": len(self.step_s), "trained_tokens": self.tokens,
                "processed_tokens_per_s": self.processed / sum(self.step_s),
                "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
                "timed_s": sum(s), "nonpad_share": statistics.fmean(self.nonpad),
                "nonpad_share_min": min(self.nonpad), "batches": len(self.nonpad)}


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def model_from_config(config_path: Path, dest: Path, dtype: str) -> Path:
    """A model folder with random weights in the shape of `config_path` (throughput and memory do
    not depend on the weights) and the tiny tokenizer (its ids fit any vocabulary)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.tiny import load_tokenizer

    config = AutoConfig.from_pretrained(str(config_path))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(dest)
    load_tokenizer().save_pretrained(dest)
    del model
    return dest


def mfu(processed_tokens_per_s: float, params: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation of a LoRA round: 4 N FLOPs per token (forward 2N, backward through
    the frozen base 2N; the base has no weight gradients), against the GPU's dense peak."""
    return 4 * params * processed_tokens_per_s / (peak_tflops * 1e12)


def quiet(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def run_flywheel(base: Path, dataset, work: Path, args) -> dict:
    from trainer.config import TrainConfig
    from trainer.methods.sft import build_trainer

    cfg = TrainConfig(sft={"packing": True}, max_length=args.max_length, batch_size=args.flywheel_batch, epochs=1,
                      save_steps=10**9, learning_rate=args.lr, gradient_checkpointing=args.gradient_checkpointing)
    trainer = build_trainer(base, None, dataset, cfg, seed=0, work_dir=work, learning_rate=args.lr,
                            load=_load(args))
    quiet(trainer)
    meter = Meter(trainer)
    _reset_peak()
    trainer.train()
    return meter.summary()


def _load(args):
    from eval.models import LoadOptions

    return LoadOptions(dtype=args.dtype)


def run_baseline(base: Path, dataset, work: Path, args) -> dict:
    """A default SFTTrainer on the same rows, rendered by the same template with the same assistant
    mask (a plain SFTTrainer's assistant_only_loss refuses templates without generation marks, such
    as SmolLM2's ChatML), in padded batches of --baseline-batch trajectories."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from eval.models import load_model, load_tokenizer
    from trainer.common import lora_config, mixed_precision
    from trainer.config import TrainConfig
    from trainer.methods.sft import tokenize_conversations

    tokenizer, model = load_tokenizer(base, _load(args)), load_model(base, _load(args))
    on_gpu = torch.cuda.is_available()
    config = SFTConfig(output_dir=str(work), max_length=args.max_length,
                       per_device_train_batch_size=args.baseline_batch, num_train_epochs=1, learning_rate=args.lr,
                       report_to="none", save_strategy="no", use_cpu=not on_gpu,
                       **mixed_precision(args.dtype, on_gpu), seed=0, disable_tqdm=True,
                       activation_checkpointing=args.gradient_checkpointing)
    trainer = SFTTrainer(model=model, args=config, train_dataset=tokenize_conversations(dataset, tokenizer),
                         processing_class=tokenizer, peft_config=lora_config(TrainConfig()))
    quiet(trainer)
    meter = Meter(trainer)
    _reset_peak()
    trainer.train()
    return meter.summary()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: 4 episodes per difficulty")
    ap.add_argument("--per-difficulty", type=int, default=32, help="maze episodes per difficulty")
    ap.add_argument("--difficulties", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--model", default="tiny", help="'tiny' or a local model folder")
    ap.add_argument("--max-length", type=int, default=1024, help="tokens per packed row / truncation length")
    ap.add_argument("--flywheel-batch", type=int, default=2, help="packed rows per batch (flywheel)")
    ap.add_argument("--baseline-batch", type=int, default=8, help="trajectories per batch (SFTConfig default 8)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--dtype", default=None, help="weights dtype (default: float32 on the CPU, bfloat16 on a GPU)")
    ap.add_argument("--from-config", type=Path, default=None,
                    help="config.json of a real architecture (e.g. an 8B Llama/Qwen): random weights of that shape")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for MFU (H100/H200: 989)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="both arms checkpoint activations")
    args = ap.parse_args()
    if args.quick:
        args.per_difficulty = min(args.per_difficulty, 4)
    import torch

    args.dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    from trainer.common import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-train-") as tmp:
        tmp = Path(tmp)
        if args.from_config:
            base = model_from_config(args.from_config, tmp / "base", args.dtype)
            args.model = f"random weights of {args.from_config}"
        elif args.model == "tiny":
            from trainer.tiny import materialize_tiny

            base = materialize_tiny(tmp / "base")
        else:
            base = Path(args.model)
        dataset = build_dataset(tmp, args.per_difficulty, [int(d) for d in args.difficulties.split(",")])
        print(f"data: {len(dataset)} maze trajectories, difficulties {args.difficulties}", flush=True)
        results = {}
        for name, fn in (("baseline", run_baseline), ("flywheel", run_flywheel)):
            r = results[name] = fn(base, dataset, tmp / name, args)
            print(f"{name}: {r['tokens_per_s']:.0f} trained tokens/s over {r['steps']} steps "
                  f"({r['trained_tokens']} trained tokens); non-pad share per batch mean {r['nonpad_share']:.3f}, "
                  f"min {r['nonpad_share_min']:.3f} over {r['batches']} batches", flush=True)
    fw, bl = results["flywheel"], results["baseline"]
    gpu = {}
    if fw["peak_memory_gb"] is not None:
        from trainer.memory_plan import count_params, shape_from_config

        params, _ = count_params(shape_from_config(json.loads((base_config := args.from_config or
                                                                 Path(args.model) / "config.json").read_text())))
        gpu = {"mfu": round(mfu(fw["processed_tokens_per_s"], params, args.peak_tflops), 4),
               "baseline_mfu": round(mfu(bl["processed_tokens_per_s"], params, args.peak_tflops), 4),
               "peak_memory_gb": round(fw["peak_memory_gb"], 2), "params": params, "config": str(base_config)}
    print(json.dumps({
        "flywheel_tokens_per_s": round(fw["tokens_per_s"], 1), "baseline_tokens_per_s": round(bl["tokens_per_s"], 1),
        "speedup": round(fw["tokens_per_s"] / bl["tokens_per_s"], 3), "nonpad_share": round(fw["nonpad_share"], 4),
        "baseline_nonpad_share": round(bl["nonpad_share"], 4), "trajectories": len(dataset),
        "device": "cuda" if __import__("torch").cuda.is_available() else "cpu", "model": args.model,
        **gpu, "dtype": args.dtype, "flywheel": fw, "baseline": bl,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
