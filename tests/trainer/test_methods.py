"""KTO, DPO and GRPO rounds on the tiny model: each trains its LoRA and leaves the base untouched,
the round's manifest names exactly the store batches it used, held-out tasks never reach the
training data, merge-and-start-fresh equals base + adapter, and the reference policy follows
`train.reference`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from data_pipeline import builders
from data_pipeline.errors import HeldoutLeakError
from data_pipeline.store import ExperienceStore
from eval.envs.base import HELDOUT_SEED_START
from eval.rollout import RandomPolicy, run_episodes, write_jsonl
from eval.suites import get_suite
from trainer.config import TrainConfig
from trainer.round import BUILTIN_HELDOUT
from tests.paths import REPO

HELDOUT_TASK = f"maze/d1/s{HELDOUT_SEED_START + 3}"


def small_cfg(method: str, **kw) -> TrainConfig:
    base = dict(method=method, batch_size=4, grad_accum=1, max_steps=2, max_length=256, learning_rate=1e-2,
                save_steps=100, beta=0.1, grpo={"generations": 4}, lora={"r": 4, "alpha": 8})
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """A tiny base model, random-policy maze episodes (two per training task, one planted held-out
    task) in a JSONL file and ingested into a store, and a non-trivial parent adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("methods")
    base = tiny_model_dir
    suite = get_suite("maze")
    trajs = [t for rng in (1, 2) for t in run_episodes(suite, 1, list(range(12)), RandomPolicy(), rng_seed=rng,
                                                        progress=False)]
    trajs += run_episodes(suite, 1, [HELDOUT_SEED_START + 3], RandomPolicy(), rng_seed=1, progress=False)
    episodes = root / "episodes.jsonl"
    write_jsonl(trajs, episodes)
    store = ExperienceStore(root / "store")
    store.set_heldout(BUILTIN_HELDOUT)
    store.ingest([episodes], fmt="flywheel", tag="test")
    # A parent adapter far from zero: the previous round's policy differs from the base.
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft.save_pretrained(root / "parent")
    return {"root": root, "base": base, "store": store, "episodes": episodes, "parent": root / "parent"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dataset_for(method: str, store: ExperienceStore):
    build = {"kto": builders.build_kto, "dpo": builders.build_dpo, "grpo": builders.build_rl}[method]
    return build(store.trajectories(), heldout=store.heldout)


def assert_base_untouched(model, base_dir: Path) -> None:
    """Every base weight inside the trained PeftModel equals the base model file's tensor."""
    from safetensors.torch import load_file

    saved = load_file(str(base_dir / "model.safetensors"))
    compared = 0
    for name, t in model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        if key in saved:
            assert torch.equal(t, saved[key]), f"base weight {key} changed"
            compared += 1
    assert compared >= len(saved) - 1  # all of them (a tied lm_head may be stored once)


def assert_adapter_moved(model, parent_dir: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    before = load_file(str(parent_dir / "adapter_model.safetensors"))
    after = get_peft_model_state_dict(model)
    assert set(after) == set(before), "the trained adapter has other tensors than its parent"
    assert any(not torch.equal(after[k].cpu(), before[k]) for k in before), "no LoRA weight changed"
    assert all(torch.isfinite(v).all() for v in after.values())


@pytest.mark.parametrize("method", ["kto", "dpo", "grpo"])
def test_method_trains_lora_and_keeps_base(world, tmp_path, method):
    from trainer.methods import METHODS

    dataset = dataset_for(method, world["store"])
    assert len(dataset) > 0
    assert HELDOUT_TASK not in json.dumps(dataset.to_list())
    base_hash = sha256(world["base"] / "model.safetensors")
    result = METHODS[method].train(world["base"], world["parent"], dataset, small_cfg(method), 0, tmp_path / "work", 1e-2,
                          reference_adapter=world["parent"])
    model = result["model"]
    assert result["steps"] == 2 and all(map(lambda x: x == x, result["loss_history"]))
    assert list(model.peft_config) == ["default"], "the reference adapter must not be handed back"
    assert_adapter_moved(model, world["parent"])
    assert_base_untouched(model, world["base"])
    assert sha256(world["base"] / "model.safetensors") == base_hash


def test_grpo_reward_is_the_environment_outcome(world):
    """Rollouts replay the logged task in its environment; the reward is that episode's score."""
    from trainer.methods.grpo import episode_tokens, replayable_tasks

    dataset, tasks = replayable_tasks(dataset_for("grpo", world["store"]))
    assert all(t[0] == "maze" and t[1] == 1 and t[2] < HELDOUT_SEED_START for t in tasks.values())
    suite = get_suite("maze")
    trajs = run_episodes(suite, 1, [0, 1], RandomPolicy(), rng_seed=5, progress=False)
    from trainer.tiny import load_tokenizer

    out = episode_tokens(trajs, load_tokenizer(), 4096)
    assert out["env_score"] == [t.outcome.score for t in trajs]
    for ids, mask, t in zip(out["completion_ids"], out["env_mask"], trajs):
        assert len(ids) == len(mask)
        n_actions = sum(m.role == "assistant" for m in t.messages)
        assert 0 < sum(mask) < len(mask)  # the policy's tokens are trained, observations are not
        assert sum(mask) >= 2 * n_actions  # each action: its word + end-of-turn


def test_builders_refuse_heldout_tasks(world):
    everything = world["store"].trajectories(include_heldout=True)
    assert HELDOUT_TASK in {t.task_id for t in everything}
    assert HELDOUT_TASK not in {t.task_id for t in world["store"].trajectories()}
    for build in (builders.build_kto, builders.build_dpo, builders.build_rl):
        with pytest.raises(HeldoutLeakError):
            build(everything, heldout=world["store"].heldout)


def test_merge_equals_base_plus_adapter(world, tmp_path):
    from eval.policy import load_checkpoint
    from trainer.merge import merge_adapter

    base_hash = sha256(world["base"] / "model.safetensors")
    merged_dir = merge_adapter(world["base"], world["parent"], tmp_path / "merged")
    assert merge_adapter(world["base"], world["parent"], tmp_path / "merged") == merged_dir  # kept, not redone
    assert sha256(world["base"] / "model.safetensors") == base_hash
    unmerged, tok = load_checkpoint(world["base"], world["parent"])
    merged, _ = load_checkpoint(merged_dir)
    base_only, _ = load_checkpoint(world["base"])
    ids = torch.tensor([tok("goal: 2 down 1 right. open: up down")["input_ids"]])
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (unmerged, merged, base_only))
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter did change the policy


def test_reference_previous_differs_from_base(world, tmp_path):
    """Continuing the parent's adapter, DPO's first step has zero implicit reward against the
    previous policy (loss = log 2) and a non-zero one against the base."""
    import math

    from trainer.methods import dpo

    dataset = dataset_for("dpo", world["store"])
    cfg = small_cfg("dpo", max_steps=1)
    losses = {}
    for ref in ("previous", "base"):
        result = dpo.train(world["base"], world["parent"], dataset, cfg, 0, tmp_path / ref, 1e-2,
                           reference_adapter=world["parent"] if ref == "previous" else None)
        losses[ref] = result["loss_history"][0]
    assert losses["previous"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(losses["base"] - math.log(2)) > 1e-3


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_round_manifest_lists_exactly_the_batches_used(world, tmp_path, method):
    from trainer.recipe import load_recipe
    from trainer.round import ensure_round0, open_store, train_round
    from trainer.rundir import RunDir

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [
        f"train.method={method}", "collect.suites=[]", f"run_dir={tmp_path / 'run'}", "train.max_steps=2",
        "train.batch_size=4", "train.max_length=256", "train.lora.r=4", "train.lora.alpha=8"])
    run = RunDir(recipe.run_path())
    ensure_round0(recipe, run)
    open_store(recipe, run).ingest([world["episodes"]], fmt="flywheel", tag="logs")  # one batch, one held-out task
    m = train_round(recipe, run, 1, progress=False)
    store = open_store(recipe, run)
    (batch,) = store.batches()
    assert m["method"] == method and m["adapter"] == "adapter"
    assert m["store_batches"] == {batch.batch_id: batch.count - 1}  # every stored trajectory but the held-out one
    assert m["trajectories_used"] == batch.count - 1
    assert (run.round_dir(1) / "adapter" / "adapter_model.safetensors").exists()
    assert m["metrics"]["steps"] == 2


@pytest.mark.slow  # two rounds: ~16 s of CPU, over 30 s of wall time on 2 busy cores
def test_merge_mode_round_trains_a_fresh_adapter_on_the_merged_base(world, tmp_path):
    from trainer.recipe import load_recipe
    from trainer.round import ensure_round0, open_store, train_round
    from trainer.rundir import RunDir

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [
        "train.method=kto", "train.adapter=merge", "collect.suites=[]", "collect.when_empty=replay",
        f"run_dir={tmp_path / 'run'}",
        "train.max_steps=1", "train.batch_size=4", "train.max_length=256", "train.lora.r=4", "train.lora.alpha=8"])
    run = RunDir(recipe.run_path())
    r0 = ensure_round0(recipe, run)
    open_store(recipe, run).ingest([world["episodes"]], fmt="flywheel", tag="logs")
    m1 = train_round(recipe, run, 1, progress=False)
    assert m1["base_model"] == r0["base_model"]  # round 0 has no adapter to merge
    m2 = train_round(recipe, run, 2, progress=False)
    merged = Path(m2["base_model"])
    assert merged == run.root / "bases" / "round-0002" and (merged / "config.json").exists()
    assert m2["adapter"] == "adapter"
    assert sha256(Path(r0["base_model"]) / "model.safetensors") != sha256(merged / "model.safetensors")
