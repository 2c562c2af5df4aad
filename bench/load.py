"""Load test: ingest many trajectories in batches; memory must stay bounded and throughput steady.

Generates realistic small trajectories (a user task, assistant tool calls, tool results, a final
answer; 6-12 messages, about 1.5 KB of JSON each) streamed into JSONL files of `--per-file`
trajectories, then ingests the files one `ExperienceStore.ingest` call (one batch) each, in this
process, timing every batch. Generation of the next file is not timed.

    python bench/load.py                  # 1,000,000 trajectories in files of 50,000
    python bench/load.py --n 100000 --per-file 10000

Reports peak RSS (ru_maxrss of this process: generation, ingest and index together; target
under 2 GB) and last_to_first_batch_time_ratio (target <= 1.3: a store holding a million
trajectories must take a new batch as fast as an empty one). The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOOLS = ("search", "read_file", "run_tests", "edit", "lookup_order")
WORDS = ("the order", "a failing test", "the config", "refund", "the maze exit", "user 42", "timeout", "the index")


def trajectory_dict(i: int) -> dict:
    """Trajectory number i, deterministic: a tool-using agent episode in the canonical schema."""
    rng = random.Random(i)
    task = f"bench/t{i % 5000}/s{i}"
    msgs = [{"role": "system", "content": "You are a careful agent. Use tools; answer briefly."},
            {"role": "user", "content": f"Task {i}: look into {rng.choice(WORDS)} and fix {rng.choice(WORDS)}."}]
    for k in range(rng.randint(2, 5)):
        tool = rng.choice(TOOLS)
        call_id = f"c{i}-{k}"
        msgs.append({"role": "assistant", "content": f"Step {k}: checking {rng.choice(WORDS)}.",
                     "tool_calls": [{"id": call_id, "name": tool,
                                     "arguments": {"query": rng.choice(WORDS), "limit": rng.randint(1, 20)}}]})
        msgs.append({"role": "tool", "tool_call_id": call_id, "name": tool,
                     "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))),
                     "duration_s": round(rng.uniform(0.1, 3.0), 3)})
    msgs.append({"role": "assistant", "content": f"Done: {rng.choice(WORDS)} handled."})
    score = rng.random()
    return {"episode_id": f"ep-{i}", "task_id": task, "suite": "bench", "category": f"c{i % 7}",
            "policy": "bench-agent", "started_at": 1.7e9 + i, "duration_s": round(rng.uniform(5, 120), 2),
            "messages": msgs, "outcome": {"success": score > 0.5, "score": round(score, 4)}}


def write_file(path: Path, start: int, count: int) -> None:
    with open(path, "w") as f:
        for i in range(start, start + count):
            f.write(json.dumps(trajectory_dict(i)) + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="trajectories to ingest")
    ap.add_argument("--per-file", type=int, default=50_000, help="trajectories per JSONL file (one batch each)")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    a = ap.parse_args(argv)
    from data_pipeline.store import ExperienceStore

    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="flywheel-load-"))
    work.mkdir(parents=True, exist_ok=True)
    store = ExperienceStore(work / "store")
    times, done, t_all = [], 0, time.time()
    try:
        while done < a.n:
            count = min(a.per_file, a.n - done)
            src = work / f"part-{len(times):04d}.jsonl"
            write_file(src, done, count)
            t0 = time.perf_counter()
            s = store.ingest([src], fmt="flywheel", tag=f"load-{len(times)}")
            times.append(time.perf_counter() - t0)
            src.unlink()  # bounded disk too: the store keeps its own copy
            if s.accepted != count:
                raise SystemExit(f"batch {len(times)}: accepted {s.accepted} of {count}")
            done += count
            print(f"batch {len(times):>3}: {count} trajectories in {times[-1]:.2f}s "
                  f"({count / times[-1]:,.0f}/s), stored {done:,}, peak RSS {peak_rss_mb():.0f} MB", flush=True)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    # The first and last batches are compared only when they hold the same number of trajectories.
    full = [t for t, k in zip(times, range(len(times))) if (k + 1) * a.per_file <= a.n]
    ratio = full[-1] / full[0] if full else None
    print(json.dumps({"trajectories": done, "batches": len(times), "per_batch": a.per_file,
                      "peak_rss_mb": round(peak_rss_mb(), 1),
                      "last_to_first_batch_time_ratio": round(ratio, 3) if ratio else None,
                      "first_batch_s": round(times[0], 3), "last_batch_s": round(times[-1], 3),
                      "median_batch_s": round(sorted(times)[len(times) // 2], 3),
                      "ingest_per_s": round(done / sum(times), 1), "wall_s": round(time.time() - t_all, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
