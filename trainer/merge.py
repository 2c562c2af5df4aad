"""Merge-and-start-fresh (`train.adapter: merge`): each round folds its parent's LoRA adapter into
the base weights and trains a fresh adapter on top of the result.

Continuing one adapter keeps every round's update inside one rank-r subspace; merging lets round
after round add up to a full-rank change (the "ReLoRA" argument, Lialin et al. 2023,
arXiv:2307.05695), at the price of one full model copy per round on disk.

The merged base of round r is written once, atomically, to `<run>/bases/round-XXXX/` (model +
tokenizer, an ordinary model folder any loader opens); the round's manifest names it as
`base_model`. The original base folder is only read. The parent's policy *is* the merged base,
so the reference of KTO/DPO/GRPO is then the merged base with the adapter disabled, whatever
`train.reference` says: after a merge the original base is no longer underneath the adapter.
"""
from __future__ import annotations

from pathlib import Path

from trainer.rundir import write_dir_atomically


def merged_base_dir(run_root: Path, r: int) -> Path:
    return Path(run_root) / "bases" / f"round-{r:04d}"


def merge_adapter(base_path: Path, adapter_path: Path, dest: Path) -> Path:
    """Write base + adapter, merged (peft `merge_and_unload`), as a model folder at `dest`. Kept when
    it exists already: a rerun of the round merges nothing twice."""
    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The base's own dtype: a bf16 base stays a bf16 base (the merge rounds once, as at serving).
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype="auto", local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(base_path), local_files_only=True)

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_dir_atomically(dest, fill)
    return dest
