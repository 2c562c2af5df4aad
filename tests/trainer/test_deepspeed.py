"""One SFT round under DeepSpeed ZeRO-2 with 2 processes (torchrun, gloo on the CPU) trains, step
by step, like the single-process round with the same global batch and seed: 2 ranks x batch 4
against 1 process x batch 8, the training loss within 1% at every step."""
import json
from pathlib import Path

import pytest

from _round_fixtures import write_maze_episodes, write_recipe
from trainer.cli import main as cli
from trainer.round import deepspeed_config_path
from trainer.rundir import RunDir


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_named_configs_ship_with_auto_values_for_the_trainer_to_fill(name):
    path = Path(deepspeed_config_path(name))
    config = json.loads(path.read_text())
    assert config["zero_optimization"]["stage"] == int(name[-1])
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"  # filled from the recipe's train.* by the HF integration
    assert deepspeed_config_path("none") is None


@pytest.mark.slow  # two rounds, one of them under torchrun; the first run ever builds DeepSpeed's CPU comm op (~30 s)
def test_zero2_two_processes_matches_single_process_step_by_step(tmp_path, capfd):
    episodes = write_maze_episodes(tmp_path / "maze.jsonl", per_difficulty=8)  # 32 trajectories: 4 steps of 8
    single = write_recipe(tmp_path / "single.yaml", tmp_path / "single", episodes, batch_size=8)
    zero2 = write_recipe(tmp_path / "zero2.yaml", tmp_path / "zero2", episodes, batch_size=4, nproc=2,
                         deepspeed="zero2")
    assert cli(["train", str(single), "--quiet"]) == 0
    assert cli(["train", str(zero2), "--quiet"]) == 0
    one, two = RunDir(tmp_path / "single").manifest(1), RunDir(tmp_path / "zero2").manifest(1)
    loss1, loss2 = one["metrics"]["loss_history"], two["metrics"]["loss_history"]
    assert len(loss1) == len(loss2) == 4
    for step, (a, b) in enumerate(zip(loss1, loss2), start=1):
        assert abs(a - b) <= 0.01 * abs(a), f"step {step}: single {a:.5f} vs ZeRO-2 x2 {b:.5f}"
    assert loss2[-1] < loss2[0]  # it trained
    assert one["tokens_trained"] == two["tokens_trained"] > 0  # the ranks' counts add up to the same batches
    assert "'loss'" not in capfd.readouterr().out
