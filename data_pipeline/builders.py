"""Dataset builders: store trajectories -> `datasets.Dataset` in the column layout TRL's trainers
take directly (conversational formats, https://huggingface.co/docs/trl/dataset_formats).

- `build_sft`: `messages` (+ `tools` when any trajectory carries tool schemas; + `weight` = score
  when not success-filtered). Assistant-only loss is the trainer's `assistant_only_loss=True`.
- `build_kto`: unpaired preference, `prompt` / `completion` / `label` (label = success).
- `build_dpo`: `prompt` / `chosen` / `rejected`, pairs of trajectories of the same task with
  different scores and the same prompt.
- `build_rl`: one `prompt` per task, with `task_id`, `suite`, `category` and `env` (the
  environment spec a reward function needs).

A trajectory whose log carries no outcome (no success, no score: `Outcome.labeled` is False) is
neither a success nor a failure: KTO and DPO leave it out, SFT drops it unless asked to keep (imitate)
it (`unlabeled="keep"`), and the provenance's `unlabeled_dropped` counts those left out. Labels from
the user's side file or verifier are applied before the builders (data_pipeline/labels.py).

Held-out tasks are refused, not filtered: a held-out trajectory reaching a builder means an
upstream filter failed, so `HeldoutLeakError` names the task and nothing is built. (Read with
`ExperienceStore.trajectories()`, which leaves held-out tasks out.)

Each dataset records where it came from: `provenance(ds)` returns {kind, batches, trajectories,
rows, heldout, unlabeled_dropped (sft/kto/dpo), ...}, kept as JSON in `ds.info.description` so it
survives `save_to_disk`."""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterable, Iterator

from datasets import Dataset, Features, Json, List, Value

from .errors import HeldoutLeakError
from .heldout import HeldoutSpec
from .schema import Message, Trajectory

BATCH_KEY = "store_batch_id"  # metadata key ExperienceStore.trajectories() sets on each trajectory

MESSAGE = {
    "role": Value("string"), "content": Value("string"),
    "tool_calls": List({"type": Value("string"), "id": Value("string"),
                        "function": {"name": Value("string"), "arguments": Json()}}),
    "tool_call_id": Value("string"), "name": Value("string"),
}
# SFT rows mark assistant turns that the harness wrote rather than the model (inspect's
# `source: input`, kept in metadata["context_messages"]): they stay in the prompt, never in the loss.
SFT_MESSAGE = {**MESSAGE, "context": Value("bool")}
TOOLS = List(Json())


def chat_message(m: Message) -> dict[str, Any]:
    """A canonical message as a chat-template message (OpenAI shape, arguments as an object)."""
    return {"role": m.role, "content": m.content,
            "tool_calls": [{"type": "function", "id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
                           for c in m.tool_calls],
            "tool_call_id": m.tool_call_id, "name": m.name}


def _check_heldout(trajs: list[Trajectory], heldout: HeldoutSpec | None, kind: str) -> None:
    if not heldout:
        return
    for t in trajs:
        if heldout.matches(t):
            raise HeldoutLeakError(t.task_id, t.suite, f"{kind} dataset (episode {t.episode_id})")


def _tools(t: Trajectory) -> list[dict[str, Any]]:
    tools = t.metadata.get("tools")
    return tools if isinstance(tools, list) else []


def _assistant_indices(t: Trajectory) -> list[int]:
    return [i for i, m in enumerate(t.messages) if m.role == "assistant"]


def provenance(ds: Dataset) -> dict[str, Any]:
    """What a built dataset was made from (see module doc)."""
    try:
        return json.loads(ds.info.description or "{}")
    except ValueError:
        return {}


def _finish(rows: list[dict[str, Any]], features: dict[str, Any], kind: str, used: Iterable[Trajectory],
            heldout: HeldoutSpec | None, **extra: Any) -> Dataset:
    used = list(used)
    ds = Dataset.from_list(rows, features=Features(features)) if rows else Dataset.from_dict(
        {k: [] for k in features}, features=Features(features))
    batches = sorted({t.metadata.get(BATCH_KEY) for t in used if t.metadata.get(BATCH_KEY)})
    ds.info.description = json.dumps({
        "kind": kind, "batches": batches, "trajectories": len(used), "rows": len(rows),
        "interaction_s": sum(t.interaction_s for t in used),
        "heldout": (heldout or HeldoutSpec()).to_dict(), **extra}, sort_keys=True)
    return ds


def _with_tools(features: dict[str, Any], rows: list[dict[str, Any]], tool_lists: list[list]) -> None:
    if any(tool_lists):
        features["tools"] = TOOLS
        for row, tools in zip(rows, tool_lists):
            row["tools"] = tools


UNLABELED = ("drop", "keep")  # what build_sft does with trajectories that carry no outcome


def _is_success(t: Trajectory) -> bool:
    return t.outcome.succeeded


def _labeled(trajs: list[Trajectory]) -> tuple[list[Trajectory], int]:
    """The trajectories that carry an outcome, and how many carry none."""
    labeled = [t for t in trajs if t.outcome.labeled]
    return labeled, len(trajs) - len(labeled)


def outcome_counts(trajs: list[Trajectory]) -> dict[str, int]:
    """How many trajectories carry an outcome (`labeled`), how many of those succeeded, how many
    carry none (`unlabeled`): what an empty dataset's error explains itself with."""
    labeled, unlabeled = _labeled(trajs)
    return {"trajectories": len(trajs), "labeled": len(labeled), "successes": sum(map(_is_success, labeled)),
            "unlabeled": unlabeled}


def _sft_keeps(t: Trajectory, success_only: bool, min_score: float, unlabeled: str) -> bool:
    """Whether `build_sft` imitates `t` (see there)."""
    if not _assistant_indices(t):
        return False
    if not t.outcome.labeled:
        return unlabeled == "keep"
    return t.score >= min_score and (_is_success(t) or not success_only)


def _sft_messages(t: Trajectory) -> list[dict[str, Any]]:
    context = set(t.metadata.get("context_messages") or [])
    return [{**chat_message(m), "context": i in context} for i, m in enumerate(t.messages)]


class BuildStats:
    """What a build saw (outcome counts of every trajectory given) and used (the trajectories its
    rows came from): the provenance and an empty build's explanation, filled as rows are made, so a
    streamed build (data_pipeline/dataset_build.py) needs no second pass."""

    def __init__(self) -> None:
        self.seen = {"trajectories": 0, "labeled": 0, "successes": 0, "unlabeled": 0}
        self.used = 0
        self.unlabeled_used = 0
        self.batches: set[str] = set()
        self.interaction_s = 0.0
        self.any_tools = False

    def see(self, t: Trajectory) -> None:
        self.seen["trajectories"] += 1
        if t.outcome.labeled:
            self.seen["labeled"] += 1
            self.seen["successes"] += _is_success(t)
        else:
            self.seen["unlabeled"] += 1

    def use(self, t: Trajectory) -> None:
        self.used += 1
        self.unlabeled_used += not t.outcome.labeled
        if t.metadata.get(BATCH_KEY):
            self.batches.add(t.metadata[BATCH_KEY])
        self.interaction_s += t.interaction_s

    def provenance(self, kind: str, rows: int, heldout: HeldoutSpec | None, **extra: Any) -> dict[str, Any]:
        return {"kind": kind, "batches": sorted(self.batches), "trajectories": self.used, "rows": rows,
                "interaction_s": self.interaction_s, "heldout": (heldout or HeldoutSpec()).to_dict(), **extra}


def _row_tools(row: dict[str, Any], t: Trajectory, stats: BuildStats) -> dict[str, Any]:
    row["tools"] = _tools(t)
    stats.any_tools = stats.any_tools or bool(row["tools"])
    return row


def sft_features(success_only: bool) -> dict[str, Any]:
    """The SFT columns, `tools` included (dropped when no row has tools)."""
    features: dict[str, Any] = {"messages": List(SFT_MESSAGE)}
    if not success_only:
        features["weight"] = Value("float64")
    features["tools"] = TOOLS
    return features


def sft_rows(trajs: Iterable[Trajectory], stats: BuildStats, success_only: bool = True, min_score: float = 0.0,
             unlabeled: str = "drop", heldout: HeldoutSpec | None = None) -> Iterator[dict[str, Any]]:
    """`build_sft`'s rows one by one (each with `tools`), filling `stats`."""
    if unlabeled not in UNLABELED:
        raise ValueError(f"unlabeled must be one of {', '.join(UNLABELED)}, got {unlabeled!r}")
    for t in trajs:
        _check_heldout([t], heldout, "sft")
        stats.see(t)
        if not _sft_keeps(t, success_only, min_score, unlabeled):
            continue
        row: dict[str, Any] = {"messages": _sft_messages(t)}
        if not success_only:
            row["weight"] = t.score if t.outcome.labeled else 1.0
        stats.use(t)
        yield _row_tools(row, t, stats)


def sft_extra(stats: BuildStats, success_only: bool, min_score: float, unlabeled: str) -> dict[str, Any]:
    return {"success_only": success_only, "min_score": min_score, "unlabeled": unlabeled,
            "unlabeled_dropped": stats.seen["unlabeled"] if unlabeled == "drop" else 0,
            "unlabeled_kept": stats.unlabeled_used}


def _from_rows(rows: list[dict[str, Any]], features: dict[str, Any], kind: str, stats: BuildStats,
               heldout: HeldoutSpec | None, **extra: Any) -> Dataset:
    features = dict(features)
    if not stats.any_tools:
        features.pop("tools", None)
        for row in rows:
            row.pop("tools", None)
    ds = Dataset.from_list(rows, features=Features(features)) if rows else Dataset.from_dict(
        {k: [] for k in features}, features=Features(features))
    ds.info.description = json.dumps(stats.provenance(kind, len(rows), heldout, **extra), sort_keys=True)
    return ds


def build_sft(trajs: list[Trajectory], success_only: bool = True, min_score: float = 0.0,
              heldout: HeldoutSpec | None = None, unlabeled: str = "drop") -> Dataset:
    """Whole conversations to imitate: successful ones (`success_only`), or all scoring at least
    `min_score` with a `weight` column holding the score. Trajectories without an outcome are
    dropped (`unlabeled="drop"`) or imitated whatever `success_only` / `min_score` say, weight 1
    (`unlabeled="keep"`: plain logs of a policy worth copying)."""
    if unlabeled not in UNLABELED:
        raise ValueError(f"unlabeled must be one of {', '.join(UNLABELED)}, got {unlabeled!r}")
    _check_heldout(trajs, heldout, "sft")
    stats = BuildStats()
    rows = list(sft_rows(trajs, stats, success_only, min_score, unlabeled))
    return _from_rows(rows, sft_features(success_only), "sft", stats, heldout,
                      **sft_extra(stats, success_only, min_score, unlabeled))


KTO_FEATURES: dict[str, Any] = {"prompt": List(MESSAGE), "completion": List(MESSAGE), "label": Value("bool"),
                                "tools": TOOLS}


def kto_rows(trajs: Iterable[Trajectory], stats: BuildStats,
             heldout: HeldoutSpec | None = None) -> Iterator[dict[str, Any]]:
    """`build_kto`'s rows one by one (each with `tools`), filling `stats`."""
    for t in trajs:
        _check_heldout([t], heldout, "kto")
        stats.see(t)
        if not t.outcome.labeled:
            continue
        idx = _assistant_indices(t)
        if not idx:
            continue
        last = idx[-1]
        stats.use(t)
        yield _row_tools({"prompt": [chat_message(m) for m in t.messages[:last]],
                          "completion": [chat_message(t.messages[last])], "label": _is_success(t)}, t, stats)


def build_kto(trajs: list[Trajectory], heldout: HeldoutSpec | None = None) -> Dataset:
    """Unpaired preference: the last assistant turn as completion, everything before it as
    prompt, label = the episode's success. Trajectories without an outcome are neither desirable
    nor undesirable: left out, counted in `unlabeled_dropped`."""
    _check_heldout(trajs, heldout, "kto")
    stats = BuildStats()
    rows = list(kto_rows(trajs, stats))
    return _from_rows(rows, KTO_FEATURES, "kto", stats, heldout, unlabeled_dropped=stats.seen["unlabeled"])


def _prompt_split(t: Trajectory) -> int | None:
    idx = _assistant_indices(t)
    return idx[0] if idx else None


def build_dpo(trajs: list[Trajectory], heldout: HeldoutSpec | None = None) -> Dataset:
    """Preference pairs within each task: the best-scoring trajectory against the worst, the
    second best against the second worst, ... while the first scores strictly higher. Both must
    share the prompt (the messages before the first assistant turn). Only trajectories with an
    outcome are paired; those without are counted in `unlabeled_dropped`."""
    _check_heldout(trajs, heldout, "dpo")
    labeled, skipped = _labeled(trajs)
    by_task: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in labeled:
        if _prompt_split(t) is not None:
            by_task[(t.suite, t.task_id)].append(t)
    rows, used, tool_lists = [], [], []
    for key in sorted(by_task):
        ranked = sorted(by_task[key], key=lambda t: (-t.score, t.episode_id))
        for hi, lo in zip(ranked, reversed(ranked)):
            if hi.score <= lo.score:
                break
            k_hi, k_lo = _prompt_split(hi), _prompt_split(lo)
            prompt = [chat_message(m) for m in hi.messages[:k_hi]]
            if prompt != [chat_message(m) for m in lo.messages[:k_lo]]:
                continue
            rows.append({"prompt": prompt, "chosen": [chat_message(m) for m in hi.messages[k_hi:]],
                         "rejected": [chat_message(m) for m in lo.messages[k_lo:]]})
            used += [hi, lo]
            tool_lists.append(_tools(hi) or _tools(lo))
    features: dict[str, Any] = {"prompt": List(MESSAGE), "chosen": List(MESSAGE), "rejected": List(MESSAGE)}
    _with_tools(features, rows, tool_lists)
    return _finish(rows, features, "dpo", used, heldout, unlabeled_dropped=skipped)


RL_FEATURES: dict[str, Any] = {"prompt": List(MESSAGE), "task_id": Value("string"), "suite": Value("string"),
                               "category": Value("string"), "env": Json(), "tools": TOOLS}


def rl_rows(trajs: Iterable[Trajectory], stats: BuildStats,
            heldout: HeldoutSpec | None = None) -> Iterator[dict[str, Any]]:
    """`build_rl`'s rows one by one (each with `tools`), filling `stats`."""
    seen: set[tuple[str, str]] = set()
    for t in trajs:
        _check_heldout([t], heldout, "rl")
        stats.see(t)
        k = _prompt_split(t)
        k = len(t.messages) if k is None else k
        if (t.suite, t.task_id) in seen or k == 0:
            continue
        seen.add((t.suite, t.task_id))
        env = t.metadata.get("env") if isinstance(t.metadata.get("env"), dict) else {"suite": t.suite, "task_id": t.task_id}
        stats.use(t)
        yield _row_tools({"prompt": [chat_message(m) for m in t.messages[:k]], "task_id": t.task_id,
                          "suite": t.suite, "category": t.category, "env": env}, t, stats)


def build_rl(trajs: list[Trajectory], heldout: HeldoutSpec | None = None) -> Dataset:
    """One prompt per distinct task (first seen wins), with what an environment needs to replay
    it: `env` = metadata["env"] when the log carries one, else {suite, task_id}."""
    _check_heldout(trajs, heldout, "rl")
    stats = BuildStats()
    rows = list(rl_rows(trajs, stats))
    return _from_rows(rows, RL_FEATURES, "rl", stats, heldout)
