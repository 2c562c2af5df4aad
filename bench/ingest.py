"""Ingest throughput of the experience store against a plain baseline, and the cost of adding a
little data to a big store.

    python bench/ingest.py            # 100k trajectories (a few minutes on 2 cores)
    python bench/ingest.py --n 5000   # quick run

1. Writes N realistic agent trajectories (system prompt, task, 3-8 tool-calling steps with tool
   results, a final answer; about 1 in 100 carries a secret) as canonical JSONL.
2. Baseline, same run: json.loads of every line + one pyarrow Parquet write of the raw records.
3. `ExperienceStore.ingest` of the same file (validate, redact, hash, dedupe, write, fsync).
4. Incremental: ingest 1k new trajectories into that N-trajectory store vs into an empty store
   (median of 3 tries each).
The last stdout line is one JSON object: trajectories_per_s, ratio_to_baseline (store time /
baseline time; target <= 3), incremental_ratio (target <= 1.2) and the raw timings."""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_pipeline.store import ExperienceStore  # noqa: E402

SYSTEM = ("You are an agent solving grid mazes. Call `move` with a direction (up, down, left, right) and a "
          "number of steps; call `look` to see the cells around you. Reach the exit in as few steps as you can. "
          "Invalid moves cost a step and are reported back. ") * 3
WORDS = "the wall north south east west open corridor exit blocked turn step cell path dead end back".split()


def trajectory(i: int, rng: random.Random, prefix: str) -> dict:
    steps = rng.randint(3, 8)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Maze {i}: " + " ".join(rng.choices(WORDS, k=60))}]
    for s in range(steps):
        call_id = f"call_{i}_{s}"
        thought = " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
        if rng.random() < 0.01:
            thought += " contact ops@example.com with key sk-" + "".join(rng.choices("abcdef0123456789", k=32))
        messages.append({"role": "assistant", "content": thought, "tool_calls": [
            {"name": rng.choice(["move", "look"]), "arguments": {"direction": rng.choice(["up", "down", "left", "right"]),
                                                                 "steps": rng.randint(1, 4)}, "id": call_id}]})
        messages.append({"role": "tool", "content": " ".join(rng.choices(WORDS, k=rng.randint(20, 80))),
                         "tool_call_id": call_id, "name": "move", "duration_s": round(rng.uniform(0.05, 2.0), 3),
                         "reward": 0.0})
    messages.append({"role": "assistant", "content": "Reached the exit." if rng.random() < 0.4 else "Giving up."})
    success = messages[-1]["content"].startswith("Reached")
    return {"episode_id": f"{prefix}-{i}", "task_id": f"maze/d{1 + i % 5}/s{i}", "suite": "maze",
            "category": f"d{1 + i % 5}", "source_format": "flywheel", "policy": "qwen2.5-0.5b-lora-r3",
            "started_at": 1.7e9 + i, "ended_at": None, "duration_s": None,
            "outcome": {"success": success, "score": 1.0 if success else 0.0},
            "messages": messages, "metadata": {"round": 3, "difficulty": 1 + i % 5}}


def write_jsonl(path: Path, n: int, seed: int, prefix: str) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(trajectory(i, rng, prefix)) + "\n")
    return path


def baseline(path: Path, out: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        records = [json.loads(line) for line in f]
    pq.write_table(pa.Table.from_pylist(records), out)
    return time.perf_counter() - t0


def timed_ingest(store_root: Path, path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    s = ExperienceStore(store_root).ingest([path], fmt="flywheel")
    return time.perf_counter() - t0, s.accepted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="trajectories in the big ingest")
    p.add_argument("--incremental", type=int, default=1000, help="trajectories added to the big store")
    p.add_argument("--tries", type=int, default=3)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        tmp = Path(tmp)
        src = write_jsonl(tmp / "big.jsonl", a.n, seed=0, prefix="big")
        mb = src.stat().st_size / 2**20
        print(f"{a.n} trajectories, {mb:.0f} MiB of JSONL", flush=True)
        t_base = baseline(src, tmp / "baseline.parquet")
        print(f"baseline (json.loads + one pyarrow write): {t_base:.2f} s", flush=True)
        t_store, accepted = timed_ingest(tmp / "big-store", src)
        assert accepted == a.n, accepted
        print(f"store ingest: {t_store:.2f} s ({a.n / t_store:,.0f} trajectories/s)", flush=True)
        into_big, into_empty = [], []
        for k in range(a.tries):
            new = write_jsonl(tmp / f"new{k}.jsonl", a.incremental, seed=100 + k, prefix=f"new{k}")
            into_empty.append(timed_ingest(tmp / f"empty-store-{k}", new)[0])
            into_big.append(timed_ingest(tmp / "big-store", new)[0])
        t_big, t_empty = statistics.median(into_big), statistics.median(into_empty)
        print(f"{a.incremental} new into the {a.n}-store: {t_big:.3f} s; into an empty store: {t_empty:.3f} s", flush=True)
    result = {"n": a.n, "jsonl_mib": round(mb, 1), "trajectories_per_s": round(a.n / t_store, 1),
              "baseline_s": round(t_base, 3), "store_s": round(t_store, 3),
              "ratio_to_baseline": round(t_store / t_base, 3),
              "incremental_s": round(t_big, 4), "incremental_empty_s": round(t_empty, 4),
              "incremental_ratio": round(t_big / t_empty, 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
