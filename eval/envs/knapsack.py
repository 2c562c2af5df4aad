"""Optimization: improve a knapsack packing by local moves until it reaches the optimum.

Each task is n = 2d + 3 items (weights and values 1-9) and a capacity of half the total weight,
generated from a seed; the episode starts from a feasible but suboptimal packing. A move adds an
item that still fits or drops a packed one; `stop` ends the episode early. The score is the packed
value over the optimum (found by dynamic programming); success is reaching the optimum.
The first observation lists the items; later ones show only the packing.
"""
from __future__ import annotations

import copy
import random

from eval.envs.base import Env, StepResult, Suite

STEP_SECONDS = 120.0  # simulated time to re-evaluate one configuration


def optimum(weights: list[int], values: list[int], capacity: int) -> tuple[int, set[int]]:
    """Best value and one optimal set of item indices (0-based), by DP over capacity."""
    best = [(0, frozenset())] * (capacity + 1)
    for i, (w, v) in enumerate(zip(weights, values)):
        for c in range(capacity, w - 1, -1):
            cand = best[c - w][0] + v
            if cand > best[c][0]:
                best[c] = (cand, best[c - w][1] | {i})
    return best[capacity][0], set(best[capacity][1])


class KnapsackEnv(Env):
    suite = "knapsack"
    category = "optimization"
    system_prompt = ("Improve the knapsack packing until its value is the best possible within the capacity. "
                     "Answer with one move: add N, drop N, or stop.")

    def reset(self, seed: int) -> str:
        rng = random.Random(f"knapsack-{self.difficulty}-{seed}")
        self.n = 2 * self.difficulty + 3
        while True:
            self.weights = [rng.randint(1, 9) for _ in range(self.n)]
            self.values = [rng.randint(1, 9) for _ in range(self.n)]
            self.capacity = sum(self.weights) // 2
            self.best_value, self.best_set = optimum(self.weights, self.values, self.capacity)
            self.packed = self._random_packing(rng)
            if self._value() < self.best_value:
                break
        self.steps = 0
        self.stopped = False
        items = " ".join(f"{i + 1}:{w}/{v}" for i, (w, v) in enumerate(zip(self.weights, self.values)))
        return f"items (weight/value): {items}. capacity {self.capacity}. " + self._observe()

    def _random_packing(self, rng: random.Random) -> set[int]:
        packed: set[int] = set()
        for i in rng.sample(range(self.n), self.n):
            if rng.random() < 0.5 and self._weight(packed) + self.weights[i] <= self.capacity:
                packed.add(i)
        return packed

    def _weight(self, packed=None) -> int:
        return sum(self.weights[i] for i in (self.packed if packed is None else packed))

    def _value(self) -> int:
        return sum(self.values[i] for i in self.packed)

    def _observe(self) -> str:
        packed = " ".join(str(i + 1) for i in sorted(self.packed)) or "nothing"
        return f"packed: {packed}; weight {self._weight()}/{self.capacity}, value {self._value()}."

    @property
    def max_steps(self) -> int:
        return 5 * self.n

    def valid_actions(self) -> list[str]:
        room = self.capacity - self._weight()
        adds = [f"add {i + 1}" for i in range(self.n) if i not in self.packed and self.weights[i] <= room]
        drops = [f"drop {i + 1}" for i in sorted(self.packed)]
        return adds + drops + ["stop"]

    def step(self, action) -> StepResult:
        self.steps += 1
        move = action.strip().lower() if isinstance(action, str) else ""
        note = ""
        if move == "stop":
            self.stopped = True
        elif move in self.valid_actions():
            verb, num = move.split()
            (self.packed.add if verb == "add" else self.packed.discard)(int(num) - 1)
        else:
            note = f"invalid move {action!r}. "
        reached = self._value() == self.best_value
        done = reached or self.stopped or self.steps >= self.max_steps
        obs = "optimum reached." if reached else note + self._observe()
        return StepResult(obs, self._value() / self.best_value if done else 0.0, done, STEP_SECONDS)

    def outcome(self) -> tuple[bool, float]:
        return self._value() == self.best_value, self._value() / self.best_value

    def optimal_moves(self) -> list[str]:
        """Drop what the optimum leaves out, then add what it takes in (drops first keep it feasible)."""
        drops = [f"drop {i + 1}" for i in sorted(self.packed - self.best_set)]
        adds = [f"add {i + 1}" for i in sorted(self.best_set - self.packed)]
        return drops + adds


def solve(env: KnapsackEnv) -> list[str]:
    sim = copy.deepcopy(env)
    moves = sim.optimal_moves()
    # another optimal set can be reached earlier: the episode ends there, so cut the plan
    for k, move in enumerate(moves):
        if sim.step(move).done:
            return moves[:k + 1]
    return moves


SUITE = Suite(name="knapsack", category="optimization", make_env=KnapsackEnv, solve=solve, default_difficulty=2)
