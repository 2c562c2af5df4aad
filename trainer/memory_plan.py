"""The memory plan of one training round: peak memory per GPU, estimated from the model's
`config.json` alone (no weights are loaded), printed by `flywheel recipe show` before anything is
queued. It is an estimate to catch a round that cannot fit, not an allocator trace: CUDA context,
allocator fragmentation and communication buckets (~1-3 GB) come on top.

Where the shape comes from: `model.name_or_path` as a local folder (its config.json), a hub id
whose config.json is in the local Hugging Face cache (`try_to_load_from_cache`, no network), or
'tiny' (`model.tiny`, vocabulary `trainer.tiny.VOCAB_SIZE`). Without any, the plan says so.

Formulas (h hidden, i intermediate, L layers, a heads, kv key/value heads, d head_dim, V vocab,
s = train.max_length, b = sequences per micro-batch (train.batch_size, x2 for DPO's chosen+rejected
pairs), r = LoRA rank, N = GPUs = slurm.nodes x max(1, slurm.gpus_per_node); 1 GB = 1e9 bytes):

- parameters (Llama / Qwen / Mistral style): V*h embeddings (+ V*h lm_head unless
  tie_word_embeddings) + L * [h*a*d + 2*h*kv*d + a*d*h (q, k, v, o) + 3*h*i (gate, up, down)
  + 2*h (norms)] + h. MoE configs (num_experts / num_local_experts / n_routed_experts): the MLP is
  experts x 3*h*moe_intermediate_size + router h*experts (+ shared experts), on every layer but the
  first_k_dense_replace / mlp_only_layers dense ones.
- weights: parameters x bytes of model.dtype (float32 4, bfloat16 / float16 2, 'auto': the
  config's torch_dtype / dtype). QLoRA: the block linears in NF4 with double quantisation,
  4.127 bits = 0.516 bytes per parameter (Dettmers et al. 2023, "QLoRA", sec. 2), embeddings,
  lm_head and norms stay in model.dtype (bitsandbytes only replaces nn.Linear, never lm_head).
- LoRA: r*(fan_in + fan_out) per adapted linear ('all-linear': q, k, v, o, gate, up, down of
  every block; a list: only those names, plus lm_head / embed_tokens when named). Trained in
  float32: 4 B weights + 4 B gradients + 8 B AdamW moments per LoRA parameter.
- activations per layer: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models" (arXiv:2205.05198), eq. 1: s*b*h*(34 + 5*a*s/h) bytes for 16-bit
  activations. sdpa / flash attention on a GPU never store the s^2 scores, so their term only
  counts with attn_implementation=eager or on the CPU (slurm.gpus_per_node = 0), whose kernels
  take the masked math path; a packed, padding-free micro-batch is one flattened row of b*s tokens
  there, so its scores are a*(b*s)^2. Korthikanti's 5*a*s^2*b bytes (16-bit) are the logits, the
  softmax output and the dropout mask; without attention dropout autograd keeps only the softmax
  output: a*s^2*b x its bytes (eager: float32 softmax + its cast, 4 + activation bytes; checked
  against a SmolLM2 round on the CPU with bench/memory.py); both terms scale by (activation bytes / 2). With LoRA
  dropout > 0 each adapted linear also keeps its dropped-out input and a 1-byte mask:
  s*b*sum(fan_in)*(activation bytes + 1).
  Gradient checkpointing (HF: per decoder layer) keeps each layer's input, L*s*b*h*bytes, plus
  the activations of the one layer being recomputed.
- logits: b*s*V x (the logits in the compute dtype + their float32 copy for the loss when 16-bit
  + the float32 log-softmax that cross-entropy keeps + the float32 gradient): 12 bytes in float32,
  14 in bfloat16 (Liger's fused linear cross-entropy never materialises them: 0).
- ZeRO (train.deepspeed): zero2 divides the gradients and AdamW moments by N, zero3 also the
  weights (base and LoRA); zero3 then gathers one full module at a time, so the largest of a
  block and the embedding comes on top. 'none': nothing is divided.

Not counted: a second model (none: KTO/DPO/GRPO references are LoRA adapters on the same base,
see trainer/reference.py), GRPO's generation KV cache, MoE activations beyond the dense formula.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 4.127 / 8  # NF4 + double-quantised block constants (QLoRA paper, sec. 2)
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a causal LM's config.json."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    dtype: str | None = None  # the checkpoint's torch_dtype
    experts: int = 0
    experts_per_tok: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0  # of an MoE model: layers with a dense MLP


@dataclass(frozen=True)
class Linear:
    """One kind of linear layer of a block: `copies` of them (MoE experts), `active` per token."""

    name: str
    fan_in: int
    fan_out: int
    copies: int = 1
    active: int = 1


@dataclass
class MemoryPlan:
    """Peak memory per GPU of one training round (GB), with the parts it is made of."""

    source: str  # where the config came from, or why none was found
    found: bool
    gpus: int
    zero_stage: int  # 0 (none), 2 or 3
    gradient_checkpointing: bool
    weights_dtype: str = ""
    params_total: int = 0
    params_lora: int = 0
    weights_gb: float = 0.0
    lora_gb: float = 0.0  # LoRA weights + gradients + AdamW moments
    activations_gb: float = 0.0
    activations_gb_with_checkpointing: float = 0.0
    logits_gb: float = 0.0
    total_gb: float = 0.0  # with the recipe's own gradient_checkpointing setting
    notes: list[str] = field(default_factory=list)
    shape: ModelShape | None = field(default=None, repr=False)

    def lines(self) -> list[str]:
        """A short human table (no comment prefix)."""
        if not self.found:
            return [f"memory plan: none ({self.source})"]
        zero = f"ZeRO-{self.zero_stage}" if self.zero_stage else "no ZeRO"
        ckpt = "on" if self.gradient_checkpointing else "off"
        return [
            f"memory plan per GPU (estimate; config from {self.source}):",
            f"  parameters      {self.params_total / 1e9:8.2f} B total, {self.params_lora / 1e6:.1f} M LoRA",
            f"  weights         {self.weights_gb:8.2f} GB  ({self.weights_dtype}; {zero}, {self.gpus} GPU(s))",
            f"  LoRA+grad+AdamW {self.lora_gb:8.2f} GB  (float32)",
            f"  activations     {self.activations_gb:8.2f} GB  "
            f"(with gradient checkpointing {self.activations_gb_with_checkpointing:.2f} GB)",
            f"  logits          {self.logits_gb:8.2f} GB  (with the loss's float32 log-softmax and gradient)",
            f"  total           {self.total_gb:8.2f} GB  (gradient checkpointing {ckpt}; "
            f"+ CUDA context / fragmentation)",
            *(f"  note: {n}" for n in self.notes),
        ]


# ---- the config --------------------------------------------------------------------------------
def find_config(name_or_path: str) -> tuple[Path | None, str]:
    """(config.json path or None, where it was found / why not), without any network access."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        return (config, str(config)) if config.is_file() else (None, f"{folder} has no config.json")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except (ImportError, ValueError, OSError):  # not a valid repo id either
        cached = None
    if isinstance(cached, str):
        return Path(cached), f"Hugging Face cache ({name_or_path})"
    return None, (f"no config.json for {name_or_path!r}: not a local folder and not in the Hugging Face "
                  f"cache; download it (or point model.name_or_path at a local copy) to see the plan")


def shape_from_config(cfg: dict[str, Any]) -> ModelShape:
    """The shape of a Llama / Qwen / Mistral style config (MoE roughly); KeyError if incomplete."""
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "tie_word_embeddings": cfg.get("tie_word_embeddings", False)}
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    experts = cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0
    expert_inter = cfg.get("moe_intermediate_size") or cfg["intermediate_size"]
    shared = cfg.get("shared_expert_intermediate_size") or (cfg.get("n_shared_experts") or 0) * expert_inter
    dense = cfg.get("first_k_dense_replace") or len(cfg.get("mlp_only_layers") or [])
    if min(hidden, heads, cfg["num_hidden_layers"], cfg["vocab_size"]) <= 0:
        raise ValueError("hidden_size, num_attention_heads, num_hidden_layers and vocab_size must be positive")
    return ModelShape(
        vocab=cfg["vocab_size"], hidden=hidden, layers=cfg["num_hidden_layers"], heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or hidden // heads,
        intermediate=cfg["intermediate_size"], tied=bool(cfg.get("tie_word_embeddings", False)),
        dtype=cfg.get("torch_dtype") or cfg.get("dtype"), experts=int(experts),
        experts_per_tok=int(cfg.get("num_experts_per_tok") or 0), expert_intermediate=int(expert_inter),
        shared_intermediate=int(shared), dense_layers=int(dense) if experts else 0,
    )


def tiny_shape(tiny) -> ModelShape:
    """The shape `trainer.tiny.build_model` builds from `model.tiny`."""
    from trainer.tiny import VOCAB_SIZE

    return ModelShape(vocab=VOCAB_SIZE, hidden=tiny.hidden_size, layers=tiny.layers, heads=tiny.heads,
                      kv_heads=tiny.heads, head_dim=tiny.hidden_size // tiny.heads,
                      intermediate=tiny.intermediate_size, tied=True, dtype="float32")


# ---- counting ----------------------------------------------------------------------------------
def block_linears(shape: ModelShape, moe: bool) -> list[Linear]:
    """The linear layers of one decoder block (an MoE block when `moe`)."""
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attn = [Linear("q_proj", h, q), Linear("k_proj", h, kv), Linear("v_proj", h, kv), Linear("o_proj", q, h)]
    if not moe:
        i = shape.intermediate
        return attn + [Linear("gate_proj", h, i), Linear("up_proj", h, i), Linear("down_proj", i, h)]
    e, k, ei = shape.experts, shape.experts_per_tok or shape.experts, shape.expert_intermediate
    mlp = [Linear("gate", h, e), Linear("gate_proj", h, ei, e, k), Linear("up_proj", h, ei, e, k),
           Linear("down_proj", ei, h, e, k)]
    si = shape.shared_intermediate
    if si:
        mlp += [Linear("gate_proj", h, si), Linear("up_proj", h, si), Linear("down_proj", si, h)]
    return attn + mlp


def _layer_kinds(shape: ModelShape) -> list[tuple[int, list[Linear]]]:
    """(number of layers, their linears) for the dense and the MoE layers."""
    if not shape.experts:
        return [(shape.layers, block_linears(shape, moe=False))]
    dense = min(shape.dense_layers, shape.layers)
    return [(dense, block_linears(shape, moe=False)), (shape.layers - dense, block_linears(shape, moe=True))]


def _embedding_params(shape: ModelShape) -> int:
    return shape.vocab * shape.hidden * (1 if shape.tied else 2)


def count_params(shape: ModelShape) -> tuple[int, int]:
    """(all parameters, those in the blocks' linear layers)."""
    linear = sum(n * sum(x.fan_in * x.fan_out * x.copies for x in lin) for n, lin in _layer_kinds(shape))
    norms = 2 * shape.hidden * shape.layers + shape.hidden
    return _embedding_params(shape) + linear + norms, linear


def _target_names(targets: list[str] | str) -> set[str]:
    """Module names that get an adapter ('all-linear': every linear of a block, as PEFT does)."""
    return set(BLOCK_LINEARS) | {"gate"} if targets == "all-linear" else set(targets)


def lora_params(shape: ModelShape, r: int, targets: list[str] | str) -> tuple[int, list[str]]:
    """(LoRA parameters, target names this plan does not know)."""
    names = _target_names(targets)
    total = sum(n * sum(r * (x.fan_in + x.fan_out) * x.copies for x in lin if x.name in names)
                for n, lin in _layer_kinds(shape))
    total += sum(r * (shape.vocab + shape.hidden) for name in ("lm_head", "embed_tokens") if name in names)
    unknown = sorted(names - set(BLOCK_LINEARS) - {"gate", "lm_head", "embed_tokens"})
    return total, unknown


def _lora_inputs(shape: ModelShape, targets: list[str] | str) -> int:
    """Sum of the adapted linears' fan-in per layer and token (each keeps a dropped-out copy)."""
    names = _target_names(targets)
    per_kind = [(n, sum(x.fan_in * x.active for x in lin if x.name in names)) for n, lin in _layer_kinds(shape)]
    return max((inputs for n, inputs in per_kind if n), default=0)


# ---- the plan ----------------------------------------------------------------------------------
def _gpus(recipe) -> int:
    return recipe.slurm.nodes * max(1, recipe.slurm.gpus_per_node)


def _zero_stage(recipe) -> int:
    return {"none": 0, "zero2": 2, "zero3": 3}[recipe.train.deepspeed]


def _weights_dtype(recipe, shape: ModelShape) -> str:
    dtype = recipe.model.dtype
    return (shape.dtype or "float32") if dtype == "auto" else dtype


def _activation_dtype_bytes(recipe, shape: ModelShape) -> int:
    """Bytes per activation: the compute dtype (QLoRA with 'auto' computes in bfloat16)."""
    if recipe.train.lora.qlora and recipe.model.dtype == "auto":
        return 2
    return DTYPE_BYTES.get(_weights_dtype(recipe, shape), 2)


def _weights_bytes(recipe, shape: ModelShape, params: int, linear: int) -> float:
    """Base weights per GPU (bytes): sharded under ZeRO-3, plus the one module it gathers."""
    wbytes = DTYPE_BYTES.get(_weights_dtype(recipe, shape), 2)
    lbytes = NF4_BYTES if recipe.train.lora.qlora else wbytes
    total = linear * lbytes + (params - linear) * wbytes
    if _zero_stage(recipe) < 3:
        return total
    biggest = max(linear / shape.layers * lbytes, shape.vocab * shape.hidden * wbytes)
    return total / _gpus(recipe) + biggest


def _lora_bytes(recipe, n_lora: int) -> float:
    """LoRA weights (sharded by ZeRO-3), gradients and AdamW moments (sharded by ZeRO-2/3)."""
    zero = _zero_stage(recipe)
    shards = _gpus(recipe) if zero else 1
    return n_lora * (4 / (shards if zero == 3 else 1) + (4 + 8) / shards)


def _tokens(recipe) -> int:
    """Tokens of one micro-batch per GPU (DPO forwards chosen and rejected together)."""
    train = recipe.train
    return train.max_length * train.batch_size * (2 if train.method == "dpo" else 1)


def _scores_kept(recipe) -> bool:
    """Whether attention keeps its s x s scores: eager attention does, and so do the CPU's kernels
    (a CPU job: slurm.gpus_per_node = 0), which take the masked math path."""
    return recipe.model.attn_implementation == "eager" or recipe.slurm.gpus_per_node == 0


def _score_bytes(recipe, act: int) -> int:
    """Bytes kept per attention score for the backward pass. No attention dropout (the configs of
    today's instruct models set none), so no mask; autograd keeps the softmax output, not the
    logits before it. Eager attention computes the softmax in float32 and keeps that and its cast
    to the compute dtype; the CPU's masked sdpa path keeps the softmax output in the compute dtype."""
    return 4 + act if recipe.model.attn_implementation == "eager" else act


def _activation_bytes(recipe, shape: ModelShape, checkpointing: bool) -> float:
    """Activations kept for the backward pass (bytes), per Korthikanti et al. 2022."""
    train, h, tokens = recipe.train, shape.hidden, _tokens(recipe)
    act = _activation_dtype_bytes(recipe, shape)
    layer = 34 * tokens * h * act / 2
    if _scores_kept(recipe):
        # a packed, padding-free micro-batch is one flattened row: its scores span all its tokens
        row = tokens if train.sft.packing else train.max_length
        layer += shape.heads * row * tokens * _score_bytes(recipe, act)
    if train.lora.dropout > 0:
        layer += tokens * _lora_inputs(shape, train.lora.target_modules) * (act + 1)
    if checkpointing:
        return shape.layers * tokens * h * act + layer
    return shape.layers * layer


def _logits_bytes(recipe, shape: ModelShape) -> float:
    """The logits of a micro-batch in the compute dtype, their float32 copy for the loss (16-bit
    models), the float32 log-softmax that cross-entropy keeps, and the gradient."""
    act = _activation_dtype_bytes(recipe, shape)
    return _tokens(recipe) * shape.vocab * (act + (4 if act < 4 else 0) + 4 + 4)


def plan_for_shape(recipe, shape: ModelShape, source: str) -> MemoryPlan:
    """The plan of `recipe`'s round on a model of this shape."""
    train = recipe.train
    params, linear = count_params(shape)
    n_lora, unknown = lora_params(shape, train.lora.r, train.lora.target_modules)
    plan = MemoryPlan(
        source=source, found=True, gpus=_gpus(recipe), zero_stage=_zero_stage(recipe),
        gradient_checkpointing=train.gradient_checkpointing,
        weights_dtype=("nf4 + " if train.lora.qlora else "") + _weights_dtype(recipe, shape),
        params_total=params, params_lora=n_lora, weights_gb=_weights_bytes(recipe, shape, params, linear) / GB,
        lora_gb=_lora_bytes(recipe, n_lora) / GB, activations_gb=_activation_bytes(recipe, shape, False) / GB,
        activations_gb_with_checkpointing=_activation_bytes(recipe, shape, True) / GB,
        logits_gb=0.0 if train.liger_kernel else _logits_bytes(recipe, shape) / GB, shape=shape,
    )
    if unknown:
        plan.notes.append(f"LoRA targets not in a Llama-style block, not counted: {', '.join(unknown)}")
    if shape.experts:
        plan.notes.append("MoE model: activations use the dense formula (rough)")
    if train.liger_kernel:
        plan.notes.append("logits: Liger's fused linear cross-entropy never materialises them")
    active = plan.activations_gb_with_checkpointing if plan.gradient_checkpointing else plan.activations_gb
    plan.total_gb = plan.weights_gb + plan.lora_gb + active + plan.logits_gb
    return plan


def memory_plan(recipe) -> MemoryPlan:
    """The plan of one training round of `recipe`; never raises for a missing or odd config."""
    missing = MemoryPlan(source="", found=False, gpus=_gpus(recipe), zero_stage=_zero_stage(recipe),
                         gradient_checkpointing=recipe.train.gradient_checkpointing)
    if recipe.model.name_or_path == "tiny":
        return plan_for_shape(recipe, tiny_shape(recipe.model.tiny), "model.tiny")
    path, source = find_config(recipe.model.name_or_path)
    if path is None:
        return replace(missing, source=source)
    try:
        shape = shape_from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        return replace(missing, source=f"{source}: not a config this plan reads ({type(e).__name__}: {e})")
    return plan_for_shape(recipe, shape, source)


# ---- does it fit -------------------------------------------------------------------------------
def _variant(recipe, **changes: Any):
    """A copy of `recipe` with train.* (or train.lora.qlora) changed."""
    copy = recipe.model_copy(deep=True)
    for key, value in changes.items():
        if key == "qlora":
            copy.train.lora.qlora = value
        else:
            setattr(copy.train, key, value)
    return copy


def fit_warning(recipe, plan: MemoryPlan) -> str | None:
    """A warning naming what would help when the plan exceeds slurm.gpu_memory_gb, else None."""
    limit = recipe.slurm.gpu_memory_gb
    if not plan.found or limit is None or plan.total_gb <= limit:
        return None
    train = recipe.train
    options = []
    if not train.gradient_checkpointing:
        options.append(("train.gradient_checkpointing=true", _variant(recipe, gradient_checkpointing=True)))
    if train.batch_size > 1:
        options.append((f"train.batch_size={train.batch_size // 2}", _variant(recipe, batch_size=train.batch_size // 2)))
    if train.max_length >= 32:
        options.append((f"train.max_length={train.max_length // 2}", _variant(recipe, max_length=train.max_length // 2)))
    if train.deepspeed != "zero3" and plan.gpus > 1:
        options.append(("train.deepspeed=zero3", _variant(recipe, deepspeed="zero3")))
    if not train.lora.qlora:
        options.append(("train.lora.qlora=true", _variant(recipe, qlora=True)))
    totals = [(text, plan_for_shape(v, plan.shape, plan.source).total_gb) for text, v in options]
    helps = [f"{text} (~{gb:.1f} GB{', fits' if gb <= limit else ''})" for text, gb in totals]
    return (f"the training round needs ~{plan.total_gb:.1f} GB per GPU, more than slurm.gpu_memory_gb="
            f"{limit:g}; what would help: {'; '.join(helps) or 'more GPUs or a smaller model'}")
