"""`flywheel submit RECIPE [overrides] [--rounds K] [--dry-run]`: the experiment as a chain of Slurm jobs.

    round 0 eval array -> refit 0 -> train 1 -> eval array 1 -> refit 1 -> train 2 -> ...   (afterok)

- train round r: `flywheel train --stage prepare` once, `--stage fit` on nodes x GPUs (srun + torchrun
  with a c10d rendezvous on the head node, or the deepspeed launcher), `--stage finalize` once.
- eval array of round r: one element per task shard of round r's checkpoint; a failed element is
  retried once in the job, then recorded as missing (the chain goes on).
- refit r: merges the shards into eval/summary.json, refits the curve, rewrites report.md.

The scripts are rendered from the templates in slurm/ into RUN_DIR/slurm/ next to the resolved recipe,
so the run is self-contained; job ids go to RUN_DIR/slurm/jobs.json. Rerunning the command continues
the chain: stages whose output exists are skipped, jobs still pending or running (squeue) are kept and
depended on, everything else is submitted again. Nothing is ever submitted twice for the same stage
while its job is alive.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from trainer.cli import UserError
from trainer.model_check import require_loadable, warn_unloadable
from trainer.recipe import Recipe, load_recipe, write_resolved
from trainer.rundir import RunDir, atomic_write_json, atomic_write_text

CODE_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = CODE_ROOT / "slurm"
RDZV_PORT = 29500
# squeue states of a job that will still run (or is running): such a job is kept, never duplicated.
ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


# ---- what the installed `flywheel train` / `flywheel eval` support --------------------------------
@dataclass(frozen=True)
class Capabilities:
    """Which job-side commands this build has. The scripts use the staged / sharded forms; the other
    forms keep a chain working on a build that lacks them."""
    train_stages: bool = True   # flywheel train --stage prepare|fit|finalize
    eval_cli: bool = True       # flywheel eval RECIPE --checkpoint DIR
    eval_shards: bool = True    # flywheel eval ... --shard I/N


def _help_text(func) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            func(["--help"])
        except SystemExit:
            pass
    return out.getvalue()


@lru_cache(maxsize=1)
def detect_capabilities() -> Capabilities:
    from trainer.round import main as train_main

    try:
        from eval.cli import eval_main
    except ImportError:
        eval_main = None
    eval_help = _help_text(eval_main) if eval_main else ""
    return Capabilities(train_stages="--stage" in _help_text(train_main), eval_cli=eval_main is not None,
                        eval_shards="--shard" in eval_help)


# ---- rendering ----------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def fill_template(name: str, values: dict[str, str]) -> str:
    """slurm/NAME with every {{key}} replaced; a key the template names but `values` lacks is a bug."""
    text = (TEMPLATES / name).read_text()

    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"slurm/{name}: no value for {{{{{m.group(1)}}}}}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


@dataclass(frozen=True)
class Context:
    """Everything a script depends on besides the round: recipe, where the run lives, which python."""
    recipe: Recipe
    run_dir: Path      # absolute
    workdir: Path      # absolute: jobs start here (relative paths in the recipe resolve as at submit)
    python: str        # interpreter when neither slurm.venv nor slurm.setup names one
    caps: Capabilities = field(default_factory=Capabilities)

    @property
    def slurm_dir(self) -> Path:
        return self.run_dir / "slurm"


def stage_name(stage: str, r: int) -> str:
    return f"{stage}-round-{r:04d}"


def procs_per_node(recipe: Recipe) -> int:
    """Training processes per node: one per GPU, or train.nproc on a CPU node."""
    return recipe.slurm.gpus_per_node or recipe.train.nproc


def _extra_line(line: str) -> str:
    line = line.strip()
    return line if line.startswith("#SBATCH") else f"#SBATCH {line}"


def sbatch_lines(ctx: Context, stage: str, r: int) -> list[str]:
    s = ctx.recipe.slurm
    logs = ctx.slurm_dir / "logs"
    lines = [f"--job-name={ctx.recipe.experiment}-{stage}-r{r}", f"--chdir={ctx.workdir}", "--open-mode=append"]
    if stage == "train":
        lines += [f"--output={logs}/{stage_name('train', r)}-%j.out", f"--nodes={s.nodes}", "--ntasks-per-node=1",
                  f"--cpus-per-task={s.cpus_per_task}"]
        lines += [f"--gpus-per-node={s.gpus_per_node}"] if s.gpus_per_node else []
        lines += [f"--time={s.time_train}", f"--signal=B:USR1@{s.signal_seconds}", "--requeue"]
    elif stage == "eval":
        lines += [f"--output={logs}/{stage_name('eval', r)}-shard-%a-%A_%a.out", f"--array=0-{s.eval_shards - 1}",
                  "--nodes=1", "--ntasks=1", f"--cpus-per-task={s.cpus_per_task}"]
        lines += ["--gpus-per-node=1"] if s.gpus_per_node else []
        lines += [f"--time={s.time_eval}", f"--signal=B:USR1@{s.signal_seconds}", "--requeue"]
    else:  # refit: a few seconds of CPU
        lines += [f"--output={logs}/{stage_name('refit', r)}-%j.out", "--nodes=1", "--ntasks=1",
                  "--cpus-per-task=1", f"--time={s.time_eval}", "--requeue"]
    if s.mem is not None and stage != "refit":
        lines.append(f"--mem={s.mem}")
    for key, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
        if getattr(s, key):
            lines.append(f"{flag}={getattr(s, key)}")
    return [f"#SBATCH {line}" for line in lines] + [_extra_line(x) for x in s.extra_sbatch]


def _python_and_setup(ctx: Context) -> tuple[str, list[str]]:
    s = ctx.recipe.slurm
    setup = list(s.setup)
    if s.venv:
        setup.append(f"source {shlex.quote(str(Path(s.venv) / 'bin' / 'activate'))}")
    # After module loads / conda / a venv the job's own `python` is the right one; else the submitter's.
    return ("python" if setup else shlex.quote(ctx.python)), setup


def common_block(ctx: Context) -> str:
    python, setup = _python_and_setup(ctx)
    return fill_template("env.sh", {
        "setup_lines": "\n".join(setup) if setup else "# (no slurm.setup lines, no slurm.venv)",
        "python": python, "code_root": shlex.quote(str(CODE_ROOT)), "run_dir": shlex.quote(str(ctx.run_dir)),
    })


def _zero_line(recipe: Recipe) -> str:
    from trainer.round import deepspeed_config_path

    path = deepspeed_config_path(recipe.train.deepspeed)
    if path is None:
        return "DeepSpeed: none (train.deepspeed=none): plain DDP"
    return f"DeepSpeed ZeRO config: {path} (train.deepspeed={recipe.train.deepspeed})"


def _fit_command(ctx: Context) -> str:
    """The distributed fit: one launcher per node under srun, every rank runs `--stage fit`."""
    train_args = 'trainer.cli train "$RECIPE" --round "$ROUND" --stage fit --quiet'
    srun = 'srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1'
    if ctx.recipe.slurm.launcher == "deepspeed":
        # The deepspeed launcher starts this node's ranks itself (--no_ssh) from a hostfile of the job's nodes.
        return (f'HOSTFILE="$SLURM_DIR/hostfile-$SLURM_JOB_ID"\n'
                f'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/ slots=$NPROC_PER_NODE/" > "$HOSTFILE"\n'
                f'run_step {srun} bash -c \'exec "$PY" -m deepspeed.launcher.runner --hostfile="$HOSTFILE" --no_ssh '
                f'--node_rank="$SLURM_NODEID" --master_addr="$HEAD_NODE" --master_port="$RDZV_PORT" '
                f'--module {train_args}\'')
    return (f'run_step {srun} \\\n    "$PY" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" \\\n'
            f'    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD_NODE:$RDZV_PORT" \\\n'
            f'    -m {train_args}')


def _train_steps(ctx: Context) -> str:
    if not ctx.caps.train_stages:  # a build without `--stage`: the whole round in one process tree
        return ('stamp "round $ROUND in one command (this build of flywheel train is not split in stages)"\n'
                'run_step "${FLYWHEEL[@]}" train "$RECIPE" --round "$ROUND" || exit $?')
    return "\n".join([
        'export PY NNODES NPROC_PER_NODE HEAD_NODE RDZV_PORT RECIPE ROUND',
        'stamp "prepare: collect, ingest, select, build the dataset"',
        'run_step "${FLYWHEEL[@]}" train "$RECIPE" --round "$ROUND" --stage prepare --quiet || exit $?',
        '[ "$warned" = 1 ] && requeue_after_warning',
        'stamp "fit on $NNODES node(s) x $NPROC_PER_NODE process(es)"',
        _fit_command(ctx),
        'rc=$?',
        'if [ "$rc" -ne 0 ]; then',
        '    [ "$warned" = 1 ] && requeue_after_warning  # stopped at a checkpoint: the rerun resumes there',
        '    exit "$rc"',
        'fi',
        'stamp "finalize: checkpoint directory and manifest"',
        'run_step "${FLYWHEEL[@]}" train "$RECIPE" --round "$ROUND" --stage finalize --quiet || exit $?',
    ])


def render_train(ctx: Context, r: int) -> str:
    return fill_template("train.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "train", r)), "experiment": ctx.recipe.experiment,
        "round": str(r), "round4": f"{r:04d}", "nodes": str(ctx.recipe.slurm.nodes),
        "procs_per_node": str(procs_per_node(ctx.recipe)), "launcher": ctx.recipe.slurm.launcher,
        "zero_line": _zero_line(ctx.recipe), "signal_seconds": str(ctx.recipe.slurm.signal_seconds),
        "common": common_block(ctx), "rdzv_port": str(RDZV_PORT), "train_steps": _train_steps(ctx),
    })


def _eval_command(ctx: Context) -> str:
    if ctx.caps.eval_cli and ctx.caps.eval_shards:
        return 'run_step "${FLYWHEEL[@]}" eval "$RECIPE" --checkpoint "$CHECKPOINT" --shard "$SHARD/$NSHARDS"'
    # A build without sharded evaluation: element 0 evaluates the whole checkpoint, the others have nothing to do.
    return ('if [ "$SHARD" != 0 ]; then stamp "this build evaluates unsharded: element 0 does it"; '
            'set_status completed "unsharded build"; exit 0; fi\n'
            '    run_step "$PY" -m trainer.submit eval-whole "$RECIPE" --round "$ROUND"')


def render_eval(ctx: Context, r: int) -> str:
    return fill_template("eval.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "eval", r)), "experiment": ctx.recipe.experiment,
        "round": str(r), "round4": f"{r:04d}", "shards": str(ctx.recipe.slurm.eval_shards),
        "common": common_block(ctx), "eval_command": _eval_command(ctx),
    })


def render_refit(ctx: Context, r: int) -> str:
    return fill_template("refit.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "refit", r)), "experiment": ctx.recipe.experiment,
        "round": str(r), "round4": f"{r:04d}", "common": common_block(ctx),
    })


RENDER = {"train": render_train, "eval": render_eval, "refit": render_refit}


# ---- the chain ----------------------------------------------------------------------------------
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


def _status(ctx: Context, name: str) -> dict | None:
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
        states = [(_status(ctx, f"{st.name}-shard-{i}") or {}).get("state") for i in shards]
        return all(s in ("completed", "missing") for s in states)
    return (_status(ctx, st.name) or {}).get("state") == "completed"


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


def sbatch_command(script: Path, after: list[str]) -> list[str]:
    cmd = ["sbatch", "--parsable"]
    if after:
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


def _read_jobs(ctx: Context) -> dict:
    p = ctx.slurm_dir / "jobs.json"
    if not p.exists():
        return {"jobs": {}, "submissions": []}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: unreadable job record ({e}); move it away to submit afresh") from None


@contextlib.contextmanager
def _submit_lock(ctx: Context):
    """One `flywheel submit` per run directory at a time (two would both submit the missing stages)."""
    ctx.slurm_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(ctx.slurm_dir / ".submit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `flywheel submit` is submitting {ctx.run_dir}; wait for it") from None
        yield
    finally:
        os.close(fd)


JOB_LIB = "job-lib.sh"


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
    record = _read_jobs(ctx)
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


def make_context(recipe: Recipe, caps: Capabilities | None = None, workdir: Path | None = None,
                 python: str | None = None) -> Context:
    workdir = (workdir or Path.cwd()).resolve()
    run_dir = recipe.run_path()
    run_dir = run_dir if run_dir.is_absolute() else workdir / run_dir
    return Context(recipe=recipe, run_dir=run_dir, workdir=workdir, python=python or sys.executable,
                   caps=caps or detect_capabilities())


def _summary_line(decisions: list[Decision]) -> str:
    parts = []
    for d in decisions:
        mark = {"done": "done", "alive": f"kept {d.job_id}", "submit": f"submitted {d.job_id}"}[d.action]
        parts.append(f"{d.stage.name}: {mark}" + (f" after {','.join(d.after)}" if d.after and d.action == "submit" else ""))
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="flywheel submit", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")
    ap.add_argument("--rounds", type=int, default=None, help="train rounds 1..K (default: train.rounds of the recipe)")
    ap.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch lines; submit nothing")
    ap.add_argument("--fork", action="store_true", help="allow a changed recipe in an existing run directory")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"train.rounds={args.rounds}"] if args.rounds is not None else [])
    recipe = load_recipe(args.recipe, overrides)
    ctx = make_context(recipe)
    run = RunDir(ctx.run_dir)
    if args.dry_run:  # it only shows the jobs, maybe on a machine that is not the cluster
        warn_unloadable(recipe, "the jobs would stop at their start; a real submit refuses it")
        jobs = _read_jobs(ctx)["jobs"]
        alive: dict[str, str] = {}
        if jobs and shutil.which("squeue"):
            # A dry run only looks: without a reachable controller it plans as if no job were alive.
            try:
                alive = alive_jobs()
            except UserError as e:
                print(f"warning: {e}; planning as if none of the recorded jobs were alive", file=sys.stderr)
        print_dry_run(ctx, plan(ctx, run, jobs, alive))
        return 0
    if not shutil.which("sbatch"):
        raise UserError("sbatch is not on PATH: run flywheel submit on a Slurm login node (or --dry-run to see the jobs)")
    require_loadable(recipe)  # on the login node, before the run directory is written or any job queued
    with _submit_lock(ctx):
        write_resolved(recipe, ctx.run_dir, fork=args.fork)
        from trainer.round import ensure_round0

        # Round 0 (the base checkpoint) exists before its eval array starts; cheap, done here once.
        ensure_round0(recipe, run)
        decisions = plan(ctx, run, _read_jobs(ctx)["jobs"], alive_jobs())
        if not any(d.action == "submit" for d in decisions):
            print(f"nothing to submit: {_summary_line(decisions)}")
            return 0
        submit_chain(ctx, decisions)
    print(_summary_line(decisions))
    print(f"job ids: {ctx.slurm_dir / 'jobs.json'}; logs: {ctx.slurm_dir / 'logs'}; "
          f"watch: squeue -u $USER; a stopped chain leaves {ctx.slurm_dir / 'FAILED.md'}")
    return 0


# ---- job-side steps that have no other command --------------------------------------------------
def _missing_shards(ctx: Context, r: int) -> list[dict]:
    out = []
    for i in range(ctx.recipe.slurm.eval_shards):
        st = _status(ctx, f"{stage_name('eval', r)}-shard-{i}") or {}
        if st.get("state") == "missing":
            out.append({"shard": f"{i}/{ctx.recipe.slurm.eval_shards}", "reason": st.get("reason", "")})
    return out


def merge_shards(ctx: Context, run: RunDir, r: int) -> str:
    """Round r's shard results -> eval/summary.json. The last shard to finish merges them itself;
    this covers shards that finished together (each saw the other missing). A round with a missing
    shard stays unevaluated (the curve leaves it out) and the chain goes on."""
    if run.eval_summary(r) is not None:
        return "summary present"
    from eval.evaluator import merge_shards as merge, missing_shards

    n, out = ctx.recipe.slurm.eval_shards, run.round_dir(r) / "eval"
    absent = missing_shards(out, n)
    if absent:
        return f"shards {absent} of {n} missing: round {r} left unevaluated"
    merge(out, n)
    return "merged"


def refit(recipe_path: str, r: int) -> dict:
    """The refit job: merge round r's eval shards, refit the curve, rewrite report.md."""
    from trainer.loop import refresh_curve_and_report

    recipe = load_recipe(recipe_path)
    ctx = make_context(recipe, caps=Capabilities())
    run = RunDir(ctx.run_dir)
    merged = merge_shards(ctx, run, r)
    missing = _missing_shards(ctx, r)
    if missing:  # recorded next to the checkpoint, so the report's reader sees the gap
        atomic_write_json(run.round_dir(r) / "eval" / "missing_shards.json", missing)
    refresh_curve_and_report(recipe, run)
    return {"round": r, "eval": merged, "missing_shards": missing}


def eval_whole(recipe_path: str, r: int) -> dict:
    """A build without `flywheel eval --shard`: evaluate round r's checkpoint in one job."""
    from trainer.loop import evaluate_round

    recipe = load_recipe(recipe_path)
    run = RunDir(make_context(recipe, caps=Capabilities()).run_dir)
    s = evaluate_round(recipe, run, r, progress=False)
    return {"round": r, "success_rate": s.success_rate, "episodes": s.episodes}


def job_main(argv: list[str]) -> int:
    """`python -m trainer.submit refit|eval-whole RECIPE --round R` (what the rendered jobs run)."""
    ap = argparse.ArgumentParser(prog="python -m trainer.submit")
    ap.add_argument("step", choices=["refit", "eval-whole"])
    ap.add_argument("recipe")
    ap.add_argument("--round", type=int, required=True)
    args = ap.parse_args(argv)
    result = (refit if args.step == "refit" else eval_whole)(args.recipe, args.round)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from trainer.cli import _user_error_types

    try:
        sys.exit(job_main(sys.argv[1:]))
    except _user_error_types() as e:
        print(f"flywheel {sys.argv[1] if len(sys.argv) > 1 else 'job'}: error: {e}", file=sys.stderr)
        sys.exit(2)
