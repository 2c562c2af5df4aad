"""The training methods of a round, one module each, by the name `train.method` gives them.

A method module holds, in this order:

- `DATASET`: the name of its dataset kind (`flywheel dataset build --kind`, a builder of
  data_pipeline.builders); `REFERENCE`: whether it trains against a reference policy (then the
  round hands `train()` the parent's adapter as `reference_adapter` under `train.reference: previous`).
- `Config`: its recipe section `train.<name>` (a data_pipeline.config.Section; the keys of this
  method alone, each with a description). trainer/config.py composes every method's section into
  `TrainConfig`; keys shared by several methods (`train.beta`, `train.reference`) stay in `train`.
- `build_dataset(trajs, recipe, heldout)`: the round's trajectories -> its training dataset, through
  data_pipeline.builders.
- `train(base_path, parent_adapter, dataset, cfg, seed, work_dir, learning_rate, deepspeed_config,
  reference_adapter, load)`: one round, setup -> train -> save, through TRL and trainer/common.py;
  returns its metrics and the trained PEFT model under "model".

Adding a method is one new module here and one line in METHODS. The modules import nothing heavy
at the top (torch, TRL and the builders are imported where used): loading a recipe reads their
`Config` sections.
"""
from __future__ import annotations

from trainer.methods import dpo, grpo, kto, sft

METHODS = {"sft": sft, "kto": kto, "dpo": dpo, "grpo": grpo}
