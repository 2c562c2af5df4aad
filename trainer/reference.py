"""The reference policy of the methods that have one (KTO, DPO, GRPO), as a frozen LoRA adapter.

TRL's preference and RL trainers, when they train a PEFT model and get no `ref_model`, compute
the reference log-probs with the adapter named "ref" when the model has one, else with every
adapter disabled (the base weights). flywheel uses exactly that switch:

- `train.reference: previous` -> the parent round's adapter is loaded, frozen, as "ref": the
  KL anchor is the policy that collected the data, at the cost of one more LoRA, not one more model.
- `train.reference: base` -> no "ref" adapter: the anchor is the base weights under the adapter.

TRL itself adds a "ref" copy of the adapter when it is handed an already-adapted PeftModel, so
the choice is applied after the trainer is built, and the "ref" adapter is dropped before the
trained adapter is handed back (so it never lands in the checkpoint).
"""
from __future__ import annotations

from pathlib import Path

REF = "ref"  # the adapter name TRL's trainers look for


def set_reference(model, reference_adapter: Path | None) -> None:
    """Make `reference_adapter` (frozen) or the bare base weights the reference of `model`."""
    drop_reference(model)
    if reference_adapter is not None:
        model.load_adapter(str(reference_adapter), adapter_name=REF, is_trainable=False)
        for name, p in model.named_parameters():
            if f".{REF}." in name:
                p.requires_grad_(False)


def drop_reference(model) -> None:
    if REF in getattr(model, "peft_config", {}):
        model.delete_adapter(REF)
