"""The collection curriculum (`collect.curriculum`): the difficulty each collect suite's training
tasks have in round r. The held-out suites (`eval.suites`) never change, so every round and every
study arm is scored on the same tasks at the same difficulty; only what the policy practises on moves.

- fixed     each suite's configured `difficulty`, every round (no record in the manifest)
- horizon   a schedule: linear in the round from the range's min (round 1) to its max (round
            `train.rounds`), rounded half up; a higher difficulty is a longer horizon (maze: a bigger
            grid and a larger step budget)
- adaptive  round 1 at the configured difficulty (clamped into the range); round r + 1 looks at the
            success rate of round r's own collected episodes of the suite: above `curriculum_band`'s
            hi -> +1, below its lo -> -1, else the same; always clamped into the range

The range is `collect.curriculum_range`, or per suite [max(1, d - 2), d + 2] (d: its difficulty).

Why adaptive reads the previous round's experience file (experience/round-XXXX.jsonl) and no
in-memory state: the difficulty of round r is then a function of the recipe and files that exist
before round r starts and never change after, so a killed or rerun round (or `--stage prepare` run
as its own job) computes the same difficulty, and the record in the manifest can be recomputed at any
time. The file holds exactly the episodes the round kept (under `collect.hours_per_round` the ones
the budget cut were never run), each with its difficulty in `metadata.difficulty`.

The interaction budget is untouched: harder tasks take more steps, so a round at a higher
difficulty runs fewer episodes in the same hours.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from eval.config import MAX_DIFFICULTY

if TYPE_CHECKING:
    from trainer.recipe import Recipe
    from trainer.rundir import RunDir

RULES = ("horizon", "start", "up", "down", "stay")


@dataclasses.dataclass(frozen=True)
class CurriculumStep:
    """One suite's difficulty in one round and why (the manifest's `curriculum[suite]`)."""

    difficulty: int
    rule: str  # RULES: horizon (the schedule), start (round 1, or no previous episodes), up, down, stay
    range: tuple[int, int]  # [min, max] the curriculum may use
    previous_difficulty: int | None = None  # adaptive: the previous round's difficulty of the suite
    previous_success: float | None = None  # adaptive: success rate of the previous round's episodes of the suite

    def to_dict(self) -> dict:
        return {"difficulty": self.difficulty, "rule": self.rule, "range": list(self.range),
                "previous_difficulty": self.previous_difficulty, "previous_success": self.previous_success}


# ---- the schedules: small pure functions ----------------------------------------------------------------
def suite_range(difficulty: int, curriculum_range: list[int] | None) -> tuple[int, int]:
    """[min, max] difficulty of a suite configured at `difficulty`: the recipe's range, or d - 2 .. d + 2
    within the suites' bounds [1, MAX_DIFFICULTY]."""
    if curriculum_range is not None:
        return curriculum_range[0], curriculum_range[1]
    return max(1, difficulty - 2), min(MAX_DIFFICULTY, difficulty + 2)


def clamp(difficulty: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, difficulty))


def horizon_difficulty(r: int, rounds: int, lo: int, hi: int) -> int:
    """Round r's difficulty on the horizon schedule: lo at round 1, hi at round `rounds`, linear between,
    rounded half up (not Python's round-half-even, so the schedule climbs evenly). A run of one round
    collects at lo; rounds past `rounds` stay at hi."""
    if rounds <= 1:
        return lo
    t = min(1.0, max(0.0, (r - 1) / (rounds - 1)))
    return clamp(math.floor(lo + (hi - lo) * t + 0.5), lo, hi)


def adaptive_difficulty(previous: int, success: float, band: list[float] | tuple[float, float], lo: int,
                        hi: int) -> tuple[int, str]:
    """(difficulty, rule) after a round at `previous` whose episodes succeeded at rate `success`:
    above band's hi one harder, below its lo one easier, else the same; clamped into [lo, hi] (the
    rule says what the band asked for, the difficulty what the range allows)."""
    band_lo, band_hi = band
    if success > band_hi:
        step, rule = 1, "up"
    elif success < band_lo:
        step, rule = -1, "down"
    else:
        step, rule = 0, "stay"
    return clamp(previous + step, lo, hi), rule


# ---- the run's curriculum -----------------------------------------------------------------------------------
def experience_path(run: RunDir, r: int) -> Path:
    """Round r's collected episodes (trainer/round.py `collect` writes them)."""
    return run.experience / f"round-{r:04d}.jsonl"


def previous_episodes(run: RunDir, r: int, suite: str) -> tuple[int, float] | None:
    """(difficulty, success rate) of suite `suite`'s episodes in round r's collected experience, at the
    difficulty most of them have (a round collects a suite at one difficulty); None when round r
    collected none (round 0, or no such file)."""
    path = experience_path(run, r)
    if r < 1 or not path.exists():
        return None
    by_difficulty: dict[int, list[bool]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        t = json.loads(line)
        if t.get("suite") != suite:
            continue
        d = (t.get("metadata") or {}).get("difficulty")
        if d is None:
            continue
        by_difficulty.setdefault(int(d), []).append(bool((t.get("outcome") or {}).get("success")))
    if not by_difficulty:
        return None
    d, outcomes = max(by_difficulty.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return d, sum(outcomes) / len(outcomes)


def plan(recipe: Recipe, run: RunDir, r: int) -> dict[str, CurriculumStep] | None:
    """Each collect suite's step in round r (by suite name); None under `collect.curriculum: fixed`."""
    cfg = recipe.collect
    if cfg.curriculum == "fixed":
        return None
    out: dict[str, CurriculumStep] = {}
    for sc in cfg.suites:
        lo, hi = suite_range(sc.difficulty, cfg.curriculum_range)
        if cfg.curriculum == "horizon":
            out[sc.name] = CurriculumStep(horizon_difficulty(r, recipe.train.rounds, lo, hi), "horizon", (lo, hi))
            continue
        before = previous_episodes(run, r - 1, sc.name)
        if before is None:  # round 1 (or a previous round without episodes of the suite): the configured one
            out[sc.name] = CurriculumStep(clamp(sc.difficulty, lo, hi), "start", (lo, hi))
            continue
        d, success = before
        difficulty, rule = adaptive_difficulty(d, success, cfg.curriculum_band, lo, hi)
        out[sc.name] = CurriculumStep(difficulty, rule, (lo, hi), previous_difficulty=d,
                                      previous_success=success)
    return out


def difficulties(recipe: Recipe, run: RunDir, r: int) -> dict[str, int]:
    """Suite name -> the difficulty round r collects it at; empty under `fixed` (the configured ones)."""
    return {name: step.difficulty for name, step in (plan(recipe, run, r) or {}).items()}


def record(recipe: Recipe, run: RunDir, r: int) -> dict[str, dict] | None:
    """The manifest's `curriculum` of round r: {suite: {difficulty, rule, range, previous_difficulty,
    previous_success}}; None under `fixed` or without collect suites."""
    steps = plan(recipe, run, r)
    if not steps:
        return None
    return {name: step.to_dict() for name, step in steps.items()}


def summary(curriculum: dict[str, dict] | None) -> str | None:
    """One short line for the round's output and the report: "maze d4 (up, 0.91 at d3)"."""
    if not curriculum:
        return None
    parts = []
    for name, s in curriculum.items():
        why = s.get("rule", "?")
        if s.get("previous_success") is not None:
            why += f", {s['previous_success']:.2f} at d{s.get('previous_difficulty')}"
        parts.append(f"{name} d{s.get('difficulty')} ({why})")
    return "; ".join(parts)
