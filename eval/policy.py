"""A transformers (+ PEFT adapter) model acting as a policy in lock-step episodes.

With `constrained=True` and an environment that lists its valid actions, the policy scores every
valid action as a continuation of the chat (sum of token log-probs, end-of-turn included) and
samples among them: one forward pass for all episodes x candidates of a step. An untrained model
is then a near-uniform random policy instead of a stream of invalid text. Free-text environments
use batched `generate`.

Each episode's KV cache is kept from one step to the next (keyed by its conversation object), so
a step encodes only the tokens that are new since the last one (the action taken, the
observation), not the whole chat again: that is what makes 32 episodes in flight cost little more
than one. The chat template must be prefix-stable (a turn renders the same whatever follows),
which the policy checks; a conversation whose tokens stop extending its cache is re-encoded.

Tool-call environments: a conversation with `tools` (see eval.rollout.Conversation) gets them
rendered into the prompt, and a listed action that is the JSON string of a call is scored as the
chat template renders an assistant tool call, exactly what SFT on the logged episodes trains.

Numbers: each episode samples with its own generator, so choices do not depend on which other
episodes share the batch, except through float rounding: a batch of different width sums in a
different order (log-probs differ by about 1e-6), which changes a sampled choice only when the
episode's uniform draw falls that close to a boundary between two actions (greedy: a near-tie).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from eval.rollout import tool_call_of

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


@dataclass
class _Group:
    """Episodes encoded together: their conversations (one row each), the token ids each row has
    encoded, the rows' KV cache and its attention mask (B, L). A row's cache has holes where a
    step padded it; the mask marks its real tokens."""

    conversations: list
    ids: list[list[int]]
    cache: Any = None
    mask: torch.Tensor | None = None

    def keep_rows(self, rows: list[int]) -> None:
        if rows == list(range(len(self.conversations))):
            return
        self.conversations = [self.conversations[r] for r in rows]
        self.ids = [self.ids[r] for r in rows]
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]


def tool_call_message(call: dict[str, Any], call_id: str = "call_0") -> dict[str, Any]:
    """An assistant turn holding one tool call, in the shape eval.rollout logs it."""
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": call_id, "name": call["name"], "arguments": call["arguments"]}]}


class HFPolicy:
    def __init__(self, model, tokenizer, *, temperature: float = 1.0, constrained: bool = True,
                 max_new_tokens: int = 64, forward_batch: int = 64, name: str = "policy"):
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.constrained = temperature, constrained
        self.max_new_tokens, self.forward_batch, self.name = max_new_tokens, forward_batch, name
        self._cont_cache: dict[tuple[str, bool], list[int]] = {}
        self._groups: list[_Group] = []
        self._rendered: dict[int, tuple[list, str, list[int]]] = {}  # id(chat) -> (chat, text, ids)
        self._specials = tuple(tokenizer.get_added_vocab()) or ("\0",)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ---- chat rendering ------------------------------------------------------------------------
    def _render(self, conv, extra: list[dict[str, Any]] = (), prompt: bool = False) -> list[int]:
        """Token ids of a chat: the template's text, tokenized as one string (the same way for
        prompts and candidates, so that their ids line up)."""
        return list(self.tokenizer(self._text(conv, extra, prompt), add_special_tokens=False)["input_ids"])

    def _text(self, conv, extra: list[dict[str, Any]] = (), prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(list(conv) + list(extra), tools=getattr(conv, "tools", None) or None,
                                                  tokenize=False, add_generation_prompt=prompt)

    def _prompt_ids(self, conv) -> list[int]:
        return self._render(conv, prompt=True)

    def _prompts(self, conversations) -> list[list[int]]:
        """Token ids of each chat with the generation prompt. A chat that grew since the last call
        tokenizes only its new text when the old text ended in a special token (the tokenizer
        splits there, so the ids of the whole equal old ids + new ids); else the whole text."""
        texts = [self._text(c, prompt=True) for c in conversations]
        pieces, bases = [], []
        for conv, text in zip(conversations, texts):
            conv_, old_text, old_ids = self._rendered.get(id(conv), (None, "", []))
            grew = (conv_ is conv and text.startswith(old_text) and old_text.endswith(self._specials)
                    and not text[len(old_text):][:1].isspace())
            pieces.append(text[len(old_text):] if grew else text)
            bases.append(old_ids if grew else [])
        new_ids = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
        self._rendered = {id(c): (c, t, b + list(n)) for c, t, b, n in zip(conversations, texts, bases, new_ids)}
        return [b + list(n) for b, n in zip(bases, new_ids)]

    def _continuation_ids(self, conv, prompt: list[int], action: str) -> list[int]:
        """Token ids of the assistant turn `action` (end-of-turn included), as the chat template
        renders it after `conv`: a tool call when `action` is one of the conversation's tools.
        Cached per action: the template's turns are prefix-stable."""
        call = tool_call_of(action, getattr(conv, "tools", None))
        key = (action, call is not None)
        if key not in self._cont_cache:
            turn = tool_call_message(call) if call else {"role": "assistant", "content": action}
            full = self._render(conv, [turn])
            if full[:len(prompt)] != prompt:
                raise ValueError("chat template is not prefix-stable; constrained decoding needs it")
            self._cont_cache[key] = full[len(prompt):]
        return self._cont_cache[key]

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
        prompts = self._prompts(conversations)
        out: list[np.ndarray | None] = [None] * len(conversations)
        for group, members in self._regroup(conversations, prompts):
            got = self._score(group, [prompts[i] for i in members], [valid_actions[i] for i in members])
            for i, scores in zip(members, got):
                out[i] = scores
        return out

    def _regroup(self, conversations, prompts) -> list[tuple[_Group, list[int]]]:
        """Each conversation's group (the one whose cache its prompt extends), groups cut to the
        conversations acting now, and new groups of up to `forward_batch` for the others. Episodes
        not acting now have ended (rollout passes every active one): their rows are dropped."""
        where = {id(c): (g, r) for g in self._groups for r, c in enumerate(g.conversations)}
        members: dict[int, list[int]] = {}
        fresh: list[int] = []
        for i, (conv, prompt) in enumerate(zip(conversations, prompts)):
            g, r = where.get(id(conv), (None, None))
            done = g.ids[r] if g is not None else None
            if done is not None and len(done) < len(prompt) and prompt[:len(done)] == done:
                members.setdefault(id(g), []).append(i)
            else:
                fresh.append(i)
        groups = []
        for g in self._groups:
            if id(g) in members:
                idx = members[id(g)]
                g.keep_rows([where[id(conversations[i])][1] for i in idx])
                groups.append((g, idx))
        for s in range(0, len(fresh), self.forward_batch):
            idx = fresh[s:s + self.forward_batch]
            groups.append((_Group([conversations[i] for i in idx], [[] for _ in idx]), idx))
        self._groups = [g for g, _ in groups]
        return groups

    def _score(self, group: _Group, prompts, valid_actions) -> list[np.ndarray]:
        # 1. Encode what is new in each prompt on top of its row's cache; the next-token
        #    distribution after each prompt scores the candidates' first tokens.
        first_lp = self._encode(group, prompts)
        conts = [[self._continuation_ids(c, p, a) for a in valid]
                 for c, p, valid in zip(group.conversations, prompts, valid_actions)]
        scores = [first_lp[b, [ids[0] for ids in row]].numpy().astype(np.float64) for b, row in enumerate(conts)]
        # 2. The rest of every candidate: each episode's candidates side by side in its own row,
        #    a block-diagonal causal mask keeping them apart (each sees the prompt and its own
        #    earlier tokens), on the rows' cache as it is: nothing is copied per candidate.
        inputs = [[t for ids in row for t in ids[:-1]] for row in conts]
        if any(inputs):
            past = group.mask.shape[1]
            rest = self._score_rest(conts, inputs, group.cache, group.mask)
            for layer in group.cache.layers:  # the candidates' keys and values are not part of the chat
                layer.keys, layer.values = layer.keys[:, :, :past], layer.values[:, :, :past]
            for b in range(len(conts)):
                scores[b] += rest[b]
        return scores

    def _encode(self, group: _Group, prompts) -> torch.Tensor:
        """One forward pass over each prompt's tokens not yet in the group's cache, left-padded so
        that every row ends at its prompt's last token. Returns next-token log-probs (B, V)."""
        done = [len(ids) for ids in group.ids]
        new, new_mask = self._pad([p[n:] for p, n in zip(prompts, done)], left=True)
        pos = (torch.tensor(done).unsqueeze(1) + new_mask.cumsum(-1) - 1).clamp(min=0)
        mask = new_mask if group.mask is None else torch.cat([group.mask, new_mask], dim=-1)
        out = self.model(input_ids=new, attention_mask=mask, position_ids=pos, cache=group.cache,
                         use_cache=True, logits_to_keep=1)
        group.cache = out.cache if "cache" in out else out.past_key_values
        group.mask, group.ids = mask, [list(p) for p in prompts]
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def _score_rest(self, conts, inputs, cache, mask) -> list[np.ndarray]:
        """Sum of log-probs of tokens 2.. of each candidate (B rows of candidate blocks)."""
        ids, in_mask = self._pad(inputs, left=False)  # (B, Wc)
        width, past = ids.shape[1], mask.shape[1]
        attend = torch.zeros((len(inputs), width, past + width), dtype=torch.bool)
        attend[:, :, :past] = mask.bool().unsqueeze(1)
        pos = torch.zeros_like(ids)
        seen = mask.sum(-1)
        targets = torch.zeros_like(ids)
        blocks: list[list[tuple[int, int]]] = []
        for b, row in enumerate(conts):
            at, spans = 0, []
            for cand in row:
                n = len(cand) - 1
                attend[b, at:at + n, past + at:past + at + n] = torch.ones((n, n), dtype=torch.bool).tril()
                pos[b, at:at + n] = seen[b] + torch.arange(n)
                targets[b, at:at + n] = torch.tensor(cand[1:], dtype=torch.long)
                spans.append((at, at + n))
                at += n
            blocks.append(spans)
        dtype = next(self.model.parameters()).dtype
        bias = torch.zeros(attend.shape, dtype=dtype).masked_fill(~attend, torch.finfo(dtype).min)
        out = self.model(input_ids=ids, attention_mask=bias.unsqueeze(1), position_ids=pos, cache=cache, use_cache=True)
        tok_lp = torch.log_softmax(out.logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        tok_lp = (tok_lp * in_mask).double().numpy()
        return [np.array([tok_lp[b, s:e].sum() for s, e in spans]) for b, spans in enumerate(blocks)]

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            at = slice(width - len(s), width) if left else slice(0, len(s))
            ids[r, at] = torch.tensor(s, dtype=torch.long)
            mask[r, at] = 1
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
        """Free text: batched sampling. The torch seed comes from the batch's first episode, so a
        free-text sample (unlike a constrained choice) depends on which episodes share the batch."""
        prompts = self._prompts(conversations)
        ids, mask = self._pad(prompts, left=True)
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
