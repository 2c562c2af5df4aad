"""Outcome labels for logged trajectories, applied when data is selected (the store's batches are
never rewritten: the store is append-only).

Where a trajectory's outcome comes from, first match wins:

1. `own`: the log's own outcome fields (read by the adapters at ingest, data_pipeline/SCHEMA.md);
2. `file`: `label.file`, a side file of labels by `episode_id` (first) or `task_id` (see
   `read_label_file`);
3. `command`: `label.command`, the user's verifier or judge: a shell command that gets one canonical
   trajectory as JSON on stdin and prints a score in [0, 1] (or `true` / `false`) as its last line
   of output. Calls run `label.workers` at a time, each stopped after `label.timeout_s`, in
   `label.workdir`. An answer is cached in STORE/labels/command.jsonl by (command, trajectory
   content hash), so a trajectory is judged once per command; a call that fails, times out or
   prints no score in [0, 1] leaves its trajectory unlabeled and is recorded with its reason in
   STORE/labels/quarantine.jsonl (and retried next time).

What is still unlabeled is kept (`unlabeled="keep"`: SFT imitates it, GRPO uses its prompt) or
dropped. Unlabeled is never a negative: KTO and DPO leave it out whatever `unlabeled` says.

The counts (`LabelCounts`) add up: own + file + command + unlabeled_kept + unlabeled_dropped is the
number of trajectories given; `quarantined` counts the command calls whose answer was unusable
(those trajectories are among the unlabeled ones).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import FlywheelError
from .schema import Outcome, Trajectory

LABELS_DIR = "labels"  # under the store root
CACHE_FILE, QUARANTINE_FILE = "command.jsonl", "quarantine.jsonl"
UNLABELED = ("drop", "keep")
_STORE_KEYS = ("store_batch_id", "content_hash")  # metadata the store adds when reading; not the log's
_CHUNK = 256  # trajectories labelled at a time when streaming


class LabelError(FlywheelError):
    """A label side file or label setting that cannot be used; names the file, row and field."""


def keeps_unlabeled(kind: str, unlabeled: str) -> bool:
    """Whether a `kind` dataset (sft, kto, dpo, rl) gets the trajectories still unlabeled: GRPO's
    prompts need no outcome; SFT imitates them when asked (`keep`); KTO and DPO never take them."""
    if unlabeled not in UNLABELED:
        raise LabelError(f"unlabeled must be one of {', '.join(UNLABELED)}, got {unlabeled!r}")
    return kind == "rl" or (kind == "sft" and unlabeled == "keep")


@dataclasses.dataclass
class LabelSettings:
    """What `apply_labels` needs of the recipe's `label` section (trainer/recipe.py resolves its
    paths against the recipe file); `of` takes a LabelConfig or anything with the same attributes."""

    file: str | None = None
    command: str | None = None
    timeout_s: float = 60.0
    workers: int = 4
    workdir: str | None = None

    @classmethod
    def of(cls, cfg: Any) -> "LabelSettings":
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        return cls(**{f.name: getattr(cfg, f.name, f.default) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class LabelCounts:
    own: int = 0
    file: int = 0
    command: int = 0
    quarantined: int = 0
    unlabeled_kept: int = 0
    unlabeled_dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @property
    def total(self) -> int:
        return self.own + self.file + self.command + self.unlabeled_kept + self.unlabeled_dropped


# ---------------------------------------------------------------- label.file
def _score_of(value: Any, where: str) -> Outcome:
    """One label value (a number in [0, 1], a boolean, or "true"/"false"/a number as CSV text)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return Outcome(success=text == "true")
        try:
            value = float(text)
        except ValueError:
            raise LabelError(f"{where}: expected a score in [0, 1] or true/false, got {value!r}") from None
    if isinstance(value, bool):
        return Outcome(success=value, score=float(value))
    if isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return Outcome(score=float(value))
    raise LabelError(f"{where}: expected a score in [0, 1] or true/false, got {value!r}")


def _row_outcome(row: dict, where: str) -> Outcome:
    score, success = row.get("score"), row.get("success")
    if score in (None, "") and success in (None, ""):
        score = row.get("reward")
    out = Outcome()
    if score not in (None, ""):
        out = _score_of(score, f"{where}, field score")
    if success not in (None, ""):
        s = _score_of(success, f"{where}, field success")
        if s.success is None and s.score in (0.0, 1.0):  # 1 / 0 in a CSV column
            s = Outcome(success=s.score == 1.0)
        if s.success is None:
            raise LabelError(f"{where}, field success: expected true or false, got {success!r}")
        out = Outcome(success=s.success, score=out.score)
    if not out.labeled:
        raise LabelError(f"{where}: no score, success or reward; give one of them (or remove the row)")
    return out


def read_label_file(path: str | Path) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
    """(labels by episode_id, labels by task_id) from a side file:

    - `.jsonl`: one object per line, `{"episode_id" or "task_id": ..., "score": 0.8}` and/or
      `"success": true` (`reward` is read as the score when neither is given);
    - `.json`: a list of such objects, or one object mapping an id to a score, a boolean or such an
      object (the id is looked up as an episode id first, then as a task id);
    - `.csv`: a header naming `episode_id` and/or `task_id` and `score` and/or `success`.

    A row naming neither id, or a value not in [0, 1] / not true or false, is a LabelError naming the
    file, the row and the field."""
    p = Path(path)
    if not p.is_file():
        raise LabelError(f"label.file {p} does not exist (relative paths resolve against the recipe file)")
    by_episode: dict[str, Outcome] = {}
    by_task: dict[str, Outcome] = {}
    suffix = p.suffix.lower()
    rows: list[tuple[str, Any]] = []
    try:
        if suffix == ".csv":
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"episode_id", "task_id"} & set(reader.fieldnames):
                    raise LabelError(f"{p}: the CSV header must name episode_id or task_id (and score or success); "
                                     f"found {reader.fieldnames}")
                rows = [(f"{p} row {i}", row) for i, row in enumerate(reader, 2)]
        elif suffix == ".jsonl":
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    rows.append((f"{p} line {i}", json.loads(line)))
        elif suffix == ".json":
            doc = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(doc, list):
                rows = [(f"{p} item {i}", row) for i, row in enumerate(doc)]
            elif isinstance(doc, dict):
                for key, value in doc.items():
                    where = f"{p} key {key!r}"
                    out = _row_outcome(value, where) if isinstance(value, dict) else _score_of(value, where)
                    by_episode[str(key)] = out
                    by_task.setdefault(str(key), out)
                return by_episode, by_task
            else:
                raise LabelError(f"{p}: expected a list of label objects or an object of id -> score")
        else:
            raise LabelError(f"label.file {p}: unknown kind {suffix or '(no suffix)'}; use .jsonl, .json or .csv")
    except json.JSONDecodeError as e:
        raise LabelError(f"{p}: not valid JSON at line {e.lineno} ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise LabelError(f"{p}: not UTF-8 text (byte {e.start})") from None
    for where, row in rows:
        if not isinstance(row, dict):
            raise LabelError(f"{where}: expected an object, got {type(row).__name__}")
        ep, task = row.get("episode_id"), row.get("task_id")
        if ep in (None, "") and task in (None, ""):
            raise LabelError(f"{where}: names no episode_id or task_id")
        out = _row_outcome(row, where)
        if ep not in (None, ""):
            by_episode[str(ep)] = out
        else:
            by_task[str(task)] = out
    return by_episode, by_task


# ---------------------------------------------------------------- label.command
def trajectory_json(t: Trajectory) -> str:
    """The canonical trajectory a verifier reads on stdin (without the store's bookkeeping keys)."""
    from .store import canonical_dict

    d = canonical_dict(t)
    d["metadata"] = {k: v for k, v in t.metadata.items() if k not in _STORE_KEYS and k != "label_source"}
    return json.dumps(d, ensure_ascii=False, default=str)


def trajectory_hash(t: Trajectory) -> str:
    h = t.metadata.get("content_hash")
    if isinstance(h, str) and h:
        return h
    from .store import canonical_dict, content_hash

    return content_hash(canonical_dict(t))


def parse_answer(stdout: str) -> Outcome:
    """A verifier's answer: its last non-blank line, a number in [0, 1] or true/false; LabelError
    saying what it printed otherwise."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise LabelError("printed nothing; print a score in [0, 1] as the last line")
    last = lines[-1]
    try:
        out = _score_of(last, "answer")
    except LabelError:
        raise LabelError(f"last line {last[:80]!r} is not a score in [0, 1] or true/false") from None
    return out


def _run_one(command: str, text: str, timeout_s: float, workdir: str | None) -> Outcome:
    """One verifier call; LabelError with the reason when it fails, times out or answers garbage."""
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=workdir or None, start_new_session=True)
    except OSError as e:
        raise LabelError(f"cannot start: {e}") from None
    try:
        out, err = proc.communicate(text.encode("utf-8"), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the shell and whatever it started
        except ProcessLookupError:
            pass
        proc.communicate()
        raise LabelError(f"timed out after {timeout_s:g} s (label.timeout_s)") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise LabelError(f"exited with code {proc.returncode}" + (f": {tail[0][:200]}" if tail[0] else ""))
    return parse_answer(out.decode("utf-8", "replace"))


class _CommandLabels:
    """label.command with its cache and quarantine files in STORE/labels/."""

    def __init__(self, settings: LabelSettings, store_root: str | Path | None):
        self.s = settings
        self.dir = Path(store_root) / LABELS_DIR if store_root is not None else None
        self.key = hashlib.sha256(settings.command.encode()).hexdigest()[:16]
        self.cache: dict[str, Outcome] = {}
        self.quarantined_before: set[tuple[str, str]] = set()
        if self.dir is not None:
            for e in _read_jsonl(self.dir / CACHE_FILE):
                if e.get("command_key") == self.key and isinstance(e.get("hash"), str):
                    self.cache[e["hash"]] = Outcome(success=e.get("success"), score=e.get("score"))
            for e in _read_jsonl(self.dir / QUARANTINE_FILE):
                if e.get("command_key") == self.key:
                    self.quarantined_before.add((e.get("hash"), e.get("reason")))
        self.calls = 0

    def label(self, trajs: list[Trajectory], counts: LabelCounts, bar) -> None:
        """Label each of `trajs` (all unlabeled so far) from the cache or the command; mutates
        their outcome and counts each as `command` or `quarantined`."""
        todo: dict[str, list[Trajectory]] = {}
        for t in trajs:
            h = trajectory_hash(t)
            if h in self.cache:
                _set(t, self.cache[h], "command")
                counts.command += 1
                bar.update(1)
            else:
                todo.setdefault(h, []).append(t)
        if not todo:
            return

        def one(h: str):
            return h, self._call(todo[h][0])

        with ThreadPoolExecutor(max_workers=max(1, self.s.workers)) as pool:
            for h, (outcome, reason) in pool.map(one, list(todo)):
                group = todo[h]
                self.calls += 1
                entry = {"hash": h, "command_key": self.key, "command": self.s.command, "at": time.time()}
                if outcome is not None:
                    self.cache[h] = outcome
                    self._append(CACHE_FILE, {**entry, "success": outcome.success, "score": outcome.score})
                    for t in group:
                        _set(t, outcome, "command")
                    counts.command += len(group)
                else:
                    counts.quarantined += len(group)
                    if (h, reason) not in self.quarantined_before:
                        self.quarantined_before.add((h, reason))
                        self._append(QUARANTINE_FILE, {**entry, "episode_id": group[0].episode_id,
                                                       "task_id": group[0].task_id, "reason": reason})
                bar.update(len(group))

    def _append(self, name: str, entry: dict) -> None:
        """Each answer is written once it is read (a killed run keeps what was judged)."""
        if self.dir is not None:
            _append_jsonl(self.dir / name, [entry])

    def _call(self, t: Trajectory) -> tuple[Outcome | None, str | None]:
        try:
            return _run_one(self.s.command, trajectory_json(t), self.s.timeout_s, self.s.workdir), None
        except LabelError as e:
            return None, str(e)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if isinstance(e, dict):
            out.append(e)
    return out


def _append_jsonl(path: Path, entries: list[dict]) -> None:
    """Append whole lines (one write, fsynced): the files are append-only like the store."""
    if not entries:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def quarantined_labels(store_root: str | Path) -> list[dict]:
    """The label.command answers that could not be used, with their reasons (STORE/labels/)."""
    return _read_jsonl(Path(store_root) / LABELS_DIR / QUARANTINE_FILE)


# ---------------------------------------------------------------- applying them
def _set(t: Trajectory, outcome: Outcome, source: str) -> None:
    t.outcome = Outcome(success=outcome.success, score=outcome.score)
    t.metadata["label_source"] = source


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def label_stream(trajs: Iterable[Trajectory], cfg: Any, store_root: str | Path | None, progress: bool = False,
                 unlabeled: str = "drop", kind: str = "sft", counts: LabelCounts | None = None,
                 total: int | None = None, filter_unlabeled: bool = True) -> Iterator[Trajectory]:
    """`trajs` with their labels applied (see the module doc), chunk by chunk so a large store is
    never held whole; yields the labelled ones and the unlabeled ones the `kind` dataset keeps
    (`keeps_unlabeled`; every one when not `filter_unlabeled`: the counts still say which the kind
    keeps). `counts` (a LabelCounts) is filled as the stream is read."""
    settings = LabelSettings.of(cfg)
    counts = counts if counts is not None else LabelCounts()
    keep = keeps_unlabeled(kind, unlabeled)
    by_episode, by_task = read_label_file(settings.file) if settings.file else ({}, {})
    command = _CommandLabels(settings, store_root) if settings.command else None
    bar: Any = _NoBar()
    if command is not None and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="label.command", unit="traj")
    try:
        chunk: list[Trajectory] = []
        for t in trajs:
            chunk.append(t)
            if len(chunk) >= _CHUNK:
                yield from _label_chunk(chunk, by_episode, by_task, command, counts, keep, bar, filter_unlabeled)
                chunk = []
        if chunk:
            yield from _label_chunk(chunk, by_episode, by_task, command, counts, keep, bar, filter_unlabeled)
    finally:
        bar.close()


def _label_chunk(chunk: list[Trajectory], by_episode: dict, by_task: dict, command: _CommandLabels | None,
                 counts: LabelCounts, keep: bool, bar, filter_unlabeled: bool = True) -> list[Trajectory]:
    waiting = []
    for t in chunk:
        if t.outcome.labeled:
            t.metadata["label_source"] = "own"
            counts.own += 1
        elif t.episode_id in by_episode or t.task_id in by_task:
            _set(t, by_episode.get(t.episode_id) or by_task[t.task_id], "file")
            counts.file += 1
        else:
            waiting.append(t)
    bar.update(len(chunk) - len(waiting))
    if command is not None and waiting:
        command.label(waiting, counts, bar)
    out = []
    for t in chunk:
        if t.outcome.labeled:
            out.append(t)
        elif keep:
            counts.unlabeled_kept += 1
            out.append(t)
        else:
            counts.unlabeled_dropped += 1
            if not filter_unlabeled:
                out.append(t)
    return out


def apply_labels(trajs: list[Trajectory], cfg: Any, store_root: str | Path | None, progress: bool = False,
                 unlabeled: str = "drop", kind: str = "sft") -> tuple[list[Trajectory], dict[str, int]]:
    """(the trajectories a `kind` dataset is built from, the label counts as a dict): labels from
    the log, `cfg.file`, then `cfg.command` (cfg: the recipe's `label` section), unlabeled ones kept
    or dropped (see `keeps_unlabeled`). The trajectories' outcomes are set in place."""
    counts = LabelCounts()
    out = list(label_stream(trajs, cfg, store_root, progress, unlabeled, kind, counts, total=len(trajs)))
    return out, counts.to_dict()
