"""flywheel submit: the rendered Slurm scripts of the real-cluster recipes, the job chain and its
dependencies, resuming a chain, and that no secret reaches a script. No Slurm needed (the real-Slurm
test is tests/slurm/)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from trainer.recipe import load_recipe
from trainer.rundir import RunDir, atomic_write_json
from trainer.sbatch import make_context, render_eval, render_refit, render_train
from trainer.job_capabilities import Capabilities
from trainer.slurm_chain import Decision, plan, print_dry_run, sbatch_command
from tests.paths import REPO

ROOT = REPO
RECIPES = ROOT / "recipes"
STAGED = Capabilities(train_stages=True, eval_cli=True, eval_shards=True)
SECRET = "planted-wandb-key-0123456789abcdef"


def ctx_for(name: str, *overrides: str, tmp: Path = Path("/scratch/me"), caps: Capabilities = STAGED):
    recipe = load_recipe(RECIPES / name, list(overrides))
    return make_context(recipe, caps=caps, workdir=tmp, python="/opt/fw/bin/python")


def sbatch_opts(script: str) -> dict[str, str]:
    opts = {}
    for line in script.splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if m:
            opts[m.group(1)] = m.group(2) or ""
    return opts


# ---- training rounds of the shipped cluster recipes -----------------------------------------------
@pytest.mark.parametrize("name", ["qwen3-8b-sft.yaml", "qwen3-8b-sft-kto.yaml"])
def test_qwen3_round_is_one_node_of_eight_gpus_with_zero2(name):
    script = render_train(ctx_for(name), 1)
    opts = sbatch_opts(script)
    assert opts["nodes"] == "1" and opts["gpus-per-node"] == "8" and opts["ntasks-per-node"] == "1"
    assert "NNODES=1\n" in script and "NPROC_PER_NODE=8\n" in script
    assert re.search(r"DeepSpeed ZeRO config: (\S+/zero2\.json)", script)
    zero = Path(re.search(r"DeepSpeed ZeRO config: (\S+)", script).group(1))
    assert zero.exists() and json.loads(zero.read_text())["zero_optimization"]["stage"] == 2
    assert opts["signal"] == "B:USR1@300" and "requeue" in opts and opts["time"] == "08:00:00"


def test_llama70b_round_spans_four_nodes_with_zero3_and_a_c10d_rendezvous():
    script = render_train(ctx_for("llama3-70b-lora-zero3.yaml"), 3)
    opts = sbatch_opts(script)
    assert opts["nodes"] == "4" and opts["gpus-per-node"] == "8" and opts["mem"] == "0"
    assert "NNODES=4\n" in script and "NPROC_PER_NODE=8\n" in script
    assert 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in script
    # one torchrun per node under srun, every rank meeting at the head node
    assert 'srun --nodes="$NNODES" --ntasks-per-node=1' in script
    assert '-m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE"' in script
    assert '--rdzv_backend=c10d --rdzv_endpoint="$HEAD_NODE:$RDZV_PORT"' in script and "RDZV_PORT=29500" in script
    assert re.search(r"DeepSpeed ZeRO config: \S+/zero3\.json \(train\.deepspeed=zero3\)", script)
    assert opts["signal"] == "B:USR1@900" and opts["time"] == "1-00:00:00"
    assert "ROUND=3\n" in script and "round-0003/manifest.json" in script


def test_round_runs_prepare_once_then_fit_on_every_rank_then_finalize():
    script = render_train(ctx_for("llama3-70b-lora-zero3.yaml"), 1)
    prepare = script.index("--stage prepare")
    fit = script.index("--stage fit")
    finalize = script.index("--stage finalize")
    assert prepare < fit < finalize
    # prepare and finalize run once on the batch node, not under srun
    assert "srun" not in script[script.rindex("\n", 0, prepare):prepare]
    assert "srun" not in script[script.rindex("\n", 0, finalize):finalize]


def test_deepspeed_launcher_starts_each_nodes_ranks_from_a_hostfile():
    script = render_train(ctx_for("llama3-70b-lora-zero3.yaml", "slurm.launcher=deepspeed"), 1)
    assert "-m deepspeed.launcher.runner" in script and "torch.distributed.run" not in script
    assert '--no_ssh --node_rank="$SLURM_NODEID"' in script and '--master_addr="$HEAD_NODE"' in script
    assert 'slots=$NPROC_PER_NODE' in script and "--module trainer.cli train" in script


def test_cpu_round_uses_train_nproc_processes():
    script = render_train(ctx_for("quickstart.yaml", "train.nproc=2"), 1)
    assert "gpus-per-node" not in sbatch_opts(script) and "NPROC_PER_NODE=2\n" in script
    assert "DeepSpeed: none" in script


def test_build_without_train_stages_runs_the_whole_round_in_one_command():
    script = render_train(ctx_for("quickstart.yaml", caps=Capabilities(train_stages=False)), 1)
    assert "--stage" not in script and '"${FLYWHEEL[@]}" train "$RECIPE" --round "$ROUND"' in script


# ---- evaluation array and refit -------------------------------------------------------------------
def test_eval_array_has_one_element_per_shard_and_one_gpu_each():
    script = render_eval(ctx_for("llama3-70b-lora-zero3.yaml"), 2)
    opts = sbatch_opts(script)
    assert opts["array"] == "0-7" and opts["gpus-per-node"] == "1" and opts["nodes"] == "1"
    assert 'eval "$RECIPE" --checkpoint "$CHECKPOINT" --shard "$SHARD/$NSHARDS"' in script
    assert "NSHARDS=8\n" in script and 'CHECKPOINT="$RUN_DIR/rounds/round-0002"' in script
    assert "for attempt in 1 2" in script and "set_status missing" in script  # retried once, then missing
    assert opts["output"].endswith("eval-round-0002-shard-%a-%A_%a.out")


def test_refit_merges_and_refits_on_one_cpu():
    script = render_refit(ctx_for("qwen3-8b-sft.yaml"), 4)
    opts = sbatch_opts(script)
    assert opts["cpus-per-task"] == "1" and "gpus-per-node" not in opts
    assert "-m trainer.cli.submit refit" in script and "ROUND=4\n" in script


@pytest.mark.parametrize("name", ["qwen3-8b-sft.yaml", "qwen3-8b-sft-kto.yaml", "llama3-70b-lora-zero3.yaml",
                                  "quickstart.yaml"])
def test_rendered_scripts_are_valid_bash(name, tmp_path):
    ctx = ctx_for(name, "slurm.launcher=deepspeed" if "70b" in name else "slurm.launcher=torchrun")
    for i, text in enumerate([render_train(ctx, 1), render_eval(ctx, 1), render_refit(ctx, 1),
                              (ROOT / "slurm" / "job-lib.sh").read_text()]):
        path = tmp_path / f"s{i}.sh"
        path.write_text(text)
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


# ---- environment and secrets ----------------------------------------------------------------------
def test_setup_lines_and_venv_come_first_and_pick_the_jobs_python():
    ctx = ctx_for("qwen3-8b-sft.yaml", 'slurm.setup=["module load cuda/12.4", "conda activate base"]',
                  "slurm.venv=/shared/fw-venv", "slurm.partition=gpu", "slurm.account=team",
                  'slurm.extra_sbatch=["--exclusive", "#SBATCH --constraint=h100"]')
    script = render_train(ctx, 1)
    lines = script.splitlines()
    assert lines.index("module load cuda/12.4") < lines.index("conda activate base") < \
        lines.index("source /shared/fw-venv/bin/activate") < lines.index("PY=python")
    opts = sbatch_opts(script)
    assert opts["partition"] == "gpu" and opts["account"] == "team" and "exclusive" in opts
    assert opts["constraint"] == "h100"


def test_no_secret_reaches_scripts_or_dry_run_output(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.chdir(tmp_path)
    from trainer.cli.submit import main

    assert main([str(RECIPES / "llama3-70b-lora-zero3.yaml"), "--rounds", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=4" in out and SECRET not in out
    ctx = ctx_for("qwen3-8b-sft.yaml", "tracking.wandb.mode=online")
    for text in (render_train(ctx, 1), render_eval(ctx, 1), render_refit(ctx, 1)):
        assert SECRET not in text and "WANDB_API_KEY=" not in text
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_dry_run_without_a_reachable_controller_plans_and_warns(monkeypatch, tmp_path, capsys):
    """A login node whose slurmctld is down: the dry run still prints the chain, and says it could not
    ask which recorded jobs are alive."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    squeue = bindir / "squeue"
    squeue.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    run_dir = tmp_path / "run"
    ctx = ctx_for("quickstart.yaml", f"run_dir={run_dir}", "train.rounds=1")
    atomic_write_json(ctx.slurm_dir / "jobs.json", {"jobs": {"eval-round-0000": {"job_id": "7"}}, "submissions": []})
    from trainer.cli.submit import main

    assert main([str(RECIPES / "quickstart.yaml"), f"run_dir={run_dir}", "--rounds", "1", "--dry-run"]) == 0
    cap = capsys.readouterr()
    assert "Unable to contact slurm controller" in cap.err and "planning as if none" in cap.err
    assert any(ln.startswith("sbatch ") and "eval-round-0000" in ln for ln in cap.out.splitlines())


# ---- the chain --------------------------------------------------------------------------------------
def _sbatch_lines(ctx, decisions, capsys) -> list[str]:
    print_dry_run(ctx, decisions)
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("sbatch ")]


def test_chain_orders_train_eval_refit_per_round_with_afterok(tmp_path, capsys):
    ctx = ctx_for("qwen3-8b-sft.yaml", f"run_dir={tmp_path / 'run'}", "train.rounds=2")
    decisions = plan(ctx, RunDir(ctx.run_dir), {}, {})
    assert [d.stage.name for d in decisions] == [
        "eval-round-0000", "refit-round-0000", "train-round-0001", "eval-round-0001", "refit-round-0001",
        "train-round-0002", "eval-round-0002", "refit-round-0002"]
    assert all(d.action == "submit" for d in decisions)
    lines = _sbatch_lines(ctx, decisions, capsys)
    assert "--dependency" not in lines[0]
    for line, before in zip(lines[1:], [d.stage.name for d in decisions]):
        assert f"--dependency=afterok:<{before}>" in line and "--kill-on-invalid-dep=yes" in line
    assert all(line.startswith("sbatch --parsable") for line in lines)


def _complete_round(run: RunDir, r: int, with_eval: bool = True) -> None:
    run.round_dir(r).mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.round_dir(r) / "manifest.json", {"round": r})
    if with_eval:
        atomic_write_json(run.round_dir(r) / "eval" / "summary.json", {"success_rate": 0.5})


def test_rerun_skips_finished_stages_and_keeps_live_jobs(tmp_path):
    ctx = ctx_for("quickstart.yaml", f"run_dir={tmp_path / 'run'}", "train.rounds=3")
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0)
    _complete_round(run, 1)
    for r in (0, 1):
        atomic_write_json(ctx.slurm_dir / "status" / f"refit-round-{r:04d}.json", {"state": "completed"})
    # round 2 trained, its eval array still running; the refit after it pending on it
    _complete_round(run, 2, with_eval=False)
    recorded = {"eval-round-0002": {"job_id": "41"}, "refit-round-0002": {"job_id": "42"},
                "train-round-0003": {"job_id": "43"}}  # 43 died (not alive): it must be submitted again
    decisions = {d.stage.name: d for d in plan(ctx, run, recorded, {"41": "RUNNING", "42": "PENDING"})}
    assert [n for n, d in decisions.items() if d.action == "done"] == [
        "eval-round-0000", "refit-round-0000", "train-round-0001", "eval-round-0001", "refit-round-0001",
        "train-round-0002"]
    assert decisions["eval-round-0002"].action == "alive" and decisions["refit-round-0002"].action == "alive"
    again = decisions["train-round-0003"]
    assert again.action == "submit" and again.after == ["42"]  # after the live refit, by its real id
    assert decisions["eval-round-0003"].after == ["<train-round-0003>"]


def test_eval_stage_is_done_when_every_shard_finished_or_is_missing(tmp_path):
    ctx = ctx_for("quickstart.yaml", f"run_dir={tmp_path / 'run'}", "train.rounds=1", "slurm.eval_shards=2")
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0, with_eval=False)
    status = ctx.slurm_dir / "status"
    atomic_write_json(status / "eval-round-0000-shard-0.json", {"state": "completed"})

    def eval0() -> Decision:
        return plan(ctx, run, {}, {})[0]

    assert eval0().action == "submit"
    atomic_write_json(status / "eval-round-0000-shard-1.json", {"state": "missing"})
    assert eval0().action == "done"


def test_sbatch_command_without_dependencies_is_plain():
    assert sbatch_command(Path("/r/x.sbatch"), []) == ["sbatch", "--parsable", "/r/x.sbatch"]
    assert sbatch_command(Path("/r/x.sbatch"), ["7", "8"])[2] == "--dependency=afterok:7:8"


# ---- the job scripts' own behaviour, run with bash outside Slurm --------------------------------------
def _write_job(ctx, text: str, name: str) -> Path:
    ctx.slurm_dir.mkdir(parents=True, exist_ok=True)
    (ctx.slurm_dir / "job-lib.sh").write_text((ROOT / "slurm" / "job-lib.sh").read_text())
    path = ctx.slurm_dir / name
    path.write_text(text)
    return path


def test_failed_round_stops_the_chain_with_a_readable_reason(tmp_path):
    ctx = ctx_for("quickstart.yaml", f"run_dir={tmp_path / 'run'}", tmp=tmp_path)
    script = _write_job(ctx, render_train(ctx, 1), "train-round-0001.sbatch")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)  # no recipe.resolved.yaml: `flywheel train` fails
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "localhost", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    failed = (ctx.slurm_dir / "FAILED.md").read_text()
    assert failed.startswith("# The chain stopped: train-round-0001 failed with exit code")
    assert "flywheel submit" in failed and "777" in failed
    status = json.loads((ctx.slurm_dir / "status" / "train-round-0001.json").read_text())
    assert status["state"] == "failed" and status["slurm_job_id"] == "777"
