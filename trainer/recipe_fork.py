"""A run directory's resolved recipe (`write_resolved`) and the fork policy: what a changed recipe may
change in a run directory that already holds one.

Rerunning into a run directory compares the recipe with the directory's `recipe.resolved.yaml`.
Changes that decide where and how the run is scheduled or logged (`resume_neutral`) pass and are
recorded; any other change is refused unless the run is forked (`--fork`) or holds nothing made
under the old recipe. `write_resolved` applies this when it writes the file."""
from __future__ import annotations

import copy
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.atomic import atomic_write_text
from data_pipeline.yamlfile import dotted
from trainer.config import MOVED_KEYS
from trainer.recipe import (RESOLVED_META_KEYS, RESOLVED_NAME, Recipe, RecipeError, code_version, read_resolved,
                            schema_defaults)


class _Absent:
    """A key one side of a comparison lacks (a schema that gained or lost a key since the run began)."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Absent()


def differences(old: Any, new: Any, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += differences(old.get(k, MISSING), new.get(k, MISSING), (*path, k))
        return out
    return [] if old == new else [(path, old, new)]


# Resumption may change these without a fork: they decide where and how the run is scheduled or
# logged, not what it trains. Anything else (model, data, method, learning rate, nodes x GPUs, eval
# suites, curve form, seeds, ...) would make the run's rounds disagree with its recipe.
SCHEDULING_KEYS = {"partition", "account", "qos", "time_train", "time_eval", "mem", "cpus_per_task",
                   "signal_seconds", "setup", "venv", "extra_sbatch", "eval_shards"}

# The promotion gate's tolerance and output form may be tuned between periods of a live run: every
# verdict records the margin and level it was decided with (promotion/round-XXXX.json), and the
# rounds already trained keep their recorded parents. Switching the gate off or changing what the
# next round trains from (promote.enabled, promote.parent) still needs a fork.
GATE_TUNING_KEYS = {"margin", "level", "merged"}


def resume_neutral(path: tuple, old: Any, new: Any) -> bool:
    """True when a rerun may change the key at `path` from `old` to `new` in the same run directory."""
    if path == ("train", "rounds"):
        return isinstance(old, int) and isinstance(new, int) and new >= old  # extending a run
    if path[:1] in {("tracking",), ("run_dir",), ("study",)}:
        return True
    if path[:1] == ("slurm",) and len(path) > 1 and path[1] in SCHEDULING_KEYS:
        return True
    if path[:1] == ("promote",) and len(path) > 1 and path[1] in GATE_TUNING_KEYS:
        return True
    if old is MISSING:  # a key added to the schema since the run began, at its default value
        return _lookup(schema_defaults(), path) == new
    return new is MISSING  # a key since removed from the schema: nothing reads it any more


def _lookup(data: Any, path: tuple) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def change_text(path: tuple, old: Any, new: Any) -> str:
    def short(value: Any) -> str:
        text = value if isinstance(value, str) else repr(value) if value is MISSING else json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{dotted(path)}: {short(old)} -> {short(new)}"


def _moved_to_new_keys(doc: dict) -> dict:
    """A resolved recipe written before keys moved (MOVED_KEYS), with their values in the new
    place, so that a run resumes when only the layout changed."""
    doc = copy.deepcopy(doc)
    for old, new in MOVED_KEYS.items():
        node = _lookup(doc, old[:-1])
        if isinstance(node, dict) and old[-1] in node:
            value, target = node.pop(old[-1]), doc
            for part in new[:-1]:
                target = target.setdefault(part, {})
            target.setdefault(new[-1], value)
    return doc


def compare_with_run(old_doc: dict, new: dict, meta: dict, target: Path, fork: bool,
                     unproduced: bool = False) -> dict | None:
    """The history event of rerunning into a run directory (None: nothing changed); refuses a
    different recipe unless `fork`, or `unproduced` (the run holds nothing made under the old
    recipe, so the new one replaces it)."""
    old = _moved_to_new_keys({k: v for k, v in old_doc.items() if k not in RESOLVED_META_KEYS})
    changes = differences(old, new)
    blocking = [c for c in changes if not resume_neutral(*c)]
    if blocking and not fork and not unproduced:
        listed = "; ".join(change_text(*c) for c in blocking[:8])
        raise RecipeError(
            f"{target}: this run directory already holds a different recipe (hash {old_doc.get('recipe_hash')}, "
            f"now {meta['recipe_hash']}); changed: {listed}. Use another run directory (run_dir=... or a new "
            f"experiment name), or fork this run (--fork) to keep its rounds and continue under the new recipe")
    if not changes and old_doc.get("code_version") == meta["code_version"]:
        return None
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "event": ("fork" if fork else "replace") if blocking else "resume",
        "from_hash": old_doc.get("recipe_hash"), "to_hash": meta["recipe_hash"],
        "from_code_version": old_doc.get("code_version"), "to_code_version": meta["code_version"],
        "changed": [change_text(*c) for c in changes],
    }


def write_resolved(recipe: Recipe, run_dir: str | Path | None = None, fork: bool = False) -> Path:
    """Write `recipe.resolved.yaml` into the run directory, or check the one already there.

    A run directory holding a different resolved recipe is refused (RecipeError) unless `fork`:
    then the old file is kept as `recipe.resolved.<old hash>.yaml` and the fork is recorded under
    `history`. Changes that `recipe_fork.resume_neutral` allows (more `train.rounds`, tracking, scheduling) and
    a new code version are recorded under `history` without a fork. A run that failed before
    producing anything (`RunDir.produced` is empty: no round beyond a bare round 0, no experience,
    no store batch, no submitted job) does not lock its recipe: a changed one replaces it (event
    `replace`, with a note on stderr), and what the old recipe alone built is removed."""
    from trainer.rundir import RunDir  # the run layout; imported here to keep recipe loading light

    run_dir = Path(run_dir) if run_dir is not None else recipe.run_path()
    target = run_dir / RESOLVED_NAME
    new = recipe.resolved_dict()
    meta = {"recipe_hash": recipe.hash(), "code_version": code_version(), "sources": recipe.sources}
    history: list = []
    old_doc = read_resolved(run_dir)
    if old_doc is not None:
        run = RunDir(run_dir)
        unproduced = not run.produced()
        event = compare_with_run(old_doc, new, meta, target, fork, unproduced)
        if event is None:
            return target
        if event["event"] == "fork":
            (run_dir / f"recipe.resolved.{old_doc.get('recipe_hash', 'old')}.yaml").write_text(target.read_text())
        if event["event"] in ("fork", "replace") and unproduced:
            run.clear_unproduced()  # a bare round 0 names the old base model; the new recipe writes its own
        if event["event"] == "replace":
            print(f"note: {target}: the recipe changed ({'; '.join(event['changed'][:8])}); the run directory holds "
                  "no results yet (no round, experience or store batch), so the new recipe replaces the recorded "
                  "one (no --fork needed)", file=sys.stderr)
        history = [*(old_doc.get("history") or []), event]
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {**meta, **new, "history": history}
    # atomic: a killed job never leaves half a resolved recipe
    atomic_write_text(target, yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    return target
