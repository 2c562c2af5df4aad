"""DPO round: direct preference optimisation of a LoRA adapter on pairs of episodes of one task.

Follows Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model" (arXiv:2305.18290): the better-scoring episode of a task is preferred to the worse
one from the same prompt, and the sigmoid loss pulls their log-ratio to the reference apart.
Drives TRL's `DPOTrainer` on the `prompt` / `chosen` / `rejected` columns of
`data_pipeline.builders.build_dpo`.

Honours: train.learning_rate (with the round's decay), lr_scheduler, warmup_ratio, epochs,
max_steps, batch_size, grad_accum, max_length, max_grad_norm, grad_norm_limit, save_steps, beta,
deepspeed, lora.*, and train.reference through `reference_adapter` (see trainer/reference.py).
Resumes from the newest intra-round checkpoint in `work_dir`.
"""
from __future__ import annotations

from pathlib import Path

from eval.models import LoadOptions
from trainer.common import build_trainer_args, load_policy_for_training, run_trainer
from trainer.reference import drop_reference, set_reference


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None,
          reference_adapter: Path | None = None, load: LoadOptions = LoadOptions()) -> dict:
    """Train one round on `dataset`; returns metrics and the trained PEFT model under "model"."""
    from trl import DPOConfig, DPOTrainer

    # 1. setup: base (+ the parent's adapter, trainable), the trainer config, the reference policy
    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    args = DPOConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load),
        beta=cfg.beta,
        max_length=cfg.max_length,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    set_reference(trainer.model, reference_adapter)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one)
    result = run_trainer(trainer, work_dir, cfg.grad_norm_limit)
    # 3. hand back the trained adapter only
    drop_reference(result["model"])
    return result
