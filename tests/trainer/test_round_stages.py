"""`flywheel train` in stages (prepare -> fit -> finalize) on the tiny model: each stage leaves
what the next one reads, a finished round is never rerun, the output is quiet (one bar, no
printed dict per step), trained tokens are counted, and a diverged round writes no checkpoint,
keeps the parent current and records why."""
import json

import pytest

from _round_fixtures import write_maze_episodes, write_recipe
from trainer.cli import main as cli
from trainer.recipe import load_recipe
from trainer.round import ensure_round0, failure_path, train_round
from trainer.rundir import RunDir


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    return write_maze_episodes(tmp_path_factory.mktemp("episodes") / "maze.jsonl", per_difficulty=6)


def test_stages_leave_what_the_next_one_reads_and_a_finished_round_is_never_rerun(tmp_path, episodes, capsys):
    recipe_path = write_recipe(tmp_path / "r.yaml", tmp_path / "run", episodes)
    run = RunDir(tmp_path / "run")
    assert cli(["train", str(recipe_path), "--stage", "prepare", "--quiet"]) == 0
    work = run.work_dir(1)
    selection = json.loads((work / "selection.json").read_text())
    assert selection["rows"] == selection["trajectories_used"] == 24 and (work / "dataset").is_dir()
    assert run.manifest(1) is None

    assert cli(["train", str(recipe_path), "--stage", "fit"]) == 0
    out = capsys.readouterr()
    assert "'loss'" not in out.out and "{'" not in out.out  # no printed dict per logged step
    assert "train" in out.err and "loss=" in out.err  # one bar, the loss in its postfix
    fit = json.loads((work / "fit.json").read_text())
    assert sorted(p.name for p in (work / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert fit["steps"] == 3 and len(fit["loss_history"]) == 3
    # trained tokens = assistant tokens (a move word + end of turn per step), fewer than all tokens
    assert 0 < fit["tokens_trained"] < 24 * 200
    assert run.manifest(1) is None

    assert cli(["train", str(recipe_path), "--stage", "finalize"]) == 0
    m = run.manifest(1)
    assert m["adapter"] == "adapter" and m["tokens_trained"] == fit["tokens_trained"]
    assert m["metrics"]["loss_history"] == fit["loss_history"] and m["seed"] == selection["seed"]
    assert not work.exists() and (run.round_dir(1) / "adapter" / "adapter_model.safetensors").exists()
    config = json.loads((run.round_dir(1) / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"  # no run-directory path in the adapter

    # a finished round is never rerun: every stage returns at once and leaves no work dir behind
    before = (run.round_dir(1) / "manifest.json").read_bytes()
    for stage in ("prepare", "fit", "finalize", "all"):
        assert cli(["train", str(recipe_path), "--round", "1", "--stage", stage, "--quiet"]) == 0
    assert (run.round_dir(1) / "manifest.json").read_bytes() == before and not work.exists()


def test_fit_and_finalize_without_the_previous_stage_are_clear_errors(tmp_path, episodes, capsys):
    recipe_path = write_recipe(tmp_path / "r.yaml", tmp_path / "run", episodes)
    assert cli(["train", str(recipe_path), "--stage", "finalize", "--round", "1"]) == 2
    assert "--stage prepare" in capsys.readouterr().err
    assert cli(["train", str(recipe_path), "--stage", "fit", "--round", "1"]) == 2
    assert "no prepared data" in capsys.readouterr().err


def test_only_fit_runs_under_a_distributed_launch(tmp_path, episodes, capsys, monkeypatch):
    recipe_path = write_recipe(tmp_path / "r.yaml", tmp_path / "run", episodes)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli(["train", str(recipe_path), "--stage", "prepare"]) == 2
    assert "only `--stage fit`" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["train.grad_norm_limit=1e-9", "train.learning_rate=1e12"])
def test_a_diverged_round_keeps_the_parent_and_records_why(tmp_path, episodes, capsys, override):
    recipe_path = write_recipe(tmp_path / "r.yaml", tmp_path / "run", episodes, save_steps=1)
    assert cli(["train", str(recipe_path), override, "--quiet"]) == 2
    err = capsys.readouterr().err
    run = RunDir(tmp_path / "run")
    record = json.loads(failure_path(run, 1).read_text())
    assert "round 1 stopped" in err and str(failure_path(run, 1)) in err and "Traceback" not in err
    assert ("gradient norm" in record["reason"]) if "grad_norm" in override else ("loss" in record["reason"] or
                                                                                  "gradient norm" in record["reason"])
    assert run.completed_rounds() == [0] and not run.round_dir(1).exists()  # the parent stays current
    assert not list(run.work_dir(1).glob("checkpoint-*"))  # a rerun starts from the parent, not the path to nan

    if "learning_rate" in override:
        return
    # a sane rerun of the same round succeeds and clears the record
    recipe = load_recipe(recipe_path)
    train_round(recipe, run, 1, progress=False)
    assert run.completed_rounds() == [0, 1] and not failure_path(run, 1).exists()


@pytest.mark.slow  # two rounds
def test_packing_keeps_assistant_only_loss(tmp_path, episodes):
    """train.sft.packing packs trajectories padding-free; the loss still covers exactly the assistant
    tokens the unpacked round trains on (same count), and the round trains."""
    manifests = {}
    for packing in (False, True):
        name = f"packing-{packing}"
        recipe = load_recipe(write_recipe(tmp_path / f"{name}.yaml", tmp_path / name, episodes, sft={"packing": packing},
                                          batch_size=2, max_length=1024))
        run = RunDir(recipe.run_path())
        ensure_round0(recipe, run)
        manifests[packing] = train_round(recipe, run, 1, progress=False)
    unpacked, packed = manifests[False], manifests[True]
    assert packed["tokens_trained"] == unpacked["tokens_trained"] > 0
    assert packed["metrics"]["steps"] < unpacked["metrics"]["steps"]  # fewer, fuller batches
    assert packed["metrics"]["loss_history"][-1] < packed["metrics"]["loss_history"][0]
