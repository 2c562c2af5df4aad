"""Software engineering: repair a short program in a tiny language until its tests pass.

A program is n = 2d + 3 lines, each `x = x OP k` (OP in + - *, k in 2-9, arithmetic mod 100),
generated from a seed together with a test suite: three inputs and, after every line, an assert of
the value x must hold there. Some lines have the wrong operator. The agent edits with a cursor:
`up`, `down`, and `set OP` on the current line. Each observation shows the current line and the
first failing assert (line, the value x had before it, what it got, what it wants), as a test
runner would. Success is every assert passing.
"""
from __future__ import annotations

import random

from eval.envs.base import Env, StepResult, Suite

OPS = {"+": lambda x, k: (x + k) % 100, "-": lambda x, k: (x - k) % 100, "*": lambda x, k: (x * k) % 100}
MOVE_SECONDS = 20.0  # simulated time to read the next or previous line
EDIT_SECONDS = 90.0  # simulated time to edit a line and rerun the tests
N_TESTS = 3


class RepairEnv(Env):
    suite = "repair"
    category = "software"
    system_prompt = ("Fix the program until all its asserts pass. Answer with one command: "
                     "up, down (move to another line), or set + / set - / set * (change this line's operator).")

    def reset(self, seed: int) -> str:
        rng = random.Random(f"repair-{self.difficulty}-{seed}")
        self.n = 2 * self.difficulty + 3
        while True:
            correct = [(rng.choice("+-*"), rng.randint(2, 9)) for _ in range(self.n)]
            self.inputs = rng.sample(range(100), N_TESTS)
            self.expected = [self._trace(correct, x) for x in self.inputs]
            self.program = list(correct)
            for line in rng.sample(range(self.n), max(1, self.n // 4)):
                op, k = self.program[line]
                self.program[line] = (rng.choice([o for o in OPS if o != op]), k)
            if self.first_failure() is not None:
                break
        self.cursor = 0
        self.steps = 0
        return self._observe()

    @staticmethod
    def _trace(program: list[tuple[str, int]], x: int) -> list[int]:
        out = []
        for op, k in program:
            x = OPS[op](x, k)
            out.append(x)
        return out

    def first_failure(self) -> tuple[int, int, int, int] | None:
        """(line, x before it, got, want) of the first failing assert over all tests, or None."""
        worst = None
        for x0, want in zip(self.inputs, self.expected):
            got = self._trace(self.program, x0)
            bad = next((i for i in range(self.n) if got[i] != want[i]), None)
            if bad is not None and (worst is None or bad < worst[0]):
                before = x0 if bad == 0 else got[bad - 1]
                worst = (bad, before, got[bad], want[bad])
        return worst

    def _line(self, i: int) -> str:
        op, k = self.program[i]
        return f"x{op}{k}"

    def _observe(self) -> str:
        here = f"at line {self.cursor + 1}/{self.n}: {self._line(self.cursor)}."
        fail = self.first_failure()
        if fail is None:
            return here + " all asserts pass."
        line, before, got, want = fail
        return f"{here} first failing assert: line {line + 1} (x was {before}, got {got}, want {want})."

    @property
    def max_steps(self) -> int:
        return 5 * self.n

    def valid_actions(self) -> list[str]:
        moves = (["up"] if self.cursor > 0 else []) + (["down"] if self.cursor < self.n - 1 else [])
        return moves + [f"set {op}" for op in OPS if op != self.program[self.cursor][0]]

    def step(self, action) -> StepResult:
        self.steps += 1
        cmd = action.strip().lower() if isinstance(action, str) else ""
        note, seconds = "", MOVE_SECONDS
        if cmd not in self.valid_actions():
            note = f"invalid command {action!r}. "
        elif cmd in ("up", "down"):
            self.cursor += 1 if cmd == "down" else -1
        else:
            self.program[self.cursor] = (cmd.split()[1], self.program[self.cursor][1])
            seconds = EDIT_SECONDS
        fixed = self.first_failure() is None
        done = fixed or self.steps >= self.max_steps
        obs = "all asserts pass." if fixed else note + self._observe()
        return StepResult(obs, 1.0 if fixed else 0.0, done, seconds)

    def outcome(self) -> tuple[bool, float]:
        ok = self.first_failure() is None
        return ok, 1.0 if ok else 0.0


def solve(env: RepairEnv) -> list[str]:
    """Walk down to the first failing line, set the operator that satisfies its asserts, repeat."""
    program, cursor, actions = list(env.program), env.cursor, []
    sim = RepairEnv.__new__(RepairEnv)
    sim.__dict__.update(env.__dict__, program=program)
    while (fail := sim.first_failure()) is not None:
        line = fail[0]
        actions += ["down" if line > cursor else "up"] * abs(line - cursor)
        cursor = line
        k = program[line][1]
        befores = [x0 if line == 0 else sim._trace(program, x0)[line - 1] for x0 in sim.inputs]
        op = next(o for o in OPS if all(OPS[o](b, k) == w[line] for b, w in zip(befores, sim.expected)))
        program[line] = (op, k)
        actions.append(f"set {op}")
    return actions


SUITE = Suite(name="repair", category="software", make_env=RepairEnv, solve=solve, default_difficulty=2)
