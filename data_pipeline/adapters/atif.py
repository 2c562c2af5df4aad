"""ATIF, the Agent Trajectory Interchange Format of Harbor / Terminal-Bench (harbor's
docs/rfcs/0001-trajectory-format.md, v1.0-v1.7): one JSON object {schema_version: "ATIF-v1.x",
session_id, trajectory_id?, agent: {name, version, model_name?, tool_definitions?}, steps: [...],
final_metrics?, continued_trajectory_ref?, subagent_trajectories?: [...], extra?}.

One trajectory per file, plus one per embedded subagent (`subagent_trajectories`, v1.7, read
recursively; locator `subagent_trajectories[i]`, task `<parent task>/subagent/<trajectory_id>`,
`metadata.parent` naming the parent). Steps map in order:
- `source: system` -> a system message, `user` -> a user message, `agent` -> an assistant message
  (`message`; content parts are flattened) with `tool_calls` ({tool_call_id, function_name,
  arguments}) and, from `metrics`, `completion_token_ids` -> token_ids and `logprobs`;
  `reasoning_content` is kept in `metadata.reasoning` by message index (the canonical message
  has no field for it).
- `observation.results` follow their step: a result whose `source_call_id` names one of the
  step's calls becomes the `tool` message answering it. A result without `source_call_id` answers
  the step's next unanswered call when there is one (terminus-2 writes its single command's output
  that way); otherwise it is environment feedback, a `user` message (system steps' results too).
  `subagent_trajectory_ref`s are listed in `metadata.subagent_refs`.
- Steps with `is_copied_context: true` were copied from an earlier trajectory (e.g. across a
  summarisation boundary): the indices of their messages are in `metadata.context_messages`, so
  builders keep them in the prompt and never in the loss (as inspect's `source: input`).

task_id: `extra.task_id` / `extra.task_name` when the producer wrote one, else harbor's trial
layout (`<trial>/agent/trajectory.json` beside `<trial>/result.json` with `task_name`), else
`atif/` + a hash of the first user message. Outcome: ATIF has no reward field; the outcome places
of `extra` (common.log_outcome), else harbor's `<trial>/verifier/reward.txt` (a number in [0, 1])
when the file sits in a trial directory; otherwise unlabeled. Interaction time: first to last
step `timestamp`. Harbor's result.json / config.json beside the trajectories are skipped with a
note (`side_file_note`), not quarantined as unrecognised."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import (MappingError, head_text, iso_seconds, load_document, log_outcome, mapped, outcome_from_reward,
                     require, stable_id, text_of, tools_to_openai)

NAME = "atif"
_ROLE = {"system": "system", "user": "user", "agent": "assistant"}


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:65536]
    return text.startswith("{") and '"schema_version"' in text and '"ATIF-v' in text and '"steps"' in text


def _content(v: Any, where: str) -> str:
    try:
        return text_of(v)
    except MappingError as e:
        raise MappingError(where, e.problem) from None


def _calls(step: dict[str, Any], where: str) -> list[dict[str, Any]]:
    calls = step.get("tool_calls") or []
    if not isinstance(calls, list):
        raise MappingError(f"{where}.tool_calls", f"expected a list, got {type(calls).__name__}")
    out = []
    for j, c in enumerate(calls):
        cw = f"{where}.tool_calls[{j}]"
        name = require(c, "function_name", str, cw)
        args = c.get("arguments", {})
        out.append({"name": name, "arguments": {} if args is None else args, "id": c.get("tool_call_id")})
    return out


def _metrics(step: dict[str, Any], where: str) -> dict[str, Any]:
    m = step.get("metrics")
    if m is None:
        return {}
    if not isinstance(m, dict):
        raise MappingError(f"{where}.metrics", f"expected an object, got {type(m).__name__}")
    out: dict[str, Any] = {}
    ids, lps = m.get("completion_token_ids"), m.get("logprobs")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise MappingError(f"{where}.metrics.completion_token_ids", "expected a list of integers")
        out["token_ids"] = ids
    if lps is not None:
        if not isinstance(lps, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lps):
            raise MappingError(f"{where}.metrics.logprobs", "expected a list of numbers")
        out["logprobs"] = [float(x) for x in lps]
    return out


def _messages(steps: list[Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    context: list[int] = []
    reasoning: dict[str, str] = {}
    refs: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(step, dict):
            raise MappingError(where, f"expected an object, got {type(step).__name__}")
        source = step.get("source")
        if source not in _ROLE:
            raise MappingError(f"{where}.source", f"expected system, user or agent, got {source!r}")
        first = len(out)
        msg: dict[str, Any] = {"role": _ROLE[source], "content": _content(step.get("message"), f"{where}.message")}
        calls = _calls(step, where) if source == "agent" else []
        if source == "agent":
            msg["tool_calls"] = calls
            msg.update(_metrics(step, where))
            if isinstance(step.get("reasoning_content"), str) and step["reasoning_content"]:
                reasoning[str(len(out))] = step["reasoning_content"]
        out.append(msg)
        obs = step.get("observation")
        if obs is not None:
            results = require(obs, "results", list, f"{where}.observation")
            names = {c["id"]: c["name"] for c in calls if c["id"]}
            open_calls = [c["id"] for c in calls if c["id"]]
            for j, r in enumerate(results):
                rw = f"{where}.observation.results[{j}]"
                if not isinstance(r, dict):
                    raise MappingError(rw, f"expected an object, got {type(r).__name__}")
                text = _content(r.get("content"), f"{rw}.content")
                if r.get("subagent_trajectory_ref"):
                    refs.append({"step": i, "refs": r["subagent_trajectory_ref"]})
                call_id = r.get("source_call_id")
                if call_id is None and open_calls:
                    call_id = open_calls[0]  # the step's next unanswered call (terminus-2's shape)
                if call_id is not None:
                    if call_id not in names:
                        raise MappingError(f"{rw}.source_call_id", f"names no tool call of this step: {call_id!r}")
                    if call_id in open_calls:
                        open_calls.remove(call_id)
                    out.append({"role": "tool", "content": text, "tool_call_id": call_id, "name": names[call_id]})
                else:
                    out.append({"role": "user", "content": text})
        if step.get("is_copied_context") is True:
            context.extend(range(first, len(out)))
    if context:
        meta["context_messages"] = context
    if reasoning:
        meta["reasoning"] = reasoning
    if refs:
        meta["subagent_refs"] = refs
    return out


_HARBOR_SIDE = ("result.json", "config.json")


def _is_trial(d: Path) -> bool:
    agent = d / "agent"
    return agent.is_dir() and any(agent.glob("trajectory*.json"))


def side_file_note(path: Path) -> str | None:
    """Harbor's own files beside the trajectories (a trial's or a job's result.json / config.json):
    not trajectories; a trial's task name and verifier reward are joined to its trajectory."""
    if path.name not in _HARBOR_SIDE:
        return None
    try:
        if _is_trial(path.parent):
            return "Harbor trial result / config; joined to the trial's agent/trajectory.json"
        if any(_is_trial(d) for d in path.parent.iterdir() if d.is_dir()):
            return "Harbor job result / config, not trajectories"
    except OSError:
        return None
    return None


def _trial_dir(path: Path) -> Path | None:
    """Harbor's trial directory when the file is its agent/trajectory.json (result.json beside)."""
    trial = path.parent.parent
    return trial if path.parent.name == "agent" and (trial / "result.json").is_file() else None


def _task_name(path: Path) -> str | None:
    trial = _trial_dir(path)
    if trial is None:
        return None
    try:
        name = json.loads((trial / "result.json").read_text()).get("task_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def _verifier_outcome(path: Path) -> dict[str, Any]:
    trial = _trial_dir(path)
    f = trial / "verifier" / "reward.txt" if trial else None
    if f is None or not f.is_file():
        return {}
    text = f.read_text().strip()
    try:
        value = float(text)
    except ValueError:
        raise MappingError("verifier/reward.txt", f"expected a number, got {text[:40]!r}") from None
    return outcome_from_reward(value, "verifier/reward.txt")


def trajectory(doc: Any, path: Path, loc: str, parent: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise MappingError("<record>", f"expected a JSON object, got {type(doc).__name__}")
    version = require(doc, "schema_version", str)
    if not version.startswith("ATIF-v"):
        raise MappingError("schema_version", f"expected ATIF-v1.x, got {version!r}")
    agent = doc.get("agent") or {}
    if not isinstance(agent, dict):
        raise MappingError("agent", f"expected an object, got {type(agent).__name__}")
    extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
    steps = require(doc, "steps", list)
    meta: dict[str, Any] = {"schema_version": version, "agent": {k: agent.get(k) for k in ("name", "version")},
                            "session_id": doc.get("session_id"), "trajectory_id": doc.get("trajectory_id"),
                            "final_metrics": doc.get("final_metrics"), "extra": extra or None}
    if doc.get("continued_trajectory_ref"):
        meta["continued_trajectory_ref"] = doc["continued_trajectory_ref"]
    messages = _messages(steps, meta)
    tools = tools_to_openai(agent.get("tool_definitions"))
    if tools:
        meta["tools"] = tools
    # session_id is run-scoped (shared by continuations and subagents); trajectory_id is per document
    own_id = doc.get("trajectory_id") or (f"{doc['session_id']}/{path.name}" if doc.get("session_id") else None)
    if parent is not None:
        meta["parent"] = {"task_id": parent["task_id"], "episode_id": parent["episode_id"]}
        sub_id = doc.get("trajectory_id") or loc
        task_id = f"{parent['task_id']}/subagent/{sub_id}"
        episode_id = f"{parent['episode_id']}/{sub_id}"
        outcome = log_outcome(extra, {})
    else:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        task_id = str(extra.get("task_id") or extra.get("task_name") or _task_name(path)
                      or "atif/" + stable_id(first_user))
        episode_id = str(own_id or f"{path.name}:{loc}")
        outcome = log_outcome(extra, {}) or _verifier_outcome(path)
    stamps = [t for t in (iso_seconds(s.get("timestamp")) for s in steps if isinstance(s, dict)) if t is not None]
    return {"episode_id": episode_id, "task_id": task_id, "suite": str(extra.get("suite") or "atif"),
            "category": str(agent.get("name") or ""), "policy": str(agent.get("model_name") or ""),
            "source_format": NAME, "started_at": min(stamps) if stamps else None,
            "ended_at": max(stamps) if stamps else None, "messages": messages, "outcome": outcome, "metadata": meta}


def _read(doc: Any, path: Path, loc: str, parent: dict[str, Any] | None) -> Iterator[Record]:
    rec = mapped(loc, trajectory, doc, path, loc, parent)
    yield rec
    subs = doc.get("subagent_trajectories") if isinstance(doc, dict) else None
    if subs is None:
        return
    where = f"{loc}.subagent_trajectories" if loc != "file" else "subagent_trajectories"
    if not isinstance(subs, list):
        yield Record(where, error=("subagent_trajectories", f"expected a list, got {type(subs).__name__}"))
        return
    if rec.data is None:  # the parent failed: its subagents cannot be named after it
        for i, _ in enumerate(subs):
            yield Record(f"{where}[{i}]", error=("<parent>", f"the parent trajectory was quarantined: {rec.error[1]}"))
        return
    me = {"task_id": rec.data["task_id"], "episode_id": rec.data["episode_id"]}
    for i, sub in enumerate(subs):
        yield from _read(sub, path, f"{where}[{i}]", me)


def read(path: Path) -> Iterator[Record]:
    doc = load_document(path)
    if isinstance(doc, Record):
        yield doc
        return
    yield from _read(doc, path, "file", None)
