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
from typing import TYPE_CHECKING

from data_pipeline.config import Section

if TYPE_CHECKING:
    from eval.models import LoadOptions

DATASET = "kto"  # `flywheel dataset build --kind` of this method's dataset
REFERENCE = True  # KL to a reference policy: train.reference and train.beta apply


class Config(Section):
    """KTO: keys of KTO alone (none yet; it shares train.beta and train.reference)"""


def build_dataset(trajs, recipe, heldout):
    """The round's trajectories -> one `prompt` / `completion` / `label` row per labeled episode
    (data_pipeline.builders.build_kto)."""
    from data_pipeline.builders import build_kto

    return build_kto(trajs, heldout=heldout)


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None,
          reference_adapter: Path | None = None, load: LoadOptions | None = None) -> dict:
    """Train one round on `dataset`; returns metrics and the trained PEFT model under "model"."""
    from trl import KTOConfig, KTOTrainer

    from trainer.common import train_against_reference

    # 1. setup: logged agents mostly fail, so weigh the rarer side up until both sides pull
    # equally (the paper's recommended ratio range, section 4.2)
    desirable = sum(bool(x) for x in dataset["label"])
    weights = _class_weights(desirable, len(dataset) - desirable)
    # 2. train against the reference policy 3. save and hand back the trained adapter only
    result = train_against_reference(KTOTrainer, KTOConfig, base_path, parent_adapter, dataset, cfg, seed, work_dir,
                                     learning_rate, deepspeed_config, reference_adapter, load, **weights)
    result["desirable"], result["undesirable"] = desirable, len(dataset) - desirable
    return result


def _class_weights(desirable: int, undesirable: int) -> dict[str, float]:
    """KTO's lambda_D / lambda_U so that lambda_D * n_D ~= lambda_U * n_U (one side fixed at 1)."""
    if desirable == 0 or undesirable == 0:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if desirable < undesirable:
        return {"desirable_weight": undesirable / desirable, "undesirable_weight": 1.0}
    return {"desirable_weight": 1.0, "undesirable_weight": desirable / undesirable}
