"""KTO round: prospect-theoretic alignment of a LoRA adapter on unpaired outcome labels.

Follows Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
(arXiv:2402.01306): every logged episode is one example, desirable when it succeeded, so no pairs
are needed, the natural fit for logged trajectories. Drives TRL's `KTOTrainer` on the
`prompt` / `completion` / `label` columns of `data_pipeline.builders.build_kto`.

Honours: train.learning_rate (with the round's decay), lr_scheduler, warmup_ratio, epochs,
max_steps, batch_size (> 1: KTO estimates its KL term from mismatched pairs inside a batch),
grad_accum, max_length, max_grad_norm, grad_norm_limit, save_steps, beta, deepspeed, lora.*,
and train.reference through `reference_adapter` (see trainer/reference.py). Resumes from the
newest intra-round checkpoint in `work_dir`.
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
    from trl import KTOConfig, KTOTrainer

    # 1. setup: base (+ the parent's adapter, trainable), the trainer config, the reference policy
    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    desirable = sum(bool(x) for x in dataset["label"])
    args = KTOConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load),
        beta=cfg.beta,
        max_length=cfg.max_length,
        # Logged agents mostly fail: weigh the rarer side up so both sides pull equally
        # (the paper's recommended ratio range, section 4.2).
        **_class_weights(desirable, len(dataset) - desirable),
        dataset_num_proc=None,
    )
    trainer = KTOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    set_reference(trainer.model, reference_adapter)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one)
    result = run_trainer(trainer, work_dir, cfg.grad_norm_limit)
    # 3. hand back the trained adapter only
    drop_reference(result["model"])
    result["desirable"], result["undesirable"] = desirable, len(dataset) - desirable
    return result


def _class_weights(desirable: int, undesirable: int) -> dict[str, float]:
    """KTO's lambda_D / lambda_U so that lambda_D * n_D ~= lambda_U * n_U (one side fixed at 1)."""
    if desirable == 0 or undesirable == 0:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if desirable < undesirable:
        return {"desirable_weight": undesirable / desirable, "undesirable_weight": 1.0}
    return {"desirable_weight": 1.0, "undesirable_weight": desirable / undesirable}
