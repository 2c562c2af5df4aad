"""What every training method shares: loading the policy to train (base + parent adapter or a new
LoRA), the TrainingArguments common to TRL's configs, running with resume, the guards, a quiet
progress bar, the count of trained tokens, and where this process stands in a distributed launch.

A method module (`trainer/methods/<method>.py`) builds its TRL trainer from `build_trainer_args(...)`
and hands it to `run_trainer(trainer, work_dir, grad_norm_limit)`, or, for a preference method
trained against a reference policy (KTO, DPO), hands its TRL trainer and config classes to
`train_against_reference(...)`; the round does the rest.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from eval.models import LoadOptions, load_model, load_tokenizer
from trainer.errors import UserError

FINAL_ADAPTER = "final-adapter"  # run_trainer saves the trained adapter here, inside the work dir
_progress = {"enabled": True}


class TrainingDiverged(UserError):
    """Non-finite loss or exploding gradient norm: the round stops, the parent stays current."""


# ---- where this process stands ------------------------------------------------------------------
@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env() -> DistEnv:
    """Rank from the launcher's environment (torchrun / deepspeed / srun set RANK, WORLD_SIZE,
    LOCAL_RANK); a plain process is rank 0 of 1."""
    def _int(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        return int(value) if value.strip().lstrip("-").isdigit() else default

    return DistEnv(_int("RANK", 0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0))


def set_progress(enabled: bool) -> None:
    """Show (or not) the one progress bar per round that `run_trainer` draws on rank 0."""
    _progress["enabled"] = bool(enabled)


def quiet_libraries() -> None:
    """No per-library bars (dataset maps, weight loading) or deprecation chatter from inside
    transformers/TRL: a round shows its own bar and its errors, nothing else."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for module in ("transformers", "trl", "peft", "accelerate", "torch", "deepspeed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


# ---- setup ---------------------------------------------------------------------------------------
def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM", bias="none")


def load_policy_for_training(base_path: Path, parent_adapter: Path | None, cfg, load: LoadOptions | None = None):
    """(model, tokenizer, peft_config): continue the parent's adapter when there is one (the
    model comes back as a trainable PeftModel and peft_config is None), else a fresh LoRA. The
    base loads as the recipe's `model.*` keys say (dtype, attention, 4 bit with train.lora.qlora),
    the tokenizer with the chat template every stage renders with (eval.models)."""
    load = LoadOptions() if load is None else load
    tokenizer = load_tokenizer(base_path, load)
    model = load_model(base_path, replace(load, load_in_4bit=load.load_in_4bit or cfg.lora.qlora))
    if cfg.lora.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if parent_adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True), tokenizer, None
    return model, tokenizer, lora_config(cfg)


def mixed_precision(dtype: str, on_gpu: bool) -> dict[str, bool]:
    """bf16 / fp16 mixed precision for half-precision weights on a GPU; the CPU trains in the
    weights' own dtype (float32 by default)."""
    return {"bf16": on_gpu and dtype in ("bfloat16", "auto"), "fp16": on_gpu and dtype == "float16"}


def build_trainer_args(cfg, seed: int, work_dir: Path, learning_rate: float,
                       deepspeed_config: str | None, load: LoadOptions | None = None) -> dict[str, Any]:
    """TrainingArguments shared by every method's TRL config. Data order comes from `seed` alone
    (accelerate's seedable sampler, same permutation on any number of processes), so a resumed
    or multi-process round sees the same batches as a single uninterrupted one."""
    on_gpu = torch.cuda.is_available()
    load = LoadOptions() if load is None else load
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
        use_cpu=not on_gpu,
        **mixed_precision(load.dtype, on_gpu),
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers' name (non-reentrant by default)
        use_liger_kernel=liger_available(cfg.liger_kernel),
        ddp_backend="gloo" if dist_env().distributed and not on_gpu else None,
        dataloader_num_workers=0,
        deepspeed=deepspeed_config,
        disable_tqdm=True,  # run_trainer draws its own bar; the default printer is removed there
        log_level="warning",
    )


def liger_available(wanted: bool) -> bool:
    """train.liger_kernel: Liger's fused kernels (TRL's use_liger_kernel) need the package and a GPU."""
    if not wanted:
        return False
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available():
        raise UserError("train.liger_kernel=true needs a GPU and the liger-kernel package (pip install liger-kernel); "
                        "set it to false on this machine")
    return True


# ---- resume --------------------------------------------------------------------------------------
def complete_checkpoints(work_dir: Path) -> list[Path]:
    """Intra-round checkpoints whose trainer state was written (it is written last), oldest first.
    A checkpoint cut short by a kill has no readable trainer_state.json and is ignored."""
    found = []
    for p in Path(work_dir).glob("checkpoint-*"):
        try:
            step = int(p.name.split("-")[-1])
            state = json.loads((p / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if state.get("global_step") == step:
            found.append((step, p))
    return [p for _, p in sorted(found)]


def newest_checkpoint(work_dir: Path) -> str | None:
    ckpts = complete_checkpoints(work_dir)
    return str(ckpts[-1]) if ckpts else None


def remove_checkpoints(work_dir: Path) -> None:
    """Drop intra-round checkpoints (after a divergence they hold the path to it)."""
    for p in Path(work_dir).glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


# ---- callbacks -----------------------------------------------------------------------------------
def _divergence_guard(grad_norm_limit: float):
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        """Stops training at the first logged step with a non-finite loss or exploding gradient.
        The logged loss and gradient norm are reduced over ranks, so every rank stops together."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            loss, gn = logs.get("loss"), logs.get("grad_norm")
            if loss is not None and not math.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss {loss} at step {state.global_step}")
            if gn is not None and (not math.isfinite(gn) or gn > grad_norm_limit):
                raise TrainingDiverged(f"gradient norm {gn:.4g} exceeds train.grad_norm_limit={grad_norm_limit:g} "
                                       f"at step {state.global_step}")

    return DivergenceGuard()


def count_trained_tokens(trainer) -> dict[str, int]:
    """Count, per micro-batch that reaches the optimizer, the tokens that carry loss (label !=
    -100 after the one-position shift of causal LM loss): assistant tokens, never prompt or
    padding. Hooked on `training_step`, not on the data collator: batches a resumed run skips
    are collated but never trained. Returns the rank-local counter the logger drains."""
    counter = {"pending": 0}
    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        # GRPO hands raw prompt rows (a list) to training_step: it has no labels to count here
        labels = inputs.get("labels") if isinstance(inputs, dict) else None
        if labels is not None:
            counter["pending"] += int((labels[..., 1:] != -100).sum())
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = training_step
    return counter


def _token_logger(trainer, counter: dict[str, int]):
    from transformers import TrainerCallback

    class TrainedTokens(TrainerCallback):
        """Adds the cumulative `tokens_trained` (summed over ranks) to each logged step. It lives in
        the log history, which a checkpoint keeps, so a resumed round counts on from there."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            local = torch.tensor(counter["pending"], dtype=torch.long, device=trainer.args.device)
            counter["pending"] = 0
            total = int(trainer.accelerator.reduce(local, reduction="sum")) if trainer.accelerator.num_processes > 1 \
                else int(local)
            before = next((h["tokens_trained"] for h in reversed(state.log_history[:-1]) if "tokens_trained" in h), 0)
            state.log_history[-1]["tokens_trained"] = before + total

    return TrainedTokens()


def _progress_bar():
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class RoundProgress(TrainerCallback):
        """One bar per round on rank 0, the latest loss in its postfix (instead of a printed dict
        per step)."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and _progress["enabled"]:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                                leave=False, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return RoundProgress()


def quiet_callbacks(trainer) -> None:
    """Replace transformers' printed dict per step and its own bars with our single bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_progress_bar())


# ---- train ---------------------------------------------------------------------------------------
def run_trainer(trainer, work_dir: Path, grad_norm_limit: float = math.inf) -> dict:
    """Train with resume from the newest complete intra-round checkpoint, stopping at the first
    diverged step; save the trained adapter to work_dir/final-adapter (every rank takes part:
    ZeRO-3 gathers the shards) and return the metrics and the trained model."""
    quiet_callbacks(trainer)
    trainer.add_callback(_token_logger(trainer, count_trained_tokens(trainer)))
    trainer.add_callback(_divergence_guard(grad_norm_limit))
    from trainer.preempt import preempt_callback, raise_if_preempted  # Slurm warning signal -> save and stop

    preempt = preempt_callback()
    trainer.add_callback(preempt)
    resume = newest_checkpoint(work_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    raise_if_preempted(preempt)  # a preempted round must not be saved as complete
    final = Path(work_dir) / FINAL_ADAPTER
    trainer.save_model(str(final))
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "model": trainer.model,
        "train_loss": float(result.training_loss),
        "steps": int(trainer.state.global_step),
        "loss_history": [float(h["loss"]) for h in history],
        "grad_norm_history": [float(h["grad_norm"]) for h in history if "grad_norm" in h],
        "tokens_trained": max((int(h["tokens_trained"]) for h in trainer.state.log_history
                               if "tokens_trained" in h), default=0),
        "train_runtime_s": float(result.metrics.get("train_runtime", 0.0)),
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else 0,
    }


def train_against_reference(trainer_class, config_class, base_path: Path, parent_adapter: Path | None, dataset, cfg,
                            seed: int, work_dir: Path, learning_rate: float, deepspeed_config: str | None,
                            reference_adapter: Path | None, load: LoadOptions | None = None, **method_args) -> dict:
    """One round of a TRL preference trainer (KTOTrainer / DPOTrainer with its KTOConfig /
    DPOConfig) against a frozen reference policy (trainer/reference.py): train.beta and
    train.max_length, plus the method's own config keywords (`method_args`). Returns run_trainer's
    metrics, the trained adapter alone under "model"."""
    from trainer.reference import drop_reference, set_reference

    # 1. setup: base (+ the parent's adapter, trainable), the trainer config, the reference policy
    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    args = config_class(**build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load),
                        beta=cfg.beta, max_length=cfg.max_length, **method_args, dataset_num_proc=None)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config)
    set_reference(trainer.model, reference_adapter)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one)
    result = run_trainer(trainer, work_dir, cfg.grad_norm_limit)
    # 3. hand back the trained adapter only
    drop_reference(result["model"])
    return result
