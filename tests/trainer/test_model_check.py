"""A model that cannot load is caught before any work: `model_problem` names what is missing,
`flywheel recipe check` fails a bad local path (and only warns about a hub id this machine has not
cached), `flywheel run/train/submit` stop with one line before the run directory is touched, and a
run that failed before producing anything does not lock its recipe."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainer.cli import main as flywheel
from trainer.model_check import model_problem
from trainer.recipe import RESOLVED_NAME, load_recipe, read_resolved
from trainer.recipe_fork import write_resolved
from trainer.rundir import RunDir
from tests.paths import REPO

ROOT = REPO
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
# Round 0 only, a handful of held-out episodes: the run finishes in seconds.
SMALL = ["train.rounds=0", "eval.suites.0.episodes=4", "eval.policy.batch_size=4", "eval.policy.max_new_tokens=8",
         "model.tiny.hidden_size=32", "model.tiny.layers=1", "model.tiny.heads=2", "model.tiny.intermediate_size=64"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    from trainer.tiny import materialize_tiny

    return materialize_tiny(tmp_path_factory.mktemp("models") / "m", hidden_size=32, layers=1, heads=2,
                            intermediate_size=64)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache of this test's own (the machine's cache is never consulted)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_model(cache: Path, repo: str, src: Path, files: list[str]) -> None:
    """Lay `files` of `src` out as the hub cache does: refs/main -> snapshots/<commit>/."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    for name in files:
        shutil.copyfile(src / name, snapshot / name)


def _recipe(tmp_path: Path, name_or_path: str, file: str = "r.yaml") -> Path:
    path = tmp_path / file
    path.write_text(f"base: {QUICKSTART}\nexperiment: mc\nmodel:\n  name_or_path: {name_or_path}\n")
    return path


# ---- model_problem ---------------------------------------------------------------------------------
def test_tiny_and_a_complete_folder_load(model_folder):
    assert model_problem("tiny") is None
    assert model_problem(str(model_folder)) is None


def test_missing_local_folder_is_named(tmp_path):
    problem = model_problem(str(tmp_path / "nope"))
    assert problem.startswith(f"model.name_or_path '{tmp_path / 'nope'}': no such local folder")
    assert "\n" not in problem


@pytest.mark.parametrize("drop, piece", [("model.safetensors", "weights"), ("tokenizer*", "a tokenizer"),
                                         ("config.json", "config.json")])
def test_incomplete_folder_names_the_missing_piece(tmp_path, model_folder, drop, piece):
    folder = tmp_path / "m"
    shutil.copytree(model_folder, folder)
    for p in folder.glob(drop):
        p.unlink()
    problem = model_problem(str(folder))
    assert f"the folder lacks {piece}" in problem


def test_gguf_file_points_at_model_import(tmp_path):
    (tmp_path / "small.gguf").write_bytes(b"GGUF")
    problem = model_problem(str(tmp_path / "small.gguf"))
    assert f"flywheel model import {tmp_path / 'small.gguf'} --out DIR" in problem


def test_tilde_is_refused_with_the_full_path():
    assert "write the full path" in model_problem("~/models/m")


def test_hub_id_loads_from_the_cache_only(hub_cache, model_folder):
    problem = model_problem("org/name")
    assert "not in the Hugging Face cache" in problem and "hf download org/name" in problem
    _cache_model(hub_cache, "org/name", model_folder, ["config.json", "tokenizer.json", "model.safetensors"])
    assert model_problem("org/name") is None
    _cache_model(hub_cache, "org/partial", model_folder, ["config.json", "tokenizer_config.json"])
    assert "without weights" in model_problem("org/partial")


# ---- flywheel recipe check -------------------------------------------------------------------------
def test_check_fails_a_wrong_local_path_at_its_line(tmp_path, capsys):
    recipe = _recipe(tmp_path, "./no/such/model")
    assert flywheel(["recipe", "check", str(recipe)]) == 2
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if ln.startswith("FAIL")]
    assert f"{recipe}:4: model.name_or_path './no/such/model': no such local folder" in line


def test_check_warns_about_an_uncached_hub_id_and_passes(tmp_path, hub_cache, capsys):
    recipe = _recipe(tmp_path, "org/not-cached")
    assert flywheel(["recipe", "check", str(recipe)]) == 0
    out, err = capsys.readouterr()
    assert out.count("ok    ") == 1 and "1 with a model warning" in out
    assert f"warn  {recipe}:4: model.name_or_path 'org/not-cached': no such local folder, and not in the " \
           f"Hugging Face cache ({hub_cache})" in err


def test_check_passes_tiny_and_a_complete_folder(tmp_path, model_folder, capsys):
    _recipe(tmp_path, "tiny", "a.yaml")
    _recipe(tmp_path, str(model_folder), "b.yaml")
    assert flywheel(["recipe", "check", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.count("ok    ") == 2 and err == ""


# ---- the commands stop before any work ----------------------------------------------------------------
def test_run_with_a_wrong_path_stops_first_then_the_corrected_recipe_runs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    wrong = _recipe(tmp_path, "./no/such/model")
    assert flywheel(["run", str(wrong), *SMALL, f"run_dir={run_dir}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"flywheel run: error: {wrong}:4: model.name_or_path './no/such/model': no such local "
                           f"folder ({Path.cwd() / 'no/such/model'}); point it at a local model folder (config.json, "
                           "tokenizer, weights), a hub id in the Hugging Face cache, or 'tiny'")
    assert not run_dir.exists()  # no store batch, no experience, no resolved recipe: nothing at all
    fixed = _recipe(tmp_path, "tiny")
    assert flywheel(["run", str(fixed), *SMALL, f"run_dir={run_dir}", "--quiet"]) == 0
    assert RunDir(run_dir).eval_summary(0)["episodes"] == 4


@pytest.mark.parametrize("command", [["train"], ["submit"], ["study"]])
def test_train_submit_and_study_stop_before_the_run_directory(tmp_path, monkeypatch, capsys, command):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path / 'sbatch-ran'}\necho 1\n")
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    recipe = _recipe(tmp_path, "./no/such/model")
    extra = ["collect.hours_per_round=1", "study.arms=[{name: a, kind: accumulate}]", "train.rounds=1"]
    assert flywheel([*command, str(recipe), f"run_dir={tmp_path / 'run'}", *extra]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:4: model.name_or_path './no/such/model': no such local folder" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "sbatch-ran").exists()


def test_submit_dry_run_only_warns(tmp_path, capsys):
    recipe = _recipe(tmp_path, "./no/such/model")
    assert flywheel(["submit", str(recipe), f"run_dir={tmp_path / 'run'}", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {recipe}:4: model.name_or_path './no/such/model'")
    assert "a real submit refuses it" in err


# ---- a run that produced nothing does not lock its recipe ------------------------------------------
def test_a_run_that_failed_before_producing_anything_takes_the_corrected_recipe(tmp_path, model_folder, capsys):
    # A folder that passes the check but does not load: the run records its recipe and round 0, then fails.
    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    run_dir = tmp_path / "run"
    with pytest.raises(Exception):
        flywheel(["run", str(_recipe(tmp_path, str(broken))), *SMALL, f"run_dir={run_dir}", "--quiet"])
    assert read_resolved(run_dir)["model"]["name_or_path"] == str(broken)
    assert RunDir(run_dir).produced() == []
    capsys.readouterr()
    assert flywheel(["run", str(_recipe(tmp_path, str(model_folder))), *SMALL, f"run_dir={run_dir}", "--quiet"]) == 0
    assert "the new recipe replaces the recorded one (no --fork needed)" in capsys.readouterr().err
    doc = read_resolved(run_dir)
    assert doc["model"]["name_or_path"] == str(model_folder) and doc["history"][-1]["event"] == "replace"
    assert RunDir(run_dir).manifest(0)["base_model"] == str(model_folder)  # round 0 rebuilt, not the stale one
    assert RunDir(run_dir).eval_summary(0) is not None


@pytest.mark.parametrize("product", ["experience/round-0001.jsonl", "store/batches/batch-000001/manifest.json",
                                     "rounds/round-0000/eval/summary.json", "rounds/.work-0001/selection.json",
                                     "slurm/jobs.json"])
def test_a_run_that_produced_something_still_demands_fork(tmp_path, product):
    run_dir = tmp_path / "run"
    write_resolved(load_recipe(QUICKSTART, [f"run_dir={run_dir}"]), run_dir)
    (run_dir / product).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / product).write_text("{}")
    before = (run_dir / RESOLVED_NAME).read_text()
    from trainer.recipe import RecipeError

    with pytest.raises(RecipeError, match="--fork"):
        write_resolved(load_recipe(QUICKSTART, [f"run_dir={run_dir}", "seed=7"]), run_dir)
    assert (run_dir / RESOLVED_NAME).read_text() == before and (run_dir / product).exists()
