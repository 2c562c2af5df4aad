"""Formal mathematics: rewrite a polynomial to normal form by rule applications.

A task is a sum of n = d + 3 terms c*x^k (coefficients 1-9, degrees 0 to n - 2, so at least one
pair of like terms) in a scrambled order,
generated from a seed. Two rules apply to adjacent terms i and i+1: `swap i` (commutativity) and
`merge i` (collect like terms of equal degree). The normal form has strictly decreasing degrees.
Each observation shows the expression and where the rules make progress (pairs out of order, like
terms side by side), as a proof assistant shows the open redexes; the valid actions are every
applicable rule, so a swap can also undo progress. Success is reaching the normal form.
"""
from __future__ import annotations

import random

from eval.envs.base import Env, StepResult, Suite

STEP_SECONDS = 60.0  # simulated time to apply and check one rewrite rule


def render(terms: list[tuple[int, int]]) -> str:
    def one(c: int, k: int) -> str:
        if k == 0:
            return str(c)
        coef = "" if c == 1 else str(c)
        return f"{coef}x" if k == 1 else f"{coef}x^{k}"
    return " + ".join(one(c, k) for c, k in terms)


class RewriteEnv(Env):
    suite = "rewrite"
    category = "formal_math"
    system_prompt = ("Rewrite the polynomial to normal form: like terms merged, degrees decreasing. "
                     "Answer with one rule: swap N (swap terms N and N+1) or merge N (add terms N and N+1).")

    def reset(self, seed: int) -> str:
        rng = random.Random(f"rewrite-{self.difficulty}-{seed}")
        self.n = self.difficulty + 3
        self.terms = [(rng.randint(1, 9), rng.randint(0, self.n - 2)) for _ in range(self.n)]
        while self.is_normal():
            rng.shuffle(self.terms)
            if self.is_normal():  # distinct degrees already in order: duplicate one to force a merge
                self.terms.append((rng.randint(1, 9), self.terms[0][1]))
        self.n = len(self.terms)
        self.steps = 0
        return self._observe()

    def is_normal(self) -> bool:
        return all(a[1] > b[1] for a, b in zip(self.terms, self.terms[1:]))

    def _out_of_order(self) -> list[int]:
        return [i + 1 for i, (a, b) in enumerate(zip(self.terms, self.terms[1:])) if a[1] < b[1]]

    def _like(self) -> list[int]:
        return [i + 1 for i, (a, b) in enumerate(zip(self.terms, self.terms[1:])) if a[1] == b[1]]

    def _observe(self) -> str:
        order = " ".join(map(str, self._out_of_order())) or "none"
        like = " ".join(map(str, self._like())) or "none"
        return f"{render(self.terms)}. out of order at: {order}. like terms at: {like}."

    @property
    def max_steps(self) -> int:
        return self.n * (self.n + 1) // 2 + 2 * self.n

    def valid_actions(self) -> list[str]:
        swaps = [f"swap {i}" for i in range(1, len(self.terms))]
        return swaps + [f"merge {i}" for i in self._like()]

    def step(self, action) -> StepResult:
        self.steps += 1
        rule = action.strip().lower() if isinstance(action, str) else ""
        note = ""
        if rule in self.valid_actions():
            verb, num = rule.split()
            i = int(num) - 1
            a, b = self.terms[i], self.terms[i + 1]
            self.terms[i:i + 2] = [b, a] if verb == "swap" else [(a[0] + b[0], a[1])]
        else:
            note = f"rule {action!r} does not apply. "
        normal = self.is_normal()
        done = normal or self.steps >= self.max_steps
        obs = f"normal form: {render(self.terms)}." if normal else note + self._observe()
        return StepResult(obs, 1.0 if normal else 0.0, done, STEP_SECONDS)

    def outcome(self) -> tuple[bool, float]:
        ok = self.is_normal()
        return ok, 1.0 if ok else 0.0


def solve(env: RewriteEnv) -> list[str]:
    """Merge like neighbours first, else swap the leftmost pair out of order (bubble sort)."""
    terms = list(env.terms)
    actions = []
    while not all(a[1] > b[1] for a, b in zip(terms, terms[1:])):
        pairs = list(zip(terms, terms[1:]))
        i = next((i for i, (a, b) in enumerate(pairs) if a[1] == b[1]), None)
        if i is not None:
            terms[i:i + 2] = [(terms[i][0] + terms[i + 1][0], terms[i][1])]
            actions.append(f"merge {i + 1}")
        else:
            i = next(i for i, (a, b) in enumerate(pairs) if a[1] < b[1])
            terms[i:i + 2] = [terms[i + 1], terms[i]]
            actions.append(f"swap {i + 1}")
    return actions


SUITE = Suite(name="rewrite", category="formal_math", make_env=RewriteEnv, solve=solve, default_difficulty=3)
