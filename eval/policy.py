"""A transformers (+ PEFT adapter) model acting as a policy in lock-step episodes.

With `constrained=True` and an environment that lists its valid actions, the policy scores every
valid action as a continuation of the chat (sum of token log-probs, end-of-turn included) and
samples among them: one forward pass for all episodes x candidates of a step. An untrained model
is then a near-uniform random policy instead of a stream of invalid text. Free-text environments
use batched `generate`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOOL_OPEN, TOOL_CLOSE = "<|tool_call|>", "<|/tool_call|>"


def load_checkpoint(base: str | Path, adapter: str | Path | None = None, dtype: str = "float32"):
    """Load base model (+ LoRA adapter) and tokenizer from local paths; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch_dtype, local_files_only=True)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    model.eval()
    return model, tokenizer


class HFPolicy:
    def __init__(self, model, tokenizer, *, temperature: float = 1.0, constrained: bool = True,
                 max_new_tokens: int = 64, forward_batch: int = 64, name: str = "policy"):
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.constrained = temperature, constrained
        self.max_new_tokens, self.forward_batch, self.name = max_new_tokens, forward_batch, name
        self._cont_cache: dict[str, list[int]] = {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ---- chat rendering ------------------------------------------------------------------------
    def _prompt_ids(self, conv: list[dict[str, Any]]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"])

    def _continuation_ids(self, conv: list[dict[str, Any]], prompt: list[int], action: str) -> list[int]:
        """Token ids of the assistant turn `action` (end-of-turn included), as the chat template
        renders it after `conv`. Cached per action: the template's turns are prefix-stable."""
        if action not in self._cont_cache:
            full = self.tokenizer.apply_chat_template(conv + [{"role": "assistant", "content": action}],
                                                      tokenize=True, return_dict=True)["input_ids"]
            if list(full[:len(prompt)]) != prompt:
                raise ValueError("chat template is not prefix-stable; constrained decoding needs it")
            self._cont_cache[action] = list(full[len(prompt):])
        return self._cont_cache[action]

    # ---- acting ----------------------------------------------------------------------------------
    def act(self, conversations, valid_actions, rngs):
        actions: list[Any] = [None] * len(conversations)
        scored = [i for i, v in enumerate(valid_actions) if self.constrained and v]
        free = [i for i in range(len(conversations)) if i not in set(scored)]
        if scored:
            for i, a in zip(scored, self._choose([conversations[i] for i in scored],
                                                 [valid_actions[i] for i in scored], [rngs[i] for i in scored])):
                actions[i] = a
        if free:
            for i, a in zip(free, self._generate([conversations[i] for i in free], [rngs[i] for i in free])):
                actions[i] = a
        return actions

    @torch.no_grad()
    def action_logprobs(self, conversations, valid_actions) -> list[np.ndarray]:
        """Sum of token log-probs of each valid action per conversation, end-of-turn included."""
        out: list[np.ndarray] = []
        for s in range(0, len(conversations), self.forward_batch):
            out.extend(self._score(conversations[s:s + self.forward_batch], valid_actions[s:s + self.forward_batch]))
        return out

    def _score(self, conversations, valid_actions) -> list[np.ndarray]:
        # 1. One pass over the prompts (left-padded, so each prompt ends at the last position),
        #    keeping the KV cache and the next-token distribution after each prompt.
        prompts = [self._prompt_ids(c) for c in conversations]
        ids, mask = self._left_pad(prompts)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        first = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        first_lp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # (B, V)
        # 2. Every candidate continuation, batched over (episode, candidate) on a copy of its
        #    episode's cache: the prompt is encoded once however many actions are valid.
        owners, conts = [], []
        for k, (conv, prompt, valid) in enumerate(zip(conversations, prompts, valid_actions)):
            for a in valid:
                owners.append(k)
                conts.append(self._continuation_ids(conv, prompt, a))
        rows = torch.tensor(owners)
        width = max(len(c) for c in conts)
        cont_ids = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros_like(cont_ids)
        for r, c in enumerate(conts):
            cont_ids[r, :len(c)] = torch.tensor(c)
            cont_mask[r, :len(c)] = 1
        cache = first.cache if "cache" in first else first.past_key_values
        cache.batch_select_indices(rows)
        prompt_len = mask.sum(-1)[rows]  # (C,)
        lp = first_lp[rows].gather(-1, cont_ids[:, :1]).squeeze(-1)  # first token, (C,)
        if width > 1:
            nxt = self.model(input_ids=cont_ids[:, :-1], cache=cache, use_cache=True,
                             attention_mask=torch.cat([mask[rows], cont_mask[:, :-1]], dim=-1),
                             position_ids=prompt_len.unsqueeze(1) + torch.arange(width - 1).unsqueeze(0))
            step_lp = torch.log_softmax(nxt.logits.float(), dim=-1)  # (C, width-1, V)
            tok_lp = step_lp.gather(-1, cont_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            lp = lp + (tok_lp * cont_mask[:, 1:]).sum(-1)
        scores = lp.numpy()
        out, at = [], 0
        for valid in valid_actions:
            out.append(scores[at:at + len(valid)])
            at += len(valid)
        return out

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        return ids, mask

    def _choose(self, conversations, valid_actions, rngs):
        chosen = []
        for valid, logp, rng in zip(valid_actions, self.action_logprobs(conversations, valid_actions), rngs):
            if self.temperature <= 0:
                chosen.append(valid[int(np.argmax(logp))])
                continue
            z = logp / self.temperature
            p = np.exp(z - z.max())
            chosen.append(valid[int(rng.choice(len(valid), p=p / p.sum()))])
        return chosen

    @torch.no_grad()
    def _generate(self, conversations, rngs):
        prompts = [self._prompt_ids(c) for c in conversations]
        ids, mask = self._left_pad(prompts)
        width = ids.shape[1]
        torch.manual_seed(int(rngs[0].integers(2**31)))
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                  do_sample=self.temperature > 0, temperature=self.temperature or None,
                                  pad_token_id=self.pad_id, eos_token_id=self.tokenizer.eos_token_id)
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=False)
        return [parse_action(t, self.tokenizer.eos_token) for t in texts]


def parse_action(text: str, eos: str | None) -> Any:
    """Cut a generated turn at end-of-turn; a rendered tool call becomes {"name", "arguments"}."""
    if eos and eos in text:
        text = text.split(eos, 1)[0]
    if TOOL_OPEN in text:
        body = text.split(TOOL_OPEN, 1)[1].split(TOOL_CLOSE, 1)[0]
        try:
            call = json.loads(body)
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                return {"name": call["name"], "arguments": call.get("arguments") or {}}
        except json.JSONDecodeError:
            pass
    return text.replace("<|pad|>", "").strip()
