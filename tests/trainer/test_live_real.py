"""The production flywheel (recipes/live-logs.yaml's flow) on the real model, SmolLM2-135M-Instruct
(`make real-model`): a simulated deployment's unlabeled OpenAI-format logs are read from
`collect.logs`, labelled by the verifier command, trained on in one short round, scored on held-out
mazes by the real model, and gated; then `flywheel promote` puts round 1 in promoted/ with merged
weights (`promote.merged`). What a user would deploy is checked as a user would: SERVING.md names the
real base model, the promoted adapter folder carries the chat template the round trained with, and the
merged folder loads on its own and computes what base + adapter compute. Marked `real`
(`make test-real`, ~2 min on 2 cores)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl
import yaml

from tests.paths import REPO
from trainer.cli import main as cli
from trainer.promote import promoted_dir, promoted_now, read_verdict
from trainer.rundir import RunDir

pytestmark = pytest.mark.real

SIM = REPO / "recipes" / "live-logs" / "simulate_deployment.py"
VERIFY = REPO / "recipes" / "live-logs" / "verify_maze.py"
EPISODES = 32
# a training template (TRL's, `{% generation %}` marks) over SmolLM2's tokenizer: what the round trained
# and was evaluated with, which promoted/ must carry in both its adapter and its merged folders
TEMPLATE = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"


def test_logs_in_gated_promoted_and_merged_on_the_real_model(real_model_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    subprocess.run([sys.executable, str(SIM), str(logs), "--wave", "1", "--episodes", str(EPISODES),
                    "--difficulty", "1", "--skill", "0.6"], check=True, capture_output=True)
    recipe = tmp_path / "live-real.yaml"
    recipe.write_text(yaml.safe_dump({
        "experiment": "live-real", "run_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(real_model_dir), "dtype": "float32", "chat_template": str(TEMPLATE)},
        "collect": {"logs": ["logs/"], "suites": []},
        "label": {"command": f"{sys.executable} {VERIFY}", "workers": 2, "timeout_s": 60},
        "data": {"success_only": True, "replay_ratio": 0.0},
        "train": {"method": "sft", "rounds": 1, "max_steps": 3, "batch_size": 4, "max_length": 512,
                  "learning_rate": 1e-3, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        "eval": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 12}], "policy": {"batch_size": 12}},
        "promote": {"merged": True},
        "curve": {"bootstrap": 0}, "tracking": {"wandb": {"mode": "disabled"}},
    }, sort_keys=False))
    assert cli(["run", str(recipe), "--quiet"]) == 0
    run = RunDir(tmp_path / "run")

    m = run.manifest(1)
    assert m.logs["read"] == m.logs["accepted"] == EPISODES, m.logs
    assert m.labels["command"] == EPISODES and m.labels["own"] == 0, m.labels  # the logs carry no outcome
    assert 0 < m.metrics["rows"] < EPISODES  # success_only: the verifier's failures are not trained on
    assert m.cumulative_interaction_hours > 0  # the logs' own start/end times
    verdict = read_verdict(run, 1)
    assert verdict is not None and verdict.decision in ("promoted", "rejected")
    assert verdict.incumbent == 0 and verdict.tasks == 12 and verdict.p_value is not None

    # whatever the gate said about three steps of training, deploy round 1 by hand (as a user would
    # roll forward), so that promoted/ holds an adapter and its merged weights
    if verdict.decision == "rejected":
        assert cli(["promote", str(run.root), "--round", "1", "--reason", "real-model check"]) == 0
    promoted = promoted_now(run)
    assert promoted.round == 1
    folder = promoted_dir(run)
    serving = (folder / "SERVING.md").read_text()
    assert f"vllm serve {real_model_dir} --enable-lora" in serving, serving
    assert "--max-lora-rank 8" in serving and str(folder / "merged") in serving
    assert f"--chat-template {run.root.resolve() / 'promoted' / 'adapter' / 'chat_template.jinja'}" in serving

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_tok = AutoTokenizer.from_pretrained(str(folder / "adapter"))
    merged_tok = AutoTokenizer.from_pretrained(str(folder / "merged"))
    assert adapter_tok.chat_template == TEMPLATE.read_text() == merged_tok.chat_template

    prompt = adapter_tok.apply_chat_template([{"role": "user", "content": "goal: 1 down. open: down right"}],
                                             add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(str(real_model_dir), dtype=torch.float32)
    with torch.no_grad():
        want = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()(**prompt).logits
        merged = AutoModelForCausalLM.from_pretrained(str(folder / "merged"), dtype=torch.float32).eval()
        got = merged(**prompt).logits
        plain = AutoModelForCausalLM.from_pretrained(str(real_model_dir), dtype=torch.float32).eval()(**prompt).logits
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    assert not torch.allclose(got, plain, atol=1e-4)  # the adapter did change the model
    reply = merged.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert adapter_tok.decode(reply[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    report = run.report.read_text()
    row1 = next(line for line in report.splitlines() if line.startswith("| 1 |"))
    assert f"| {EPISODES} | command {EPISODES} |" in row1, row1
    assert "Promoted now: **round 1**" in report
    history = [json.loads(x) for x in (run.root / "promotion" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["round"] == 1
