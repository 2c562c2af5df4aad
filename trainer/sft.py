"""SFT round: supervised fine-tuning of a LoRA adapter on successful trajectories.

Drives TRL's `SFTTrainer` (conversational `messages` data, assistant-only loss through the chat
template's `{% generation %}` marks, optional packing). Honours: train.learning_rate,
lr_scheduler, warmup_ratio, epochs, max_steps, batch_size, grad_accum, max_length, packing,
max_grad_norm, save_steps, deepspeed, lora.*; resumes from the newest intra-round checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from trainer.common import build_trainer_args, load_policy_for_training, run_trainer


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None) -> dict:
    """Train one round on `dataset` (column `messages`); returns the trained PEFT model's metrics.
    The adapter is saved by the caller from `result["model"]`."""
    from trl import SFTConfig, SFTTrainer

    # 1. setup: base (+ the parent's adapter, trainable) and the trainer config
    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg)
    args = SFTConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config),
        assistant_only_loss=True,
        max_length=cfg.max_length,
        packing=cfg.packing,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one) 3. hand back
    return run_trainer(trainer, work_dir, cfg.grad_norm_limit)
