"""The environment interface shared by evaluation, data collection and GRPO.

An episode: `obs = env.reset(seed)`; then repeatedly the policy picks an action (text, or a tool
call given as {"name": ..., "arguments": {...}}), `env.step(action)` returns the next observation,
a reward, whether the episode is done, and the interaction time the step took (seconds, simulated
for built-in suites). `env.outcome()` gives the verifiable result once done.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

# Seeds are split once for every built-in suite: training tasks come from [0, HELDOUT_SEED_START),
# held-out tasks from [HELDOUT_SEED_START, 2 * HELDOUT_SEED_START). Disjoint by construction.
HELDOUT_SEED_START = 1_000_000_000

Action = str | dict[str, Any]  # plain text, or a tool call {"name": str, "arguments": dict}


@dataclass
class StepResult:
    observation: str
    reward: float
    done: bool
    duration_s: float  # interaction time of this step, seconds
    info: dict[str, Any] = field(default_factory=dict)


class Env(ABC):
    """One task instance at a time. Subclasses set `suite`, `category`, `system_prompt`."""

    suite: str = ""
    category: str = ""
    system_prompt: str = ""
    tools: list[dict[str, Any]] | None = None  # OpenAI-style tool schemas when actions are tool calls

    def __init__(self, difficulty: int = 1):
        self.difficulty = difficulty

    @abstractmethod
    def reset(self, seed: int) -> str:
        """Start the task generated from `seed`; return the first observation."""

    @abstractmethod
    def step(self, action: Action) -> StepResult:
        """Apply one action. Invalid actions are not errors: they cost a step and say why."""

    @abstractmethod
    def valid_actions(self) -> list[str] | None:
        """Actions allowed now (for constrained decoding), or None when any text is allowed."""

    @abstractmethod
    def outcome(self) -> tuple[bool, float]:
        """(success, score in [0, 1]) of the episode so far."""

    @property
    def max_steps(self) -> int:
        """Step budget of the current task (the horizon)."""
        return 10 * self.difficulty

    def task_id(self, seed: int) -> str:
        return f"{self.suite}/d{self.difficulty}/s{seed}"


@dataclass
class Suite:
    """A built-in task suite: how to make its environment, and a scripted solver for tests."""

    name: str
    category: str  # EdgeBench category: games, optimization, formal_math, software, science, knowledge
    make_env: Callable[[int], Env]  # difficulty -> Env
    solve: Callable[[Env], list[Action]] | None = None  # scripted solver acting on a freshly reset env
    default_difficulty: int = 1

    def train_seeds(self, n: int, offset: int = 0) -> list[int]:
        return list(range(offset, offset + n))

    def heldout_seeds(self, n: int, offset: int = 0) -> list[int]:
        return [HELDOUT_SEED_START + offset + i for i in range(n)]

