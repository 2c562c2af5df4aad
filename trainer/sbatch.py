"""The job scripts of `flywheel submit`: sbatch headers and bodies rendered from the templates in
slurm/ for one stage (train, eval array, refit) of one round. Which round runs when is
trainer/slurm_chain.py; the command is trainer/submit.py."""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainer.recipe import Recipe
from trainer.job_capabilities import Capabilities, detect_capabilities

CODE_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = CODE_ROOT / "slurm"
RDZV_PORT = 29500
JOB_LIB = "job-lib.sh"  # the shell library every script sources (copied into RUN_DIR/slurm/)


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
    periodic: bool = False  # a period of `flywheel submit --every`: a round with nothing new is skipped, not failed

    @property
    def slurm_dir(self) -> Path:
        return self.run_dir / "slurm"


def stage_name(stage: str, r: int) -> str:
    """The job's name in RUN_DIR/slurm/: train/eval/refit-round-XXXX; next-period-XXXX (a period, not a round)."""
    return f"next-period-{r:04d}" if stage == "next" else f"{stage}-round-{r:04d}"


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
    else:  # refit, next (a period's last job): a few seconds of CPU
        lines += [f"--output={logs}/{stage_name(stage, r)}-%j.out", "--nodes=1", "--ntasks=1",
                  "--cpus-per-task=1", f"--time={s.time_eval}", "--requeue"]
    if s.mem is not None and stage not in ("refit", "next"):
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
    prepare = 'run_step "${FLYWHEEL[@]}" train "$RECIPE" --round "$ROUND" --stage prepare --quiet'
    # A period of `submit --every` whose round has nothing new: prepare stops and records the skip;
    # the job then ends well (the round's eval and refit are no-ops, the next period is queued).
    prepare += ' || { rc=$?; skip_if_round_skipped; exit "$rc"; }' if ctx.periodic else ' || exit $?'
    return "\n".join([
        'export PY NNODES NPROC_PER_NODE HEAD_NODE RDZV_PORT RECIPE ROUND',
        'stamp "prepare: collect, ingest, select, build the dataset"',
        prepare,
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


def _skip_check(ctx: Context) -> str:
    """Eval and refit of a period's round that was skipped (nothing new): a no-op that ends well."""
    return "skip_if_round_skipped" if ctx.periodic else "# (not periodic: a round is never skipped)"


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
            '    run_step "$PY" -m trainer.cli.submit eval-whole "$RECIPE" --round "$ROUND"')


def render_eval(ctx: Context, r: int) -> str:
    return fill_template("eval.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "eval", r)), "experiment": ctx.recipe.experiment,
        "round": str(r), "round4": f"{r:04d}", "shards": str(ctx.recipe.slurm.eval_shards),
        "common": common_block(ctx), "eval_command": _eval_command(ctx), "skip_check": _skip_check(ctx),
    })


def render_refit(ctx: Context, r: int) -> str:
    return fill_template("refit.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "refit", r)), "experiment": ctx.recipe.experiment,
        "round": str(r), "round4": f"{r:04d}", "common": common_block(ctx), "skip_check": _skip_check(ctx),
    })


def render_next(ctx: Context, period: int) -> str:
    """The last job of period `period` of `flywheel submit --every`: queue the next period (unless stopped)."""
    return fill_template("next.sbatch", {
        "sbatch_lines": "\n".join(sbatch_lines(ctx, "next", period)), "experiment": ctx.recipe.experiment,
        "period": str(period), "period4": f"{period:04d}", "common": common_block(ctx),
    })


RENDER = {"train": render_train, "eval": render_eval, "refit": render_refit, "next": render_next}


def make_context(recipe: Recipe, caps: Capabilities | None = None, workdir: Path | None = None,
                 python: str | None = None) -> Context:
    workdir = (workdir or Path.cwd()).resolve()
    run_dir = recipe.run_path()
    run_dir = run_dir if run_dir.is_absolute() else workdir / run_dir
    return Context(recipe=recipe, run_dir=run_dir, workdir=workdir, python=python or sys.executable,
                   caps=caps or detect_capabilities())

