"""A stand-in for a deployed agent: it works maze tasks and appends what it did to log files in the
OpenAI chat format, with start and end times and no outcome (like most production logs).

    python simulate_deployment.py LOG_DIR --wave N [--episodes 40] [--skill 0.8] [--open-line]

Wave N works training tasks N*1000 .. N*1000+episodes-1 (never the held-out seeds) and appends them
to LOG_DIR/agent.jsonl. `--open-line` leaves the file's last line half-written, as a logger caught
mid-write does; the next wave first finishes that line. `--rotate` renames agent.jsonl to
agent.jsonl.1 before writing (a log rotation), so the next lines start a new agent.jsonl.

The agent walks a shortest path with probability `skill` at each step, a random open move otherwise.
Its success is not written down: the verifier (verify_maze.py) works it out from the moves.
`--broken` simulates a bad release: the agent walks away from the goal and its logger writes
`"success": true` on every line (a log's own outcome wins over the verifier): the round trained on
that wave gets worse, and flywheel's promotion gate must keep it from being deployed."""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the flywheel checkout, for its maze

from eval.envs.maze import STEP_SECONDS, MazeEnv  # noqa: E402

PENDING = ".pending"  # the rest of a half-written line, kept beside the log until the next wave


def episode(seed: int, difficulty: int, skill: float, rng: random.Random, clock: float, broken: bool = False) -> dict:
    env = MazeEnv(difficulty)
    messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": env.reset(seed)}]
    done = False
    while not done:
        best = env.shortest_path()
        if broken:  # away from the goal whenever an open move allows it
            away = [m for m in env.valid_actions() if m not in best[:1]]
            move = away[0] if away else env.valid_actions()[0]
        else:
            move = best[0] if best and rng.random() < skill else rng.choice(env.valid_actions())
        res = env.step(move)
        messages.append({"role": "assistant", "content": move})
        done = res.done
        if not done:
            messages.append({"role": "user", "content": res.observation})
    line = {"id": f"deploy-maze-d{difficulty}-s{seed}", "task_id": env.task_id(seed), "suite": "maze",
            "messages": messages,
            "metadata": {"started_at": clock, "ended_at": clock + env.steps * STEP_SECONDS,
                         "agent": "deployed-v2-broken" if broken else "deployed-v1"}}
    if broken:
        line["success"] = True  # the broken logger's claim
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log_dir", type=Path)
    p.add_argument("--wave", type=int, required=True)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--difficulty", type=int, default=3)
    p.add_argument("--skill", type=float, default=0.3)
    p.add_argument("--open-line", action="store_true", help="leave the last line half-written")
    p.add_argument("--rotate", action="store_true", help="rename agent.jsonl to agent.jsonl.1 first")
    p.add_argument("--broken", action="store_true", help="a bad release: walks away, logs success: true")
    a = p.parse_args(argv)
    a.log_dir.mkdir(parents=True, exist_ok=True)
    log, pending = a.log_dir / "agent.jsonl", a.log_dir / PENDING
    rng = random.Random(a.wave)
    clock = 1.7e9 + a.wave * 86400.0
    lines = []
    for i in range(a.episodes):
        ep = episode(a.wave * 1000 + i, a.difficulty, a.skill, rng, clock, a.broken)
        clock = ep["metadata"]["ended_at"] + 60.0
        lines.append(json.dumps(ep) + "\n")
    with open(log, "a", encoding="utf-8") as f:
        if pending.exists():  # finish the line the last wave left open
            f.write(pending.read_text(encoding="utf-8"))
            f.flush()
            pending.unlink()
    if a.rotate:
        log.rename(log.with_name(log.name + ".1"))
    with open(log, "a", encoding="utf-8") as f:
        if a.open_line:
            head, tail = lines[-1][: len(lines[-1]) // 2], lines[-1][len(lines[-1]) // 2:]
            f.write("".join(lines[:-1]) + head)
            pending.write_text(tail, encoding="utf-8")
        else:
            f.write("".join(lines))
    print(f"wave {a.wave}: {a.episodes} episodes -> {log}{' (last line left open)' if a.open_line else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
