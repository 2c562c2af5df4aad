"""The verifier of the live-logs example (`label.command`): reads one canonical flywheel trajectory
as JSON on stdin, replays its moves in the maze its task id names, prints the score: 1 when the
moves reach the goal, 0 otherwise. Any other task is an error (exit 2), which flywheel quarantines
with this message."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the flywheel checkout, for its maze

from eval.envs.maze import MazeEnv  # noqa: E402


def main() -> int:
    traj = json.load(sys.stdin)
    m = re.fullmatch(r"maze/d(\d+)/s(\d+)", traj.get("task_id", ""))
    if not m:
        print(f"not a maze task: {traj.get('task_id')!r}", file=sys.stderr)
        return 2
    env = MazeEnv(int(m.group(1)))
    env.reset(int(m.group(2)))
    for msg in traj["messages"]:
        if msg["role"] == "assistant":
            if env.step(msg.get("content") or "").done:
                break
    print(1.0 if env.outcome()[0] else 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
