"""Typed config of evaluation, data collection and the curve fit."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from data_pipeline.config import SESSION_QUIET_S, Section

MAX_DIFFICULTY = 50  # SuiteConfig.difficulty's bound: the curriculum never goes beyond it


class SuiteConfig(Section):
    name: str = Field(..., description="Built-in suite name (maze, ...); eval also takes an external suite YAML path (relative to the recipe)")
    difficulty: int = Field(1, ge=1, le=MAX_DIFFICULTY, description="Difficulty knob: sets the task size and horizon")
    episodes: int = Field(100, ge=1, description="Tasks: eval = held-out tasks per checkpoint; collect = training tasks per round (new seeds every round)")
    samples_per_task: int = Field(
        1, ge=1, description="Episodes per task: eval k for pass@k (>1 = high-resolution mode); collect: attempts per training task (pairs for DPO)"
    )


class PolicyConfig(Section):
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the acting policy (0 = greedy)")
    constrained: bool = Field(True, description="Constrain decoding to the environment's valid actions when it lists them")
    max_new_tokens: int = Field(64, ge=1, description="Token budget per free-text action")
    batch_size: int = Field(64, ge=1, description="Episodes stepped in lock-step (one forward pass per step)")


class CollectConfig(Section):
    suites: list[SuiteConfig] = Field(
        default_factory=list,
        description="Training-task suites the current policy acts on each round (episodes = per round); none by default",
    )
    logs: list[str] = Field(
        default_factory=list,
        description="Live logs: folders, files or globs (relative to the recipe) whose new records are ingested at the "
        "start of every round, each record once (per-file watermarks in the store; a half-written last line waits)",
    )
    session_quiet_s: float = Field(
        SESSION_QUIET_S, ge=0, description="Live logs in a session format (Claude Code sessions, Codex rollouts: one "
        "file, one conversation) are ingested once unmodified this long (seconds; 0 = at once); a session resumed "
        "after that gives a continuation trajectory that trains only on its new turns",
    )
    when_empty: Literal["skip", "replay"] = Field(
        "skip", description="A round with nothing new in the store: skip it (the run stops there and resumes when "
        "new logs arrive) or replay: train on the older experience again (data.replay_ratio of it)"
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Acting policy during collection")
    hours_per_round: float | None = Field(
        None, gt=0, description="Interaction budget of a round (hours): episodes run in seed order until it is spent, "
        "each suite's share in proportion to its episodes, which cap it; later episodes are discarded unseen"
    )
    curriculum: Literal["fixed", "horizon", "adaptive"] = Field(
        "fixed", description="Difficulty of the training tasks per round (trainer/curriculum.py; eval.suites never "
        "change): fixed = each suite's difficulty; horizon = rising linearly over the rounds from the range's min "
        "(round 1) to its max (round train.rounds); adaptive = from the suite's difficulty, +1 after a round whose "
        "own episodes succeeded above curriculum_band's hi, -1 below its lo"
    )
    curriculum_band: list[float] = Field(
        default_factory=lambda: [0.2, 0.8], description="adaptive: [lo, hi] success rate of a round's collected "
        "episodes that keeps the next round's difficulty (above hi: +1, below lo: -1); 0 <= lo < hi <= 1"
    )
    curriculum_range: list[int] | None = Field(
        None, description="horizon/adaptive: [min, max] difficulty the curriculum may use, for every collect suite "
        "(null: per suite [max(1, d - 2), d + 2], d its difficulty)"
    )

    @field_validator("curriculum_band")
    @classmethod
    def _band(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError(f"expected [lo, hi] success rates with 0 <= lo < hi <= 1, e.g. [0.2, 0.8], got {v}")
        return v

    @field_validator("curriculum_range")
    @classmethod
    def _range(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or not 1 <= v[0] <= v[1] <= MAX_DIFFICULTY):
            raise ValueError(f"expected [min, max] difficulties with 1 <= min <= max <= {MAX_DIFFICULTY}, "
                             f"e.g. [1, 5], got {v}")
        return v


class MemoryConfig(Section):
    enabled: bool = Field(
        False, description="Gradient-free memory (eval/memory.py): before each episode, the k most similar past episodes "
        "this run collected (successes as worked examples, failures as notes) go into the acting policy's system prompt, in "
        "collection and held-out evaluation alike; held-out tasks never enter it"
    )
    k: int = Field(4, ge=1, le=64, description="Past episodes retrieved per episode (BM25 on the task text, same suite)")
    max_tokens: int = Field(
        384, ge=16, description="Token budget of the memory block (the policy's tokenizer); less similar but shorter "
        "episodes fill what the best ones leave"
    )


class EvalConfig(Section):
    suites: list[SuiteConfig] = Field(
        default_factory=lambda: [SuiteConfig(name="maze", difficulty=3, episodes=128)],
        description="Held-out suites every checkpoint is evaluated on",
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Acting policy during evaluation")
    seed: int = Field(1234, description="Evaluation seed: same checkpoint + seed gives the same numbers")
    timeout_s: float = Field(3600.0, gt=0, description="External suites: time-out per task, seconds, where the suite file sets none")


class CurveConfig(Section):
    form: Literal["edgebench", "scalerl"] = Field("scalerl", description="Curve form: edgebench S(t) or scalerl R(C)")
    x: Literal["hours", "gpu_hours", "tokens", "round", "episodes"] = Field(
        "hours", description="x-axis of the fit (hours: interaction time; where the logs give none, episodes and the report says so)"
    )
    metric: Literal["success_rate", "mean_score"] = Field("success_rate", description="Held-out metric on the y-axis")
    horizon_hours: float = Field(2.0, gt=0, description="Learning speed = gain after this much interaction (x units)")
    target_score: float | None = Field(None, ge=0, le=1, description="Report the interaction time needed to reach this score")
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples (over tasks) for parameter intervals")
    forecast_fraction: float = Field(0.6, gt=0, lt=1, description="Forecast check: fit on this first share of checkpoints")
    skip_initial_x: float = Field(0.0, ge=0, description="Initial window: leave points with 0 < x < this out of the fit (x units)")
    margin: float = Field(0.02, ge=0, description="Comparison of arms: asymptotes closer than this count as equal (ScaleRL)")
    seed: int = Field(0, description="Seed of the bootstrap resampling")
