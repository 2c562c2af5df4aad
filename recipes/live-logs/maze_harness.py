"""The held-out harness of the live-logs example: one maze task played through an OpenAI-compatible
endpoint, as a user's own harness would drive a deployed model (external suite, heldout.yaml).

    python3 maze_harness.py --endpoint URL --task maze/d3/s1000000000 --out result.json

Each step sends the conversation so far to URL/chat/completions (the first model the server lists),
reads the first move word of the reply, and plays it; the result is the JSON flywheel's external
suites read: success, score (1 on reaching the goal), duration_s (the maze's simulated time) and the
played conversation as a trajectory file. Standard library only, so any python3 runs it."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the flywheel checkout, for its maze

from eval.envs.maze import MOVES, STEP_SECONDS, MazeEnv  # noqa: E402


def call(url: str, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if os.environ.get("FLYWHEEL_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['FLYWHEEL_API_KEY']}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as r:
        return json.loads(r.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()
    m = re.fullmatch(r"maze/d(\d+)/s(\d+)", a.task)
    if not m:
        print(f"not a maze task: {a.task!r}", file=sys.stderr)
        return 2
    base = a.endpoint.rstrip("/")
    model = call(f"{base}/models")["data"][0]["id"]
    env = MazeEnv(int(m.group(1)))
    messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": env.reset(int(m.group(2)))}]
    done = False
    while not done:
        reply = call(f"{base}/chat/completions", {"model": model, "messages": messages, "max_tokens": 4,
                                                  "temperature": 0})
        text = reply["choices"][0]["message"].get("content") or ""
        move = next((w for w in re.findall(r"[a-z]+", text.lower()) if w in MOVES), text.strip())
        res = env.step(move)
        messages.append({"role": "assistant", "content": move})
        done = res.done
        if not done:
            messages.append({"role": "user", "content": res.observation})
    success, _ = env.outcome()
    (a.out.parent / "trajectory.json").write_text(json.dumps({"task_id": a.task, "messages": messages}))
    a.out.write_text(json.dumps({"success": bool(success), "score": 1.0 if success else 0.0,
                                 "duration_s": env.steps * STEP_SECONDS, "trajectory": "trajectory.json"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
