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
from typing import TYPE_CHECKING

from data_pipeline.config import Section

if TYPE_CHECKING:
    from eval.models import LoadOptions

DATASET = "dpo"  # `flywheel dataset build --kind` of this method's dataset
REFERENCE = True  # KL to a reference policy: train.reference and train.beta apply


class Config(Section):
    """DPO: keys of DPO alone (none yet; it shares train.beta and train.reference)"""


def build_dataset(trajs, recipe, heldout):
    """The round's trajectories -> `prompt` / `chosen` / `rejected` pairs of episodes of one task
    (data_pipeline.builders.build_dpo)."""
    from data_pipeline.builders import build_dpo

    return build_dpo(trajs, heldout=heldout)


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None,
          reference_adapter: Path | None = None, load: LoadOptions | None = None) -> dict:
    """Train one round on `dataset`; returns metrics and the trained PEFT model under "model"."""
    from trl import DPOConfig, DPOTrainer

    from trainer.common import train_against_reference

    # 1. setup (TRL's DPO defaults: sigmoid loss), 2. train against the reference policy, 3. save and
    # hand back the trained adapter only
    return train_against_reference(DPOTrainer, DPOConfig, base_path, parent_adapter, dataset, cfg, seed, work_dir,
                                   learning_rate, deepspeed_config, reference_adapter, load)
