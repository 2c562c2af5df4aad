"""SFT round: supervised fine-tuning of a LoRA adapter on successful trajectories.

Drives TRL's `SFTTrainer` on conversations tokenized here with their assistant mask
(`eval.models.assistant_mask`: the template's `{% generation %}` marks, or growing prefixes for a
template without them, such as the ChatML that SmolLM2 ships), so the loss is on the assistant's
tokens for any prefix-stable template, and the conversation is rendered exactly as evaluation and
serving render it. With `train.sft.packing`, trajectories are packed best-fit
decreasing into rows of `train.max_length` tokens and trained padding-free (TRL's "bfd" strategy:
one flattened sequence per batch, position ids restart at each trajectory so attention stays
inside it); the assistant mask survives packing, so the loss is still on assistant tokens only.
Honours: train.learning_rate, lr_scheduler, warmup_ratio, epochs, max_steps, batch_size,
grad_accum, max_length, sft.packing, max_grad_norm, grad_norm_limit, save_steps, deepspeed, lora.*,
and data.success_only / data.min_score (the dataset); resumes from the newest intra-round checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from data_pipeline.config import Section

if TYPE_CHECKING:
    from eval.models import LoadOptions

DATASET = "sft"  # `flywheel dataset build --kind` of this method's dataset
REFERENCE = False  # no KL reference: train.reference does not apply


class Config(Section):
    """SFT: keys of supervised fine-tuning alone"""

    packing: bool = Field(False, description="Pack sequences (padding-free where supported)")


def build_dataset(trajs, recipe, heldout):
    """The round's trajectories -> whole conversations to imitate (`messages`), kept as
    data.success_only, data.min_score and data.unlabeled say (data_pipeline.builders.build_sft)."""
    from data_pipeline.builders import build_sft

    return build_sft(trajs, success_only=recipe.data.success_only, min_score=recipe.data.min_score, heldout=heldout,
                     unlabeled=recipe.data.unlabeled)


def sft_args(cfg, seed: int, work_dir: Path, learning_rate: float, deepspeed_config: str | None,
             load: LoadOptions | None = None):
    from trl import SFTConfig

    from trainer.common import build_trainer_args

    return SFTConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load),
        assistant_only_loss=False,  # the rows carry their own assistant_masks (tokenize_conversations)
        max_length=cfg.max_length,
        packing=cfg.sft.packing,
        packing_strategy="bfd",  # whole trajectories per row, overflow truncated; implies padding-free
        shuffle_dataset=False,  # the trainer's seeded sampler orders the data (same on resume and N ranks)
        dataset_num_proc=None,
    )


def tokenize_conversations(dataset, tokenizer):
    """`messages` (+ `tools`) rows -> `input_ids` and `assistant_masks`, which TRL turns into labels
    (-100 off the assistant's tokens). Tool-use rows need a template that renders tool calls."""
    from eval.models import assistant_mask, check_renders_tool_calls

    if any(m.get("tool_calls") for row in dataset["messages"] for m in row):
        check_renders_tool_calls(tokenizer)

    def encode(row):
        ids, mask = assistant_mask(tokenizer, _clean(row["messages"]), row.get("tools"))
        return {"input_ids": ids, "assistant_masks": mask}

    return dataset.map(encode, remove_columns=dataset.column_names)


def _clean(messages: list[dict]) -> list[dict]:
    """Arrow fills absent keys with None; templates test for presence (`message.tool_calls`), so
    drop them, and give tool-call turns without text an empty string (ChatML concatenates it)."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None and v != []}
        m.setdefault("content", "")
        out.append(m)
    return out


def build_trainer(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
                  learning_rate: float, deepspeed_config: str | None = None, load: LoadOptions | None = None):
    """The round's SFTTrainer: base (+ the parent's adapter, trainable) and the round's config."""
    from trl import SFTTrainer

    from trainer.common import load_policy_for_training

    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    args = sft_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load)
    return SFTTrainer(model=model, args=args, train_dataset=tokenize_conversations(dataset, tokenizer),
                      processing_class=tokenizer,
                      peft_config=peft_config)


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None, reference_adapter: Path | None = None,
          load: LoadOptions | None = None) -> dict:
    """Train one round on `dataset` (column `messages`); returns the metrics and the trained PEFT
    model, whose adapter run_trainer also saved to work_dir/final-adapter. (`reference_adapter`:
    SFT has no reference, REFERENCE is False, so the round never passes one.)"""
    from trainer.common import run_trainer

    # 1. setup
    trainer = build_trainer(base_path, parent_adapter, dataset, cfg, seed, work_dir, learning_rate, deepspeed_config,
                            load)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one) 3. save and hand back
    return run_trainer(trainer, work_dir, cfg.grad_norm_limit)
