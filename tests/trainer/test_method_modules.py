"""A training method is one module in trainer/methods/ plus one line in METHODS: the recipe
schema (train.method's choices, the train.<method> section), the round's dataset build and
dispatch, and `flywheel dataset build --kind` all follow from the mapping. Keys that moved into a
method's section are refused with a one-line message naming the new key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from data_pipeline import builders
from data_pipeline.config import Section
from data_pipeline.errors import IngestError
from trainer.methods import METHODS
from trainer.recipe import RecipeError, load_recipe
from tests.paths import REPO

ROOT = REPO
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

# A throwaway method: its own section, a dataset through an existing builder, and a train() that
# records the call and hands back a fresh (untrained) LoRA on the base, as a method's train would.
TOY = '''
from pydantic import Field

from data_pipeline.config import Section

DATASET = "sft"
REFERENCE = True
CALLS = []


class Config(Section):
    """Toy: a method the test adds"""

    steps: int = Field(1, ge=1, description="Steps the toy method records")


def build_dataset(trajs, recipe, heldout):
    from data_pipeline.builders import build_sft

    CALLS.append(["build", len(trajs)])
    return build_sft(trajs, success_only=False, heldout=heldout)


def train(base_path, parent_adapter, dataset, cfg, seed, work_dir, learning_rate, deepspeed_config=None,
          reference_adapter=None, load=None):
    from peft import get_peft_model

    from trainer.common import load_policy_for_training

    CALLS.append(["train", cfg.method, cfg.toy.steps, len(dataset), str(reference_adapter)])
    model, _, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    return {"model": get_peft_model(model, peft_config), "steps": cfg.toy.steps}
'''

# The subprocess adds the toy module to METHODS before anything reads the mapping, as the one
# line in trainer/methods/__init__.py would, then loads a recipe and runs round 1.
SCRIPT = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import toy_method
from trainer.methods import METHODS
METHODS["toy"] = toy_method
from trainer.recipe import RecipeError, load_recipe
from trainer.recipe_docs import key_rows
from trainer.round import ensure_round0, train_round
from trainer.rundir import RunDir

recipe = load_recipe(sys.argv[2], ["train.method=toy", "train.toy.steps=3", "collect.suites=[]",
                                   "collect.logs=[" + sys.argv[3] + "]", "run_dir=" + sys.argv[4]])
try:
    load_recipe(sys.argv[2], ["train.method=toyy"])
    typo = None
except RecipeError as e:
    typo = str(e)
run = RunDir(recipe.run_path())
ensure_round0(recipe, run)
manifest = train_round(recipe, run, 1, progress=False)
print(json.dumps({"steps_key": recipe.train.toy.steps, "rows": [r[0] for r in key_rows()], "typo": typo,
                  "calls": toy_method.CALLS, "manifest": manifest.to_dict()}))
'''


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    from eval.rollout import RandomPolicy, run_episodes, write_jsonl
    from eval.suites import get_suite

    path = tmp_path_factory.mktemp("toy") / "episodes.jsonl"
    write_jsonl(run_episodes(get_suite("maze"), 1, list(range(6)), RandomPolicy(), rng_seed=1, progress=False), path)
    return path


def test_a_new_method_is_one_module_and_one_line(tmp_path, episodes):
    (tmp_path / "toy_method.py").write_text(TOY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(QUICKSTART), str(episodes),
                          str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the recipe: train.method accepts it, its section is train.toy, documented in the key table
    assert got["steps_key"] == 3
    assert {"train.toy", "train.toy.steps"} <= set(got["rows"])
    assert "'toy'" in got["typo"] and "did you mean 'toy'" in got["typo"]
    # the round: the toy builder made the dataset and the toy train() is what the round called
    m = got["manifest"]
    assert got["calls"][0] == ["build", m["trajectories_used"]] and m["trajectories_used"] == 6
    (call,) = [c for c in got["calls"] if c[0] == "train"]
    assert call[:3] == ["train", "toy", 3] and call[3] > 0
    assert call[4] == "None"  # round 0 has no adapter: the reference is the base weights
    assert m["method"] == "toy" and m["metrics"]["steps"] == 3 and m["adapter"] == "adapter"
    assert (tmp_path / "run" / "rounds" / "round-0001" / "adapter" / "adapter_model.safetensors").exists()


def test_train_method_and_sections_come_from_the_mapping():
    from trainer.config import TrainConfig
    from trainer.recipe import type_text

    assert type_text(TrainConfig.model_fields["method"].annotation) == " | ".join(repr(m) for m in METHODS)
    for name, module in METHODS.items():
        assert issubclass(module.Config, Section) and TrainConfig.model_fields[name].annotation is module.Config
        assert callable(module.build_dataset) and callable(module.train) and isinstance(module.REFERENCE, bool)
        assert callable(getattr(builders, f"build_{module.DATASET}"))
    with pytest.raises(RecipeError, match="allowed: 'sft' \\| 'kto' \\| 'dpo' \\| 'grpo'"):
        load_recipe(QUICKSTART, ["train.method=toy"])  # not in the mapping: refused


def test_dataset_kinds_come_from_the_mapping(tmp_path, monkeypatch):
    import types

    from trainer.cli.dataset import main as dataset_main

    argv = ["build", "--store", str(tmp_path / "nostore"), "--kind", "toyset", "--out", str(tmp_path / "out")]
    with pytest.raises(IngestError, match="invalid choice: 'toyset'"):
        dataset_main(argv)
    monkeypatch.setitem(METHODS, "toy", types.SimpleNamespace(DATASET="toyset"))
    with pytest.raises(IngestError, match="is not an experience store"):  # past the choices
        dataset_main(argv)
    with pytest.raises(IngestError, match="invalid choice: 'grpo'"):  # grpo's dataset kind is rl
        dataset_main([*argv[:4], "grpo", *argv[5:]])


@pytest.mark.parametrize("old, new", [("packing", "sft.packing"), ("grpo_generations", "grpo.generations")])
def test_a_moved_key_names_its_new_place(tmp_path, old, new):
    value = "true" if old == "packing" else "8"
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"base: {QUICKSTART}\nexperiment: old\ntrain:\n  {old}: {value}\n")
    with pytest.raises(RecipeError) as got:
        load_recipe(recipe)
    assert str(got.value) == f"{recipe}:4: key 'train.{old}': train.{old} moved to train.{new}"
    with pytest.raises(RecipeError) as got:
        load_recipe(QUICKSTART, [f"train.{old}={value}"])
    assert str(got.value) == f"override 'train.{old}={value}': train.{old} moved to train.{new}"
    section, key = new.split(".")
    assert getattr(getattr(load_recipe(QUICKSTART, [f"train.{new}={value}"]).train, section), key) == json.loads(value)


def test_a_run_recorded_before_the_keys_moved_resumes(tmp_path):
    """A run directory whose resolved recipe has train.grpo_generations / train.packing (written
    before they moved) resumes under the same recipe in the new layout, without --fork."""
    import yaml

    from trainer.recipe import read_resolved
    from trainer.recipe_fork import write_resolved

    recipe = load_recipe(ROOT / "recipes" / "grpo-maze.yaml", [f"run_dir={tmp_path / 'run'}", "train.sft.packing=true"])
    target = write_resolved(recipe)
    doc = yaml.safe_load(target.read_text())
    for name in METHODS:
        del doc["train"][name]
    doc["train"].update(packing=True, grpo_generations=8)
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "run" / "rounds" / "round-0001").mkdir(parents=True)  # a completed round: the recipe is locked
    (tmp_path / "run" / "rounds" / "round-0001" / "manifest.json").write_text('{"round": 1}')
    write_resolved(recipe)
    assert read_resolved(tmp_path / "run")["history"][-1]["event"] == "resume"
    with pytest.raises(RecipeError, match="train.grpo.generations: 8 -> 4"):  # a real change is still refused
        write_resolved(load_recipe(ROOT / "recipes" / "grpo-maze.yaml", [f"run_dir={tmp_path / 'run'}",
                                                                         "train.sft.packing=true",
                                                                         "train.grpo.generations=4"]))


def test_loading_a_recipe_imports_no_training_library():
    """The schema reads every method's Config, so the method modules import torch, TRL and the
    dataset builders only where they train or build: `flywheel recipe show` stays quick."""
    code = ("import sys, trainer.recipe, trainer.methods; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
