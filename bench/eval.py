"""Held-out evaluation throughput: the batched evaluator (32 episodes in flight, one forward pass
per step for all of them) against one-episode-at-a-time generation, same checkpoint, same run.

    python bench/eval.py             # 64 batched + 16 sequential maze episodes (d=3)
    python bench/eval.py --quick     # 32 + 8 episodes
    python bench/eval.py --checkpoint runs/quickstart/rounds/round-0003

Both arms run the same policy code (eval.policy.HFPolicy: constrained scoring of the valid moves,
each episode's KV cache kept across steps) on the same held-out seeds; only the number of episodes
in flight differs (32 vs 1). A short warm-up runs first; then each arm runs --repeats times,
interleaved, and the best rate of each arm is reported (the least disturbed by other load). Both
arms use the same torch threads (default: all cores); the one-at-a-time arm is also timed on one
thread, often its better setting, and `speedup_vs_best_sequential` compares with the better of the
two. Without --checkpoint the tiny model is built in a temporary folder. The last stdout line is one
JSON object: batched_episodes_per_s, sequential_episodes_per_s, speedup (target >= 5 on the CPU),
speedup_vs_best_sequential and the settings."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from eval.checkpoints import resolve_checkpoint  # noqa: E402
from eval.policy import HFPolicy, load_checkpoint  # noqa: E402
from eval.rollout import run_episodes  # noqa: E402
from eval.suites import get_suite  # noqa: E402


def episodes_per_s(model, tokenizer, suite, difficulty: int, seeds: list[int], in_flight: int) -> tuple[float, float]:
    """(episodes per second, mean steps per episode) of evaluating `seeds` with `in_flight` at a time."""
    policy = HFPolicy(model, tokenizer, temperature=1.0, forward_batch=in_flight, name="bench")
    t0 = time.perf_counter()
    trajs = run_episodes(suite, difficulty, seeds, policy, batch_size=in_flight, rng_seed=0, progress=False)
    wall = time.perf_counter() - t0
    return len(seeds) / wall, sum(t.metadata["steps"] for t in trajs) / len(trajs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", "--model", dest="checkpoint",
                    help="round checkpoint dir or model folder (default: the tiny model)")
    ap.add_argument("--suite", default="maze")
    ap.add_argument("--difficulty", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=64, help="episodes of the batched arm")
    ap.add_argument("--sequential-episodes", type=int, default=16, help="episodes of the one-at-a-time arm")
    ap.add_argument("--in-flight", type=int, default=32, help="episodes in lock-step in the batched arm")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads of both arms (default 0: all cores, as torch sets it)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each arm; the best of each is reported")
    ap.add_argument("--quick", action="store_true", help="32 + 8 episodes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.quick:
        args.episodes, args.sequential_episodes = 32, 8
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            base, adapter = resolve_checkpoint(args.checkpoint)
        else:
            from trainer.tiny import materialize_tiny

            base, adapter = materialize_tiny(Path(tmp) / "tiny"), None
        model, tokenizer = load_checkpoint(base, adapter)
        suite = get_suite(args.suite)
        seeds = suite.heldout_seeds(args.episodes)
        episodes_per_s(model, tokenizer, suite, args.difficulty, seeds[:4], 4)  # warm-up
        batched_runs, sequential_runs = [], []
        for rep in range(args.repeats):  # the arms interleaved, so that a busy spell hits both
            batched, steps_b = episodes_per_s(model, tokenizer, suite, args.difficulty, seeds, args.in_flight)
            sequential, steps_s = episodes_per_s(model, tokenizer, suite, args.difficulty,
                                                 seeds[:args.sequential_episodes], 1)
            batched_runs.append(batched)
            sequential_runs.append(sequential)
            print(f"repeat {rep + 1}/{args.repeats}: batched ({args.in_flight} in flight) {batched:.2f} episodes/s "
                  f"({args.episodes} episodes, {steps_b:.1f} steps each); one at a time {sequential:.2f} episodes/s "
                  f"({args.sequential_episodes} episodes, {steps_s:.1f} steps each)", flush=True)
        batched, sequential = max(batched_runs), max(sequential_runs)  # best of each: least disturbed
        # One episode at a time gains little from more threads (its matrices are small): its rate on
        # one thread as well, so that the speedup against its better setting is reported too.
        torch.set_num_threads(1)
        sequential_1t = max(episodes_per_s(model, tokenizer, suite, args.difficulty,
                                           seeds[:args.sequential_episodes], 1)[0] for _ in range(args.repeats))
        torch.set_num_threads(threads)
        print(f"one at a time on 1 thread: {sequential_1t:.2f} episodes/s", flush=True)
    print(json.dumps({"batched_episodes_per_s": round(batched, 3), "sequential_episodes_per_s": round(sequential, 3),
                      "speedup": round(batched / sequential, 2), "target_speedup": 5.0,
                      "sequential_1_thread_episodes_per_s": round(sequential_1t, 3),
                      "speedup_vs_best_sequential": round(batched / max(sequential, sequential_1t), 2),
                      "episodes_in_flight": args.in_flight, "batched_episodes": args.episodes,
                      "sequential_episodes": args.sequential_episodes, "suite": args.suite,
                      "difficulty": args.difficulty, "mean_steps_batched": round(steps_b, 2),
                      "mean_steps_sequential": round(steps_s, 2), "repeats": args.repeats,
                      "checkpoint": str(adapter or base) if args.checkpoint else "tiny",
                      "device": "cpu", "torch_threads": threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
