"""Crash harness: run a flywheel stage as subprocesses, SIGKILL it at a random moment, rerun it to
completion, and check that nothing was lost, duplicated or left half-visible, and that the result
equals an uninterrupted run's.

A `Stage` is a list of commands run one after the other in a fresh work directory. One trial:
  1. prepare the work directory (a copy of the stage's prepared template)
  2. run the commands; at `kill_at` seconds SIGKILL the whole process group of the running one
  3. check the invariants on what the kill left (store consistent, no half-written checkpoint)
  4. rerun every command to completion (exit 0 each)
  5. check the invariants again and compare the outcome with the uninterrupted run's
Kill moments are drawn uniformly over the measured uninterrupted duration from a seeded RNG.

Run directly for a report: `python -m tests.reliability.harness --stages ingest,train --kills 20`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
RECIPE = REPO / "recipes" / "quickstart.yaml"
# A round small enough to run in seconds on one CPU core, big enough to train several steps
# with intra-round checkpoints to resume from (save_steps=1).
TINY = ["model.tiny.hidden_size=32", "model.tiny.layers=1", "model.tiny.heads=2", "model.tiny.intermediate_size=64",
        "collect.suites.0.difficulty=1", "collect.suites.0.episodes=16", "collect.policy.batch_size=16",
        "data.success_only=false", "train.epochs=1", "train.max_steps=4", "train.batch_size=2",
        "train.save_steps=1", "train.max_length=256", "train.rounds=1",
        "eval.suites.0.difficulty=1", "eval.suites.0.episodes=8", "eval.policy.batch_size=8",
        "tracking.wandb.mode=disabled"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def flywheel(*args: str) -> list[str]:
    return [PY, "-m", "trainer.cli", *args]


# ---- running and killing ------------------------------------------------------------------------
@dataclass
class RunResult:
    killed: bool = False
    elapsed: float = 0.0
    outputs: list[str] = field(default_factory=list)  # stdout of each command that finished
    failed: str | None = None  # description of a command that exited non-zero


def run_commands(commands: list[list[str]], cwd: Path, kill_at: float | None = None,
                 timeout: float = 600.0) -> RunResult:
    """Run commands in order; SIGKILL the running one's process group once `kill_at` s have passed."""
    res = RunResult()
    t0 = time.monotonic()
    for cmd in commands:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        deadline = None if kill_at is None else t0 + kill_at
        try:
            out, err = proc.communicate(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every child it started
            proc.communicate()
            res.killed, res.elapsed = True, time.monotonic() - t0
            return res
        if time.monotonic() - t0 > timeout:
            res.failed = f"{' '.join(cmd[2:])}: took over {timeout:.0f}s"
            return res
        if proc.returncode != 0:
            res.failed = f"{' '.join(cmd[2:])} exited {proc.returncode}: {err.strip()[-2000:]}"
            res.elapsed = time.monotonic() - t0
            return res
        res.outputs.append(out)
    res.elapsed = time.monotonic() - t0
    return res


# ---- what must hold after a kill and after the rerun ------------------------------------------
def verify_problems(root: Path) -> list[str]:
    """`flywheel verify`'s problems (store consistency, checkpoint checksums) plus visible rounds
    that lack a manifest or the adapter it names."""
    from trainer.verify import verify

    if not root.exists():
        return []
    try:
        result = verify(root)
    except Exception as e:  # nothing to verify yet (killed before anything was written) is fine
        if "nothing to verify" in str(e):
            return []
        return [f"verify failed: {e}"]
    out = [f"{p['path']}: {p['problem']}" for p in result["problems"]]
    for d in sorted((root / "rounds").glob("round-*")) if (root / "rounds").is_dir() else []:
        if not (d / "manifest.json").is_file():
            out.append(f"{d}: half-written checkpoint visible (no manifest.json)")
    return out


def store_hashes(store: Path) -> list[str]:
    """Content hashes of every stored trajectory, in store order."""
    import pyarrow.parquet as pq

    out: list[str] = []
    for d in sorted((store / "batches").glob("batch-*")):
        if (d / "manifest.json").exists() and (d / "trajectories.parquet").exists():
            out += pq.read_table(d / "trajectories.parquet", columns=["content_hash"]).column(0).to_pylist()
    return out


def quarantine_keys(store: Path) -> list[str]:
    out: list[str] = []
    for d in sorted((store / "batches").glob("batch-*")):
        q = d / "quarantine.jsonl"
        if (d / "manifest.json").exists() and q.exists():
            out += [json.loads(line)["key"] for line in q.read_text().splitlines() if line]
    return out


def adapter_digest(round_dir: Path) -> dict[str, str]:
    """sha256 of each adapter file: the weights must be the same bytes. adapter_config.json is
    compared with its `target_modules` sorted: PEFT keeps them as a set, so their written order
    follows the process's string-hash seed (PYTHONHASHSEED), not the training."""
    a = round_dir / "adapter"
    out = {}
    for p in sorted(a.glob("*")) if a.is_dir() else []:
        data = p.read_bytes()
        if p.name == "adapter_config.json":
            cfg = json.loads(data)
            if isinstance(cfg.get("target_modules"), list):
                cfg["target_modules"] = sorted(cfg["target_modules"])
            data = json.dumps(cfg, sort_keys=True).encode()
        out[p.name] = hashlib.sha256(data).hexdigest()
    return out


def round_outcome(run: Path, r: int) -> dict:
    m = json.loads((run / "rounds" / f"round-{r:04d}" / "manifest.json").read_text())
    metrics = m.get("metrics", {})
    return {"adapter": adapter_digest(run / "rounds" / f"round-{r:04d}"), "store_batches": m["store_batches"],
            "trajectories_used": m["trajectories_used"], "hours": m["cumulative_interaction_hours"],
            "steps": metrics.get("steps"), "loss_history": metrics.get("loss_history"),
            "tokens_trained": m.get("tokens_trained")}


_TIMING = ("time", "wall", "created", "duration", "elapsed", "runtime", "checkpoint")


def eval_outcome(eval_dir: Path) -> dict:
    """The evaluation's numbers, without wall-clock fields."""
    s = json.loads((eval_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if not any(t in k for t in _TIMING)}


def diff(a: object, b: object, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'uninterrupted' if k in a else 'recovered'}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    return [] if a == b else [f"{path}: uninterrupted {str(a)[:120]} != recovered {str(b)[:120]}"]


# ---- stages -------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    template: Callable[[Path], None]  # fills a template work dir once (inputs, a prepared run dir)
    commands: Callable[[Path], list[list[str]]]
    outcome: Callable[[Path], dict]  # compared with the uninterrupted run's
    records: Callable[[Path, RunResult], dict] = lambda work, res: {}  # lost / duplicated record counts


# ingest: two calls, the second overlapping the first (duplicates) and carrying broken records
def _ingest_template(work: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench.load import trajectory_dict

    def write(path: Path, ids: range, broken: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for i in ids:
                f.write(json.dumps(trajectory_dict(i)) + "\n")
            for j in range(broken):  # bad JSON, missing field, wrong type: quarantined with a reason
                f.write(['{"task_id": ', '{"messages": []}', '{"task_id": 3, "messages": "x"}'][j % 3] + "\n")

    for k in range(3):
        write(work / "in" / "a" / f"part-{k}.jsonl", range(k * 1500, (k + 1) * 1500))
    write(work / "in" / "b" / "part-0.jsonl", range(3500, 5000), broken=30)  # 1000 already in a
    (work / "expected.json").write_text(json.dumps({"a": 4500, "b": 1530, "unique": 5000}))


def _ingest_commands(work: Path) -> list[list[str]]:
    return [flywheel("ingest", str(work / "in" / part), "--store", str(work / "store"), "--json", "--tag", part)
            for part in ("a", "b")]


def _ingest_outcome(work: Path) -> dict:
    hashes = store_hashes(work / "store")
    return {"count": len(hashes), "hashes": hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest(),
            "quarantined": len(set(quarantine_keys(work / "store")))}


def _ingest_records(work: Path, res: RunResult) -> dict:
    """Every record read is accounted for, and the store holds each expected one exactly once."""
    expected = json.loads((work / "expected.json").read_text())
    problems = []
    for part, out in zip(("a", "b"), res.outputs):
        s = json.loads(out.strip().splitlines()[-1])
        if s["read"] != expected[part] or s["read"] != s["accepted"] + s["duplicates"] + s["quarantined"]:
            problems.append(f"ingest {part}: read {s['read']} (expected {expected[part]}) != accepted "
                            f"{s['accepted']} + duplicates {s['duplicates']} + quarantined {s['quarantined']}")
    hashes = store_hashes(work / "store")
    want = expected["unique"]
    return {"lost": max(0, want - len(set(hashes))), "duplicated": len(hashes) - len(set(hashes)),
            "accounting": problems}


def _run_template(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)


def _train_commands(work: Path) -> list[list[str]]:
    return [flywheel("train", str(RECIPE), *TINY, f"run_dir={work / 'run'}", "--round", "1")]


def _train_outcome(work: Path) -> dict:
    return {"round1": round_outcome(work / "run", 1), "store": _ingest_outcome(work / "run")}


def _store_records(work: Path, res: RunResult) -> dict:
    hashes = store_hashes(work / "run" / "store")
    return {"lost": 0, "duplicated": len(hashes) - len(set(hashes))}  # lost: by outcome comparison


def _eval_template(work: Path) -> None:
    """A run directory with round 0 (the base checkpoint) to evaluate."""
    work.mkdir(parents=True, exist_ok=True)
    code = ("import sys; from trainer.recipe import load_recipe; from trainer.rundir import RunDir; "
            "from trainer.round import ensure_round0; r = load_recipe(sys.argv[1], sys.argv[2:]); "
            "ensure_round0(r, RunDir(r.run_path()))")
    res = run_commands([[PY, "-c", code, str(RECIPE), *TINY, f"run_dir={work / 'run'}"]], REPO)
    assert res.failed is None, res.failed


def _eval_commands(work: Path) -> list[list[str]]:
    if eval_cli_available():
        return [flywheel("eval", str(RECIPE), *TINY, f"run_dir={work / 'run'}",
                         "--checkpoint", str(work / "run" / "rounds" / "round-0000"))]
    code = ("import sys; from trainer.recipe import load_recipe; from trainer.rundir import RunDir; "
            "from trainer.loop import evaluate_round; r = load_recipe(sys.argv[1], sys.argv[2:]); "
            "evaluate_round(r, RunDir(r.run_path()), 0, progress=False)")
    return [[PY, "-c", code, str(RECIPE), *TINY, f"run_dir={work / 'run'}"]]


def eval_cli_available() -> bool:
    try:
        import trainer.cli.eval as ec
    except ImportError:
        return False
    return hasattr(ec, "main")


def _eval_outcome(work: Path) -> dict:
    return eval_outcome(work / "run" / "rounds" / "round-0000" / "eval")


def _run_commands(work: Path) -> list[list[str]]:
    return [flywheel("run", str(RECIPE), *TINY, f"run_dir={work / 'run'}", "--quiet")]


def _run_outcome(work: Path) -> dict:
    run = work / "run"
    return {"round1": round_outcome(run, 1), "eval0": eval_outcome(run / "rounds" / "round-0000" / "eval"),
            "eval1": eval_outcome(run / "rounds" / "round-0001" / "eval"),
            "curve_points": len(json.loads((run / "curve" / "curve.json").read_text()).get("points", [])
                                if (run / "curve" / "curve.json").exists() else [])}


STAGES = {
    "ingest": Stage("ingest", _ingest_template, _ingest_commands, _ingest_outcome, _ingest_records),
    "train": Stage("train", _run_template, _train_commands, _train_outcome, _store_records),
    "eval": Stage("eval", _eval_template, _eval_commands, _eval_outcome),
    "run": Stage("run", _run_template, _run_commands, _run_outcome, _store_records),
}


# ---- trials -------------------------------------------------------------------------------------
@dataclass
class StageReport:
    stage: str
    duration_s: float = 0.0
    kills_tried: int = 0
    finished_before_kill: int = 0
    recoveries_verified: int = 0
    records_lost: int = 0
    records_duplicated: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.stage:<7} kills tried {self.kills_tried:>3}  recoveries verified {self.recoveries_verified:>3}  "
                f"records lost {self.records_lost}  duplicated {self.records_duplicated}  "
                f"(uninterrupted {self.duration_s:.1f}s, {self.finished_before_kill} finished before the kill)")


def trial(stage: Stage, template: Path, work: Path, kill_at: float | None, baseline: dict | None,
          report: StageReport) -> dict:
    """One kill (or, with kill_at None, the uninterrupted run); returns the outcome."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work, symlinks=True)
    res = run_commands(stage.commands(work), REPO, kill_at)
    report.duration_s = res.elapsed if kill_at is None else report.duration_s
    if res.failed:
        report.failures.append(f"kill at {kill_at}: first run failed: {res.failed}")
        return {}
    problems = []
    if kill_at is not None:
        if res.killed:
            report.kills_tried += 1
        else:
            report.finished_before_kill += 1
        problems += [f"after the kill: {p}" for p in verify_problems(work / "run" if (work / "run").exists()
                                                                     else work / "store")]
        res = run_commands(stage.commands(work), REPO)
        if res.failed:
            report.failures.append(f"kill at {kill_at:.2f}s: rerun failed: {res.failed}")
            return {}
    root = work / "run" if (work / "run").exists() else work / "store"
    problems += [f"after the rerun: {p}" for p in verify_problems(root)]
    rec = stage.records(work, res)
    report.records_lost += rec.get("lost", 0)
    report.records_duplicated += rec.get("duplicated", 0)
    problems += rec.get("accounting", [])
    outcome = stage.outcome(work)
    if baseline is not None:
        problems += [f"result differs {d}" for d in diff(baseline, outcome)]
    if kill_at is not None:
        if problems:
            report.failures.append(f"kill at {kill_at:.2f}s: " + "; ".join(problems[:8]))
        elif res.failed is None:
            report.recoveries_verified += 1
    elif problems:
        report.failures.append("uninterrupted run: " + "; ".join(problems[:8]))
    return outcome


def run_stage(name: str, kills: int, seed: int, tmp: Path, keep_failed: bool = False,
              jobs: int | None = None) -> StageReport:
    jobs = JOBS if jobs is None else jobs
    stage = STAGES[name]
    report = StageReport(name)
    template = tmp / f"{name}-template"
    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    stage.template(template)
    baseline = trial(stage, template, tmp / f"{name}-baseline", None, None, report)  # sets duration_s
    if not baseline:
        return report
    rng = random.Random(f"{seed}-{name}")
    kill_times = [rng.uniform(0.0, report.duration_s) for _ in range(kills)]

    def one(i: int) -> None:
        work = tmp / f"{name}-kill-{i:02d}"
        own = StageReport(name)
        trial(stage, template, work, kill_times[i], baseline, own)
        with _merge_lock:
            for k in ("kills_tried", "finished_before_kill", "recoveries_verified", "records_lost",
                      "records_duplicated"):
                setattr(report, k, getattr(report, k) + getattr(own, k))
            report.failures += own.failures
        if not keep_failed or not own.failures:
            shutil.rmtree(work, ignore_errors=True)

    # Trials are independent subprocess pairs: run `jobs` at once (one CPU core each).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, range(kills)))
    return report


_merge_lock = __import__("threading").Lock()
JOBS = int(os.environ.get("FLYWHEEL_CRASH_JOBS", str(min(2, os.cpu_count() or 1))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", default="ingest,train,eval,run")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="work folder (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    import tempfile

    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="flywheel-crash-"))
    reports = []
    for name in a.stages.split(","):
        r = run_stage(name, a.kills, a.seed, tmp, keep_failed=True)
        reports.append(r)
        print(r.line(), flush=True)
        for f in r.failures:
            print(f"  FAILED {f}", flush=True)
    if a.json:
        print(json.dumps([r.__dict__ for r in reports]))
    return 0 if all(not r.failures and r.records_lost == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
