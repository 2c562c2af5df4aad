"""Scientific problems: discover hidden rules by experiments, then name them.

An episode is d cases, generated from a seed. Each case hides one rule about whole numbers
(even, prime, gt10, ...) among K = 3-5 candidate rules, and offers P = 4 + d // 2 numbers to test;
the numbers always tell every pair of candidates apart. `test N` runs an experiment (does N obey the hidden
rule?), `answer R` names the rule and closes the case. Observations keep the lab notebook short: the
last result, the candidates still consistent with all results, and the untested numbers.
Score is the share of cases answered right; success is all of them.
"""
from __future__ import annotations

import copy
import itertools
import random

from eval.envs.base import Env, StepResult, Suite

EXPERIMENT_SECONDS = 600.0  # simulated time of one experiment
ANSWER_SECONDS = 60.0
RULES = {
    "even": lambda n: n % 2 == 0,
    "odd": lambda n: n % 2 == 1,
    "prime": lambda n: n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1)),
    "square": lambda n: int(n ** 0.5) ** 2 == n,
    "mult3": lambda n: n % 3 == 0,
    "mult5": lambda n: n % 5 == 0,
    "gt10": lambda n: n > 10,
    "lt6": lambda n: n < 6,
}


class HiddenRuleEnv(Env):
    suite = "hidden_rule"
    category = "science"
    system_prompt = ("Find the hidden rule of each case. Answer with one action: test N (does N obey the rule?) "
                     "or answer RULE.")

    def reset(self, seed: int) -> str:
        rng = random.Random(f"hidden_rule-{self.difficulty}-{seed}")
        self.n_cases = self.difficulty
        self.n_probes = 4 + self.difficulty // 2
        k = min(3 + (self.difficulty - 1) // 2, 5)
        self.cases = [self._make_case(rng, k, self.n_probes) for _ in range(self.n_cases)]
        self.case = 0
        self.correct = 0
        self.steps = 0
        self._open_case()
        return self._observe("")

    @staticmethod
    def _make_case(rng: random.Random, k: int, n_probes: int) -> tuple[list[str], str, list[int]]:
        while True:
            candidates = rng.sample(sorted(RULES), k)
            probes = sorted(rng.sample(range(1, 21), n_probes))
            if all(any(RULES[a](p) != RULES[b](p) for p in probes) for a, b in itertools.combinations(candidates, 2)):
                return candidates, rng.choice(candidates), probes

    def _open_case(self) -> None:
        candidates, _, probes = self.cases[self.case]
        self.left = list(candidates)
        self.untested = list(probes)

    def _observe(self, last: str) -> str:
        return (f"case {self.case + 1}/{self.n_cases}. {last}left: {' '.join(self.left)}. "
                f"untested: {' '.join(map(str, self.untested)) or 'none'}.")

    @property
    def max_steps(self) -> int:
        return self.n_cases * (self.n_probes + 2)

    def valid_actions(self) -> list[str]:
        candidates = self.cases[self.case][0]
        return [f"test {p}" for p in self.untested] + [f"answer {r}" for r in candidates]

    def step(self, action) -> StepResult:
        self.steps += 1
        act = action.strip().lower() if isinstance(action, str) else ""
        seconds, reward, last = ANSWER_SECONDS, 0.0, ""
        if act not in self.valid_actions():
            last = f"invalid action {action!r}. "
        elif act.startswith("test"):
            seconds = EXPERIMENT_SECONDS
            last = self._experiment(int(act.split()[1]))
        else:
            last, reward = self._answer(act.split()[1])
        finished = self.case >= self.n_cases
        done = finished or self.steps >= self.max_steps
        obs = f"all cases done: {self.correct}/{self.n_cases} right." if finished else self._observe(last)
        return StepResult(obs, reward, done, seconds)

    def _experiment(self, n: int) -> str:
        hidden = RULES[self.cases[self.case][1]]
        self.untested.remove(n)
        yes = hidden(n)
        self.left = [r for r in self.left if RULES[r](n) == yes]
        return f"{n}: {'yes' if yes else 'no'}. "

    def _answer(self, rule: str) -> tuple[str, float]:
        hidden = self.cases[self.case][1]
        ok = rule == hidden
        self.correct += ok
        self.case += 1
        if self.case < self.n_cases:
            self._open_case()
        return ("right. " if ok else f"wrong, it was {hidden}. "), (1.0 if ok else 0.0)

    def outcome(self) -> tuple[bool, float]:
        return self.correct == self.n_cases, self.correct / self.n_cases


def solve(env: HiddenRuleEnv) -> list[str]:
    """Test a number that splits the remaining candidates until one is left, then answer it."""
    sim, actions = copy.deepcopy(env), []
    while sim.case < sim.n_cases:
        if len(sim.left) == 1:
            act = f"answer {sim.left[0]}"
        else:
            probe = next(p for p in sim.untested if len({RULES[r](p) for r in sim.left}) > 1)
            act = f"test {probe}"
        actions.append(act)
        sim.step(act)
    return actions


SUITE = Suite(name="hidden_rule", category="science", make_env=HiddenRuleEnv, solve=solve, default_difficulty=2)
