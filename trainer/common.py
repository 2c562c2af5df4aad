"""What every training method shares: loading the policy to train (base + parent adapter or a new
LoRA), the TrainingArguments common to TRL's configs, running with resume, and the guards."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch


class TrainingDiverged(RuntimeError):
    """Non-finite loss or exploding gradient norm: the round stops, the parent stays current."""


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM", bias="none")


def load_policy_for_training(base_path: Path, parent_adapter: Path | None, cfg):
    """(model, tokenizer, peft_config): continue the parent's adapter when there is one (the
    model comes back as a trainable PeftModel and peft_config is None), else a fresh LoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32, local_files_only=True)
    if parent_adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True), tokenizer, None
    return model, tokenizer, lora_config(cfg)


def build_trainer_args(cfg, seed: int, work_dir: Path, learning_rate: float,
                       deepspeed_config: str | None) -> dict[str, Any]:
    return dict(
        output_dir=str(work_dir),
        learning_rate=learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=1,
        logging_nan_inf_filter=False,  # the divergence guard must see non-finite losses
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        dataloader_num_workers=0,
        deepspeed=deepspeed_config,
        disable_tqdm=False,
    )


def newest_checkpoint(work_dir: Path) -> str | None:
    ckpts = sorted(Path(work_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def _divergence_guard(grad_norm_limit: float):
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        """Stops training at the first logged step with a non-finite loss or exploding gradient."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            loss, gn = logs.get("loss"), logs.get("grad_norm")
            if loss is not None and not math.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss {loss} at step {state.global_step}")
            if gn is not None and (not math.isfinite(gn) or gn > grad_norm_limit):
                raise TrainingDiverged(f"gradient norm {gn:.4g} exceeds train.grad_norm_limit={grad_norm_limit:g} "
                                       f"at step {state.global_step}")

    return DivergenceGuard()


def run_trainer(trainer, work_dir: Path, grad_norm_limit: float = math.inf) -> dict:
    """Train with resume from an intra-round checkpoint, stopping at the first diverged step;
    return metrics and the trained model."""
    trainer.add_callback(_divergence_guard(grad_norm_limit))
    result = trainer.train(resume_from_checkpoint=newest_checkpoint(work_dir))
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "model": trainer.model,
        "train_loss": float(result.training_loss),
        "steps": int(trainer.state.global_step),
        "loss_history": [float(h["loss"]) for h in history],
        "train_runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
