"""Typed config of the training side: model, LoRA, one round, tracking, cluster resources, study."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from data_pipeline.config import Section
from trainer.methods import METHODS


class TinyModelConfig(Section):
    hidden_size: int = Field(128, ge=8, description="Tiny model: hidden size")
    layers: int = Field(2, ge=1, description="Tiny model: transformer layers")
    heads: int = Field(4, ge=1, description="Tiny model: attention heads")
    intermediate_size: int = Field(256, ge=8, description="Tiny model: MLP width")
    init_seed: int = Field(0, description="Tiny model: weight initialisation seed")
    init_std: float = Field(
        0.1, gt=0, description="Tiny model: std of the initial weights (large enough that a LoRA can move its logits)"
    )


class ModelConfig(Section):
    name_or_path: str = Field(..., description="'tiny' (built locally from a config) or a local path / hub id of a causal LM")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Weights dtype in training, evaluation and serving; bfloat16/float16 train in mixed precision on a GPU ('auto': as the checkpoint stores them)"
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel (flash_attention_2 needs the flash-attn package and a GPU)"
    )
    chat_template: str | None = Field(
        None, description="Jinja chat-template file used instead of the tokenizer's own, in training, evaluation and serving (path relative to the recipe)"
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model when name_or_path is 'tiny'")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo (off: never execute downloaded code)")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Modules that get adapters")
    qlora: bool = Field(False, description="Load the base in 4 bit (QLoRA; needs a GPU and bitsandbytes)")


class _TrainKeys(Section):
    """The keys of `train` that every method shares; TrainConfig adds one section per method."""

    method: Literal[tuple(METHODS)] = Field("sft", description="Training method of each round")
    rounds: int = Field(5, ge=0, description="Training rounds after round 0 (the base evaluation)")
    adapter: Literal["continue", "merge", "reset"] = Field(
        "continue", description="Per round: continue the same adapter, merge it into the base and start fresh, or reset to the base"
    )
    update_weights: bool = Field(
        True, description="False: rounds collect and ingest experience but never train, so every checkpoint is the base (the study's retry control)"
    )
    reference: Literal["previous", "base"] = Field("previous", description="KTO/DPO/GRPO reference policy: previous round or original base")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate")
    lr_scheduler: str = Field("constant", description="transformers scheduler name (constant, cosine, linear, ...)")
    lr_decay_per_round: float = Field(1.0, gt=0, le=1.0, description="Peak LR of round r = learning_rate * decay^(r-1)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up share of each round's steps")
    epochs: float = Field(1.0, gt=0, description="Epochs over the round's data")
    max_steps: int = Field(-1, description="Cap on optimizer steps per round (-1 = epochs decide)")
    batch_size: int = Field(8, ge=1, description="Per-device batch size")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps")
    max_length: int = Field(2048, ge=16, description="Maximum tokens per training sequence")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm")
    grad_norm_limit: float = Field(1e4, gt=0, description="Stop the round when the gradient norm exceeds this (exploding)")
    beta: float = Field(0.1, ge=0, description="KTO/DPO/GRPO: KL strength to the reference")
    save_steps: int = Field(50, ge=1, description="Intra-round checkpoint every this many steps (for resume)")
    deepspeed: Literal["none", "zero2", "zero3"] = Field("none", description="Named DeepSpeed config shipped with flywheel")
    nproc: int = Field(1, ge=1, description="Local processes for a round (torchrun); under Slurm the processes per CPU node (a GPU node runs one per GPU)")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less memory, ~30% more compute)")
    liger_kernel: bool = Field(False, description="Use Liger's fused kernels through TRL (needs the liger-kernel package and a GPU)")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter")


# `train`: the shared keys, then each method's own section (`train.sft.packing`,
# `train.grpo.generations`), composed from trainer.methods.METHODS and documented by its docstring.
TrainConfig = create_model(
    "TrainConfig", __base__=_TrainKeys, __module__=__name__,
    **{name: (method.Config, Field(default_factory=method.Config, description=method.Config.__doc__.strip()))
       for name, method in METHODS.items()},
)
# Keys that moved (into a method's section, ingest.sources to collect.logs): a recipe still using
# the old key is told the new one.
MOVED_KEYS = {("train", "packing"): ("train", "sft", "packing"),
              ("train", "grpo_generations"): ("train", "grpo", "generations"),
              ("ingest", "sources"): ("collect", "logs")}


class WandbConfig(Section):
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto = WANDB_MODE when set, else online with WANDB_API_KEY set, else offline"
    )
    project: str = Field("flywheel", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team)")
    tags: list[str] = Field(default_factory=list, description="Extra run tags")


class TrackingConfig(Section):
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="Weights & Biases logging")
    arm: str | None = Field(None, description="Study arm of this experiment (W&B tag arm:<name>; default: the experiment name)")


class SlurmConfig(Section):
    partition: str | None = Field(None, description="Partition (-p)")
    account: str | None = Field(None, description="Account (-A)")
    qos: str | None = Field(None, description="QoS")
    nodes: int = Field(1, ge=1, description="Nodes per training round")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (0 = CPU job)")
    cpus_per_task: int = Field(2, ge=1, description="CPUs per task")
    mem: str | None = Field(None, description="Memory per node, e.g. 200G")
    gpu_memory_gb: float | None = Field(None, gt=0, description="Memory of one GPU (GB): recipe show / submit warn when the round's memory plan does not fit")
    time_train: str = Field("04:00:00", description="Time limit of a training round")
    time_eval: str = Field("02:00:00", description="Time limit of an eval array element, and of a refit job")
    eval_shards: int = Field(2, ge=1, description="Eval array elements per checkpoint")
    launcher: Literal["torchrun", "deepspeed"] = Field("torchrun", description="Launcher inside srun")
    signal_seconds: int = Field(120, ge=10, description="Warning signal (USR1) this many seconds before the time limit")
    setup: list[str] = Field(default_factory=list, description="Shell lines run first in every job (module load, conda activate)")
    venv: str | None = Field(None, description="Virtual environment activated in jobs")
    extra_sbatch: list[str] = Field(default_factory=list, description="Extra #SBATCH lines")


class ArmConfig(Section):
    name: str = Field(..., description="Arm name")
    kind: Literal["accumulate", "latest", "retry", "reset", "memory", "accumulate+memory"] = Field(
        ..., description="Study arm kind (trainer/study.py: what each changes in the recipe)")
    overrides: list[str] = Field(default_factory=list, description="Extra key=value recipe overrides of this arm (applied after its kind's)")


class StudyConfig(Section):
    arms: list[ArmConfig] = Field(default_factory=list, description="Arms of the experience study")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Seeds per arm")
    forgetting_episodes: int = Field(
        50, ge=0, description="Forgetting check: the first N of round 1's training tasks, re-evaluated on every checkpoint (0 = off)"
    )
    budget_tolerance: float = Field(
        0.05, gt=0, lt=1, description="Arms' interaction hours may differ by at most this share per round (the report flags more)"
    )


class PromoteConfig(Section):
    """The promotion gate (trainer/promote.py): after a round's held-out evaluation its checkpoint
    replaces the promoted one (RUN_DIR/promoted/) unless it is worse beyond noise."""

    enabled: bool = Field(
        True, description="Gate every evaluated round against the promoted checkpoint and keep RUN_DIR/promoted/ (false: no gate, no promoted/, each round trains on the previous one)"
    )
    margin: float = Field(
        0.0, ge=0.0, le=1.0, description="Score points (0-1 scale) a candidate may be worse than the promoted checkpoint before the test counts it against it"
    )
    level: float = Field(
        0.05, gt=0.0, lt=0.5, description="Significance level of the one-sided paired test: a candidate is rejected when p < level that it is worse by more than the margin"
    )
    parent: Literal["promoted", "latest"] = Field(
        "promoted", description="Parent of the next round: the promoted checkpoint, or the latest round whatever its verdict"
    )
    merged: bool = Field(
        False, description="Also write the promoted adapter merged into the base weights (RUN_DIR/promoted/merged/, a plain model folder)"
    )
