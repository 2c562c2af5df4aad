"""The canonical trajectory: one episode of an agent acting on one task.

Every adapter produces `Trajectory` objects; the experience store keeps them as Parquet rows
(data_pipeline/store.py); the dataset builders read them back. Interaction time (the x-axis of the
improvement curve) is `duration_s`, in seconds of environment interaction.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from data_pipeline.errors import FlywheelError

ROLES = ("system", "user", "assistant", "tool")


class SchemaError(FlywheelError, ValueError):
    """A record that does not fit the canonical schema; `field` names the offending key path."""

    def __init__(self, field_path: str, problem: str):
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path
        self.problem = problem


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]  # parsed JSON object
    id: str | None = None


@dataclass
class Message:
    role: str  # one of ROLES
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role == "tool": the call it answers
    name: str | None = None  # tool name for role == "tool"
    reward: float | None = None  # optional per-step reward, attached to the step's message
    duration_s: float | None = None  # interaction time this step took, seconds
    token_ids: list[int] | None = None  # kept when the source format carries them
    logprobs: list[float] | None = None


@dataclass
class Outcome:
    success: bool | None = None
    score: float | None = None  # in [0, 1]

    @property
    def labeled(self) -> bool:
        """Whether the log said how the episode went (a success flag or a score). An unlabeled
        episode is neither a success nor a failure: no dataset may use it as either."""
        return self.success is not None or self.score is not None

    @property
    def succeeded(self) -> bool:
        """The success flag when given, else a full score; False when unlabeled (see `labeled`)."""
        if self.success is not None:
            return self.success
        return self.score is not None and self.score >= 1.0


@dataclass
class Trajectory:
    episode_id: str
    task_id: str
    messages: list[Message]
    suite: str = ""
    category: str = ""
    source_format: str = ""
    policy: str = ""  # the model / checkpoint that acted
    started_at: float | None = None  # unix seconds
    ended_at: float | None = None
    duration_s: float | None = None  # total interaction time, seconds
    outcome: Outcome = field(default_factory=Outcome)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- derived -------------------------------------------------------------------------
    @property
    def interaction_s(self) -> float:
        """Interaction time in seconds: explicit duration, else end - start, else sum of steps."""
        if self.duration_s is not None:
            return float(self.duration_s)
        if self.started_at is not None and self.ended_at is not None:
            return max(0.0, float(self.ended_at) - float(self.started_at))
        return float(sum(m.duration_s or 0.0 for m in self.messages))

    @property
    def score(self) -> float:
        """Outcome as a number in [0, 1]: the score when known, else 1/0 from success (0 when
        unlabeled: check `outcome.labeled` before reading it as a failure)."""
        if self.outcome.score is not None:
            return float(self.outcome.score)
        return 1.0 if self.outcome.success else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        """Build from a plain dict (the canonical JSONL form); raises SchemaError naming the field."""
        return trajectory_from_dict(d)

    def content_hash(self) -> str:
        """Hash of what the agent saw and did (task, messages, outcome): the dedupe key.

        Ids, timestamps, policy names and metadata are excluded, so the same episode logged twice
        (e.g. re-exported with a new episode id) is one trajectory."""
        body = {
            "task_id": self.task_id,
            "suite": self.suite,
            "messages": [
                {k: v for k, v in dataclasses.asdict(m).items() if k not in ("duration_s",)}
                for m in self.messages
            ],
            "outcome": dataclasses.asdict(self.outcome),
        }
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _opt(d: dict, key: str, typ: type | tuple, path: str):
    v = d.get(key)
    if v is None:
        return None
    if typ is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, typ) or (typ in (int, float) and isinstance(v, bool)):
        raise SchemaError(f"{path}{key}", f"expected {getattr(typ, '__name__', typ)}, got {type(v).__name__}")
    return v


def message_from_dict(m: Any, path: str) -> Message:
    if not isinstance(m, dict):
        raise SchemaError(path, f"expected an object, got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise SchemaError(f"{path}.role", f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    content = m.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise SchemaError(f"{path}.content", f"expected a string, got {type(content).__name__}")
    calls = []
    for j, c in enumerate(m.get("tool_calls") or []):
        cp = f"{path}.tool_calls[{j}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c.get("name"):
            raise SchemaError(f"{cp}.name", "a tool call needs a non-empty string name")
        args = c.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise SchemaError(f"{cp}.arguments", f"not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(args, dict):
            raise SchemaError(f"{cp}.arguments", f"expected a JSON object, got {type(args).__name__}")
        calls.append(ToolCall(name=c["name"], arguments=args, id=c.get("id")))
    return Message(
        role=role,
        content=content,
        tool_calls=calls,
        tool_call_id=_opt(m, "tool_call_id", str, path + "."),
        name=_opt(m, "name", str, path + "."),
        reward=_opt(m, "reward", float, path + "."),
        duration_s=_opt(m, "duration_s", float, path + "."),
        token_ids=m.get("token_ids"),
        logprobs=m.get("logprobs"),
    )


def trajectory_from_dict(d: Any) -> Trajectory:
    if not isinstance(d, dict):
        raise SchemaError("<record>", f"expected a JSON object, got {type(d).__name__}")
    for key in ("episode_id", "task_id"):
        if not isinstance(d.get(key), str) or not d.get(key):
            raise SchemaError(key, "required non-empty string")
    msgs = d.get("messages")
    if not isinstance(msgs, list):
        raise SchemaError("messages", "required list of messages")
    if not msgs:
        raise SchemaError("messages", "empty conversation")
    messages = [message_from_dict(m, f"messages[{i}]") for i, m in enumerate(msgs)]
    out = d.get("outcome") or {}
    if not isinstance(out, dict):
        raise SchemaError("outcome", f"expected an object, got {type(out).__name__}")
    success = out.get("success")
    if success is not None and not isinstance(success, bool):
        raise SchemaError("outcome.success", f"expected true/false, got {success!r}")
    score = _opt(out, "score", float, "outcome.")
    if score is not None and not (0.0 <= score <= 1.0):
        raise SchemaError("outcome.score", f"must lie in [0, 1], got {score}")
    meta = d.get("metadata") or {}
    if not isinstance(meta, dict):
        raise SchemaError("metadata", f"expected an object, got {type(meta).__name__}")
    t = Trajectory(
        episode_id=d["episode_id"],
        task_id=d["task_id"],
        messages=messages,
        suite=_opt(d, "suite", str, "") or "",
        category=_opt(d, "category", str, "") or "",
        source_format=_opt(d, "source_format", str, "") or "",
        policy=_opt(d, "policy", str, "") or "",
        started_at=_opt(d, "started_at", float, ""),
        ended_at=_opt(d, "ended_at", float, ""),
        duration_s=_opt(d, "duration_s", float, ""),
        outcome=Outcome(success=success, score=score),
        metadata=meta,
    )
    if t.duration_s is not None and t.duration_s < 0:
        raise SchemaError("duration_s", f"must be >= 0, got {t.duration_s}")
    return t
