"""tau-bench historical trajectories: a JSON array (often gzip'd) of
`{task_id: int, trial: int, reward: 0|1, info: {task, reward_info, ...}, traj: [OpenAI messages]}`.
No timestamps, so interaction time is unknown (None). The domain (airline / retail) and the agent
model come from the file name (`gpt-4o-airline.json`) or the system prompt. Outcome: `reward` (and
`score` / `success`, `outcome.*`, `metadata.*` when a converted file has them; common.log_outcome)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import Record
from .common import MappingError, head_text, log_outcome, read_records, require
from .openai_chat import message

NAME = "tau-bench"
_DOMAINS = ("airline", "retail")


def detect(path: Path, head: bytes) -> bool:
    text = head_text(path, head).lstrip()[:16384]
    return text.startswith("[") and '"traj"' in text and '"task_id"' in text and '"reward"' in text


def _domain_and_model(path: Path, messages: list[dict[str, Any]]) -> tuple[str, str]:
    stem = path.name.split(".json")[0]
    for d in _DOMAINS:
        if d in stem:  # "gpt-4o-airline" -> ("airline", "gpt-4o")
            return d, stem.split(f"-{d}")[0] if f"-{d}" in stem else ""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    for d in _DOMAINS:
        if d in system[:200].lower():
            return d, ""
    return "unknown", ""


def run_record(rec: Any, path: Path, loc: str) -> dict[str, Any]:
    traj = require(rec, "traj", list)
    if not isinstance(rec.get("task_id"), (int, str)) or isinstance(rec.get("task_id"), bool):
        raise MappingError("task_id", f"expected an int or string, got {type(rec.get('task_id')).__name__}")
    names: dict[str, str] = {}
    messages = [message(m, f"traj[{i}]", names) for i, m in enumerate(traj)]
    domain, model = _domain_and_model(path, messages)
    info = rec.get("info") if isinstance(rec.get("info"), dict) else {}
    trial = rec.get("trial", 0)
    meta = {"trial": trial, "reward_info": info.get("reward_info"), "user_cost": info.get("user_cost"),
            "task": info.get("task")}
    return {"episode_id": f"{path.name.split('.json')[0]}/task{rec['task_id']}/trial{trial}",
            "task_id": f"tau-bench/{domain}/{rec['task_id']}", "suite": "tau-bench", "category": domain,
            "policy": model, "source_format": NAME, "messages": messages,
            "outcome": log_outcome(rec), "metadata": meta}


def read(path: Path) -> Iterator[Record]:
    return read_records(path, run_record)
