"""`flywheel submit RECIPE --every DURATION`: the experiment as one Slurm chain per period, exactly one
period queued at a time; `flywheel submit RUN_DIR --stop` ends it.

A period is the next round, as the chain of `flywheel submit` runs it, and one small job more:

    [eval round 0 -> refit 0 ->]  train r -> eval r -> refit r -> next-period k   (afterok; next: afterany)

The first job of period k waits for `--begin` = period k-1's begin + DURATION (period 1 begins at
once; round 0's evaluation is in it). `next-period k` (slurm/next.sbatch -> `next_period`) submits
period k+1 unless RUN_DIR/slurm/STOP exists, so one period's chain is queued while the schedule
lives. Each period's train ingests what arrived since the last (the round's own prepare). A round
with nothing new is skipped by its prepare (rounds/round-XXXX.skipped.json): its train job ends
well, its eval and refit are no-ops, the round number is not consumed and the next period is
still queued (slurm/job-lib.sh `skip_if_round_skipped`).

The schedule (every, each period's round, begin and job ids, stopped or not) is the typed record
RUN_DIR/slurm/schedule.json (`Schedule`); `flywheel status RUN_DIR` reads it (trainer/status.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import ClassVar, Iterator

from data_pipeline.atomic import atomic_write_json, atomic_write_text
from eval.records import Record
from trainer.errors import UserError
from trainer.rundir import RunDir
from trainer.sbatch import JOB_LIB, RENDER, TEMPLATES, Context, make_context, stage_name
from trainer.slurm_chain import Stage, alive_jobs, read_jobs, run_sbatch, sbatch_command, stage_done

STOP_FILE = "STOP"  # RUN_DIR/slurm/STOP: no new period is queued while it exists

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")


# ---- durations and --begin ------------------------------------------------------------------------
def parse_duration(text: str) -> int:
    """Seconds of a period: a number and a unit (s, m, h, d, w), or several ('1h30m'): 90s, 10m, 6h, 1d."""
    t = str(text).strip().lower()
    parts = _PART.findall(t)
    if not t or "".join(n + u for n, u in parts) != t:
        raise UserError(f"--every {text!r}: not a duration; write a number and a unit s, m, h, d or w "
                        "(90s, 10m, 6h, 1d, or combined: 1h30m)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"--every {text!r}: the period must be longer than 0 seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """90 -> '1m30s', 86400 -> '1d' (the largest units, nothing of zero)."""
    s, out = int(round(seconds)), []
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n:
            out.append(f"{s // n}{unit}")
            s %= n
    return "".join(out) or "0s"


def begin_arg(at: float, now: float | None = None) -> str | None:
    """sbatch's --begin value for unix time `at`: YYYY-MM-DDTHH:MM:SS in this machine's local time (as
    sbatch reads it); None when `at` is not in the future (the job may start at once)."""
    now = time.time() if now is None else now
    if at <= now:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(at + 0.999)))  # never before `at`


def local_time(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


# ---- the schedule record --------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class Period(Record):
    """One period of the schedule: its round, when it may begin, the jobs that run it."""

    period: int  # 1, 2, ...
    round: int  # the round it trains (the next round when it was planned)
    begin: float  # unix time its first job may start (sbatch --begin)
    submitted_at: float  # unix time its jobs were submitted
    jobs: dict[str, str] = dataclasses.field(default_factory=dict)  # job name -> Slurm job id, in chain order


@dataclasses.dataclass(kw_only=True)
class Schedule(Record):
    """RUN_DIR/slurm/schedule.json: the periodic chain of `flywheel submit --every`."""

    FILE: ClassVar[str] = "schedule.json"

    every: str  # the period as given (--every)
    every_s: int  # the period, seconds
    recipe: str  # the recipe the chain was submitted from
    started_at: float  # unix time of the first `submit --every`
    periods: list[Period] = dataclasses.field(default_factory=list)
    stopped_at: float | None = None  # unix time of `submit RUN_DIR --stop`; None: running
    cancelled: dict[str, str] = dataclasses.field(default_factory=dict)  # job name -> id cancelled by --stop
    notes: list[str] = dataclasses.field(default_factory=list)  # what the next-period jobs did, newest last

    def __post_init__(self) -> None:
        self.periods = [Period.of(p) for p in self.periods]

    @property
    def last(self) -> Period | None:
        return self.periods[-1] if self.periods else None

    def next_begin(self) -> float | None:
        """When the period after the last recorded one would begin; None once stopped."""
        return None if self.stopped_at is not None or self.last is None else self.last.begin + self.every_s

    def write(self, slurm_dir: str | Path) -> Path:
        path = Path(slurm_dir) / self.FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, slurm_dir: str | Path) -> Schedule | None:
        p = Path(slurm_dir) / cls.FILE
        if not p.exists():
            return None
        try:
            return cls.load(p)
        except (ValueError, TypeError) as e:
            raise UserError(f"{p}: unreadable schedule ({e}); move it away and submit with --every again") from None


# ---- one period's chain ---------------------------------------------------------------------------
@dataclasses.dataclass
class PlannedJob:
    kind: str  # eval | refit | train | next
    number: int  # the round (the period for `next`)
    after: str | None = None  # the job name it waits for
    after_any: bool = False  # afterany (whatever it did) instead of afterok

    @property
    def name(self) -> str:
        return stage_name(self.kind, self.number)


def next_round(run: RunDir) -> int:
    """The round a new period trains: the one after the newest checkpoint (a skipped round is retried)."""
    done = run.completed_rounds()
    return (max(done) if done else 0) + 1


def period_plan(ctx: Context, run: RunDir, period: int) -> list[PlannedJob]:
    """The jobs of period `period`, in submission order: round 0's evaluation while it is not done,
    then train/eval/refit of the next round and the job that queues the following period."""
    jobs: list[PlannedJob] = []
    for kind in ("eval", "refit"):
        if not stage_done(ctx, run, Stage(kind, 0, None)):
            jobs.append(PlannedJob(kind, 0, jobs[-1].name if jobs else None))
    r = next_round(run)
    for kind in ("train", "eval", "refit"):
        jobs.append(PlannedJob(kind, r, jobs[-1].name if jobs else None))
    jobs.append(PlannedJob("next", period, jobs[-1].name, after_any=True))
    return jobs


def period_commands(ctx: Context, jobs: list[PlannedJob], begin: str | None,
                    ids: dict[str, str] | None = None) -> list[list[str]]:
    """The sbatch lines of a period's jobs: the first with --begin, each after the one before it
    (`ids`: job name -> id; a name not in it is written <name>, as in a dry run)."""
    ids = ids or {}
    return [sbatch_command(ctx.slurm_dir / f"{j.name}.sbatch", [ids.get(j.after, f"<{j.after}>")] if j.after else [],
                           begin=begin if i == 0 else None, after_any=j.after_any)
            for i, j in enumerate(jobs)]


def _render(ctx: Context, j: PlannedJob) -> str:
    return RENDER[j.kind](ctx, j.number)


def write_period_scripts(ctx: Context, jobs: list[PlannedJob]) -> None:
    (ctx.slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(ctx.slurm_dir / JOB_LIB, (TEMPLATES / JOB_LIB).read_text())
    for j in jobs:
        path = ctx.slurm_dir / f"{j.name}.sbatch"
        atomic_write_text(path, _render(ctx, j))
        path.chmod(0o755)


def submit_period(ctx: Context, run: RunDir, schedule: Schedule, period: int, begin_at: float) -> Period:
    """sbatch period `period`'s chain (first job --begin=begin_at), recording every id as it comes."""
    jobs = period_plan(ctx, run, period)
    write_period_scripts(ctx, jobs)
    begin = begin_arg(begin_at)
    rec = Period(period=period, round=next_round(run), begin=begin_at, submitted_at=time.time())
    schedule.periods.append(rec)
    record = read_jobs(ctx)
    for j, cmd in zip(jobs, period_commands(ctx, jobs, begin)):
        cmd = [_resolve_dependency(part, rec.jobs) for part in cmd]
        rec.jobs[j.name] = run_sbatch(cmd)
        record["jobs"][j.name] = {"job_id": rec.jobs[j.name], "script": cmd[-1], "period": period,
                                  "submitted_at": time.time()}
        schedule.write(ctx.slurm_dir)  # a crash mid-period still knows what it sent
        atomic_write_json(ctx.slurm_dir / "jobs.json", record)
    record.setdefault("submissions", []).append({"at": time.time(), "period": period, "submitted": list(rec.jobs)})
    atomic_write_json(ctx.slurm_dir / "jobs.json", record)
    return rec


def _resolve_dependency(part: str, ids: dict[str, str]) -> str:
    """--dependency=afterok:<name> -> the id sbatch returned for that job."""
    return re.sub(r"<([\w-]+)>", lambda m: ids[m.group(1)], part) if part.startswith("--dependency=") else part


# ---- locking ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def schedule_lock(ctx_or_slurm_dir: Context | Path, wait_s: float = 0.0) -> Iterator[None]:
    """The run's submit lock (the one `flywheel submit` takes): one writer of the schedule at a time.
    `wait_s`: how long to wait for it (a next-period job waits; a user's command does not)."""
    slurm_dir = ctx_or_slurm_dir.slurm_dir if isinstance(ctx_or_slurm_dir, Context) else Path(ctx_or_slurm_dir)
    slurm_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(slurm_dir / ".submit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.time() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() >= deadline:
                    raise UserError(f"another `flywheel submit` is working on {slurm_dir.parent}; wait for it") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


# ---- the commands -----------------------------------------------------------------------------------
def periodic_context(recipe) -> Context:
    return dataclasses.replace(make_context(recipe), periodic=True)


def live_jobs(period: Period | None, alive: dict[str, str]) -> dict[str, str]:
    """Job name -> Slurm state of the period's jobs Slurm still holds, in submission (chain) order."""
    return {} if period is None else {n: alive[i] for n, i in in_order(period.jobs) if i in alive}


def in_order(jobs: dict[str, str]) -> list[tuple[str, str]]:
    """(name, id) by job id: the order sbatch gave them, which is the chain's (the record's keys are sorted)."""
    return sorted(jobs.items(), key=lambda kv: (len(kv[1]), kv[1]))


def submit_every(recipe_path: str, overrides: list[str] = (), every: str = "1d", dry_run: bool = False,
                 fork: bool = False) -> int:
    """`flywheel submit RECIPE --every DURATION`: queue the first period now, or keep the live chain."""
    every_s = parse_duration(every)
    from trainer.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    ctx = periodic_context(recipe)
    run = RunDir(ctx.run_dir)
    schedule = Schedule.read(ctx.slurm_dir)
    if dry_run:
        period = (schedule.last.period + 1) if schedule and schedule.last else 1
        jobs = period_plan(ctx, run, period)
        print(f"# period {period} of {recipe.experiment}, every {format_duration(every_s)}; "
              f"every script sources {ctx.slurm_dir / JOB_LIB}")
        for j in jobs:
            print(f"# ==== {ctx.slurm_dir / (j.name + '.sbatch')} ====")
            print(_render(ctx, j))
        print("# ==== sbatch lines (<job> = the id sbatch returned for it) ====")
        for cmd in period_commands(ctx, jobs, None):
            print(shlex.join(cmd))
        return 0
    if not shutil.which("sbatch"):
        raise UserError("sbatch is not on PATH: run flywheel submit on a Slurm login node (or --dry-run to see the jobs)")
    from trainer.model_check import require_loadable
    from trainer.recipe_fork import write_resolved
    from trainer.round import ensure_round0

    require_loadable(recipe)
    with schedule_lock(ctx):
        alive = alive_jobs()
        if schedule and schedule.stopped_at is None and live_jobs(schedule.last, alive):
            changed = schedule.every_s != every_s
            if changed:  # the next-period job reads the period from the record: the new one applies from there on
                schedule.every, schedule.every_s = every, every_s
                schedule.write(ctx.slurm_dir)
            live = live_jobs(schedule.last, alive)
            print(f"kept the periodic chain: period {schedule.last.period} (round {schedule.last.round}) is queued or "
                  f"running ({', '.join(f'{n} {schedule.last.jobs[n]} {s}' for n, s in live.items())}); "
                  + (f"the period is now {format_duration(every_s)} from the next period on"
                     if changed else "nothing submitted"))
            return 0
        write_resolved(recipe, ctx.run_dir, fork=fork)
        ensure_round0(recipe, run)
        (ctx.slurm_dir / STOP_FILE).unlink(missing_ok=True)
        if schedule is None:
            schedule = Schedule(every=every, every_s=every_s, recipe=str(Path(recipe_path).resolve()),
                                started_at=time.time())
        schedule.every, schedule.every_s, schedule.stopped_at, schedule.cancelled = every, every_s, None, {}
        period = (schedule.last.period + 1) if schedule.last else 1
        rec = submit_period(ctx, run, schedule, period, time.time())
        schedule.write(ctx.slurm_dir)
    print(f"period {rec.period} (round {rec.round}) submitted: "
          + ", ".join(f"{n} {i}" for n, i in rec.jobs.items()))
    print(f"every {format_duration(every_s)}: the next period begins no earlier than "
          f"{local_time(schedule.next_begin())}; status: flywheel status {ctx.run_dir}; "
          f"stop: flywheel submit {ctx.run_dir} --stop")
    return 0


def next_period(recipe_path: str, period: int) -> dict:
    """The `next-period` job of period `period`: submit period+1 with --begin, unless stopped."""
    from trainer.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    ctx = periodic_context(recipe)
    run = RunDir(ctx.run_dir)
    with schedule_lock(ctx, wait_s=300):
        schedule = Schedule.read(ctx.slurm_dir)
        if schedule is None:
            raise UserError(f"{ctx.slurm_dir / Schedule.FILE} is missing: no periodic schedule to continue")
        stop = ctx.slurm_dir / STOP_FILE
        if stop.exists() or schedule.stopped_at is not None:
            note = f"period {period}: stopped ({stop} present), no new period queued"
        elif schedule.last is not None and schedule.last.period > period:
            note = f"period {period}: period {schedule.last.period} is queued already, nothing to do"
        else:
            this = next((p for p in schedule.periods if p.period == period), schedule.last)
            at = (this.begin if this else time.time()) + schedule.every_s
            late = time.time() - at
            rec = submit_period(ctx, run, schedule, period + 1, at)
            note = (f"period {period}: queued period {rec.period} (round {rec.round}) to begin "
                    f"{'at once: this period overran it by ' + format_duration(late) if late > 0 else local_time(at)}")
        schedule.notes = (schedule.notes + [f"{local_time(time.time())} {note}"])[-50:]
        schedule.write(ctx.slurm_dir)
    return {"period": period, "note": note}


def _run_dir_of(target: str) -> Path:
    """A run directory given as itself or as its recipe."""
    p = Path(target)
    if p.is_dir():
        return p.resolve()
    if p.is_file():
        from trainer.recipe import load_recipe

        run_path = load_recipe(str(p)).run_path()
        return run_path if run_path.is_absolute() else Path.cwd() / run_path
    raise UserError(f"{target}: no such run directory or recipe")


def stop(target: str) -> dict:
    """`flywheel submit RUN_DIR --stop`: no new period is queued (slurm/STOP, which every next-period
    job checks) and the jobs of a period that has not started are cancelled; a running round finishes."""
    run_dir = _run_dir_of(target)
    slurm_dir = run_dir / "slurm"
    schedule = Schedule.read(slurm_dir)
    if schedule is None:
        raise UserError(f"{run_dir} has no periodic schedule ({slurm_dir / Schedule.FILE}): "
                        "only a chain submitted with --every can be stopped")
    with schedule_lock(slurm_dir, wait_s=120):  # a next-period job may be submitting right now
        schedule = Schedule.read(slurm_dir)
        atomic_write_text(slurm_dir / STOP_FILE, f"stopped by flywheel submit --stop at {local_time(time.time())}\n")
        reachable = bool(shutil.which("squeue"))
        alive = alive_jobs() if reachable else {}
        last = schedule.last
        live = live_jobs(last, alive)
        started = bool(last) and (any(s != "PENDING" for s in live.values()) or len(live) < len(last.jobs))
        # Not started: the whole period goes. Started: its round finishes; only the job that would queue more goes.
        cancel = {n: last.jobs[n] for n, s in live.items() if s == "PENDING" and (not started or n.startswith("next-"))}
        if cancel and shutil.which("scancel"):
            out = subprocess.run(["scancel", *cancel.values()], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise UserError(f"scancel {' '.join(cancel.values())} failed: {out.stderr.strip()}; "
                                f"{slurm_dir / STOP_FILE} is written, so no new period is queued")
        schedule.stopped_at = time.time()
        schedule.cancelled = {**schedule.cancelled, **cancel}
        running = {n: s for n, s in live.items() if n not in cancel}
        schedule.write(slurm_dir)
    return {"run_dir": str(run_dir), "period": last.period if last else None, "cancelled": cancel,
            "running": running, "slurm": reachable}


def stop_message(result: dict) -> str:
    lines = [f"stopped the periodic chain of {result['run_dir']}: no new period will be queued"]
    if result["cancelled"]:
        lines.append(f"cancelled (queued, not started) in period {result['period']}: "
                     + ", ".join(f"{n} {i}" for n, i in result["cancelled"].items()))
    elif not result.get("slurm", True):
        lines.append("cancelled nothing: no squeue on this machine; run --stop on the cluster's login node to "
                     "cancel the queued period (the STOP file already keeps a next-period job from queuing more)")
    else:
        lines.append("cancelled nothing: no job of the schedule was waiting to start")
    if result["running"]:
        lines.append("left to finish (the round under way): " + ", ".join(f"{n} {s}" for n, s in result["running"].items()))
    lines.append("resume with: flywheel submit RECIPE --every DURATION (the same run_dir)")
    return "\n".join(lines)


def refuse_second_chain(ctx: Context) -> None:
    """A plain `flywheel submit` on a run whose periodic chain lives would start a second chain."""
    schedule = Schedule.read(ctx.slurm_dir)
    if schedule is None or schedule.stopped_at is not None or not shutil.which("squeue"):
        return
    if live_jobs(schedule.last, alive_jobs()):
        raise UserError(f"{ctx.run_dir} has a live periodic chain (period {schedule.last.period}, "
                        f"{ctx.slurm_dir / Schedule.FILE}); stop it first: flywheel submit {ctx.run_dir} --stop")

