"""flywheel submit --every / --stop and flywheel status, without Slurm: duration parsing, the plan of a
period's chain, the --begin time, the next-period hand-over and the stop file, the skip of a round
with nothing new in the rendered job scripts (run with bash), and the status rendered from a run's
own files. The Slurm commands the hand-over and --stop call (sbatch, squeue, scancel) are small
scripts on PATH that record what they were asked; the real cluster is tests/slurm/test_periodic_slurm.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from trainer.errors import UserError
from trainer.periodic import (STOP_FILE, Period, Schedule, begin_arg, format_duration, next_period, parse_duration,
                              period_commands, period_plan, refuse_second_chain, stop, stop_message)
from trainer.recipe import load_recipe
from trainer.rundir import RunDir, atomic_write_json
from trainer.sbatch import make_context, render_eval, render_refit, render_train
from trainer.job_capabilities import Capabilities
from trainer.status import render_status, run_status
from tests.paths import REPO

STAGED = Capabilities(train_stages=True, eval_cli=True, eval_shards=True)


# ---- durations and --begin -----------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("6h", 21600), ("1d", 86400), ("1w", 604800),
                                          ("1h30m", 5400), (" 2D ", 172800), ("60s", 60)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "0s", "0m0s", "-1m", "1.5h", "m5", "1 d", "1d-", "daily", "1h 30m"])
def test_durations_are_parsed_strictly_with_a_clear_error(text):
    with pytest.raises(UserError, match="--every"):
        parse_duration(text)


def test_durations_format_back():
    assert [format_duration(s) for s in (90, 60, 86400, 5400, 0)] == ["1m30s", "1m", "1d", "1h30m", "0s"]


def test_begin_is_local_time_never_before_the_instant_and_none_when_past():
    now = 1_800_000_000.0
    at = now + 600.4
    arg = begin_arg(at, now)
    assert arg == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(at) + 1))  # rounded up, never early
    assert time.mktime(time.strptime(arg, "%Y-%m-%dT%H:%M:%S")) >= at
    assert begin_arg(now - 1, now) is None and begin_arg(now, now) is None  # overdue: the job may start at once


# ---- a period's chain --------------------------------------------------------------------------------
def periodic_ctx(tmp_path: Path, *overrides: str):
    import dataclasses

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [f"run_dir={tmp_path / 'run'}", *overrides])
    ctx = make_context(recipe, caps=STAGED, workdir=tmp_path, python="/opt/fw/bin/python")
    return dataclasses.replace(ctx, periodic=True)


def _complete_round(run: RunDir, r: int, with_eval: bool = True) -> None:
    atomic_write_json(run.round_dir(r) / "manifest.json", {"round": r})
    if with_eval:
        atomic_write_json(run.round_dir(r) / "eval" / "summary.json",
                          {"success_rate": 0.25 + 0.1 * r, "ci95": [0.1, 0.5], "episodes": 20})


def test_first_period_evaluates_round0_then_trains_round1_and_hands_over(tmp_path):
    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0, with_eval=False)
    jobs = period_plan(ctx, run, 1)
    assert [j.name for j in jobs] == ["eval-round-0000", "refit-round-0000", "train-round-0001", "eval-round-0001",
                                      "refit-round-0001", "next-period-0001"]
    assert [j.after for j in jobs] == [None] + [j.name for j in jobs[:-1]]
    assert [j.after_any for j in jobs] == [False] * 5 + [True]


def test_later_period_trains_the_next_round_and_a_skipped_round_is_retried(tmp_path):
    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    for r in (0, 1):
        _complete_round(run, r)
        atomic_write_json(ctx.slurm_dir / "status" / f"refit-round-{r:04d}.json", {"state": "completed"})
    # period 3 found nothing new for round 2: its prepare recorded the skip, no checkpoint
    atomic_write_json(run.root / "rounds" / "round-0002.skipped.json", {"round": 2, "reason": "nothing new"})
    jobs = period_plan(ctx, run, 4)
    assert [j.name for j in jobs] == ["train-round-0002", "eval-round-0002", "refit-round-0002", "next-period-0004"]
    assert jobs[0].after is None


def test_period_sbatch_lines_begin_first_afterok_chain_and_afterany_hand_over(tmp_path):
    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0)
    atomic_write_json(ctx.slurm_dir / "status" / "refit-round-0000.json", {"state": "completed"})
    jobs = period_plan(ctx, run, 2)
    cmds = period_commands(ctx, jobs, "2030-01-02T03:04:05", ids={"train-round-0001": "11", "eval-round-0001": "12",
                                                                  "refit-round-0001": "13"})
    assert cmds[0][:3] == ["sbatch", "--parsable", "--begin=2030-01-02T03:04:05"] and "--dependency" not in " ".join(cmds[0])
    assert all("--begin" not in " ".join(c) for c in cmds[1:])
    assert "--dependency=afterok:11" in cmds[1] and "--kill-on-invalid-dep=yes" in cmds[1]
    assert "--dependency=afterok:12" in cmds[2]
    assert cmds[3][2:] == ["--dependency=afterany:13", str(ctx.slurm_dir / "next-period-0002.sbatch")]


# ---- the hand-over and --stop, with recording stand-ins for sbatch / squeue / scancel ------------------
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch answers ids 101, 102, ... and logs its arguments; squeue prints slurm/squeue.txt; scancel logs."""
    bin_dir, state = tmp_path / "fake-bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    state.mkdir()
    scripts = {
        "sbatch": f'echo "$*" >> {state}/sbatch.log; echo $((100 + $(wc -l < {state}/sbatch.log)))',
        "squeue": f'cat {state}/squeue.txt 2>/dev/null; true',
        "scancel": f'echo "$*" >> {state}/scancel.log',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    class Fake:
        def sbatch_calls(self) -> list[str]:
            p = state / "sbatch.log"
            return p.read_text().splitlines() if p.exists() else []

        def scancel_calls(self) -> list[str]:
            p = state / "scancel.log"
            return p.read_text().splitlines() if p.exists() else []

        def queue(self, states: dict[str, str]) -> None:
            (state / "squeue.txt").write_text("".join(f"{i}|{s}\n" for i, s in states.items()))

    return Fake()


def _recipe_file(tmp_path: Path) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text((REPO / "recipes" / "quickstart.yaml").read_text() + f"run_dir: {tmp_path / 'run'}\n")
    return p


def _schedule(ctx, begin: float, every_s: int = 600, jobs: dict | None = None) -> Schedule:
    s = Schedule(every=format_duration(every_s), every_s=every_s, recipe="r.yaml", started_at=begin,
                 periods=[Period(period=1, round=1, begin=begin, submitted_at=begin, jobs=jobs or {
                     "train-round-0001": "51", "eval-round-0001": "52", "refit-round-0001": "53",
                     "next-period-0001": "54"})])
    s.write(ctx.slurm_dir)
    return s


def test_next_period_queues_exactly_one_period_at_the_previous_begin_plus_every(tmp_path, fake_slurm):
    recipe = _recipe_file(tmp_path)
    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0)
    _complete_round(run, 1)
    atomic_write_json(ctx.slurm_dir / "status" / "refit-round-0000.json", {"state": "completed"})
    begin1 = time.time() + 3600  # period 1 was planned for an hour from now: period 2 begins at +1h10m
    _schedule(ctx, begin1)
    out = next_period(str(recipe), 1)
    calls = fake_slurm.sbatch_calls()
    assert [c.split()[-1].rsplit("/", 1)[-1] for c in calls] == [
        "train-round-0002.sbatch", "eval-round-0002.sbatch", "refit-round-0002.sbatch", "next-period-0002.sbatch"]
    assert f"--begin={begin_arg(begin1 + 600)}" in calls[0].split()
    assert "--dependency=afterok:101" in calls[1] and "--dependency=afterany:103" in calls[3]
    sched = Schedule.read(ctx.slurm_dir)
    assert [p.period for p in sched.periods] == [1, 2] and sched.periods[1].round == 2
    assert sched.periods[1].begin == begin1 + 600 and sched.periods[1].jobs["train-round-0002"] == "101"
    assert "queued period 2 (round 2)" in out["note"] and sched.notes[-1].endswith(out["note"])
    for name in ("train-round-0002", "next-period-0002"):
        assert (ctx.slurm_dir / f"{name}.sbatch").exists()
    assert "skip_if_round_skipped" in (ctx.slurm_dir / "train-round-0002.sbatch").read_text()
    # the same hand-over again (a requeued next-period job) queues nothing more: never two periods
    again = next_period(str(recipe), 1)
    assert len(fake_slurm.sbatch_calls()) == 4 and "queued already" in again["note"]


def test_an_overdue_period_begins_at_once(tmp_path, fake_slurm):
    recipe = _recipe_file(tmp_path)
    ctx = periodic_ctx(tmp_path)
    _complete_round(RunDir(ctx.run_dir), 0)
    atomic_write_json(ctx.slurm_dir / "status" / "refit-round-0000.json", {"state": "completed"})
    _schedule(ctx, time.time() - 3600)  # the round took longer than the period
    out = next_period(str(recipe), 1)
    assert "--begin" not in fake_slurm.sbatch_calls()[0] and "at once" in out["note"]


def test_the_stop_file_ends_the_schedule_at_the_next_hand_over(tmp_path, fake_slurm):
    recipe = _recipe_file(tmp_path)
    ctx = periodic_ctx(tmp_path)
    _complete_round(RunDir(ctx.run_dir), 0)
    _schedule(ctx, time.time())
    (ctx.slurm_dir / STOP_FILE).write_text("stopped\n")
    out = next_period(str(recipe), 1)
    assert fake_slurm.sbatch_calls() == [] and "stopped" in out["note"]
    assert len(Schedule.read(ctx.slurm_dir).periods) == 1


def test_stop_cancels_a_period_that_has_not_started(tmp_path, fake_slurm):
    ctx = periodic_ctx(tmp_path)
    _schedule(ctx, time.time() + 60)
    fake_slurm.queue({"51": "PENDING", "52": "PENDING", "53": "PENDING", "54": "PENDING", "999": "RUNNING"})
    result = stop(str(ctx.run_dir))
    assert fake_slurm.scancel_calls() == ["51 52 53 54"]
    assert result["cancelled"] == {"train-round-0001": "51", "eval-round-0001": "52", "refit-round-0001": "53",
                                   "next-period-0001": "54"}
    assert (ctx.slurm_dir / STOP_FILE).exists()
    sched = Schedule.read(ctx.slurm_dir)
    assert sched.stopped_at is not None and sched.cancelled == result["cancelled"] and sched.next_begin() is None
    msg = stop_message(result)
    assert "no new period will be queued" in msg and "train-round-0001 51" in msg


def test_stop_lets_a_running_round_finish_and_cancels_only_the_hand_over(tmp_path, fake_slurm):
    ctx = periodic_ctx(tmp_path)
    _schedule(ctx, time.time() - 60)
    fake_slurm.queue({"51": "RUNNING", "52": "PENDING", "53": "PENDING", "54": "PENDING"})
    result = stop(str(ctx.run_dir))
    assert fake_slurm.scancel_calls() == ["54"] and result["cancelled"] == {"next-period-0001": "54"}
    assert result["running"] == {"train-round-0001": "RUNNING", "eval-round-0001": "PENDING",
                                 "refit-round-0001": "PENDING"}
    assert "left to finish" in stop_message(result)


def test_stop_without_a_schedule_says_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="--every"):
        stop(str(tmp_path / "run"))


def test_a_plain_submit_refuses_a_second_chain_beside_a_live_periodic_one(tmp_path, fake_slurm):
    ctx = periodic_ctx(tmp_path)
    _schedule(ctx, time.time())
    fake_slurm.queue({"54": "PENDING"})
    with pytest.raises(UserError, match="--stop"):
        refuse_second_chain(ctx)
    fake_slurm.queue({})
    refuse_second_chain(ctx)  # the chain is over: a plain submit may go on


# ---- a round with nothing new, in the rendered job scripts (bash, outside Slurm) -------------------------
def _stub_python(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "stub-python"
    p.write_text(f"#!/bin/bash\necho \"stub python $*\" >> {tmp_path}/python-calls.log\n{body}\n")
    p.chmod(0o755)
    return p


def _run_job(ctx, name: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    ctx.slurm_dir.mkdir(parents=True, exist_ok=True)
    (ctx.slurm_dir / "job-lib.sh").write_text((REPO / "slurm" / "job-lib.sh").read_text())
    script = ctx.slurm_dir / name
    script.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "localhost", "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def _job_state(ctx, name: str) -> dict:
    return json.loads((ctx.slurm_dir / "status" / f"{name}.json").read_text())


def test_a_round_with_nothing_new_ends_its_jobs_well_without_consuming_the_round(tmp_path):
    import dataclasses

    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0)
    skipped = run.root / "rounds" / "round-0001.skipped.json"
    # prepare finds nothing new: it records the skip and exits 2, as a RoundSkipped error does
    py = _stub_python(tmp_path, f'case "$*" in *"--stage prepare"*) echo \'{{"round": 1}}\' > {skipped}; exit 2;; '
                                f'*) exit 1;; esac')
    ctx = dataclasses.replace(ctx, python=str(py))
    out = _run_job(ctx, "train-round-0001.sbatch", render_train(ctx, 1), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _job_state(ctx, "train-round-0001")["state"] == "skipped"
    assert "--stage fit" not in (tmp_path / "python-calls.log").read_text()  # nothing trained
    for name, render in (("eval-round-0001", render_eval), ("refit-round-0001", render_refit)):
        out = _run_job(ctx, f"{name}.sbatch", render(ctx, 1), tmp_path)  # the stub fails any real step
        assert out.returncode == 0, out.stdout + out.stderr
        state = _job_state(ctx, f"{name}-shard-0" if name.startswith("eval") else name)
        assert state["state"] == "skipped" and "nothing new" in state["reason"]
    assert not (ctx.slurm_dir / "FAILED.md").exists() and run.completed_rounds() == [0]
    # the round number is not consumed: the next period trains round 1 again
    assert [j.name for j in period_plan(ctx, run, 3) if j.kind == "train"] == ["train-round-0001"]


def test_an_old_skip_record_does_not_hide_a_failing_prepare(tmp_path):
    import dataclasses

    ctx = periodic_ctx(tmp_path)
    run = RunDir(ctx.run_dir)
    _complete_round(run, 0)
    skipped = run.root / "rounds" / "round-0001.skipped.json"
    atomic_write_json(skipped, {"round": 1})
    old = time.time() - 3600
    os.utime(skipped, (old, old))  # left by an earlier period
    ctx = dataclasses.replace(ctx, python=str(_stub_python(tmp_path, "exit 3")))
    out = _run_job(ctx, "train-round-0001.sbatch", render_train(ctx, 1), tmp_path)
    assert out.returncode == 3
    assert _job_state(ctx, "train-round-0001")["state"] == "failed" and (ctx.slurm_dir / "FAILED.md").exists()


def test_a_plain_chain_never_treats_a_failure_as_a_skip(tmp_path):
    import dataclasses

    ctx = dataclasses.replace(periodic_ctx(tmp_path), periodic=False)
    script = render_train(ctx, 1)
    assert "skip_if_round_skipped" not in script
    assert "skip_if_round_skipped" not in render_eval(ctx, 1) and "skip_if_round_skipped" not in render_refit(ctx, 1)


# ---- flywheel status from the run's own files --------------------------------------------------------------
def _status_run(tmp_path: Path, resolved: str = "experiment: x\n") -> Path:
    root = tmp_path / "run"
    run = RunDir(root)
    for r in (0, 1, 2):
        _complete_round(run, r, with_eval=r < 2)
    (root / "recipe.resolved.yaml").write_text(resolved)
    return root


def test_status_without_slurm_shows_recorded_jobs_schedule_round_verdict_and_promoted(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue, no sacct: a laptop, not the cluster
    root = _status_run(tmp_path)
    slurm = root / "slurm"
    begin = time.time() + 30
    Schedule(every="90s", every_s=90, recipe="r.yaml", started_at=begin - 90, periods=[
        Period(period=2, round=3, begin=begin, submitted_at=begin - 80,
               jobs={"train-round-0003": "201", "eval-round-0003": "202", "next-period-0002": "204"})],
        notes=["... period 1: queued period 2 (round 3)"]).write(slurm)
    atomic_write_json(slurm / "status" / "train-round-0003.json", {"state": "running"})
    atomic_write_json(slurm / "status" / "eval-round-0003-shard-0.json", {"state": "completed"})
    atomic_write_json(root / "promotion" / "round-0002.json", {"round": 2, "promoted": False,
                                                               "reason": "score 0.2 < 0.35 - margin"})
    atomic_write_json(root / "promoted" / "PROMOTED.json", {"round": 1, "adapter": "adapter"})
    st = run_status(root)
    text = render_status(st)
    assert "no Slurm reachable" in st["jobs_from"]
    assert [(j["name"], j["job_id"], j["state"]) for j in st["jobs"]] == [
        ("train-round-0003", "201", "running"), ("eval-round-0003", "202", "completed"),
        ("next-period-0002", "204", "unknown")]
    assert "schedule: every 1m30s, running; period 2 (round 3)" in text
    assert "next period begins no earlier than" in text and "last hand-over" in text
    assert "last round: 2" in text and "held-out score (round 1): success 35.0% [10.0%, 50.0%]" in text
    assert "promotion: round 2 rejected: score 0.2 < 0.35 - margin" in text
    assert "promoted checkpoint: round 1" in text
    assert "new log records waiting: the recipe has no collect.logs" in text


def test_status_of_a_stopped_schedule_and_logs_waiting(tmp_path, monkeypatch, fake_slurm):
    root = _status_run(tmp_path, "experiment: x\ncollect:\n  logs: [logs/]\n")
    ctx_slurm = root / "slurm"
    Schedule(every="1d", every_s=86400, recipe="r.yaml", started_at=0.0, stopped_at=time.time(),
             cancelled={"train-round-0003": "301"},
             periods=[Period(period=4, round=3, begin=time.time() + 100, submitted_at=0.0,
                             jobs={"train-round-0003": "301"})]).write(ctx_slurm)
    fake_slurm.queue({})  # squeue answers, the job is gone
    line = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    (root / "logs").mkdir()
    (root / "logs" / "agent.jsonl").write_text(line * 2 + line[:20])  # two complete lines, one half-written
    st = run_status(root)
    text = render_status(st)
    assert "every 1d, stopped" in text and "next period" not in text and "cancelled by --stop: train-round-0003 301" in text
    assert st["jobs"][0]["state"] == "cancelled by --stop" and st["jobs_from"].startswith("squeue")
    assert "promotion: no verdict" in text and "promoted checkpoint: none" in text
    assert st["logs"]["pending"] == {"files": 1, "bytes": 2 * len(line), "records": 2,
                                       "waiting_sessions": 0}


def test_status_and_submit_commands_answer_in_one_line(tmp_path, capsys):
    from trainer.cli import main

    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["submit", str(REPO / "recipes" / "quickstart.yaml"), "--every", "daily"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a duration" in err
    root = _status_run(tmp_path)
    assert main(["status", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_round"]["round"] == 2


def test_stop_on_a_machine_without_slurm_still_ends_the_schedule_and_says_so(tmp_path, monkeypatch):
    ctx = periodic_ctx(tmp_path)
    _schedule(ctx, time.time() + 60)
    monkeypatch.setenv("PATH", "/nonexistent")
    result = stop(str(ctx.run_dir))
    assert result["cancelled"] == {} and (ctx.slurm_dir / STOP_FILE).exists()
    assert "no squeue on this machine" in stop_message(result)


def test_status_of_a_plain_chain_reads_its_job_record(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    root = _status_run(tmp_path)
    atomic_write_json(root / "slurm" / "jobs.json", {"jobs": {"train-round-0002": {"job_id": "9"},
                                                              "refit-round-0002": {"job_id": "11"}}})
    atomic_write_json(root / "slurm" / "status" / "train-round-0002.json", {"state": "completed"})
    text = render_status(run_status(root))
    assert "schedule: none (not submitted with --every)" in text
    assert re.search(r"train-round-0002\s+9\s+completed", text) and re.search(r"refit-round-0002\s+11\s+unknown", text)
    assert text.index("train-round-0002") < text.index("refit-round-0002")  # in submission order


def test_dry_run_prints_the_first_periods_scripts_and_sbatch_lines(tmp_path, capsys):
    from trainer.periodic import submit_every

    recipe = _recipe_file(tmp_path)
    assert submit_every(str(recipe), every="90s", dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.startswith("# period 1 of quickstart, every 1m30s")
    lines = [ln for ln in out.splitlines() if ln.startswith("sbatch ")]
    assert [ln.split()[-1].rsplit("/", 1)[-1] for ln in lines] == [
        "eval-round-0000.sbatch", "refit-round-0000.sbatch", "train-round-0001.sbatch", "eval-round-0001.sbatch",
        "refit-round-0001.sbatch", "next-period-0001.sbatch"]
    assert "--dependency=afterany:<refit-round-0001>" in lines[-1]
    assert "trainer.cli.submit next-period" in out and "skip_if_round_skipped" in out
    assert not (tmp_path / "run" / "slurm" / "schedule.json").exists()  # a dry run records nothing


def test_periodic_scripts_are_valid_bash(tmp_path):
    from trainer.sbatch import render_next

    ctx = periodic_ctx(tmp_path)
    for name, text in (("train", render_train(ctx, 2)), ("eval", render_eval(ctx, 2)), ("refit", render_refit(ctx, 2)),
                       ("next", render_next(ctx, 3))):
        path = tmp_path / f"{name}.sbatch"
        path.write_text(text)
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stderr}"
    next_script = render_next(ctx, 3)
    assert "JOB=next-period-0003" in next_script and '--period "$PERIOD"' in next_script
    assert "--output=" in next_script and "next-period-0003-%j.out" in next_script
