"""Token-by-token decoding for `flywheel serve`: n rows of one prompt in one batch, each row with
its own sampling, stop strings, log-probs and an optional constraint (eval/json_grammar.py) on
the text it may produce.

Sampling is Gumbel-max: a row's candidates are ordered by logit / temperature plus Gumbel noise
(greedy: by logit), outside the nucleus (top_p) after the rest, and the first one the constraint
accepts is taken. That samples exactly from the model's distribution restricted to what the
constraint allows, without testing the whole vocabulary at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from eval import json_grammar as jg


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None  # None: no log-probs; 0..20: that many alternatives per token
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass
class Row:
    """One choice being decoded."""
    constraint: Any = None  # a json_grammar state, or a Ban, or None
    ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded generated text (special tokens kept), cut at a stop string
    logprobs: list[dict] = field(default_factory=list)
    finish: str | None = None  # stop | length


@dataclass(frozen=True)
class Ban:
    """Text that must never appear in the reply (tool_choice none: the tool-call mark)."""
    text: str


class Pieces:
    """The text each token adds when it follows other text (a token decoded alone may lose its
    leading space), computed once per token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
        self.anchor = anchor[-1:] if anchor else []
        self.anchor_text = tokenizer.decode(self.anchor, skip_special_tokens=False)
        self._cache: dict[int, str] = {}

    def __call__(self, tok: int) -> str:
        got = self._cache.get(tok)
        if got is None:
            whole = self.tokenizer.decode(self.anchor + [tok], skip_special_tokens=False)
            got = whole[len(self.anchor_text):] if whole.startswith(self.anchor_text) else \
                self.tokenizer.decode([tok], skip_special_tokens=False)
            self._cache[tok] = got
        return got


def _accepts(constraint, text_so_far: str, piece: str):
    """The constraint's state after `piece`, or None when the piece does not fit."""
    if constraint is None:
        return None, True
    if isinstance(constraint, Ban):
        tail = text_so_far[-len(constraint.text):] + piece
        return constraint, constraint.text not in tail
    state = jg.feed(constraint, piece)
    return state, state is not None


def _can_end(constraint) -> bool:
    return constraint is None or isinstance(constraint, Ban) or jg.can_end(constraint)


def _must_end(constraint) -> bool:
    return constraint is not None and not isinstance(constraint, Ban) and jg.done(constraint)


def decode(model, tokenizer, prompt_ids: list[int], rows: list[Row], sampling: Sampling, eos_ids: set[int],
           pieces: Pieces, cancelled: Callable[[], bool] = lambda: False) -> Iterator[list[tuple[int, str]]]:
    """Decode every row to its end; after each step yields [(row index, text added)] for the rows
    that grew (text may be empty while a stop string is still undecided). Rows are updated in place."""
    n = len(rows)
    gen = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None
                                        else int.from_bytes(__import__("os").urandom(6), "little"))
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids] * n, device=device)
    cache, counts = None, [dict() for _ in rows]
    hold = max((len(s) for s in sampling.stop), default=1) - 1
    emitted = [0] * n
    with torch.inference_mode():
        for step in range(sampling.max_new_tokens + 1):
            live = [i for i, r in enumerate(rows) if r.finish is None]
            if not live or cancelled():
                return
            if step == sampling.max_new_tokens:
                for i in live:
                    rows[i].finish = "length"
                yield [(i, _flush(rows[i], emitted, i)) for i in live]
                return
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache if "cache" in out else out.past_key_values
            logits = out.logits[:, -1].float().cpu()
            nxt = []
            grown = []
            for i in range(n):
                row = rows[i]
                if row.finish is not None:
                    nxt.append(next(iter(eos_ids)))
                    continue
                tok = _pick(logits[i], row, sampling, counts[i], eos_ids, pieces, gen)
                nxt.append(tok)
                if tok in eos_ids:
                    row.finish = "stop"
                    grown.append((i, _flush(row, emitted, i)))
                    continue
                if sampling.top_logprobs is not None:
                    row.logprobs.append(_logprob_entry(logits[i], tok, sampling.top_logprobs, pieces))
                row.ids.append(tok)
                counts[i][tok] = counts[i].get(tok, 0) + 1
                row.constraint, _ = _accepts(row.constraint, row.text, pieces(tok))
                # the whole reply decoded again: a character split over tokens comes out whole
                row.text = tokenizer.decode(row.ids, skip_special_tokens=False)
                cut = _stop_at(row.text, sampling.stop)
                if cut is not None:
                    row.text, row.finish = row.text[:cut], "stop"
                    grown.append((i, _flush(row, emitted, i)))
                    continue
                settled = len(row.text.rstrip("\ufffd"))  # an unfinished multi-byte character waits
                upto = max(emitted[i], min(settled, len(row.text) - hold))
                grown.append((i, row.text[emitted[i]:upto]))
                emitted[i] = upto
            ids = torch.tensor([[t] for t in nxt], device=device)
            yield grown


def _flush(row: Row, emitted: list[int], i: int) -> str:
    text = row.text[emitted[i]:]
    emitted[i] = len(row.text)
    return text


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _pick(logits: torch.Tensor, row: Row, s: Sampling, counts: dict[int, int], eos_ids: set[int],
          pieces: Pieces, gen: torch.Generator) -> int:
    if _must_end(row.constraint):
        return next(iter(eos_ids))
    z = logits.clone()
    for tok, bias in s.logit_bias.items():
        if 0 <= tok < z.shape[0]:
            z[tok] += bias
    if counts and (s.presence_penalty or s.frequency_penalty):
        toks = torch.tensor(list(counts))
        z[toks] -= s.frequency_penalty * torch.tensor(list(counts.values()), dtype=z.dtype) + s.presence_penalty
    if s.temperature > 0:
        z = z / s.temperature
        if s.top_p < 1.0:
            probs = torch.softmax(z, -1)
            sorted_p, order = probs.sort(descending=True)
            outside = (sorted_p.cumsum(-1) - sorted_p) >= s.top_p  # keep the smallest set reaching top_p
            z[order[outside]] = -math.inf
        u = torch.rand(z.shape, generator=gen).clamp_(1e-20, 1.0)
        keys = torch.where(torch.isinf(z), z, z - torch.log(-torch.log(u)))
    else:
        keys = z
    order = keys.argsort(descending=True)
    if row.constraint is None:
        return int(order[0])
    for start in range(0, order.shape[0], 256):
        for tok in order[start:start + 256].tolist():
            if tok in eos_ids:
                if _can_end(row.constraint):
                    return tok
                continue
            if _accepts(row.constraint, row.text, pieces(tok))[1]:
                return tok
    return next(iter(eos_ids))  # nothing fits: end the turn


def _logprob_entry(logits: torch.Tensor, tok: int, top: int, pieces: Pieces) -> dict:
    lp = torch.log_softmax(logits, -1)

    def entry(t: int) -> dict:
        text = pieces(t)
        return {"token": text, "logprob": float(lp[t]), "bytes": list(text.encode("utf-8"))}

    out = entry(tok)
    if top:
        vals, idx = lp.topk(top)
        out["top_logprobs"] = [entry(int(t)) for t in idx.tolist()]
    else:
        out["top_logprobs"] = []
    return out
