"""Loading a model and its tokenizer the same way in every stage (training, collection, evaluation,
serving), and the one chat template they all render with.

`LoadOptions` carries the recipe's `model.*` keys that change how a model loads: its dtype, the
attention kernel, whether model code from the repo may run, a chat-template file, and 4-bit
loading (QLoRA). Nothing here downloads: every load is `local_files_only`.

The chat template. Training needs to know which tokens are the assistant's (they carry the loss);
every other stage needs to render a conversation exactly as training did. `effective_template`
picks one template per tokenizer, in this order:
  1. the recipe's `model.chat_template` file;
  2. the tokenizer's own template when it marks assistant turns with `{% generation %}`;
  3. TRL's training version of the tokenizer's template when TRL ships one for its family (qwen3,
     llama3, gemma, phi, ...): the same rendering, made prefix-preserving and marked;
  4. the tokenizer's own template unchanged: assistant tokens are then found by rendering growing
     prefixes of the conversation (`assistant_mask`), which works for any prefix-stable template
     (ChatML, as SmolLM2 ships it), and a clear error otherwise.
The chosen template is set on the tokenizer at load time, so TRL's trainers, the evaluator and
`flywheel serve` all render with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_pipeline.errors import FlywheelError


class ModelLoadError(FlywheelError, ValueError):
    """A model option this machine or model cannot honour; printed as one line by the CLI."""


class TemplateError(ModelLoadError):
    """A chat template that cannot give a correct assistant mask or render what training needs."""


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    chat_template: str | None = None
    load_in_4bit: bool = False

    @classmethod
    def of(cls, model_cfg: Any, load_in_4bit: bool = False) -> "LoadOptions":
        """From a recipe's `model` section (any object with these attributes)."""
        return cls(dtype=getattr(model_cfg, "dtype", "float32"),
                   attn_implementation=getattr(model_cfg, "attn_implementation", "sdpa"),
                   trust_remote_code=bool(getattr(model_cfg, "trust_remote_code", False)),
                   chat_template=getattr(model_cfg, "chat_template", None), load_in_4bit=load_in_4bit)


def torch_dtype(name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def model_kwargs(opts: LoadOptions) -> dict[str, Any]:
    """Keyword arguments of `from_pretrained` for these options (checked against this machine)."""
    kwargs: dict[str, Any] = {"dtype": torch_dtype(opts.dtype), "local_files_only": True,
                              "attn_implementation": opts.attn_implementation,
                              "trust_remote_code": opts.trust_remote_code}
    if opts.attn_implementation == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            raise ModelLoadError("model.attn_implementation=flash_attention_2 needs a GPU and the flash-attn "
                                "package (pip install flash-attn); use sdpa otherwise")
    if opts.load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config(opts)
    return kwargs


def _four_bit_config(opts: LoadOptions):
    import importlib.util

    if not torch.cuda.is_available():
        raise ModelLoadError("train.lora.qlora=true loads the base in 4 bit through bitsandbytes, which needs a "
                            "CUDA GPU; this machine has none: set train.lora.qlora=false")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("train.lora.qlora=true needs the bitsandbytes package: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if opts.dtype in ("bfloat16", "auto") else torch_dtype(opts.dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_model(path: str | Path, opts: LoadOptions = LoadOptions()):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), **model_kwargs(opts))


def load_tokenizer(path: str | Path, opts: LoadOptions = LoadOptions()):
    """The tokenizer with the effective chat template set (see the module docstring)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                              trust_remote_code=opts.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template, tokenizer.flywheel_template_source = effective_template(tokenizer, opts.chat_template)
    return tokenizer


# ---- the chat template ---------------------------------------------------------------------------
def has_generation_marks(template: str | None) -> bool:
    import re

    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def effective_template(tokenizer, override: str | None = None) -> tuple[str, str]:
    """(template, where it came from): the recipe's file, the tokenizer's own (marked), TRL's
    training version of it, or the tokenizer's own unmarked (masks from growing prefixes)."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise TemplateError(f"model.chat_template: {override}: no such file (a Jinja chat template)")
        return path.read_text(), f"file {path}"
    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        raise TemplateError("the tokenizer has no chat template; set model.chat_template to a Jinja template file "
                            "(TRL ships several in trl/chat_templates/)")
    if has_generation_marks(own):
        return own, "own (marked)"
    from trl.chat_template_utils import get_training_chat_template

    try:
        trl_version = get_training_chat_template(tokenizer)
    except ValueError:  # TRL knows no training version of this template
        return own, "own (masks from prefixes)"
    return (own, "own (marked)") if trl_version is None else (trl_version, "TRL training version")


def _render(tokenizer, messages: list[dict], tools, prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=prompt)


def assistant_mask(tokenizer, messages: list[dict], tools: list | None = None) -> tuple[list[int], list[int]]:
    """(token ids, 1 for each token the assistant produced) of a conversation: its turns' content,
    tool calls and end-of-turn; nothing of the prompt, the other roles or the turn headers.

    Assistant turns marked `context` (written by the harness, not the model) carry no loss.
    A marked template gives the mask directly. Otherwise each assistant turn is the text that
    rendering it adds to the rendered prompt before it; the conversation is tokenized segment by
    segment (what comes before a turn, the turn), as the policy encodes it turn by turn, so a
    turn's tokens never merge with its header's."""
    if has_generation_marks(tokenizer.chat_template) and not any(m.get("context") for m in messages):
        out = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        return ids, _trim_after_turn_end(tokenizer, ids, mask)
    full = _render(tokenizer, messages, tools)
    ids: list[int] = []
    mask: list[int] = []
    done = 0  # characters of `full` tokenized so far
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("context"):
            continue
        before, upto = _render(tokenizer, messages[:i], tools, prompt=True), _render(tokenizer, messages[:i + 1], tools)
        if not (full.startswith(upto) and upto.startswith(before) and len(before) >= done):
            raise TemplateError(
                "the chat template is not prefix-stable (a turn renders differently once more turns follow), so "
                "the assistant's tokens cannot be found; set model.chat_template to a template file with "
                "{% generation %} marks on assistant turns")
        for text, bit in ((full[done:len(before)], 0), (upto[len(before):], 1)):
            seg = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            ids += seg
            mask += [bit] * len(seg)
        done = len(upto)
    tail = tokenizer(full[done:], add_special_tokens=False)["input_ids"] if full[done:] else []
    return ids + tail, _trim_after_turn_end(tokenizer, ids + tail, mask + [0] * len(tail))


def _trim_after_turn_end(tokenizer, ids: list[int], mask: list[int]) -> list[int]:
    """Unmark what a marked span holds after its last special token (its end-of-turn): ChatML's
    newline after <|im_end|> belongs to no turn. A span without a special token stays whole."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    out = list(mask)
    k = len(out)
    while k > 0:
        if not out[k - 1]:
            k -= 1
            continue
        end = k
        while k > 0 and out[k - 1]:
            k -= 1
        last = next((j for j in range(end - 1, k - 1, -1) if ids[j] in special), None)
        if last is not None:
            out[last + 1:end] = [0] * (end - last - 1)
    return out


def check_renders_tool_calls(tokenizer) -> None:
    """Raise when the template drops tool calls (training would teach empty turns)."""
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "probe_tool_x", "arguments": {"k": 1}}}]}
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, call], tokenize=False)
    if "probe_tool_x" not in text:
        raise TemplateError("the model's chat template does not render assistant tool calls, so tool-use episodes "
                            "would train on empty turns; set model.chat_template to a template that renders "
                            "tool_calls (TRL ships some in trl/chat_templates/, e.g. qwen3.jinja)")
