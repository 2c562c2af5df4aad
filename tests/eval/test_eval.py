"""flywheel eval: results next to the checkpoint, same numbers on reruns, across batch sizes and
when split into shards; pass@k and its intervals; errors a user can act on."""
from __future__ import annotations

import itertools
import json
from math import comb
from pathlib import Path

import pytest

from eval.checkpoints import resolve_checkpoint
from eval.errors import EvalError
from eval.evaluator import pass_at_k, pass_k_values, summarize
from trainer.cli import main as flywheel
from trainer.cli.eval import load_eval_recipe, main as eval_main
from trainer.recipe import RecipeError
from trainer.round import load_options


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model_dir) -> Path:
    """A round-0 checkpoint dir of a run: manifest.json naming the tiny base model."""
    run = tmp_path_factory.mktemp("run")
    rnd = run / "rounds" / "round-0000"
    rnd.mkdir(parents=True)
    (rnd / "manifest.json").write_text(json.dumps({"round": 0, "base_model": str(tiny_model_dir), "adapter": None}))
    return rnd


@pytest.fixture()
def recipe(tmp_path) -> Path:
    (tmp_path / "base.yaml").write_text("experiment: t\nmodel: {name_or_path: tiny}\n"
                                        "eval: {seed: 7, policy: {batch_size: 8}}\n")
    (tmp_path / "r.yaml").write_text("base: base.yaml\neval:\n  suites:\n"
                                     "    - {name: maze, difficulty: 1, episodes: 7, samples_per_task: 2}\n")
    return tmp_path / "r.yaml"


def _eval(recipe, ckpt, out, *extra) -> dict:
    assert eval_main([str(recipe), "--checkpoint", str(ckpt), "--out", str(out), "--quiet", *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_pass_at_k_matches_counting_and_exposes_intervals():
    for n, c, k in itertools.product(range(1, 7), range(0, 7), range(1, 7)):
        if c <= n and k <= n:
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_k_values(1) == [1] and pass_k_values(8) == [1, 2, 4, 8] and pass_k_values(6) == [1, 2, 4, 6]
    samples = {f"t{i}": [(i % 4 == 0 and s == 0, 1.0 if i % 4 == 0 and s == 0 else 0.0) for s in range(4)]
               for i in range(40)}
    s = summarize(samples, 4, seed=3)
    assert s["pass_at_k"]["1"] == pytest.approx(10 / 160)  # 10 tasks solved once in 4 tries
    assert s["pass_at_k"]["4"] == pytest.approx(10 / 40)
    for j, (lo, hi) in s["pass_at_k_ci95"].items():
        assert lo < s["pass_at_k"][j] < hi
    assert summarize(samples, 4, seed=3) == s  # the bootstrap is seeded
    assert set(summarize({"a": [(True, 1.0)]}, 1)["pass_at_k"]) == {"1"}


def test_eval_reads_the_recipe_with_the_loader_following_base_and_overrides(recipe):
    r = load_eval_recipe(recipe, ["eval.suites.0.episodes=3", "train.rounds=9"])
    cfg, load, experiment = r.eval, load_options(r), r.experiment
    assert (cfg.seed, cfg.policy.batch_size, cfg.suites[0].episodes, cfg.suites[0].samples_per_task) == (7, 8, 3, 2)
    assert (load.dtype, load.attn_implementation, experiment) == ("float32", "sdpa", "t")
    with pytest.raises(RecipeError, match=r"override 'eval.suites.0.episodes=0': key 'eval.suites\[0\].episodes'"):
        load_eval_recipe(recipe, ["eval.suites.0.episodes=0"])
    with pytest.raises(RecipeError, match="unknown key 'nonsense' in section 'train'"):
        load_eval_recipe(recipe, ["train.nonsense=1"])  # the one loader checks every section's keys


def test_eval_writes_next_to_checkpoint_and_repeats_exactly(checkpoint, recipe, tmp_path):
    a = _eval(recipe, checkpoint, checkpoint / "eval")
    assert {p.name for p in (checkpoint / "eval").iterdir()} == {"summary.json", "results.jsonl", "episodes.jsonl"}
    assert a["episodes"] == 14 and a["suites"]["maze"]["samples_per_task"] == 2
    assert set(a["pass_at_k"]) == {"1", "2"} and set(a["pass_at_k_ci95"]) == {"1", "2"}
    # same seed, other batch size (episodes grouped differently): the same numbers
    b = _eval(recipe, checkpoint, tmp_path / "again", "eval.policy.batch_size=3")
    assert b == a
    rows = [json.loads(x) for x in (checkpoint / "eval" / "results.jsonl").read_text().splitlines()]
    assert rows == [json.loads(x) for x in (tmp_path / "again" / "results.jsonl").read_text().splitlines()]
    c = _eval(recipe, checkpoint, tmp_path / "other-seed", "eval.seed=8")
    assert c["per_task"] != a["per_task"] or c["success_rate"] != a["success_rate"]


def test_shards_merge_into_the_unsharded_summary(checkpoint, recipe, tmp_path):
    whole = _eval(recipe, checkpoint, tmp_path / "whole")
    out = tmp_path / "sharded"
    for i in (2, 0):
        _eval_shard = eval_main([str(recipe), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet",
                                 "--shard", f"{i}/3", "eval.policy.batch_size=2"])
        assert _eval_shard == 0 and not (out / "summary.json").exists()
    assert flywheel(["eval", str(recipe), "--merge-shards", "3", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    merged = _eval(recipe, checkpoint, out, "--shard", "1/3")  # the last shard merges all three
    assert merged == whole
    for name in ("results.jsonl",):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text()
    ep_whole = [json.loads(x)["task_id"] for x in (tmp_path / "whole" / "episodes.jsonl").read_text().splitlines()]
    ep_merged = [json.loads(x)["task_id"] for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert ep_merged == ep_whole and len(ep_whole) == 14


def test_user_errors_name_what_to_fix(checkpoint, recipe, tmp_path, capsys):
    assert flywheel(["eval", str(recipe), "--checkpoint", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
    assert flywheel(["eval", str(recipe), "--checkpoint", str(checkpoint), "--shard", "3/3"]) == 2
    assert "0 <= I < N" in capsys.readouterr().err
    assert flywheel(["eval", str(recipe), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m"),
                     "--merge-shards", "2"]) == 2
    assert "missing 0-of-2.json, 1-of-2.json" in capsys.readouterr().err
    bad = tmp_path / "rounds" / "round-0001"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text('{"round": 1, "base_model": "/nowhere", "adapter": "adapter"}')
    with pytest.raises(EvalError, match="manifest.json: base_model '/nowhere'"):
        resolve_checkpoint(bad)


def test_one_checkpoint_resolution_for_the_trainer_and_the_commands(checkpoint, tiny_model_dir, tmp_path, monkeypatch):
    """trainer.round.checkpoint_paths and `flywheel eval/serve` resolve a round the same way: a
    base_model written relative to another working directory is found in the run root, a hub id is
    passed on as it is (loaded from the cache), and only the commands insist that the base is there."""
    from eval.checkpoints import checkpoint_of
    from eval.records import CheckpointManifest
    from trainer.records import RoundManifest
    from trainer.round import checkpoint_paths
    from trainer.rundir import RunDir

    run = checkpoint.parent.parent
    if not (run / "base_model").exists():  # the run root's copy of the base (the shared tiny model)
        (run / "base_model").symlink_to(tiny_model_dir, target_is_directory=True)
    moved = run / "rounds" / "round-0001"
    moved.mkdir(exist_ok=True)
    manifest = {"round": 1, "base_model": "elsewhere/base_model", "adapter": "adapter"}
    (moved / "manifest.json").write_text(json.dumps(manifest))
    expected = (run / "base_model", moved / "adapter")
    assert resolve_checkpoint(moved) == expected == checkpoint_paths(RunDir(run), RoundManifest.from_dict(manifest))
    hub = tmp_path / "rounds" / "round-0000"
    hub.mkdir(parents=True)
    (hub / "manifest.json").write_text(json.dumps({"round": 0, "base_model": "HuggingFaceTB/SmolLM2", "adapter": None}))
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(hub) == (Path("HuggingFaceTB/SmolLM2"), None)
    absent = {"round": 0, "base_model": str(tmp_path / "not-built-yet"), "adapter": None}
    assert checkpoint_of(hub, CheckpointManifest.from_dict(absent)) == (tmp_path / "not-built-yet", None)  # a round being prepared
    (hub / "manifest.json").write_text(json.dumps(absent))
    with pytest.raises(EvalError, match="no model folder there"):
        resolve_checkpoint(hub)
