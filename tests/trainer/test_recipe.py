"""Recipes: every shipped YAML loads, inheritance and overrides resolve as documented, recipes never
run code, and the run directory refuses a different recipe unless asked to fork."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from trainer.cli import main as flywheel
from trainer.recipe import RESOLVED_NAME, Recipe, RecipeError, code_version, load_recipe, read_resolved
from trainer.recipe_fork import write_resolved
from tests.paths import REPO

ROOT = REPO
RECIPES = ROOT / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))
MINIMAL = "experiment: quick\nmodel:\n  name_or_path: tiny\n"


def _base_chain(path: Path) -> list[str]:
    names = []
    while True:
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        if not base:
            return names
        names.append(base)
        path = path.parent / base
        if not path.exists():
            return names


@pytest.fixture
def recipe_dir(tmp_path):
    (tmp_path / "base.yaml").write_text(MINIMAL + "train:\n  rounds: 3\n  learning_rate: 0.01\n"
                                        "eval:\n  suites:\n    - {name: maze, episodes: 16}\n    - {name: maze, difficulty: 5, episodes: 8}\n")
    return tmp_path


# ---------------------------------------------------------------- the shipped recipes

@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_loads(path):
    if not (RECIPES / "quickstart.yaml").exists() and "quickstart.yaml" in _base_chain(path):
        pytest.skip("recipes/quickstart.yaml (the lead's) is not in the checkout yet")
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert re.fullmatch(r"[0-9a-f]{16}", recipe.hash())


def test_shipped_set_is_complete():
    names = {p.name for p in SHIPPED}
    assert {"qwen3-8b-sft.yaml", "qwen3-8b-sft-kto.yaml", "llama3-70b-lora-zero3.yaml",
            "grpo-maze.yaml", "study-quickstart.yaml"} <= names


def test_real_cluster_recipes_ask_for_the_right_machines():
    qwen = load_recipe(RECIPES / "qwen3-8b-sft-kto.yaml")
    llama = load_recipe(RECIPES / "llama3-70b-lora-zero3.yaml")
    assert qwen.model.name_or_path == "Qwen/Qwen3-8B" and llama.model.name_or_path == "meta-llama/Llama-3.3-70B-Instruct"
    assert (qwen.slurm.nodes, qwen.slurm.gpus_per_node, qwen.train.deepspeed) == (1, 8, "zero2")
    assert (llama.slurm.nodes, llama.slurm.gpus_per_node, llama.train.deepspeed) == (4, 8, "zero3")
    assert qwen.train.method == "kto" and qwen.data.success_only is False  # KTO needs the failures
    for r in (qwen, llama):
        assert r.model.dtype == "bfloat16" and not r.model.trust_remote_code


def test_kto_recipe_changes_only_what_differs_from_its_base():
    sft = load_recipe(RECIPES / "qwen3-8b-sft.yaml").resolved_dict()
    kto = load_recipe(RECIPES / "qwen3-8b-sft-kto.yaml").resolved_dict()
    assert kto["slurm"] == sft["slurm"] and kto["model"] == sft["model"] and kto["eval"] == sft["eval"]
    assert kto["train"]["lora"] == sft["train"]["lora"]


def test_study_and_grpo_recipes(tmp_path):
    folder = RECIPES
    if not (RECIPES / "quickstart.yaml").exists():  # until the lead's quickstart lands: a minimal stand-in
        folder = tmp_path
        (tmp_path / "quickstart.yaml").write_text(MINIMAL)
        for name in ("study-quickstart.yaml", "grpo-maze.yaml"):
            (tmp_path / name).write_text((RECIPES / name).read_text())
    study = load_recipe(folder / "study-quickstart.yaml")
    assert [a.kind for a in study.study.arms] == ["accumulate", "latest", "retry", "reset", "memory",
                                                  "accumulate+memory", "accumulate"]
    assert study.study.arms[-1].overrides == ["collect.curriculum=adaptive", "collect.suites.0.episodes=1024"]
    assert len(study.study.seeds) >= 2
    grpo = load_recipe(folder / "grpo-maze.yaml")
    assert grpo.train.method == "grpo" and "maze" in [s.name for s in grpo.collect.suites]


def test_check_of_the_recipes_folder(capsys):
    if not (RECIPES / "quickstart.yaml").exists():
        pytest.skip("recipes/quickstart.yaml (the lead's) is not in the checkout yet")
    assert flywheel(["recipe", "check", str(RECIPES)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok    ") == len(SHIPPED)


# ---------------------------------------------------------------- inheritance

def test_child_changes_only_what_differs(recipe_dir):
    (recipe_dir / "child.yaml").write_text("base: base.yaml\nexperiment: child\ntrain:\n  rounds: 7\n")
    r = load_recipe(recipe_dir / "child.yaml")
    assert r.experiment == "child" and r.train.rounds == 7
    assert r.train.learning_rate == 0.01  # merged key by key inside a section
    assert r.model.name_or_path == "tiny" and len(r.eval.suites) == 2
    assert r.base is None  # resolved: the chain is recorded in sources, not in the hashed recipe
    assert r.sources == [str(recipe_dir / "base.yaml"), str(recipe_dir / "child.yaml")]


def test_lists_replace_whole(recipe_dir):
    (recipe_dir / "child.yaml").write_text("base: base.yaml\neval:\n  suites:\n    - {name: maze, episodes: 4}\n")
    r = load_recipe(recipe_dir / "child.yaml")
    assert [(s.name, s.episodes, s.difficulty) for s in r.eval.suites] == [("maze", 4, 1)]


def test_chain_of_bases_in_other_folders(recipe_dir):
    (recipe_dir / "a").mkdir()
    (recipe_dir / "a" / "mid.yaml").write_text("base: ../base.yaml\ntrain:\n  method: kto\n  rounds: 4\n")
    (recipe_dir / "a" / "b").mkdir()
    (recipe_dir / "a" / "b" / "top.yaml").write_text("base: ../mid.yaml\nexperiment: top\ntrain:\n  rounds: 9\n")
    r = load_recipe(recipe_dir / "a" / "b" / "top.yaml")
    assert (r.experiment, r.train.method, r.train.rounds, r.train.learning_rate) == ("top", "kto", 9, 0.01)
    assert len(r.sources) == 3


def test_same_recipe_same_hash_and_defaults_fill_in(recipe_dir):
    (recipe_dir / "copy.yaml").write_text((recipe_dir / "base.yaml").read_text() + "seed: 0\ncurve: {}\n")
    assert load_recipe(recipe_dir / "copy.yaml").hash() == load_recipe(recipe_dir / "base.yaml").hash()
    assert load_recipe(recipe_dir / "base.yaml", ["seed=1"]).hash() != load_recipe(recipe_dir / "base.yaml").hash()


def test_error_in_a_base_names_the_base_and_the_child(recipe_dir):
    (recipe_dir / "bad_base.yaml").write_text(MINIMAL + "train:\n  learning_rate: -1\n")
    (recipe_dir / "child.yaml").write_text("base: bad_base.yaml\nexperiment: child\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe_dir / "child.yaml")
    assert f"{recipe_dir / 'bad_base.yaml'}:5 (base of {recipe_dir / 'child.yaml'})" in str(e.value)


def test_child_fixing_a_base_value_is_fine(recipe_dir):
    (recipe_dir / "bad_base.yaml").write_text(MINIMAL + "train:\n  learning_rate: -1\n")
    (recipe_dir / "child.yaml").write_text("base: bad_base.yaml\ntrain:\n  learning_rate: 0.1\n")
    assert load_recipe(recipe_dir / "child.yaml").train.learning_rate == 0.1


def test_self_base_is_a_cycle(tmp_path):
    (tmp_path / "me.yaml").write_text("base: me.yaml\n" + MINIMAL)
    with pytest.raises(RecipeError, match=r"me.yaml:1: key 'base': cycle of base recipes"):
        load_recipe(tmp_path / "me.yaml")


def test_several_problems_are_all_reported(tmp_path):
    (tmp_path / "r.yaml").write_text(MINIMAL + "seed: x\ntrain:\n  rounds: -1\n  epoch: 2\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "r.yaml")
    assert len(e.value.problems) == 3
    assert {"'seed'", "'train.rounds'", "'train.epoch'"} == {re.search(r"key ('[^']+')", p).group(1) for p in e.value.problems}


# ---------------------------------------------------------------- overrides

@pytest.mark.parametrize("override, read, expected", [
    ("train.rounds=7", lambda r: r.train.rounds, 7),
    ("train.learning_rate=5e-4", lambda r: r.train.learning_rate, 5e-4),  # YAML 1.1 reads 5e-4 as text; the schema makes it a float
    ("train.learning_rate=0.5", lambda r: r.train.learning_rate, 0.5),
    ("data.success_only=false", lambda r: r.data.success_only, False),
    ("model.name_or_path=Qwen/Qwen3-8B", lambda r: r.model.name_or_path, "Qwen/Qwen3-8B"),
    ("tracking.wandb.tags=[a, b]", lambda r: r.tracking.wandb.tags, ["a", "b"]),
    ("slurm.setup=[export A=1, module load cuda]", lambda r: r.slurm.setup, ["export A=1", "module load cuda"]),
    ("slurm.partition=", lambda r: r.slurm.partition, None),
    ("eval.suites.1.episodes=3", lambda r: (r.eval.suites[0].episodes, r.eval.suites[1].episodes), (16, 3)),
    ("train.lora={r: 4, alpha: 8}", lambda r: (r.train.lora.r, r.train.lora.alpha), (4, 8)),
    ("experiment='123'", lambda r: r.experiment, "123"),
])
def test_override_values(recipe_dir, override, read, expected):
    assert read(load_recipe(recipe_dir / "base.yaml", [override])) == expected


def test_later_override_wins_over_file_and_earlier_override(recipe_dir):
    r = load_recipe(recipe_dir / "base.yaml", ["train.rounds=4", "train.rounds=6"])
    assert r.train.rounds == 6
    assert r.sources[-2:] == ["override 'train.rounds=4'", "override 'train.rounds=6'"]


@pytest.mark.parametrize("override, message", [
    ("train.lerning_rate=0.1", "unknown key 'lerning_rate' in section 'train'; did you mean 'learning_rate'?"),
    ("learning_rate=0.1", "did you mean 'train.learning_rate'?"),
    ("train.rounds", "expected key.path=value"),
    ("=3", "expected key.path=value"),
    ("base=other.yaml", "'base' can only be set inside a recipe file"),
    ("eval.suites.5.episodes=3", "'eval.suites' has 2 item(s); index 5 does not exist"),
    ("train.rounds.x=3", "'train.rounds' is not a section"),
    ("train.rounds=[1", "value is not valid YAML"),
    ("train.rounds=-2", "override 'train.rounds=-2': key 'train.rounds': must be at least 0"),
    ("seed=!!python/object/apply:os.system ['true']", "value is not valid YAML"),
])
def test_bad_overrides(recipe_dir, override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe_dir / "base.yaml", [override])
    assert message in str(e.value)
    assert f"override '{override}'" in str(e.value)


# ---------------------------------------------------------------- recipes are data, never code

@pytest.mark.parametrize("value", [
    "!!python/object/apply:os.system ['touch {s}']",
    "!!python/object/new:subprocess.Popen [['touch', '{s}']]",
    "!!python/name:os.system",
    "!include {s}",
])
def test_tags_are_refused_and_run_nothing(tmp_path, value):
    sentinel = tmp_path / "code-ran"
    (tmp_path / "r.yaml").write_text(MINIMAL + "seed: " + value.format(s=sentinel) + "\n")
    with pytest.raises(RecipeError, match="r.yaml:4: YAML tag refused"):
        load_recipe(tmp_path / "r.yaml")
    assert not sentinel.exists()


def test_loader_source_has_no_code_execution_paths():
    # The loader must never grow an unsafe YAML load, an eval, or an import named by a recipe.
    for name in ("trainer/recipe.py", "trainer/recipe_fork.py", "trainer/cli/recipe.py", "trainer/recipe_docs.py",
                 "data_pipeline/yamlfile.py"):
        source = (ROOT / name).read_text()
        for pattern in (r"yaml\.load\(", r"yaml\.unsafe_load", r"yaml\.(Full|Unsafe)?Loader\b", r"\beval\(",
                        r"\bexec\(", r"import_module", r"__import__"):
            assert not re.search(pattern, source), f"{name}: {pattern}"


def test_schema_defaults_never_trust_remote_code(tmp_path):
    (tmp_path / "r.yaml").write_text(MINIMAL)
    assert load_recipe(tmp_path / "r.yaml").model.trust_remote_code is False


# ---------------------------------------------------------------- the run directory guard

def test_resolved_recipe_is_written_and_loads_back(recipe_dir):
    r = load_recipe(recipe_dir / "base.yaml")
    target = write_resolved(r, recipe_dir / "run")
    assert target == recipe_dir / "run" / RESOLVED_NAME
    doc = read_resolved(recipe_dir / "run")
    assert doc["recipe_hash"] == r.hash() and doc["code_version"] == code_version() and doc["history"] == []
    assert doc["sources"] == [str(recipe_dir / "base.yaml")]
    assert load_recipe(target).hash() == r.hash()  # a run's resolved recipe reruns as a recipe


def test_code_version_names_the_checkout():
    version = code_version()
    assert version.startswith(("git:", "flywheel ")) and len(version) > 5


def test_same_recipe_again_changes_nothing(recipe_dir):
    r = load_recipe(recipe_dir / "base.yaml")
    target = write_resolved(r, recipe_dir / "run")
    before = target.read_text()
    write_resolved(load_recipe(recipe_dir / "base.yaml"), recipe_dir / "run")
    assert target.read_text() == before


def _round_done(run_dir: Path) -> None:
    """A run that produced something (a completed round 1): only then does its recipe lock the directory."""
    (run_dir / "rounds" / "round-0001").mkdir(parents=True)
    (run_dir / "rounds" / "round-0001" / "manifest.json").write_text('{"round": 1}')


def test_different_recipe_is_refused(recipe_dir):
    write_resolved(load_recipe(recipe_dir / "base.yaml"), recipe_dir / "run")
    _round_done(recipe_dir / "run")
    before = (recipe_dir / "run" / RESOLVED_NAME).read_text()
    with pytest.raises(RecipeError) as e:
        write_resolved(load_recipe(recipe_dir / "base.yaml", ["train.learning_rate=0.02"]), recipe_dir / "run")
    assert str(recipe_dir / "run" / RESOLVED_NAME) in str(e.value)
    assert "train.learning_rate: 0.01 -> 0.02" in str(e.value) and "--fork" in str(e.value)
    assert (recipe_dir / "run" / RESOLVED_NAME).read_text() == before


def test_fork_keeps_the_old_recipe_and_records_it(recipe_dir):
    old = load_recipe(recipe_dir / "base.yaml")
    write_resolved(old, recipe_dir / "run")
    new = load_recipe(recipe_dir / "base.yaml", ["train.method=kto"])
    write_resolved(new, recipe_dir / "run", fork=True)
    doc = read_resolved(recipe_dir / "run")
    assert doc["recipe_hash"] == new.hash() and doc["train"]["method"] == "kto"
    [event] = doc["history"]
    assert event["event"] == "fork" and event["from_hash"] == old.hash() and event["to_hash"] == new.hash()
    assert "train.method: sft -> kto" in event["changed"]
    kept = recipe_dir / "run" / f"recipe.resolved.{old.hash()}.yaml"
    assert load_recipe(kept).hash() == old.hash()


@pytest.mark.parametrize("override", ["train.rounds=10", "tracking.wandb.mode=offline", "slurm.partition=gpu",
                                      "slurm.time_train=12:00:00", "run_dir=elsewhere", "study.seeds=[0, 1]"])
def test_resumption_may_extend_and_reschedule(recipe_dir, override):
    write_resolved(load_recipe(recipe_dir / "base.yaml"), recipe_dir / "run")
    new = load_recipe(recipe_dir / "base.yaml", [override])
    write_resolved(new, recipe_dir / "run")
    doc = read_resolved(recipe_dir / "run")
    assert doc["recipe_hash"] == new.hash()
    assert doc["history"][-1]["event"] == "resume"


@pytest.mark.parametrize("override", ["train.rounds=2", "slurm.nodes=2", "slurm.gpus_per_node=8", "seed=3",
                                      "eval.suites.0.episodes=17", "curve.form=edgebench"])
def test_resumption_refuses_what_changes_results(recipe_dir, override):
    write_resolved(load_recipe(recipe_dir / "base.yaml"), recipe_dir / "run")
    _round_done(recipe_dir / "run")
    with pytest.raises(RecipeError, match="already holds a different recipe"):
        write_resolved(load_recipe(recipe_dir / "base.yaml", [override]), recipe_dir / "run")


def test_schema_changes_between_versions_do_not_block_resumption(recipe_dir):
    r = load_recipe(recipe_dir / "base.yaml")
    target = write_resolved(r, recipe_dir / "run")
    doc = yaml.safe_load(target.read_text())
    del doc["train"]["sft"]["packing"]  # a key added to the schema since (at its default)
    doc["train"]["retired_knob"] = 3  # a key removed from the schema since
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    write_resolved(r, recipe_dir / "run")
    assert read_resolved(recipe_dir / "run")["history"][-1]["event"] == "resume"


# ---------------------------------------------------------------- flywheel recipe show

def test_show_prints_the_resolved_recipe_with_its_hash(recipe_dir, capsys):
    assert flywheel(["recipe", "show", str(recipe_dir / "base.yaml"), "train.rounds=8"]) == 0
    out = capsys.readouterr().out
    doc = yaml.safe_load(out)
    expected = load_recipe(recipe_dir / "base.yaml", ["train.rounds=8"])
    assert doc["recipe_hash"] == expected.hash() and doc["train"]["rounds"] == 8
    assert out.startswith("# resolved from: override 'train.rounds=8' <- ")
    (recipe_dir / "shown.yaml").write_text(out)
    assert load_recipe(recipe_dir / "shown.yaml").hash() == expected.hash()


def test_recipe_without_subcommand_prints_usage(capsys):
    assert flywheel(["recipe"]) == 2
    assert "usage: flywheel recipe" in capsys.readouterr().err


def test_unquoted_slurm_times_stay_text(tmp_path):
    # YAML 1.1 would read 12:00:00 as the base-60 integer 43200.
    (tmp_path / "r.yaml").write_text(MINIMAL + "slurm:\n  time_train: 12:00:00\n  time_eval: 1-02:30:00\n")
    r = load_recipe(tmp_path / "r.yaml", ["slurm.time_eval=90:00"])
    assert (r.slurm.time_train, r.slurm.time_eval) == ("12:00:00", "90:00")


def test_meta_keys_are_only_accepted_in_a_resolved_file(tmp_path):
    (tmp_path / "r.yaml").write_text(MINIMAL + "history: []\n")
    with pytest.raises(RecipeError, match="unknown key 'history'"):
        load_recipe(tmp_path / "r.yaml")


def test_a_run_can_be_the_base_of_a_new_recipe(recipe_dir):
    write_resolved(load_recipe(recipe_dir / "base.yaml"), recipe_dir / "run")
    (recipe_dir / "next.yaml").write_text(f"base: run/{RESOLVED_NAME}\nexperiment: next\ntrain:\n  method: dpo\n")
    r = load_recipe(recipe_dir / "next.yaml")
    assert (r.experiment, r.train.method, r.train.rounds) == ("next", "dpo", 3)


def test_missing_key_in_a_list_item_points_at_the_item(tmp_path):
    (tmp_path / "r.yaml").write_text(MINIMAL + "eval:\n  suites:\n    - {name: maze}\n    - {episodes: 3}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:7: key 'eval.suites\[1\].name': required key is missing"):
        load_recipe(tmp_path / "r.yaml")
