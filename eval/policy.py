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
The rest of a step's fixed cost is cut the same way: a new group's common opening (system prompt,
tool schemas) is encoded once for all its rows, the cache grows in place instead of being
re-concatenated, and only a chat's new turns go through the chat template.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from eval.models import LoadOptions, TemplateError, load_model, load_tokenizer
from eval.rollout import tool_call_of

TOOL_OPEN, TOOL_CLOSE = "<|tool_call|>", "<|/tool_call|>"


def load_checkpoint(base: str | Path, adapter: str | Path | None = None, load: LoadOptions | str = "float32"):
    """Load base model (+ LoRA adapter) and tokenizer from local paths; never downloads. `load` is
    the recipe's model options (eval.models.LoadOptions) or just a dtype name."""
    opts = LoadOptions(dtype=load) if isinstance(load, str) else load
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base
    tokenizer = load_tokenizer(tok_src, opts)
    model = load_model(base, opts)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    model.eval()
    return model, tokenizer


def policy_for(checkpoint: tuple[str | Path, str | Path | None], policy_config, load: LoadOptions | str = "float32",
               name: str = "policy") -> "HFPolicy":
    """The acting policy of a checkpoint: `checkpoint` is (base model folder, adapter folder or None),
    `policy_config` an eval.config.PolicyConfig (sampling temperature, constrained decoding, token
    budget), `load` how the model loads (eval.models.LoadOptions or a dtype name)."""
    base, adapter = checkpoint
    model, tokenizer = load_checkpoint(base, adapter, load)
    pc = policy_config
    return HFPolicy(model, tokenizer, temperature=pc.temperature, constrained=pc.constrained,
                    max_new_tokens=pc.max_new_tokens, name=name)


class _GrowingLayer(DynamicLayer):
    """A full-attention cache layer that appends into spare capacity (doubling when full) instead of
    concatenating the whole cache anew at every forward pass: with 32 episodes in flight and a few
    hundred tokens each, re-copying the cache twice a step cost a third of the step. `keys` and
    `values` are views of the filled part, as DynamicLayer's consumers expect."""

    def lazy_initialization(self, key_states, value_states) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf = self._vbuf = None
        self._len = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self._len, key_states.shape[-2]
        if self._kbuf is None or n + add > self._kbuf.shape[-2]:
            self._reserve(key_states, value_states, 2 * (n + add) + 32)
        self._kbuf[..., n:n + add, :] = key_states
        self._vbuf[..., n:n + add, :] = value_states
        self.truncate(n + add)
        return self.keys, self.values

    def _reserve(self, k, v, capacity: int) -> None:
        kbuf = k.new_empty((*k.shape[:-2], capacity, k.shape[-1]))
        vbuf = v.new_empty((*v.shape[:-2], capacity, v.shape[-1]))
        if self._len:
            kbuf[..., :self._len, :] = self.keys
            vbuf[..., :self._len, :] = self.values
        self._kbuf, self._vbuf = kbuf, vbuf

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions (the rest of the buffer is spare capacity)."""
        self._len = length
        self.keys, self.values = self._kbuf[..., :length, :], self._vbuf[..., :length, :]

    def select_rows(self, index: torch.Tensor) -> None:
        self._kbuf, self._vbuf = self._kbuf[index], self._vbuf[index]
        self.truncate(self._len)


def _new_cache(model) -> DynamicCache:
    """A cache for the model whose full-attention layers grow in place (sliding-window and other
    special layers stay as transformers makes them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [_GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _truncate(cache: DynamicCache, length: int) -> None:
    for layer in cache.layers:
        if isinstance(layer, _GrowingLayer):
            layer.truncate(length)
        else:
            layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]


def _select_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    for layer in cache.layers:
        if isinstance(layer, _GrowingLayer):
            layer.select_rows(index)
        else:
            layer.keys, layer.values = layer.keys[index], layer.values[index]


@dataclass
class _Rendered:
    """What a chat's last prompt was: its message count, text and token ids; its head (messages up
    to the first user turn) and the head's text, for rendering only what is new; growths so far."""

    conv: list
    n_messages: int = 0
    text: str = ""
    ids: list[int] = field(default_factory=list)
    head: list | None = None
    head_text: str | None = None
    growths: int = 0


def _like(conv, messages: list):
    """`messages` as a chat of the same kind as `conv` (its tools travel along)."""
    return type(conv)(messages, tools=conv.tools) if hasattr(conv, "tools") else list(messages)


@dataclass
class _Group:
    """Episodes encoded together: their conversations (one row each), the token ids each row has
    encoded, the rows' KV cache and its attention mask (B, L). A row's cache has holes where a
    step padded it; the mask marks its real tokens."""

    conversations: list
    ids: list[list[int]]
    cache: Any = None
    mask: torch.Tensor | None = None
    shared_prefix: int = 0  # tokens encoded once for all rows (see HFPolicy._encode_shared_prefix)

    def keep_rows(self, rows: list[int]) -> None:
        if rows == list(range(len(self.conversations))):
            return
        self.conversations = [self.conversations[r] for r in rows]
        self.ids = [self.ids[r] for r in rows]
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        _select_rows(self.cache, index)


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
        self._rendered: dict[int, _Rendered] = {}  # id(chat) -> what its last prompt was
        self.tail_rendering = True  # off for good once a tail render disagrees with the full one
        self._tails: dict[tuple, str | None] = {}  # (id of tools, new turns) -> their text after a head
        self._tool_sets: dict[int, Any] = {}
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

    def _texts(self, chats: list) -> list[str]:
        """Each chat's text with the generation prompt, rendered in one batched template call per
        set of tools."""
        out: list[str | None] = [None] * len(chats)
        by_tools: dict[int, list[int]] = {}
        for i, chat in enumerate(chats):
            by_tools.setdefault(id(getattr(chat, "tools", None) or None), []).append(i)
        for idx in by_tools.values():
            tools = getattr(chats[idx[0]], "tools", None) or None
            texts = self.tokenizer.apply_chat_template([list(chats[i]) for i in idx], tools=tools, tokenize=False,
                                                       add_generation_prompt=True)
            for i, text in zip(idx, texts):
                out[i] = text
        return out

    def _prompt_texts(self, conversations) -> list[str]:
        """Each chat's text with the generation prompt. A chat that grew since its last prompt is
        not rendered whole again: its new messages are rendered after the chat's head (the messages
        up to its first user turn) and that text is appended to the old one; the text of the same
        new turns is remembered (a maze sees the same observations again). This holds for
        templates that render each turn on its own (the tiny model's, Llama's, ChatML); it is
        checked against the full rendering on each chat's first two growths (a template that
        numbers its turns differs on the second) and on every call for the longest chat, and one
        disagreement turns it off for good."""
        olds = []
        for conv in conversations:
            old = self._rendered.get(id(conv))
            ok = self.tail_rendering and old is not None and old.conv is conv and len(conv) > old.n_messages
            if ok and old.head is None:
                first_user = next((i for i, m in enumerate(conv) if m.get("role") == "user"), None)
                ok = first_user is not None and first_user < old.n_messages
                if ok:
                    old.head = list(conv[:first_user + 1])
            olds.append(old if ok else None)
        need_head = [o for o in olds if o is not None and o.head_text is None]
        for o, text in zip(need_head, self._texts([_like(o.conv, o.head) for o in need_head])):
            o.head_text = text
        jobs = []  # (conversation index, "tail" | "full", chat)
        texts: list[dict[str, str]] = [{} for _ in conversations]
        keys: list[tuple | None] = [None] * len(conversations)
        for k, (conv, old) in enumerate(zip(conversations, olds)):
            if old is None:
                jobs.append((k, "full", conv))
                continue
            new = list(conv[old.n_messages:])
            tools = getattr(conv, "tools", None)
            self._tool_sets.setdefault(id(tools), tools)  # kept alive, so that its id stays its own
            keys[k] = (id(tools), json.dumps(new, sort_keys=True, default=str))
            if keys[k] in self._tails:  # the same new turns rendered before (they are turn-local)
                texts[k]["tail"] = self._tails[keys[k]]
            else:
                jobs.append((k, "tail", _like(conv, old.head + new)))
            old.growths += 1
            if old.growths <= 2:
                jobs.append((k, "full", conv))
        grown = [k for k, old in enumerate(olds) if old is not None and old.growths > 2]
        if grown:  # and every call, the longest chat
            longest = max(grown, key=lambda k: len(conversations[k]))
            jobs.append((longest, "full", conversations[longest]))
        for (k, kind, _), text in zip(jobs, self._texts([chat for _, _, chat in jobs])):
            if kind == "tail":
                head_text = olds[k].head_text
                text = text[len(head_text):] if text.startswith(head_text) else None
                if len(self._tails) >= 50_000:
                    self._tails.clear()
                self._tails[keys[k]] = text
            texts[k][kind] = text
        out = []
        for got, old in zip(texts, olds):
            tail = None
            if old is not None and got["tail"] is not None:
                tail = old.text + got["tail"]
            if "full" in got:
                if old is not None and tail != got["full"]:
                    self.tail_rendering = False
                out.append(got["full"])
            elif tail is None:  # the head did not render as a prefix: this chat is not turn-local
                self.tail_rendering = False
                out.append(self._texts([old.conv])[0])
            else:
                out.append(tail)
        return out

    def _prompts(self, conversations) -> list[list[int]]:
        """Token ids of each chat with the generation prompt. A chat that grew since the last call
        tokenizes only its new text when the old text ended in a special token (the tokenizer
        splits there, so the ids of the whole equal old ids + new ids); else the whole text."""
        texts = self._prompt_texts(conversations)
        pieces, bases = [], []
        for conv, text in zip(conversations, texts):
            old = self._rendered.get(id(conv))
            grew = (old is not None and old.conv is conv and text.startswith(old.text)
                    and old.text.endswith(self._specials) and not text[len(old.text):][:1].isspace())
            pieces.append(text[len(old.text):] if grew else text)
            bases.append(old.ids if grew else [])
        new_ids = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
        rendered = {}
        for c, t, b, n in zip(conversations, texts, bases, new_ids):
            old = self._rendered.get(id(c))
            keep = old if old is not None and old.conv is c else _Rendered(c)
            keep.n_messages, keep.text, keep.ids = len(c), t, b + list(n)
            rendered[id(c)] = keep
        self._rendered = rendered
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
                raise TemplateError("the chat template is not prefix-stable (the prompt does not render as a prefix of "
                                    "the prompt and an answer), which constrained decoding needs; set "
                                    "model.chat_template to a prefix-stable template file")
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

    def action_logprobs(self, conversations, valid_actions) -> list[np.ndarray]:
        """Sum of token log-probs of each valid action per conversation, end-of-turn included."""
        with self._no_grad():
            return self._action_logprobs(conversations, valid_actions)

    def _no_grad(self):
        """Inference mode (less per-op bookkeeping) for a frozen model; plain no_grad for a model
        being trained (GRPO's rollouts), whose later forward passes must not meet inference tensors."""
        if any(p.requires_grad for p in self.model.parameters()):
            return torch.no_grad()
        return torch.inference_mode()

    def _action_logprobs(self, conversations, valid_actions) -> list[np.ndarray]:
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
        first = first_lp.double().numpy()
        scores = [first[b, [ids[0] for ids in row]] for b, row in enumerate(conts)]
        # 2. The rest of every candidate: each episode's candidates side by side in its own row,
        #    a block-diagonal causal mask keeping them apart (each sees the prompt and its own
        #    earlier tokens), on the rows' cache as it is: nothing is copied per candidate.
        inputs = [[t for ids in row for t in ids[:-1]] for row in conts]
        if any(inputs):
            past = group.mask.shape[1]
            rest = self._score_rest(conts, inputs, group.cache, group.mask)
            _truncate(group.cache, past)  # the candidates' keys and values are not part of the chat
            for b in range(len(conts)):
                scores[b] += rest[b]
        return scores

    def _encode(self, group: _Group, prompts) -> torch.Tensor:
        """One forward pass over each prompt's tokens not yet in the group's cache, left-padded so
        that every row ends at its prompt's last token. Returns next-token log-probs (B, V)."""
        if group.cache is None:
            group.cache = _new_cache(self.model)
            self._encode_shared_prefix(group, prompts)
        done = [len(ids) for ids in group.ids]
        new, new_mask = self._left_pad([p[n:] for p, n in zip(prompts, done)])
        pos = (torch.tensor(done).unsqueeze(1) + new_mask.cumsum(-1) - 1).clamp(min=0)
        mask = new_mask if group.mask is None else torch.cat([group.mask, new_mask], dim=-1)
        out = self.model(input_ids=new, attention_mask=mask, position_ids=pos, cache=group.cache,
                         use_cache=True, logits_to_keep=1)
        group.cache = out.cache if "cache" in out else out.past_key_values
        group.mask, group.ids = mask, [list(p) for p in prompts]
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def _encode_shared_prefix(self, group: _Group, prompts, min_tokens: int = 8) -> None:
        """A new group's rows usually open with the same tokens (system prompt, tool schemas):
        encode that common prefix once, on one row, and copy its keys and values to every row."""
        if len(prompts) < 2 or not all(isinstance(layer, _GrowingLayer) for layer in group.cache.layers):
            return
        shortest = min(len(p) for p in prompts)
        common = 0
        while common < shortest - 1 and all(p[common] == prompts[0][common] for p in prompts):
            common += 1
        if common < min_tokens:
            return
        prefix = list(prompts[0][:common])
        self.model(input_ids=torch.tensor([prefix]), attention_mask=torch.ones((1, common), dtype=torch.long),
                   position_ids=torch.arange(common).unsqueeze(0), cache=group.cache, use_cache=True, logits_to_keep=1)
        _select_rows(group.cache, torch.zeros(len(prompts), dtype=torch.long))
        group.ids = [prefix] * len(prompts)
        group.mask = torch.ones((len(prompts), common), dtype=torch.long)
        group.shared_prefix = common

    def _score_rest(self, conts, inputs, cache, mask) -> list[np.ndarray]:
        """Sum of log-probs of tokens 2.. of each candidate (B rows of candidate blocks). The row
        layout, positions and block-diagonal mask are built with numpy: with 32 episodes x several
        candidates a step, per-candidate tensor ops cost more than the forward pass."""
        rows, width, past = len(conts), max(len(r) for r in inputs), mask.shape[1]
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        targets = np.zeros((rows, width), dtype=np.int64)
        block = np.full((rows, width), -1, dtype=np.int64)  # which candidate a column belongs to
        offset = np.zeros((rows, width), dtype=np.int64)  # its place within that candidate
        for b, row in enumerate(conts):
            lens = np.array([len(c) - 1 for c in row])
            n = int(lens.sum())
            if not n:
                continue
            ids[b, :n] = inputs[b]
            targets[b, :n] = [t for c in row for t in c[1:]]
            block[b, :n] = np.repeat(np.arange(len(row)), lens)
            offset[b, :n] = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens)
        own = (block[:, :, None] == block[:, None, :]) & (block[:, None, :] >= 0) & np.tri(width, dtype=bool)
        attend = np.concatenate([np.broadcast_to(mask.numpy().astype(bool)[:, None, :], (rows, width, past)), own], axis=2)
        dtype = next(self.model.parameters()).dtype
        bias = torch.zeros(attend.shape, dtype=dtype).masked_fill_(torch.from_numpy(~attend), torch.finfo(dtype).min)
        pos = torch.from_numpy(mask.sum(-1).numpy()[:, None] + offset)
        out = self.model(input_ids=torch.from_numpy(ids), attention_mask=bias.unsqueeze(1), position_ids=pos,
                         cache=cache, use_cache=True)
        tok_lp = torch.log_softmax(out.logits.float(), dim=-1).gather(-1, torch.from_numpy(targets).unsqueeze(-1))
        tok_lp = tok_lp.squeeze(-1).double().numpy()
        return [np.bincount(block[b][block[b] >= 0], weights=tok_lp[b][block[b] >= 0], minlength=len(row))
                for b, row in enumerate(conts)]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, W) left-padded so that every row ends at its last token, and their mask."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s):] = s
                mask[r, width - len(s):] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

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

    def _generate(self, conversations, rngs):
        with self._no_grad():
            return self._generate_texts(conversations, rngs)

    def _generate_texts(self, conversations, rngs):
        """Free text: batched sampling. The torch seed comes from the batch's first episode, so a
        free-text sample (unlike a constrained choice) depends on which episodes share the batch."""
        prompts = self._prompts(conversations)
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
