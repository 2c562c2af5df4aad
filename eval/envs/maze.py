"""Games: a text maze. The agent walks a grid maze from its start cell to the goal.

Mazes are generated from a seed by a randomized depth-first search (a perfect maze), with extra
walls knocked down so that it has loops and few dead ends. Each observation says where the goal lies relative
to the agent and which moves are open; the valid actions are the open moves.
Success = reaching the goal within the step budget; score = SPL (shortest path / steps taken). Difficulty d gives a
(d + 2) x (d + 2) grid and a budget of 3/4 of the cell count in steps (6 at d=1, 108 at d=10), or twice the
shortest path where that is more.
"""
from __future__ import annotations

import random
from collections import deque

from eval.envs.base import Env, StepResult, Suite

MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
STEP_SECONDS = 30.0  # simulated interaction time of one move


class MazeEnv(Env):
    suite = "maze"
    category = "games"
    system_prompt = "You are in a maze. Reach the goal. Answer with one move: up, down, left or right."

    def reset(self, seed: int) -> str:
        rng = random.Random(f"maze-{self.difficulty}-{seed}")
        n = self.size = self.difficulty + 2
        self.open_edges: set[frozenset] = set()
        self._carve(rng)
        for _ in range(n * n):  # extra openings: loops make several routes and few dead ends
            r, c = rng.randrange(n), rng.randrange(n)
            dr, dc = rng.choice(list(MOVES.values()))
            if 0 <= r + dr < n and 0 <= c + dc < n:
                self.open_edges.add(frozenset({(r, c), (r + dr, c + dc)}))
        cells = [(r, c) for r in range(n) for c in range(n)]
        self.start, self.goal = rng.sample(cells, 2)
        self.pos = self.start
        while self.shortest_path_len() < max(2, n - 1):
            self.start, self.goal = rng.sample(cells, 2)
        self.pos = self.start
        self.optimal = self.shortest_path_len()
        self.steps = 0
        self.seed = seed
        return self._observe()

    def _carve(self, rng: random.Random) -> None:
        n = self.size
        seen = {(0, 0)}
        stack = [(0, 0)]
        while stack:
            r, c = stack[-1]
            nbrs = [(r + dr, c + dc) for dr, dc in MOVES.values()
                    if 0 <= r + dr < n and 0 <= c + dc < n and (r + dr, c + dc) not in seen]
            if not nbrs:
                stack.pop()
                continue
            nxt = rng.choice(nbrs)
            self.open_edges.add(frozenset({(r, c), nxt}))
            seen.add(nxt)
            stack.append(nxt)

    def _open_moves(self, pos=None) -> list[str]:
        r, c = pos or self.pos
        return [m for m, (dr, dc) in MOVES.items() if frozenset({(r, c), (r + dr, c + dc)}) in self.open_edges]

    def _observe(self) -> str:
        r, c = self.pos
        gr, gc = self.goal
        parts = []
        if gr != r:
            parts.append(f"{abs(gr - r)} {'down' if gr > r else 'up'}")
        if gc != c:
            parts.append(f"{abs(gc - c)} {'right' if gc > c else 'left'}")
        return f"goal: {' '.join(parts) or 'here'}. open: {' '.join(self._open_moves())}"

    @property
    def max_steps(self) -> int:
        # 3/4 of the cells, and never less than twice the shortest path (winding small mazes)
        return max(3 * self.size * self.size // 4, 2 * getattr(self, "optimal", 0))

    def valid_actions(self) -> list[str]:
        return self._open_moves()

    def step(self, action) -> StepResult:
        self.steps += 1
        move = action.strip().lower() if isinstance(action, str) else ""
        if move in self._open_moves():
            dr, dc = MOVES[move]
            self.pos = (self.pos[0] + dr, self.pos[1] + dc)
            note = ""
        else:
            note = f"invalid move {action!r}. "
        done = self.pos == self.goal or self.steps >= self.max_steps
        reward = 1.0 if self.pos == self.goal else 0.0
        obs = "reached the goal." if self.pos == self.goal else note + self._observe()
        return StepResult(obs, reward, done, STEP_SECONDS)

    def outcome(self) -> tuple[bool, float]:
        # Score = SPL (success weighted by path length, Anderson et al. 2018): 1 for a shortest
        # path, less for detours, 0 for failure. Success alone is the held-out headline metric.
        ok = self.pos == self.goal
        return ok, (self.optimal / max(self.optimal, self.steps)) if ok else 0.0

    def shortest_path(self) -> list[str]:
        """Moves of a shortest path from the current position to the goal (breadth-first)."""
        prev = {self.pos: None}
        q = deque([self.pos])
        while q:
            cur = q.popleft()
            if cur == self.goal:
                break
            for m in self._open_moves(cur):
                dr, dc = MOVES[m]
                nxt = (cur[0] + dr, cur[1] + dc)
                if nxt not in prev:
                    prev[nxt] = (cur, m)
                    q.append(nxt)
        path, cur = [], self.goal
        while prev[cur] is not None:
            cur, m = prev[cur]
            path.append(m)
        return path[::-1]

    def shortest_path_len(self) -> int:
        saved = getattr(self, "pos", self.start)
        self.pos = self.start
        try:
            return len(self.shortest_path())
        finally:
            self.pos = saved


SUITE = Suite(name="maze", category="games", make_env=MazeEnv, solve=lambda env: env.shortest_path(), default_difficulty=3)
