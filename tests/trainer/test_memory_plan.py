"""The memory plan of a training round, from config.json alone: parameter counts of known models,
what each memory knob changes, and `flywheel recipe show` printing it (stdout stays the recipe)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainer.cli import main as flywheel
from trainer.memory_plan import count_params, memory_plan, shape_from_config
from trainer.recipe import load_recipe
from tests.paths import REPO

RECIPES = REPO / "recipes"
SMOLLM2_135M = dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                    tie_word_embeddings=True, torch_dtype="bfloat16")
QWEN3_8B = dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                tie_word_embeddings=False, torch_dtype="bfloat16")
LLAMA_70B = dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                 num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                 torch_dtype="bfloat16")


def _model_dir(tmp_path: Path, config: dict, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _qwen(tmp_path: Path, *overrides: str):
    folder = _model_dir(tmp_path, QWEN3_8B)
    return load_recipe(RECIPES / "qwen3-8b-sft.yaml", [f"model.name_or_path={folder}", *overrides])


def test_smollm2_135m_parameter_count():
    params, _ = count_params(shape_from_config(SMOLLM2_135M))
    assert params == pytest.approx(134.5e6, rel=0.02)


def test_qwen3_8b_parameters_and_bf16_weights(tmp_path):
    plan = memory_plan(_qwen(tmp_path))
    assert plan.found and plan.source.endswith("config.json")
    assert plan.params_total == pytest.approx(8.2e9, rel=0.03)
    assert plan.weights_gb == pytest.approx(16.4, rel=0.03)  # ZeRO-2 keeps whole weights on every GPU
    assert (plan.gpus, plan.zero_stage) == (8, 2)
    # all-linear LoRA r=64: 36 layers x 64 x (8192 + 2*5120 + 8192 + 3*16384)
    assert plan.params_lora == 36 * 64 * (8192 + 2 * 5120 + 8192 + 3 * 16384)
    # the shipped recipe checkpoints activations (train.gradient_checkpointing: true)
    parts = plan.weights_gb + plan.lora_gb + plan.activations_gb_with_checkpointing + plan.logits_gb
    assert plan.total_gb == pytest.approx(parts)


def test_gradient_checkpointing_lowers_activations(tmp_path):
    off = memory_plan(_qwen(tmp_path, "train.gradient_checkpointing=false"))
    on = memory_plan(_qwen(tmp_path, "train.gradient_checkpointing=true"))
    assert on.activations_gb_with_checkpointing < off.activations_gb / 5
    assert on.activations_gb == off.activations_gb and on.total_gb < off.total_gb
    assert on.total_gb == pytest.approx(off.total_gb - off.activations_gb + on.activations_gb_with_checkpointing)


def test_zero3_divides_weights_and_qlora_quarters_them(tmp_path):
    folder = _model_dir(tmp_path, LLAMA_70B)
    llama = RECIPES / "llama3-70b-lora-zero3.yaml"
    base = [f"model.name_or_path={folder}", "slurm.nodes=1", "slurm.gpus_per_node=8"]
    zero3 = memory_plan(load_recipe(llama, base))
    plain = memory_plan(load_recipe(llama, base + ["train.deepspeed=none"]))
    qlora = memory_plan(load_recipe(llama, base + ["train.deepspeed=none", "train.lora.qlora=true"]))
    assert plain.weights_gb == pytest.approx(141, rel=0.02)  # 70.6 B parameters in bfloat16
    assert plain.weights_gb / 8 < zero3.weights_gb < plain.weights_gb / 6  # a shard + one gathered module
    assert zero3.lora_gb < plain.lora_gb / 4
    assert 0.25 < qlora.weights_gb / plain.weights_gb < 0.32  # NF4 blocks, bf16 embeddings and lm_head


def test_tiny_model_and_missing_config(tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text("experiment: quick\nmodel:\n  name_or_path: tiny\n")
    tiny = memory_plan(load_recipe(tmp_path / "r.yaml"))
    assert tiny.found and tiny.source == "model.tiny" and tiny.params_total > 0
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    missing = memory_plan(load_recipe(RECIPES / "qwen3-8b-sft.yaml"))
    assert not missing.found and "Hugging Face cache" in missing.lines()[0]


def test_config_found_in_the_hub_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen3-8B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(QWEN3_8B))
    (tmp_path / "hub" / "models--Qwen--Qwen3-8B" / "refs").mkdir()
    (tmp_path / "hub" / "models--Qwen--Qwen3-8B" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    plan = memory_plan(load_recipe(RECIPES / "qwen3-8b-sft.yaml"))
    assert plan.found and "Qwen/Qwen3-8B" in plan.source
    assert plan.params_total == pytest.approx(8.2e9, rel=0.03)


def test_recipe_show_prints_the_plan_and_warns_when_it_does_not_fit(tmp_path, capsys):
    folder = _model_dir(tmp_path, QWEN3_8B)
    recipe = str(RECIPES / "qwen3-8b-sft.yaml")
    assert flywheel(["recipe", "show", recipe, f"model.name_or_path={folder}"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["model"]["name_or_path"] == str(folder)
    assert "# memory plan per GPU" in err and "total" in err and "warning" not in err

    assert flywheel(["recipe", "show", recipe, f"model.name_or_path={folder}", "slurm.gpu_memory_gb=10",
                     "train.gradient_checkpointing=false"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["slurm"]["gpu_memory_gb"] == 10
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    for knob in ("gradient_checkpointing", "batch_size", "max_length", "zero3", "qlora"):
        assert knob in warning


def test_recipe_show_without_a_config_still_prints_the_recipe(tmp_path, capsys):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    assert flywheel(["recipe", "show", str(RECIPES / "qwen3-8b-sft.yaml"), f"model.name_or_path={folder}"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["experiment"] == "qwen3-8b-sft"
    assert "memory plan: none" in err and "has no config.json" in err
