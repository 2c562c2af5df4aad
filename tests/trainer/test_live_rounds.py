"""Rounds that learn from live logs (collect.logs) on the tiny model: a round over logs only trains
on exactly what is new, a round with nothing new is skipped with its marker (and `flywheel run`
stops there cleanly, resuming when logs arrive), logs without interaction time put the curve on
episodes, recipe paths resolve against the recipe's folder, and a recipe without a collect section
collects nothing."""
import json
import time
from pathlib import Path

import pytest
import yaml

from trainer.cli import main as cli
from trainer.recipe import RecipeError, load_recipe
from trainer.round import RoundSkipped, collect, ensure_round0, prepare_round, skipped_path, train_round
from trainer.rundir import RunDir


def maze_logs(path: Path, offset: int, n: int = 6, timed: bool = True) -> list[dict]:
    """`n` random-walk maze episodes (training seeds from `offset`) appended to `path` as flywheel
    JSONL, outcomes included; `timed=False` strips every time field (logs without timestamps)."""
    from eval.rollout import RandomPolicy, run_episodes
    from eval.suites import get_suite

    suite = get_suite("maze")
    trajs = run_episodes(suite, 1, suite.train_seeds(n, offset=offset), RandomPolicy(), batch_size=n, rng_seed=offset,
                         progress=False)
    rows = []
    for t in trajs:
        d = t.to_dict()
        if not timed:
            d.update(started_at=None, ended_at=None, duration_s=None)
            for m in d["messages"]:
                m["duration_s"] = None
        rows.append(d)
    with open(path, "a") as f:
        f.writelines(json.dumps(d) + "\n" for d in rows)
    return rows


def logs_recipe(folder: Path, model: Path, rounds: int = 1, **collect) -> Path:
    """A recipe in `folder` that learns from `folder/logs` only (a path relative to the recipe)."""
    doc = {"experiment": "live", "run_dir": str(folder / "run"), "model": {"name_or_path": str(model)},
           "collect": {"logs": ["logs"], **collect},
           "data": {"success_only": False},
           "train": {"rounds": rounds, "max_steps": 1, "batch_size": 4, "max_length": 256, "lora": {"r": 4, "alpha": 8}},
           "eval": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 4}], "policy": {"batch_size": 4}},
           "curve": {"bootstrap": 0}, "tracking": {"wandb": {"mode": "disabled"}}}
    (folder / "logs").mkdir(exist_ok=True)
    path = folder / "live.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_rounds_over_logs_only_train_on_what_is_new_and_an_empty_round_is_skipped(tmp_path, tiny_model_dir):
    recipe = load_recipe(logs_recipe(tmp_path, tiny_model_dir))
    log = tmp_path / "logs" / "agent.jsonl"
    maze_logs(log, offset=0)
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)
    m1 = train_round(recipe, run, 1, progress=False)
    assert m1.logs["files"] == 1 and (m1.logs["read"], m1.logs["accepted"], m1.logs["duplicates"]) == (6, 6, 0)
    assert m1.trajectories_used == 6 and m1.adapter == "adapter" and m1.cumulative_episodes == 6
    assert m1.cumulative_interaction_hours > 0  # the logs' own durations

    with pytest.raises(RoundSkipped, match=r"nothing new.*collect\.logs"):
        train_round(recipe, run, 2, progress=False)
    marker = json.loads(skipped_path(run, 2).read_text())
    assert marker["round"] == 2 and "nothing new" in marker["reason"] and marker["at"] > 0
    assert run.manifest(2) is None and not run.work_dir(2).exists()  # no round number used

    maze_logs(log, offset=100, n=4)  # the next wave of the deployment, appended
    m2 = train_round(recipe, run, 2, progress=False)
    assert (m2.logs["read"], m2.logs["accepted"]) == (4, 4) and len(m2.new_batches) == 1
    assert m2.cumulative_episodes == 10 and not skipped_path(run, 2).exists()


def test_when_empty_replay_trains_on_older_experience(tmp_path, tiny_model_dir):
    recipe = load_recipe(logs_recipe(tmp_path, tiny_model_dir, when_empty="replay"))
    maze_logs(tmp_path / "logs" / "agent.jsonl", offset=0, n=4)
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)
    prepare_round(recipe, run, 1, progress=False)
    # round 1's fit is a stand-in adapter (round 2's choice of data does not depend on it)
    from trainer.round import ADAPTER, ADAPTER_FILES, FIT_RESULT, finalize_round
    from trainer.rundir import atomic_write_json

    (run.work_dir(1) / ADAPTER).mkdir()
    for name in ADAPTER_FILES:
        (run.work_dir(1) / ADAPTER / name).write_text(name)
    atomic_write_json(run.work_dir(1) / FIT_RESULT, {"rows": 4, "learning_rate": 1e-3})
    finalize_round(recipe, run, 1)
    sel = prepare_round(recipe, run, 2, progress=False)
    assert sel.new_batches == [] and sel.trajectories_used == 4 and sel.logs["read"] == 0


@pytest.mark.slow  # two `flywheel run`s: 3 evaluations, 2 rounds; ~25 s of wall time on 2 busy cores
def test_flywheel_run_stops_cleanly_on_a_round_with_nothing_new_and_resumes(tmp_path, tiny_model_dir, capsys):
    recipe_path = logs_recipe(tmp_path, tiny_model_dir, rounds=2)
    log = tmp_path / "logs" / "agent.jsonl"
    maze_logs(log, offset=0, timed=False)  # logs without timestamps or durations
    assert cli(["run", str(recipe_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "round 2: nothing new" in out and "report:" in out
    run = RunDir(tmp_path / "run")
    assert run.completed_rounds() == [0, 1] and skipped_path(run, 2).exists()
    report = run.report.read_text()
    assert "x-axis is episodes" in report and "no interaction time" in report
    curve = json.loads((run.curve / "curve.json").read_text())
    assert curve["x_axis"] == "episodes"
    assert cli(["curve", str(run.root), "--json", "--quiet"]) == 1  # `flywheel curve` falls back alike (1: two points, no fit yet)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["x_axis"] == "episodes" and "x-axis is episodes" in captured.err

    maze_logs(log, offset=100, n=4, timed=False)
    assert cli(["run", str(recipe_path), "--quiet"]) == 0
    assert run.completed_rounds() == [0, 1, 2] and not skipped_path(run, 2).exists()
    assert run.manifest(2).logs["read"] == 4 and run.manifest(2).cumulative_episodes == 10


def test_recipe_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "held.txt").write_text("live/t1\n")
    (folder / "suite.yaml").write_text("name: mine\ntasks: [a]\ncommand: 'true'\n")
    (folder / "r.yaml").write_text(yaml.safe_dump({
        "experiment": "paths", "run_dir": "runs/here", "model": {"name_or_path": "tiny"},
        "ingest": {"heldout_tasks_file": "held.txt"},
        "collect": {"logs": ["../logs/*.jsonl", "/abs/logs"]},
        "eval": {"suites": [{"name": "suite.yaml"}, {"name": "maze"}]}}))
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the working directory does not matter, except for run_dir
    r = load_recipe(folder / "r.yaml")
    assert r.collect.logs == [str(tmp_path / "logs" / "*.jsonl"), "/abs/logs"]
    assert r.ingest.heldout_tasks_file == str(folder / "held.txt")
    assert [s.name for s in r.eval.suites] == [str(folder / "suite.yaml"), "maze"]
    assert r.run_dir == "runs/here" and r.run_path().resolve() == (other / "runs" / "here").resolve()


def test_ingest_sources_moved_to_collect_logs(tmp_path):
    (tmp_path / "r.yaml").write_text("experiment: x\nmodel: {name_or_path: tiny}\ningest: {sources: [logs]}\n")
    with pytest.raises(RecipeError, match="ingest.sources moved to collect.logs"):
        load_recipe(tmp_path / "r.yaml")


def test_ingest_score_picks_the_inspect_scorer_of_a_rounds_logs(tmp_path):
    """ingest.score / ingest.score_range are `flywheel ingest --score / --score-range` for the round's
    collect.logs: inspect's .eval fixture (scorers match, parts, points on 0-10) read by round 1 gets
    the points outcome, mapped from 0-10; a malformed value is a recipe error naming the key."""
    from data_pipeline.store import ExperienceStore
    from trainer.round import collect_logs
    from tests.paths import TESTS

    log = TESTS / "fixtures" / "inspect" / "arith_zstd.eval"
    outcomes = {}
    for name, ingest in (("first", {}), ("points", {"score": "points", "score_range": "0:10"})):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "experiment": name, "run_dir": str(tmp_path / name), "model": {"name_or_path": "tiny"},
            "collect": {"logs": [str(log)], "suites": []}, "ingest": ingest}))
        store = ExperienceStore(tmp_path / name / "store")
        counts = collect_logs(load_recipe(tmp_path / f"{name}.yaml"), store, 1, progress=False)
        # 4 samples: 3 accepted, the one whose solver raised quarantined with its error
        assert (counts["read"], counts["accepted"], counts["quarantined"]) == (4, 3, 1)
        outcomes[name] = {t.task_id.split("/")[-1]: (t.outcome.score, t.outcome.success) for t in store.trajectories()}
    assert outcomes["first"] == {"plain": (0.0, False), "fewshot": (1.0, True), "tools": (1.0, True)}  # match
    assert outcomes["points"] == {"plain": (0.2, False), "fewshot": (0.7, False), "tools": (0.7, False)}
    (tmp_path / "bad.yaml").write_text("experiment: x\nmodel: {name_or_path: tiny}\ningest: {score: 'a:'}\n")
    with pytest.raises(RecipeError, match="ingest.score': 'a:': expected NAME or NAME:KEY"):
        load_recipe(tmp_path / "bad.yaml")
    # the recipe key reads a score choice as flywheel ingest --score does: NAME, then KEY up to the end
    from data_pipeline.adapters.inspect_ai import ScoreOptions

    (tmp_path / "ok.yaml").write_text("experiment: x\nmodel: {name_or_path: tiny}\ningest: {score: 'a:b:c'}\n")
    parsed = ScoreOptions.parse(load_recipe(tmp_path / "ok.yaml").ingest.score)
    assert (parsed.scorer, parsed.key) == ("a", "b:c") == (ScoreOptions.parse("a:b:c").scorer, "b:c")
    (tmp_path / "bad.yaml").write_text("experiment: x\nmodel: {name_or_path: tiny}\ningest: {score_range: '10:0'}\n")
    with pytest.raises(RecipeError, match="ingest.score_range.*LO must be below HI"):
        load_recipe(tmp_path / "bad.yaml")


def test_a_recipe_without_a_collect_section_collects_nothing(tmp_path):
    (tmp_path / "r.yaml").write_text(f"experiment: x\nrun_dir: {tmp_path / 'run'}\nmodel: {{name_or_path: tiny}}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.collect.suites == [] and recipe.collect.logs == []
    run = RunDir(recipe.run_path())
    parent = {"round": 0, "base_model": str(tmp_path / "base"), "adapter": None}
    assert collect(recipe, run, 1, parent, progress=False) is None
    from trainer.rundir import atomic_write_json

    atomic_write_json(run.round_dir(0) / "manifest.json", {**parent, "batches_seen": [], "checksums": {}})
    with pytest.raises(RoundSkipped, match="collect.logs names no logs and collect.suites is empty"):
        prepare_round(recipe, run, 1, progress=False)
    assert not run.experience.exists() or not list(run.experience.iterdir())  # no maze episodes


def test_a_round_killed_after_its_ingest_still_counts_what_it_read(tmp_path, tiny_model_dir, monkeypatch):
    """The round's logs counts come from the store's batches of that round, so a rerun after a crash
    between the ingest and the selection (the logs are in; nothing new is left to read) reports
    what the first attempt read, and nothing is read twice."""
    from trainer.methods import METHODS

    recipe = load_recipe(logs_recipe(tmp_path, tiny_model_dir))
    maze_logs(tmp_path / "logs" / "agent.jsonl", offset=0, n=5)
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while building the dataset")

    with monkeypatch.context() as mp:
        mp.setattr(METHODS["sft"], "build_dataset", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare_round(recipe, run, 1, progress=False)
    maze_logs(tmp_path / "logs" / "agent.jsonl", offset=50, n=2)  # more arrives before the rerun
    sel = prepare_round(recipe, run, 1, progress=False)
    assert (sel.logs["read"], sel.logs["accepted"], sel.logs["duplicates"]) == (7, 7, 0)
    assert sel.trajectories_used == 7 and len(sel.new_batches) == 2


KILLED_PREPARE = r'''
import sys, time
from pathlib import Path
from data_pipeline.adapters import flywheel
from trainer.cli import main

real_read, seen = flywheel.read, [0]

def slow_read(path):  # the real adapter, stopping for good after `stop_after` records
    for rec in real_read(path):
        seen[0] += 1
        if seen[0] == int(sys.argv[2]):
            Path(sys.argv[3]).write_text("in the middle")
            time.sleep(600)
        yield rec

flywheel.read = slow_read
main(["train", sys.argv[1], "--round", "2", "--stage", "prepare", "--quiet"])
'''


@pytest.mark.slow  # three rounds and a killed `flywheel train` process: ~30 s of wall time on 2 busy cores
def test_exactly_once_across_appends_rotation_a_half_line_and_a_killed_round(tmp_path, tiny_model_dir):
    """Three waves of a deployment into a log folder, a round after each; round 2's ingest is
    SIGKILLed midway (a real `flywheel train --stage prepare` process) and rerun. The store holds
    every record once, and the rounds' manifests add up to what was written."""
    import os
    import signal
    import subprocess
    import sys

    from data_pipeline.store import ExperienceStore
    from paths import REPO

    recipe_path = logs_recipe(tmp_path, tiny_model_dir, rounds=3)
    recipe = load_recipe(recipe_path)
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)
    a, b = tmp_path / "logs" / "a.jsonl", tmp_path / "logs" / "b.jsonl"
    written = maze_logs(a, offset=0, n=4)
    fifth = maze_logs(tmp_path / "fifth.jsonl", offset=4, n=1)  # the line the agent is in the middle of writing
    line = (tmp_path / "fifth.jsonl").read_text()
    with open(a, "a") as f:
        f.write(line[:40])
    assert train_round(recipe, run, 1, progress=False).logs["read"] == 4

    with open(a, "a") as f:  # wave 2: the line completed, one more, then the file rotated and new ones begun
        f.write(line[40:])
    written += fifth + maze_logs(a, offset=5, n=1)
    os.rename(a, a.with_name("a.jsonl.1"))
    written += maze_logs(a, offset=6, n=2) + maze_logs(b, offset=8, n=2)
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PREPARE, str(recipe_path), "3", str(marker)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    try:
        deadline = time.time() + 180
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "round 2's ingest never reached its third record"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not run.work_dir(2).joinpath("selection.json").exists()
    m2 = train_round(recipe, run, 2, progress=False)
    assert (m2.logs["read"], m2.logs["accepted"], m2.logs["duplicates"], m2.logs["files"]) == (6, 6, 0, 3)

    written += maze_logs(b, offset=10, n=1)  # wave 3: an append to an open file
    m3 = train_round(recipe, run, 3, progress=False)
    assert (m3.logs["read"], m3.logs["accepted"]) == (1, 1)

    store = ExperienceStore(run.store)
    episodes = store.table(columns=["episode_id"]).column("episode_id").to_pylist()
    assert sorted(episodes) == sorted(d["episode_id"] for d in written) and len(set(episodes)) == 11
    manifests = [run.manifest(r) for r in (1, 2, 3)]
    assert sum(m.logs["read"] for m in manifests) == sum(m.logs["accepted"] for m in manifests) == len(written)


def test_the_tasks_of_an_external_heldout_suite_are_held_out_of_training(tmp_path):
    from trainer.round import heldout_spec

    (tmp_path / "suite.yaml").write_text("name: mine\ncommand: python3 h.py --task {task_id} --out {out}\n"
                                         "tasks: [ticket-7, ticket-9]\n")
    (tmp_path / "r.yaml").write_text("experiment: x\nmodel: {name_or_path: tiny}\neval:\n  suites: [{name: suite.yaml}]\n")
    spec = heldout_spec(load_recipe(tmp_path / "r.yaml"))
    assert spec.matches("ticket-7") and spec.matches("ticket-9") and not spec.matches("ticket-8")
