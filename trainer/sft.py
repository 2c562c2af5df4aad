"""SFT round: supervised fine-tuning of a LoRA adapter on successful trajectories.

Drives TRL's `SFTTrainer` (conversational `messages` data, assistant-only loss through the chat
template's `{% generation %}` marks). With `train.packing`, trajectories are packed best-fit
decreasing into rows of `train.max_length` tokens and trained padding-free (TRL's "bfd" strategy:
one flattened sequence per batch, position ids restart at each trajectory so attention stays
inside it); the assistant mask survives packing, so the loss is still on assistant tokens only.
Honours: train.learning_rate, lr_scheduler, warmup_ratio, epochs, max_steps, batch_size,
grad_accum, max_length, packing, max_grad_norm, grad_norm_limit, save_steps, deepspeed, lora.*;
resumes from the newest intra-round checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from trainer.common import build_trainer_args, load_policy_for_training, run_trainer


def sft_args(cfg, seed: int, work_dir: Path, learning_rate: float, deepspeed_config: str | None):
    from trl import SFTConfig

    return SFTConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config),
        assistant_only_loss=True,
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",  # whole trajectories per row, overflow truncated; implies padding-free
        shuffle_dataset=False,  # the trainer's seeded sampler orders the data (same on resume and N ranks)
        dataset_num_proc=None,
    )


def build_trainer(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
                  learning_rate: float, deepspeed_config: str | None = None):
    """The round's SFTTrainer: base (+ the parent's adapter, trainable) and the round's config."""
    from trl import SFTTrainer

    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg)
    args = sft_args(cfg, seed, work_dir, learning_rate, deepspeed_config)
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None) -> dict:
    """Train one round on `dataset` (column `messages`); returns the metrics and the trained PEFT
    model, whose adapter run_trainer also saved to work_dir/final-adapter."""
    # 1. setup
    trainer = build_trainer(base_path, parent_adapter, dataset, cfg, seed, work_dir, learning_rate, deepspeed_config)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one) 3. hand back
    return run_trainer(trainer, work_dir, cfg.grad_norm_limit)
