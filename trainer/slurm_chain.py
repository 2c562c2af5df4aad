"""The chain of Slurm jobs of `flywheel submit`:

    round 0 eval array -> refit 0 -> train 1 -> eval array 1 -> refit 1 -> train 2 -> ...   (afterok)

`plan` decides per stage: skip it (its output is there), keep its live job (squeue), or submit it
after the stage before it; `submit_chain` runs sbatch and records each job id in
RUN_DIR/slurm/jobs.json as soon as it exists. The scripts are trainer/sbatch.py."""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import UserError
from trainer.rundir import RunDir, atomic_write_json, atomic_write_text
from trainer.sbatch import JOB_LIB, RENDER, TEMPLATES, Context, stage_name

# squeue states of a job that will still run (or is running): such a job is kept, never duplicated.
ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


@dataclass
class Stage:
    kind: str            # train | eval | refit
    round: int
    after: str | None    # the stage this one waits for (afterok)

    @property
    def name(self) -> str:
        return stage_name(self.kind, self.round)


def chain(rounds: int) -> list[Stage]:
    """Stages in submission order; each waits for the one before it."""
    stages = [Stage("eval", 0, None), Stage("refit", 0, stage_name("eval", 0))]
    for r in range(1, rounds + 1):
        stages += [Stage("train", r, stage_name("refit", r - 1)), Stage("eval", r, stage_name("train", r)),
                   Stage("refit", r, stage_name("eval", r))]
    return stages


def stage_status(ctx: Context, name: str) -> dict | None:
    p = ctx.slurm_dir / "status" / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_done(ctx: Context, run: RunDir, st: Stage) -> bool:
    """A stage is done when its output is there: the round's manifest, all shards finished (or
    recorded missing) / the merged summary, the refit's completed status."""
    if st.kind == "train":
        return run.manifest(st.round) is not None
    if st.kind == "eval":
        if run.eval_summary(st.round) is not None:
            return True
        shards = range(ctx.recipe.slurm.eval_shards)
        states = [(stage_status(ctx, f"{st.name}-shard-{i}") or {}).get("state") for i in shards]
        return all(s in ("completed", "missing") for s in states)
    return (stage_status(ctx, st.name) or {}).get("state") == "completed"


def alive_jobs() -> dict[str, str]:
    """job id -> state of every job Slurm still holds as pending/running (array elements fold
    into their array's id)."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%F|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"cannot ask Slurm which jobs are alive (squeue: {e})") from None
    if out.returncode != 0:
        raise UserError(f"squeue failed: {out.stderr.strip()}")
    jobs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if state in ALIVE_STATES:
            jobs[job_id] = state
    return jobs


def sbatch_command(script: Path, after: list[str], begin: str | None = None, after_any: bool = False) -> list[str]:
    """sbatch for one stage: afterok on `after` (the chain stops at a failure), or afterany (it runs
    whatever they did: a period's last job); `begin` defers the start (sbatch --begin)."""
    cmd = ["sbatch", "--parsable"] + ([f"--begin={begin}"] if begin else [])
    if after and after_any:
        cmd += [f"--dependency=afterany:{':'.join(after)}"]
    elif after:
        cmd += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    return cmd + [str(script)]


def run_sbatch(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise UserError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]  # --parsable: "jobid" or "jobid;cluster"


@dataclass
class Decision:
    stage: Stage
    action: str          # done | alive | submit
    job_id: str | None = None
    after: list[str] = field(default_factory=list)   # job ids (or, in a dry run, stage names)


def plan(ctx: Context, run: RunDir, recorded: dict, alive: dict[str, str]) -> list[Decision]:
    """What to do with each stage: skip it (output present), keep its live job, or submit it after
    the live or newly submitted job of the stage before it."""
    decisions: dict[str, Decision] = {}
    out = []
    for st in chain(ctx.recipe.train.rounds):
        job_id = (recorded.get(st.name) or {}).get("job_id")
        if stage_done(ctx, run, st):
            d = Decision(st, "done", job_id)
        elif job_id and job_id in alive:
            d = Decision(st, "alive", job_id)
        else:
            before = decisions.get(st.after) if st.after else None
            after = [] if before is None or before.action == "done" else [
                before.job_id if before.job_id and before.action == "alive" else f"<{before.stage.name}>"]
            d = Decision(st, "submit", None, after)
        decisions[st.name] = d
        out.append(d)
    return out


def read_jobs(ctx: Context) -> dict:
    p = ctx.slurm_dir / "jobs.json"
    if not p.exists():
        return {"jobs": {}, "submissions": []}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: unreadable job record ({e}); move it away to submit afresh") from None


def write_scripts(ctx: Context, decisions: list[Decision]) -> dict[str, Path]:
    """RUN_DIR/slurm/<stage>.sbatch for every stage to submit, and the job library they source."""
    (ctx.slurm_dir / "logs").mkdir(parents=True, exist_ok=True)  # Slurm opens --output before the script runs
    atomic_write_text(ctx.slurm_dir / JOB_LIB, (TEMPLATES / JOB_LIB).read_text())
    scripts = {}
    for d in decisions:
        if d.action == "submit":
            path = ctx.slurm_dir / f"{d.stage.name}.sbatch"
            atomic_write_text(path, RENDER[d.stage.kind](ctx, d.stage.round))
            path.chmod(0o755)
            scripts[d.stage.name] = path
    return scripts


def submit_chain(ctx: Context, decisions: list[Decision]) -> list[Decision]:
    """sbatch every stage marked `submit`, in chain order, recording each id as soon as it exists."""
    record = read_jobs(ctx)
    scripts = write_scripts(ctx, decisions)
    ids = {d.stage.name: d.job_id for d in decisions if d.action == "alive"}
    submitted = []
    for d in decisions:
        if d.action != "submit":
            continue
        d.after = [ids.get(a[1:-1], a) if a.startswith("<") else a for a in d.after]
        cmd = sbatch_command(scripts[d.stage.name], d.after)
        d.job_id = run_sbatch(cmd)
        ids[d.stage.name] = d.job_id
        record["jobs"][d.stage.name] = {"job_id": d.job_id, "script": str(scripts[d.stage.name]),
                                        "after": d.after, "submitted_at": time.time()}
        submitted.append(d.stage.name)
        atomic_write_json(ctx.slurm_dir / "jobs.json", record)  # a crash mid-chain still knows what it sent
    record["submissions"].append({"at": time.time(), "submitted": submitted,
                                  "kept": [d.stage.name for d in decisions if d.action == "alive"],
                                  "done": [d.stage.name for d in decisions if d.action == "done"]})
    atomic_write_json(ctx.slurm_dir / "jobs.json", record)
    return decisions


def print_dry_run(ctx: Context, decisions: list[Decision]) -> None:
    print(f"# every script sources {ctx.slurm_dir / JOB_LIB} (a copy of {TEMPLATES / JOB_LIB})")
    for d in decisions:
        if d.action != "submit":
            continue
        path = ctx.slurm_dir / f"{d.stage.name}.sbatch"
        print(f"# ==== {path} ====")
        print(RENDER[d.stage.kind](ctx, d.stage.round))
    print("# ==== sbatch lines (<stage> = the job id sbatch returned for it) ====")
    for d in decisions:
        if d.action == "submit":
            print(shlex.join(sbatch_command(ctx.slurm_dir / f"{d.stage.name}.sbatch", d.after)))
        else:
            print(f"# {d.stage.name}: {'done' if d.action == 'done' else f'job {d.job_id} still alive'}, not submitted")

