"""Episodes in lock-step: many environments advance together, one policy call per step for the
whole batch, and every episode is returned as a canonical `Trajectory`.

A policy is anything with `act(conversations, valid_actions, rngs) -> list[action]`: the chat so
far of each active episode, the environment's valid actions (None = free text), and one
`numpy.random.Generator` per episode so that sampling does not depend on batch composition.

Tool-call environments (`Env.tools` set, e.g. the lookup suite) list their valid actions as JSON
strings of calls. Each conversation is a `Conversation` (a list of chat messages) whose `tools`
attribute holds the environment's tool schemas, so a model policy renders them into its prompt
and scores each listed call as the chat template renders a tool call. A chosen string that parses
as a call of one of those tools (`tool_call_of`) is logged as what it is: an assistant message with
`tool_calls`, then a `tool` message with the result. The SFT builder then trains on real tool calls.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from data_pipeline.schema import Message, Outcome, ToolCall, Trajectory
from eval.envs.base import Action, Suite
from eval.envs.lookup import parse_action as parse_tool_call


class Conversation(list):
    """The chat so far of one episode (OpenAI-style message dicts), with the tool schemas of its
    environment (None when actions are plain text) and `meta`: the episode's suite and task id (what
    a memory policy, eval.memory, retrieves by)."""

    def __init__(self, messages=(), tools: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None):
        super().__init__(messages)
        self.tools = tools
        self.meta = meta or {}


def tool_call_of(action: Action, tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The tool call an action stands for ({"name", "arguments"}), or None when it is plain text:
    a dict or JSON string naming one of `tools`."""
    if not tools:
        return None
    call = parse_tool_call(action)
    names = {t.get("function", t).get("name") for t in tools}
    return call if call is not None and call["name"] in names else None


class Policy(Protocol):
    name: str

    def act(self, conversations: list[list[dict[str, Any]]], valid_actions: list[list[str] | None],
            rngs: list[np.random.Generator]) -> list[Action]: ...


class RandomPolicy:
    """Uniform over the valid actions: the untrained baseline of constrained decoding."""

    name = "random"

    def act(self, conversations, valid_actions, rngs):
        out = []
        for valid, rng in zip(valid_actions, rngs):
            out.append(str(rng.choice(valid)) if valid else "")
        return out


def _action_message(action: Action, step: int) -> dict[str, Any]:
    if isinstance(action, dict):
        call = {"id": f"call_{step}", "name": action["name"], "arguments": action.get("arguments", {})}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    return {"role": "assistant", "content": action}


def _as_tool_call(action: Action, tools: list[dict[str, Any]] | None) -> Action:
    """A listed JSON string of a call becomes the call itself; anything else stays as it is."""
    if isinstance(action, str):
        return tool_call_of(action, tools) or action
    return action


def run_episodes(suite: Suite, difficulty: int, seeds: Sequence[int], policy: Policy, *,
                 batch_size: int = 64, rng_seed: int = 0, desc: str = "episodes",
                 progress: bool = True) -> list[Trajectory]:
    """Run one episode per seed; returns trajectories in seed order."""
    results: list[Trajectory] = []
    bar = tqdm(total=len(seeds), desc=desc, unit="ep", disable=not progress, leave=False)
    for start in range(0, len(seeds), batch_size):
        chunk = list(seeds[start:start + batch_size])
        results.extend(_run_batch(suite, difficulty, chunk, policy, rng_seed, start))
        bar.update(len(chunk))
    bar.close()
    return results


def _run_batch(suite: Suite, difficulty: int, seeds: list[int], policy: Policy, rng_seed: int,
               index0: int) -> list[Trajectory]:
    envs = [suite.make_env(difficulty) for _ in seeds]
    rngs = [np.random.default_rng([rng_seed, seed]) for seed in seeds]
    convs: list[Conversation] = []
    for env, seed in zip(envs, seeds):
        conv = Conversation([{"role": "system", "content": env.system_prompt}] if env.system_prompt else [],
                            tools=env.tools)
        conv.append({"role": "user", "content": env.reset(seed)})
        conv.meta = {"suite": env.suite, "task_id": env.task_id(seed)}
        convs.append(conv)
    steps_meta: list[list[tuple[float, float]]] = [[] for _ in seeds]  # (reward, duration_s) per action
    active = list(range(len(seeds)))
    started = time.time()
    step = 0
    while active:
        actions = policy.act([convs[i] for i in active], [envs[i].valid_actions() for i in active],
                             [rngs[i] for i in active])
        still = []
        for i, action in zip(active, actions):
            action = _as_tool_call(action, envs[i].tools)
            res = envs[i].step(action)
            convs[i].append(_action_message(action, step))
            steps_meta[i].append((res.reward, res.duration_s))
            if isinstance(action, dict):
                convs[i].append({"role": "tool", "content": res.observation, "tool_call_id": f"call_{step}",
                                 "name": action["name"]})
            elif not res.done:
                convs[i].append({"role": "user", "content": res.observation})
            if not res.done:
                still.append(i)
        active = still
        step += 1
    ended = time.time()
    # what the policy adds to an episode's record (a memory policy: the episodes it was given)
    extra = getattr(policy, "episode_metadata", None)
    return [_to_trajectory(envs[i], seeds[i], convs[i], steps_meta[i], policy.name, started, ended,
                           extra(convs[i]) if extra else {})
            for i in range(len(seeds))]


def _to_trajectory(env, seed, conv, steps_meta, policy_name, started, ended, extra: dict | None = None) -> Trajectory:
    messages: list[Message] = []
    k = 0
    for m in conv:
        msg = Message(role=m["role"], content=m.get("content", ""), tool_call_id=m.get("tool_call_id"),
                      name=m.get("name"),
                      tool_calls=[ToolCall(name=c["name"], arguments=c["arguments"], id=c["id"])
                                  for c in m.get("tool_calls", [])])
        if m["role"] == "assistant":
            msg.reward, msg.duration_s = steps_meta[k]
            k += 1
        messages.append(msg)
    success, score = env.outcome()
    sim_s = float(sum(d for _, d in steps_meta))
    return Trajectory(
        episode_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{env.task_id(seed)}|{policy_name}|{started}").hex,
        task_id=env.task_id(seed), suite=env.suite, category=env.category, source_format="flywheel",
        policy=policy_name, started_at=started, ended_at=ended, duration_s=sim_s, messages=messages,
        outcome=Outcome(success=bool(success), score=float(score)),
        metadata={"seed": seed, "difficulty": env.difficulty, "steps": len(steps_meta),
                  **({"tools": env.tools} if env.tools else {}), **(extra or {})},
    )


def write_jsonl(trajs: list[Trajectory], path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for t in trajs:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
