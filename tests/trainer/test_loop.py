"""The whole loop, two rounds on the tiny model: the run directory holds what it promises, training
changed the adapter and left the base weights bit-identical, and nothing touched the network."""
import json
import socket

import pytest
import torch
from safetensors.torch import load_file

from trainer.loop import run_experiment
from trainer.recipe import load_recipe
from trainer.rundir import dir_checksums

TINY = ["train.rounds=2", "collect.suites.0.episodes=48", "eval.suites.0.episodes=24", "train.epochs=1",
        "collect.policy.batch_size=48", "eval.policy.batch_size=24"]


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "quick"
    recipe = load_recipe("recipes/quickstart.yaml", TINY + [f"run_dir={run_dir}"])
    mp = pytest.MonkeyPatch()
    real_connect = socket.socket.connect
    attempts = []

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            attempts.append(address)
            raise OSError(f"network disabled in tests: {address}")
        return real_connect(self, address)

    mp.setattr(socket.socket, "connect", guarded)
    try:
        # the base is built first, so its bytes can be compared after two rounds trained on top
        from trainer.round import base_model_path
        from trainer.rundir import RunDir

        base_sums_before = dir_checksums(base_model_path(recipe, RunDir(run_dir)))
        run = run_experiment(recipe, progress=False)
    finally:
        mp.undo()
    return run, recipe, base_sums_before, attempts


def test_run_directory_has_checkpoints_manifests_evals_curve_and_report(two_rounds):
    run, recipe, _, attempts = two_rounds
    assert attempts == []
    assert run.completed_rounds() == [0, 1, 2]
    for r in (0, 1, 2):
        summary = run.eval_summary(r)
        assert summary["episodes"] == 24 and 0 <= summary["success_rate"] <= 1
        assert summary["ci95"][0] <= summary["success_rate"] <= summary["ci95"][1]
        assert len(summary["per_task"]) == 24
        assert all("s1" in t for t in summary["per_task"])  # held-out seeds only
    m1, m2 = run.manifest(1), run.manifest(2)
    assert m1["parent"] == "round-0000" and m2["parent"] == "round-0001"
    assert m2["cumulative_interaction_hours"] > m1["cumulative_interaction_hours"] > 0
    assert set(m2["store_batches"]) <= set(m2["batches_seen"]) and m2["new_batches"]
    assert m1["recipe_hash"] == recipe.hash() and m1["adapter"] == "adapter"
    assert (run.round_dir(2) / "adapter" / "adapter_model.safetensors").exists()
    curve = json.loads((run.curve / "curve.json").read_text())
    assert curve and (run.curve / "curve.png").stat().st_size > 1000
    report = run.report.read_text()
    assert "Held-out success went from" in report and "| 2 |" in report
    assert (run.root / "recipe.resolved.yaml").exists()
    # collected experience is canonical JSONL of training tasks only
    lines = (run.experience / "round-0001.jsonl").read_text().splitlines()
    assert len(lines) == 48 and all(json.loads(x)["source_format"] == "flywheel" for x in lines)


def test_training_changed_the_adapter_and_left_the_base_bit_identical(two_rounds):
    run, recipe, base_sums, _ = two_rounds
    # the base folder's bytes are exactly what was built before round 1 trained on top of it
    from trainer.tiny import build_model, load_tokenizer

    fresh = build_model(load_tokenizer(), init_seed=recipe.model.tiny.init_seed,
                        hidden_size=recipe.model.tiny.hidden_size, layers=recipe.model.tiny.layers,
                        heads=recipe.model.tiny.heads, intermediate_size=recipe.model.tiny.intermediate_size,
                        initializer_range=recipe.model.tiny.init_std)
    stored = load_file(str(run.base_model / "model.safetensors"))
    for name, tensor in fresh.state_dict().items():
        if name in stored:
            assert torch.equal(stored[name], tensor), name
    assert dir_checksums(run.base_model) == base_sums
    a1 = load_file(str(run.round_dir(1) / "adapter" / "adapter_model.safetensors"))
    a2 = load_file(str(run.round_dir(2) / "adapter" / "adapter_model.safetensors"))
    assert a1.keys() == a2.keys() and any("lora_B" in k for k in a1)
    assert any(not torch.equal(a1[k], a2[k]) for k in a1), "round 2 did not change the adapter"
    assert any(k for k in a1 if "lora_B" in k and a1[k].abs().sum() > 0), "LoRA B still zero: nothing trained"


def test_rerun_resumes_without_redoing_anything(two_rounds):
    run, recipe, _, _ = two_rounds
    before = {r: (run.round_dir(r) / "manifest.json").read_bytes() for r in (0, 1, 2)}
    batches = sorted(p.name for p in (run.store).rglob("*.parquet"))
    run_experiment(recipe, progress=False)
    assert {r: (run.round_dir(r) / "manifest.json").read_bytes() for r in (0, 1, 2)} == before
    assert sorted(p.name for p in (run.store).rglob("*.parquet")) == batches
