"""Purity and resume on the CPU: the same round from the same inputs gives an adapter with
identical bytes, in another run directory too; and a round killed with SIGKILL mid-training
(after an intra-round checkpoint) and rerun resumes from that checkpoint and gives the same bytes
as an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _round_fixtures import REPO, write_maze_episodes, write_recipe
from trainer.common import complete_checkpoints
from trainer.recipe import load_recipe
from trainer.round import ensure_round0, train_round
from trainer.rundir import RunDir, dir_checksums


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    return write_maze_episodes(tmp_path_factory.mktemp("episodes") / "maze.jsonl", per_difficulty=8)


def _round(tmp_path, name, episodes, *overrides):
    recipe = load_recipe(write_recipe(tmp_path / f"{name}.yaml", tmp_path / name, episodes), list(overrides))
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)
    return recipe, run


def test_same_round_twice_gives_identical_adapter_bytes(tmp_path, episodes):  # 3 short rounds
    sums = []
    for name in ("a", "b"):  # two run directories: nothing of the run's own path may leak in
        recipe, run = _round(tmp_path, name, episodes, "train.lora.dropout=0.1")
        train_round(recipe, run, 1, progress=False)
        sums.append(dir_checksums(run.round_dir(1) / "adapter"))
    assert sums[0] == sums[1]
    assert set(sums[0]) == {"adapter_config.json", "adapter_model.safetensors"}
    # a third run, with another seed, differs: the comparison above can fail
    recipe, run = _round(tmp_path, "c", episodes, "train.lora.dropout=0.1", "seed=1")
    train_round(recipe, run, 1, progress=False)
    assert dir_checksums(run.round_dir(1) / "adapter")["adapter_model.safetensors"] != sums[0]["adapter_model.safetensors"]


def _train_cli(recipe_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "trainer.cli", "train", str(recipe_path), "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three `flywheel train` processes, one of them killed
def test_round_killed_mid_training_resumes_to_the_same_adapter(tmp_path, episodes):
    small_steps = dict(batch_size=2, save_steps=3, max_steps=12)  # checkpoints at steps 3, 6, 9, 12
    whole = write_recipe(tmp_path / "whole.yaml", tmp_path / "whole", episodes, **small_steps)
    killed = write_recipe(tmp_path / "killed.yaml", tmp_path / "killed", episodes, **small_steps)

    proc = _train_cli(killed)
    work = RunDir(tmp_path / "killed").work_dir(1)
    deadline = time.time() + 300
    while not complete_checkpoints(work) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert complete_checkpoints(work), "the round finished (or stalled) before its first intra-round checkpoint"
    assert RunDir(tmp_path / "killed").manifest(1) is None  # it really died mid-round

    rerun = _train_cli(killed)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    uninterrupted = _train_cli(whole)
    out2, err2 = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err2

    m_killed, m_whole = RunDir(tmp_path / "killed").manifest(1), RunDir(tmp_path / "whole").manifest(1)
    assert m_killed["metrics"]["resumed_from_step"] >= 3 and m_whole["metrics"]["resumed_from_step"] == 0
    assert m_killed["metrics"]["steps"] == m_whole["metrics"]["steps"] == 12
    assert m_killed["metrics"]["loss_history"] == m_whole["metrics"]["loss_history"]
    assert m_killed["tokens_trained"] == m_whole["tokens_trained"] > 0
    assert (dir_checksums(RunDir(tmp_path / "killed").round_dir(1) / "adapter")
            == dir_checksums(RunDir(tmp_path / "whole").round_dir(1) / "adapter"))
    assert json.loads(out.strip().splitlines()[-1])["round"] == 1
