"""tau2-bench `Results` files: {timestamp, info, tasks, simulations}. One trajectory per
simulation. The agent's system prompt is the domain policy (`info.environment_info.policy`), added
as the first message. Tool calls are flat ({id, name, arguments: object, requestor}); tool results
carry the call id in `id`. In the telecom domain the *user* also calls tools: those calls and their
results are kept as user turns ("(user tool call) name {...}" / "(user tool result) ..."), since
they are the environment's doing, not the agent's. Interaction time: `duration` (seconds).
Outcome: `reward_info.reward` (a number in [0, 1], success at 1; anything else is quarantined)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import Record, bad
from .common import MappingError, head_text, iso_seconds, load_document, mapped, outcome_from_reward, require, token_fields

NAME = "tau2-bench"


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head)[:65536]
    return text.lstrip().startswith("{") and '"agent_info"' in text and '"user_info"' in text


def _messages(sim: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    out = [{"role": "system", "content": policy}] if policy else []
    names: dict[str, str] = {}
    user_calls: set[str] = set()
    for i, m in enumerate(require(sim, "messages", list)):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise MappingError(where, f"expected an object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content") or ""
        calls = m.get("tool_calls") or []
        if role == "user" and calls:
            for c in calls:
                user_calls.add(c.get("id"))
            text = "\n".join(f"(user tool call) {c.get('name')} {json.dumps(c.get('arguments', {}))}" for c in calls)
            out.append({"role": "user", "content": (content + "\n" + text).strip()})
        elif role == "tool" and (m.get("requestor") == "user" or m.get("id") in user_calls):
            out.append({"role": "user", "content": f"(user tool result) {content}"})
        elif role in ("assistant", "user", "system"):
            tcs = [{"name": c.get("name"), "arguments": c.get("arguments", {}), "id": c.get("id")} for c in calls]
            for c in tcs:
                names[c["id"]] = c["name"]
            out.append({"role": role, "content": content, "tool_calls": tcs, **token_fields(m)})
        elif role == "tool":
            out.append({"role": "tool", "content": content, "tool_call_id": m.get("id"), "name": names.get(m.get("id"))})
        else:
            raise MappingError(f"{where}.role", f"unknown role {role!r}")
    return out


def simulation(sim: Any, path: Path, loc: str, info: dict[str, Any], tasks: dict[str, Any]) -> dict[str, Any]:
    sim_id = require(sim, "id", str)
    task_id = str(sim.get("task_id"))
    env = info.get("environment_info") or {}
    domain = env.get("domain_name") or "unknown"
    reward_info = sim.get("reward_info") or {}
    meta = {"trial": sim.get("trial"), "seed": sim.get("seed"), "termination_reason": sim.get("termination_reason"),
            "agent_cost": sim.get("agent_cost"), "user_cost": sim.get("user_cost"), "reward_info": reward_info,
            "user_model": (info.get("user_info") or {}).get("llm"), "task": tasks.get(task_id)}
    tool_defs = env.get("tool_defs")
    if isinstance(tool_defs, list) and tool_defs:
        meta["tools"] = tool_defs
    return {"episode_id": sim_id, "task_id": f"tau2-bench/{domain}/{task_id}", "suite": "tau2-bench",
            "category": domain, "policy": str((info.get("agent_info") or {}).get("llm") or ""), "source_format": NAME,
            "started_at": iso_seconds(sim.get("start_time")), "ended_at": iso_seconds(sim.get("end_time")),
            "duration_s": sim.get("duration"), "messages": _messages(sim, env.get("policy") or ""),
            "outcome": outcome_from_reward(reward_info.get("reward"), "reward_info.reward"), "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    doc = load_document(path)
    if isinstance(doc, Record):
        yield doc
        return
    sims = doc.get("simulations") if isinstance(doc, dict) else None
    if not isinstance(sims, list):
        yield bad("file", "simulations", "a tau2 results file needs a list of simulations")
        return
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    tasks = {str(t.get("id")): t for t in doc.get("tasks") or [] if isinstance(t, dict)}
    for i, sim in enumerate(sims):
        yield mapped(f"simulations[{i}]", simulation, sim, path, f"simulations[{i}]", info, tasks)
