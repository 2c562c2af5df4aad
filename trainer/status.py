"""`flywheel status RUN_DIR`: where a run stands, from its own files and, when it is reachable, Slurm.

- the chain's jobs and their states: squeue for the live ones, sacct for the finished ones where the
  cluster keeps accounting, else the state each job wrote (RUN_DIR/slurm/status/<job>.json), else
  the recorded id alone; on a machine without Slurm it says so and shows the recorded jobs;
- the last round and its held-out score; the last promotion verdict (RUN_DIR/promotion/, read
  leniently) and the promoted checkpoint (RUN_DIR/promoted/PROMOTED.json);
- the schedule of `flywheel submit --every` (RUN_DIR/slurm/schedule.json): every, next begin, stopped;
- how many new log records are waiting in the recipe's `collect.logs` (data_pipeline.live.pending).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from data_pipeline.config import SESSION_QUIET_S
from data_pipeline.errors import FlywheelError
from trainer.errors import UserError
from trainer.periodic import STOP_FILE, Schedule, format_duration, in_order, local_time
from trainer.rundir import RunDir
from trainer.slurm_chain import ALIVE_STATES


# ---- Slurm, when there is one ------------------------------------------------------------------------
def _squeue(ids: list[str]) -> dict[str, str] | None:
    """job id -> state of the ids Slurm still holds; None when Slurm cannot be asked."""
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%F|%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in ids and state in ALIVE_STATES:
            states[job_id] = state
    return states


def _sacct(ids: list[str]) -> dict[str, str]:
    """job id -> final state from Slurm's accounting; {} where the cluster keeps none."""
    if not ids or not shutil.which("sacct"):
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        job_id = job_id.split("_")[0]
        if job_id in ids and state:
            states.setdefault(job_id, state.split()[0])
    return states


def _own_state(slurm_dir: Path, name: str) -> str | None:
    """The state the job's script wrote (an eval array: its shards' states, joined)."""
    def read(n: str) -> str | None:
        try:
            return json.loads((slurm_dir / "status" / f"{n}.json").read_text()).get("state")
        except (OSError, ValueError, AttributeError):
            return None

    if name.startswith("eval-"):
        shards = sorted({s for p in (slurm_dir / "status").glob(f"{name}-shard-*.json") if (s := read(p.stem))})
        return "/".join(shards) or None
    return read(name)


def job_states(slurm_dir: Path, jobs: dict[str, str], cancelled: dict[str, str] | None = None) -> tuple[list[dict], str]:
    """[{name, job_id, state, source}] for recorded jobs, and where the states came from (`cancelled`:
    the jobs --stop cancelled)."""
    cancelled = cancelled or {}
    ids = list(jobs.values())
    live = _squeue(ids)
    finished = _sacct([i for i in ids if live is None or i not in live])
    rows = []
    for name, job_id in jobs.items():
        if live is not None and job_id in live:
            state, source = live[job_id], "squeue"
        elif job_id in finished:
            state, source = finished[job_id], "sacct"
        elif (own := _own_state(slurm_dir, name)) is not None:
            state, source = own, "job status file"
        elif cancelled.get(name) == job_id:
            state, source = "cancelled by --stop", "schedule"
        else:
            state, source = ("not running" if live is not None else "unknown"), "recorded id"
        rows.append({"name": name, "job_id": job_id, "state": state, "source": source})
    where = ("squeue" + (", sacct" if finished else "") + ", the jobs' status files") if live is not None else \
        "no Slurm reachable from this machine (no squeue on PATH, or it failed): recorded ids and the jobs' status files"
    return rows, where


# ---- the run's own records -------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_round(run: RunDir) -> dict | None:
    done = run.completed_rounds()
    if not done:
        return None
    r = max(done)
    out: dict[str, Any] = {"round": r, "path": str(run.round_dir(r))}
    evaluated = [x for x in done if (run.round_dir(x) / "eval" / "summary.json").exists()]
    if evaluated:
        e = max(evaluated)
        s = _read_json(run.round_dir(e) / "eval" / "summary.json") or {}
        out["eval"] = {"round": e, "success_rate": s.get("success_rate"), "ci95": s.get("ci95"),
                       "mean_score": s.get("mean_score"), "episodes": s.get("episodes")}
    skipped = sorted((run.root / "rounds").glob("round-*.skipped.json"))
    if skipped:
        out["skipped"] = {"file": str(skipped[-1]), **(_read_json(skipped[-1]) or {})}
    return out


def last_verdict(run_dir: Path) -> dict | None:
    """The newest promotion verdict in RUN_DIR/promotion/ (any JSON file there; unknown keys kept)."""
    folder = run_dir / "promotion"
    if not folder.is_dir():
        return None
    files = sorted(folder.rglob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    for p in reversed(files):
        data = _read_json(p)
        if isinstance(data, dict):
            return {"file": str(p), **data}
    return {"file": str(folder), "note": "no readable verdict in it"}


def promoted(run_dir: Path) -> dict | None:
    p = run_dir / "promoted" / "PROMOTED.json"
    if not p.exists():
        return None
    data = _read_json(p)
    return {"file": str(p), **(data if isinstance(data, dict) else {"note": "unreadable"})}


def _pending_logs(store_root: Path, patterns: list[str], base_dir: Path, quiet_s: float) -> dict:
    """New complete log records waiting in `patterns` (data_pipeline.live.pending; read lazily: it
    opens the store)."""
    from data_pipeline.live import pending

    return pending(store_root, patterns, base_dir, quiet_s=quiet_s)


def waiting_logs(run_dir: Path) -> dict:
    """What `collect.logs` of the run's resolved recipe has waiting: {patterns, pending | None, note}."""
    from trainer.recipe import read_resolved

    try:
        doc = read_resolved(run_dir) or {}
    except Exception as e:  # a damaged recipe must not hide the rest of the status  # noqa: BLE001
        return {"patterns": [], "pending": None, "note": f"recipe.resolved.yaml unreadable ({e})"}
    collect = doc.get("collect") or {}
    patterns = list(collect.get("logs") or [])
    if not patterns:
        return {"patterns": [], "pending": None, "note": "the recipe has no collect.logs"}
    # Jobs read the resolved recipe in RUN_DIR, so relative patterns resolve against it, as the rounds see them.
    try:
        quiet = collect.get("session_quiet_s")
        found = _pending_logs(run_dir / "store", patterns, run_dir,
                              SESSION_QUIET_S if quiet is None else float(quiet))
    except FlywheelError as e:  # a log folder gone missing: say so, show the rest
        return {"patterns": patterns, "pending": None, "note": str(e)}
    return {"patterns": patterns, "pending": found, "note": None}


def run_status(run_dir: str | Path) -> dict:
    """Everything `flywheel status` shows, as a dict (also its --json)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not (root / "recipe.resolved.yaml").exists() and not (root / "rounds").is_dir():
        raise UserError(f"{run_dir}: not a flywheel run directory (no recipe.resolved.yaml, no rounds/)")
    run, slurm_dir = RunDir(root), root / "slurm"
    out: dict[str, Any] = {"run_dir": str(root.resolve()), "at": time.time()}
    schedule = Schedule.read(slurm_dir)
    if schedule is not None:
        last = schedule.last
        out["schedule"] = {
            "every": format_duration(schedule.every_s), "every_s": schedule.every_s,
            "stopped": schedule.stopped_at is not None or (slurm_dir / STOP_FILE).exists(),
            "stopped_at": schedule.stopped_at, "period": last.period if last else None,
            "round": last.round if last else None, "begin": last.begin if last else None,
            "next_begin": schedule.next_begin(), "cancelled": schedule.cancelled,
            "last_note": schedule.notes[-1] if schedule.notes else None}
        jobs = dict(in_order(last.jobs)) if last else {}
    else:
        record = _read_json(slurm_dir / "jobs.json") or {}
        jobs = dict(in_order({n: str(j["job_id"]) for n, j in (record.get("jobs") or {}).items()
                               if isinstance(j, dict) and j.get("job_id")}))
    if jobs:
        out["jobs"], out["jobs_from"] = job_states(slurm_dir, jobs, schedule.cancelled if schedule else None)
    else:
        out["jobs"], out["jobs_from"] = [], "no Slurm jobs recorded" + ("" if shutil.which("squeue") else
                                                                     " (and no Slurm on this machine)")
    out["failed"] = (slurm_dir / "FAILED.md").read_text().splitlines()[0] if (slurm_dir / "FAILED.md").exists() else None
    out["last_round"] = last_round(run)
    out["verdict"] = last_verdict(root)
    out["promoted"] = promoted(root)
    out["logs"] = waiting_logs(root)
    return out


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def render_status(st: dict) -> str:
    """The text of `flywheel status`."""
    lines = [f"run {st['run_dir']}"]
    sch = st.get("schedule")
    if sch:
        state = f"stopped {local_time(sch['stopped_at'])}" if sch["stopped"] else "running"
        lines.append(f"schedule: every {sch['every']}, {state}; period {sch['period']} (round {sch['round']}) "
                     f"begins {local_time(sch['begin'])}")
        if not sch["stopped"]:
            lines.append(f"  next period begins no earlier than {local_time(sch['next_begin'])}")
        if sch["cancelled"]:
            lines.append("  cancelled by --stop: " + ", ".join(f"{n} {i}" for n, i in in_order(sch["cancelled"])))
        if sch.get("last_note"):
            lines.append(f"  last hand-over: {sch['last_note']}")
    else:
        lines.append("schedule: none (not submitted with --every)")
    lines.append(f"jobs ({st['jobs_from']}):")
    for j in st["jobs"]:
        lines.append(f"  {j['name']:<22} {j['job_id']:>10}  {j['state']}")
    if st.get("failed"):
        lines.append(f"  FAILED.md: {st['failed']}")
    lr = st.get("last_round")
    if lr is None:
        lines.append("last round: none yet")
    else:
        lines.append(f"last round: {lr['round']} ({lr['path']})")
        ev = lr.get("eval")
        if ev:
            ci = ev.get("ci95")
            ci_s = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else ""
            lines.append(f"  held-out score (round {ev['round']}): success {_pct(ev['success_rate'])}{ci_s}"
                         f" over {ev.get('episodes') or '?'} episodes")
        else:
            lines.append("  held-out score: no round evaluated yet")
        if lr.get("skipped"):
            sk = lr["skipped"]
            reason = sk.get("reason") or f"round {sk.get('round', '?')}: nothing new"  # the reason names its round
            lines.append(f"  skipped: {reason}")
    v = st.get("verdict")
    if v is None:
        lines.append("promotion: no verdict (no promotion/ folder)")
    else:
        decision = v.get("verdict") or v.get("decision") or (
            ("promoted" if v["promoted"] else "rejected") if isinstance(v.get("promoted"), bool) else None)
        lines.append(f"promotion: round {v.get('round', '?')} {decision or '?'}"
                     + (f": {v['reason']}" if v.get("reason") else "") + f" ({v['file']})")
    p = st.get("promoted")
    lines.append("promoted checkpoint: none" if p is None else
                 f"promoted checkpoint: round {p.get('round', '?')} ({p['file']})")
    logs = st["logs"]
    if logs["pending"] is not None:
        pend = logs["pending"]
        lines.append(f"new log records waiting: {pend.get('records', '?')} in {pend.get('files', '?')} file(s), "
                     f"{pend.get('bytes', '?')} bytes ({', '.join(logs['patterns'])})"
                     + (f"; {pend['waiting_sessions']} session file(s) still being written, waiting"
                        if pend.get("waiting_sessions") else ""))
    else:
        lines.append(f"new log records waiting: {logs['note']}")
    return "\n".join(lines)
