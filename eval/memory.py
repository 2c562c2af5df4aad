"""Gradient-free memory: past episodes retrieved into the acting policy's prompt (the study's `memory`
and `accumulate+memory` arms; `memory.enabled` in any recipe).

The weights never change for it. Before an episode's first step, the k past episodes whose task
text is most similar to this one's are retrieved from what the run itself collected, and put, within
a token budget, into the system prompt of every step of that episode:
- a success becomes a worked example: the task as first seen and the actions that solved it;
- a failure becomes a short note of where it went wrong, built from its logged steps and outcome
  (steps used, invalid actions, back-and-forth loops, the last observation), with no model call.

Retrieval is BM25 (the `bm25s` package: maintained, numpy-only scoring, a few hundred KB; TF-IDF
would need scikit-learn and ranks short task texts no better) over the task text, within the same
suite. The query is the episode's task text, fixed for the whole episode, so retrieving once at its
start gives what retrieving before each step would, and the prompt stays a stable prefix (the
policy's key-value cache keeps working). Ties (maze openings repeat) go to the newer episode: it
came from the more recent policy.

What goes in is decided by the caller (trainer/round.py `memory_of`): the run's own collected
episodes up to a round, never held-out tasks (dropped again here through `exclude`) and never another
run's (each study arm has its own store). Each episode's trajectory records what it was given in
`metadata.memory` (episode ids, tokens); the logged conversation stays what the environment said, so
the store and the training data never contain memory blocks.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from data_pipeline.schema import Trajectory

HEADER = "Notes from your own past episodes on similar tasks (most similar first):"
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a task text; numbers count (a maze's '2 down' matters)."""
    return _WORD.findall(text.lower())


def task_text(messages: Iterable[Any]) -> str:
    """The task as the agent first saw it: the first user turn (message dicts or schema Messages)."""
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else m.role
        if role == "user":
            return str((m.get("content") if isinstance(m, dict) else m.content) or "")
    return ""


def _action_text(m) -> str:
    if m.tool_calls:
        return "; ".join(f"{c.name}({_short_args(c.arguments)})" for c in m.tool_calls)
    return str(m.content or "").strip()


def _short_args(args: Any, limit: int = 80) -> str:
    import json

    text = args if isinstance(args, str) else json.dumps(args, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _loops(actions: list[str]) -> int:
    """Back-and-forth steps (A, B, A): an action repeating the one two steps before, another between."""
    return sum(1 for i in range(2, len(actions)) if actions[i] == actions[i - 2] != actions[i - 1])


def _shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def worked_example(t: Trajectory, max_actions: int = 40) -> str:
    """A success as an example: the task and the actions that solved it."""
    actions = [_action_text(m) for m in t.messages if m.role == "assistant"]
    shown = actions[:max_actions] + (["..."] if len(actions) > max_actions else [])
    score = t.outcome.score if t.outcome and t.outcome.score is not None else 1.0
    return (f"SOLVED in {len(actions)} steps (score {score:.2f}). Task: \"{_shorten(task_text(t.messages), 200)}\" "
            f"Actions: {', '.join(shown)}.")


def failure_note(t: Trajectory) -> str:
    """A failure as a note of where it went wrong, from the logged steps and outcome alone."""
    actions = [_action_text(m) for m in t.messages if m.role == "assistant"]
    observations = [str(m.content or "") for m in t.messages[1:] if m.role in ("user", "tool")]
    invalid = sum("invalid" in o.lower() for o in observations)
    loops = _loops(actions)
    common = Counter(actions).most_common(2)
    parts = [f"FAILED after {len(actions)} steps"
             + (f" (score {t.outcome.score:.2f})" if t.outcome and t.outcome.score else "") + "."]
    parts.append(f"Task: \"{_shorten(task_text(t.messages), 200)}\"")
    if loops:
        parts.append(f"It went back and forth {loops} times.")
    if invalid:
        parts.append(f"{invalid} of its actions were invalid.")
    if common:
        parts.append("Most used: " + ", ".join(f"{a} x{n}" for a, n in common) + ".")
    last = [_action_text(m) for m in t.messages if m.role == "assistant"][-3:]
    if last:
        parts.append(f"Last actions: {', '.join(last)}.")
    if observations:
        parts.append(f"Last observation: \"{_shorten(observations[-1], 120)}\"")
    return " ".join(parts)


@dataclass
class Entry:
    """One past episode as the memory holds it."""

    episode_id: str
    task_id: str
    suite: str
    success: bool
    text: str  # the worked example or failure note
    tokens: int  # its size in the policy's tokens


@dataclass
class Recall:
    """What one episode was given: the entries (most similar first) and the block's tokens."""

    entries: list[Entry] = field(default_factory=list)
    tokens: int = 0
    steps: int = 0  # steps the episode took with it in its prompt

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the memory added to the episode: its block, sent with every step."""
        return self.tokens * self.steps

    def block(self) -> str:
        return "\n".join([HEADER] + [f"[{i + 1}] {e.text}" for i, e in enumerate(self.entries)]) if self.entries else ""

    def metadata(self) -> dict[str, Any]:
        return {"episodes": [e.episode_id for e in self.entries], "task_ids": [e.task_id for e in self.entries],
                "successes": sum(e.success for e in self.entries), "tokens": self.tokens,
                "prompt_tokens": self.prompt_tokens}


def whitespace_tokens(text: str) -> int:
    return len(text.split())


class ExperienceMemory:
    """A retrieval library over past episodes (BM25 on the task text, per suite)."""

    def __init__(self, trajectories: Iterable[Trajectory], *, k: int = 4, max_tokens: int = 512,
                 count_tokens: Callable[[str], int] = whitespace_tokens,
                 exclude: Callable[[Trajectory], bool] | None = None):
        self.k, self.max_tokens, self.count_tokens = k, max_tokens, count_tokens
        self._by_suite: dict[str, list[tuple[Entry, list[str]]]] = {}
        self.size = 0
        for t in trajectories:
            if t.outcome is None or t.outcome.success is None or (exclude is not None and exclude(t)):
                continue  # an unlabeled episode is neither an example nor a failure
            text = worked_example(t) if t.outcome.success else failure_note(t)
            entry = Entry(episode_id=t.episode_id, task_id=t.task_id, suite=t.suite or "", success=bool(t.outcome.success),
                          text=text, tokens=count_tokens(text))
            self._by_suite.setdefault(entry.suite, []).append((entry, words(task_text(t.messages))))
            self.size += 1
        self._index: dict[str, Any] = {}
        self._header_tokens = count_tokens(HEADER)

    def entries(self) -> list[Entry]:
        return [e for rows in self._by_suite.values() for e, _ in rows]

    def _retriever(self, suite: str):
        if suite not in self._index:
            import bm25s

            retriever = bm25s.BM25()
            retriever.index([toks or [""] for _, toks in self._by_suite[suite]], show_progress=False)
            self._index[suite] = retriever
        return self._index[suite]

    def recall(self, suite: str, text: str, task_id: str | None = None) -> Recall:
        """The k most similar past episodes of `suite` that fit the token budget (never the same task)."""
        rows = self._by_suite.get(suite or "", [])
        if not rows:
            return Recall()
        scores = self._retriever(suite or "").get_scores(words(text) or [""])
        order = np.lexsort((-np.arange(len(rows)), -np.asarray(scores, dtype=float)))  # best, then newest
        out, used = [], self._header_tokens
        for i in order:
            entry = rows[int(i)][0]
            if entry.task_id == task_id:
                continue
            cost = entry.tokens + 2
            if used + cost > self.max_tokens:
                continue  # a shorter, less similar one may still fit
            out.append(entry)
            used += cost
            if len(out) == self.k:
                break
        return Recall(out, used if out else 0)


class MemoryPolicy:
    """A policy whose prompts carry the memory: wraps any policy (`act(conversations, valid_actions,
    rngs)`). The wrapped policy sees, per episode, one chat object that grows with the episode: the
    original chat with the memory block at the end of its system prompt."""

    def __init__(self, inner, memory: ExperienceMemory, suite_of: Callable[[Any], str] | None = None):
        self.inner, self.memory = inner, memory
        self.name = getattr(inner, "name", "policy")
        # id(original chat) -> (it, its memory chat, recall, messages added in front); episodes that
        # ended move to _ended until the rollout takes their metadata
        self._seen: dict[int, tuple[Any, Any, Recall, int]] = {}
        self._ended: dict[int, tuple[Any, Any, Recall, int]] = {}
        self.recalls: list[Recall] = []  # one per episode started, in order

    def __getattr__(self, name: str):  # tokenizer, model, ... of the wrapped policy
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def act(self, conversations, valid_actions, rngs):
        live = {id(c) for c in conversations}
        for key in [k for k in self._seen if k not in live]:  # an episode not acting now has ended
            self._ended[key] = self._seen.pop(key)
        if len(self._ended) > 100_000:
            self._ended.clear()
        chats = [self._chat(c) for c in conversations]
        for c in conversations:
            self._seen[id(c)][2].steps += 1
        return self.inner.act(chats, valid_actions, rngs)

    def _chat(self, conv):
        got = self._seen.get(id(conv))
        if got is None or got[0] is not conv:
            meta = getattr(conv, "meta", None) or {}
            recall = self.memory.recall(meta.get("suite", ""), task_text(conv), meta.get("task_id"))
            self.recalls.append(recall)
            messages = [dict(m) for m in conv]
            block = recall.block()
            if block:
                if messages and messages[0].get("role") == "system":
                    messages[0]["content"] = f"{messages[0].get('content') or ''}\n\n{block}".lstrip()
                else:
                    messages.insert(0, {"role": "system", "content": block})
            chat = _copy_kind(conv, messages)
            got = (conv, chat, recall, len(messages) - len(conv))
            self._seen[id(conv)] = got
            return chat
        _, chat, _, shift = got
        chat.extend(conv[len(chat) - shift:])  # the turns the episode added since the last step
        return chat

    def episode_metadata(self, conv) -> dict[str, Any]:
        """What the episode of `conv` was given ({"memory": ...}), taken once by the rollout."""
        got = self._ended.pop(id(conv), None) or self._seen.pop(id(conv), None)
        return {"memory": got[2].metadata()} if got is not None and got[0] is conv else {}

    def stats(self) -> dict[str, Any]:
        """What the memory cost and gave over the episodes so far (RUN_DIR/rounds/round-XXXX/eval/memory.json)."""
        n = len(self.recalls)

        def mean(values) -> float:
            return float(np.mean(values)) if n else 0.0

        return {"episodes": n, "library": self.memory.size, "k": self.memory.k, "max_tokens": self.memory.max_tokens,
                "with_memory": sum(1 for r in self.recalls if r.entries),
                "mean_entries": mean([len(r.entries) for r in self.recalls]),
                "mean_block_tokens": mean([r.tokens for r in self.recalls]),
                "mean_prompt_tokens": mean([r.prompt_tokens for r in self.recalls])}


def _copy_kind(conv, messages: list):
    """`messages` as a chat of the same kind as `conv` (its tools and meta travel along)."""
    if hasattr(conv, "tools"):
        out = type(conv)(messages, tools=conv.tools)
        if hasattr(conv, "meta"):
            out.meta = conv.meta
        return out
    return list(messages)
