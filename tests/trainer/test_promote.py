"""The promotion gate (trainer/promote.py): the paired test holds back a clearly worse checkpoint and
passes an equal or noisy-but-equal one; promoted/ is swapped atomically and names the right paths in
SERVING.md; `flywheel promote` rolls back with who and why; the report's per-round table; the next
round's parent is the promoted checkpoint. Run directories are built by hand here (manifests,
stand-in adapters, eval results written directly); tests/trainer/test_promote_loop.py runs the loop."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from trainer.promote import (GATE, Promoted, gate, paired_test, parent_round, per_task_scores, promote_by_hand,
                             promoted_dir, promoted_now, read_history, read_verdict, report_rows, verdict_path)
from trainer.recipe import RESOLVED_NAME, load_recipe
from trainer.records import RoundManifest
from trainer.rundir import RunDir

TASKS = 80


# ---- building run directories by hand ----------------------------------------------------------------
def make_recipe(tmp_path: Path, **promote):
    run_dir = tmp_path / "run"
    doc = {"experiment": "gate-test", "run_dir": str(run_dir), "model": {"name_or_path": "tiny"},
           "tracking": {"wandb": {"mode": "disabled"}}, "promote": promote}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    recipe = load_recipe(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESOLVED_NAME).write_text(yaml.safe_dump(recipe.resolved_dict()))
    return recipe, RunDir(run_dir)


def add_round(run: RunDir, r: int, base: Path, successes: list[bool] | None, samples: int = 1,
              new_batches=None, raw: dict | None = None) -> None:
    """Round r's checkpoint (a stand-in adapter for r >= 1) and, when `successes` is given, its
    evaluation: one result row per task and sample, and a summary."""
    d = run.round_dir(r)
    d.mkdir(parents=True)
    if r > 0:
        (d / "adapter").mkdir()
        (d / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
        (d / "adapter" / "adapter_model.safetensors").write_bytes(f"weights of round {r}".encode())
    new_batches = new_batches or ([f"batch-{r}"] if r else [])
    m = RoundManifest(round=r, parent=None if r == 0 else f"round-{r - 1:04d}", base_model=str(base),
                      adapter="adapter" if r else None, method="sft" if r else None,
                      store_batches={b: 10 for b in new_batches}, batches_seen=[f"batch-{i}" for i in range(1, r + 1)],
                      new_batches=new_batches, trajectories_used=10 * len(new_batches) + r,
                      cumulative_interaction_hours=float(r))
    doc = m.to_dict() | (raw or {})
    (d / "manifest.json").write_text(json.dumps(doc))
    if successes is None:
        return
    (d / "eval").mkdir()
    rows = [{"suite": "maze", "task_id": f"maze/d1/s{1000000000 + i}", "task_index": i, "sample": k,
             "success": ok, "score": float(ok)} for k in range(samples) for i, ok in enumerate(successes)]
    (d / "eval" / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    rate = sum(successes) / len(successes)
    (d / "eval" / "summary.json").write_text(json.dumps({
        "episodes": len(rows), "tasks": len(successes), "success_rate": rate, "ci95": [max(0, rate - 0.1), min(1, rate + 0.1)],
        "mean_score": rate, "mean_score_ci95": [max(0, rate - 0.1), min(1, rate + 0.1)]}))


def pattern(p: float, seed: int, n: int = TASKS) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < p for _ in range(n)]


def flip(successes: list[bool], share: float, seed: int) -> list[bool]:
    """Noise without a direction: each task's result flipped with probability `share`."""
    rng = random.Random(seed)
    return [(not ok) if rng.random() < share else ok for ok in successes]


# ---- the statistics -------------------------------------------------------------------------------------
def test_paired_test_rejects_clearly_worse_and_passes_equal_and_noisy_equal():
    base = {f"t{i}": float(ok) for i, ok in enumerate(pattern(0.5, 1))}
    assert paired_test(dict(base), base, 0.0, 0.05)["worse"] is False  # identical: no spread, promoted
    worse = {t: (v if i % 3 else 0.0) for i, (t, v) in enumerate(base.items())}  # a third of the tasks lost
    out = paired_test(worse, base, 0.0, 0.05)
    assert out["worse"] is True and out["p_value"] < 0.01 and out["difference"] < 0
    assert out["difference_ci95"][1] < 0 and out["upper_bound"] < 0
    # the same drop inside a margin wider than it is tolerated
    assert paired_test(worse, base, 0.5, 0.05)["worse"] is False
    # noisy but equal: tasks flipped both ways at random; rejected at most about `level` of the time
    rejections = 0
    for seed in range(300):
        rng = random.Random(seed)
        a = {t: float(rng.random() < 0.5) for t in base}
        b = {t: float(rng.random() < 0.5) for t in base}
        rejections += paired_test(a, b, 0.0, 0.05)["worse"]
    assert rejections <= 0.05 * 300 * 1.6, rejections  # ~15 expected by chance; a biased test gives far more
    assert rejections >= 2  # and the test does reject sometimes: it is not a constant "promoted"
    # a clearly worse candidate (success 0.5 -> 0.2) is caught nearly always
    caught = 0
    for seed in range(50):
        rng = random.Random(seed)
        caught += paired_test({t: float(rng.random() < 0.2) for t in base},
                              {t: float(rng.random() < 0.5) for t in base}, 0.0, 0.05)["worse"]
    assert caught >= 45, caught


def test_paired_test_compares_only_common_tasks_and_says_when_there_are_none():
    out = paired_test({"a": 1.0, "b": 0.0, "x": 0.0}, {"a": 1.0, "b": 0.0, "y": 1.0}, 0.0, 0.05)
    assert out["tasks"] == 2 and out["difference"] == 0.0 and out["worse"] is False
    none = paired_test({"a": 1.0}, {"b": 1.0}, 0.0, 0.05)
    assert none["tasks"] == 0 and none["worse"] is True


def test_per_task_scores_average_the_samples_of_a_task(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, [True, False, True], samples=1)
    # two samples per task: the second sample of each task appended with the opposite result
    path = run.round_dir(0) / "eval" / "results.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows += [dict(r, sample=1, success=not r["success"], score=float(not r["success"])) for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = per_task_scores(run, 0, "success_rate")
    assert sorted(scores.values()) == [0.5, 0.5, 0.5] and len(scores) == 3


# ---- the gate on a run directory ------------------------------------------------------------------------
def test_gate_promotes_round0_then_rejects_a_worse_round_and_keeps_the_promoted_one(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    good = pattern(0.6, 2)
    add_round(run, 0, tiny_model_dir, pattern(0.3, 3))
    add_round(run, 1, tiny_model_dir, good)
    add_round(run, 2, tiny_model_dir, [ok and i % 2 == 0 for i, ok in enumerate(good)])  # half the wins lost
    v0 = gate(recipe, run, 0)
    assert v0.promoted and v0.incumbent is None and "base model" in v0.reason
    assert promoted_now(run).round == 0 and promoted_now(run).adapter is None
    v1 = gate(recipe, run, 1)
    assert v1.promoted and v1.decision == "promoted" and v1.incumbent == 0 and v1.tasks == TASKS
    assert promoted_now(run).round == 1
    v2 = gate(recipe, run, 2)
    assert not v2.promoted and v2.decision == "rejected" and v2.incumbent == 1
    assert v2.p_value < 0.05 and v2.difference < 0 and "worse" in v2.reason and "round 1" in v2.reason
    # promoted/ still holds round 1's adapter, byte for byte
    assert promoted_now(run).round == 1
    assert (promoted_dir(run) / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights of round 1"
    # the rejected round stays in the lineage, untouched, with its verdict on disk
    assert run.manifest(2) is not None and read_verdict(run, 2).reason == v2.reason
    # the next round starts from the promoted checkpoint (or the latest, as configured)
    assert parent_round(recipe, run, 3) == 1
    latest, _ = make_recipe(tmp_path / "latest", parent="latest")
    assert parent_round(latest, run, 3) == 2
    off, _ = make_recipe(tmp_path / "off", enabled=False)
    assert parent_round(off, run, 3) == 2 and gate(off, run, 2) is None


def test_gate_is_idempotent_and_history_is_append_only(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.5, 4))
    add_round(run, 1, tiny_model_dir, pattern(0.5, 4))
    first = [gate(recipe, run, r) for r in (0, 1)]
    promoted_at = promoted_now(run).at
    again = [gate(recipe, run, r) for r in (0, 1)]
    assert [v.to_dict() for v in first] == [v.to_dict() for v in again]
    assert promoted_now(run).at == promoted_at  # not rewritten
    history = read_history(run)
    assert [(v.round, v.by) for v in history] == [(0, GATE), (1, GATE)]
    # a crash after the history line but before the verdict file: the rerun decides the same, once
    verdict_path(run, 1).unlink()
    assert gate(recipe, run, 1).decision == first[1].decision
    assert [(v.round, v.by) for v in read_history(run)] == [(0, GATE), (1, GATE)]


def test_gate_skips_an_unevaluated_round(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.5, 5))
    add_round(run, 1, tiny_model_dir, None)  # e.g. a Slurm round with a missing eval shard
    assert gate(recipe, run, 1) is None and read_verdict(run, 1) is None
    assert promoted_now(run) is None  # nothing decided for round 1; round 0 waits for its own gate


def test_gate_after_round0_promotes_the_base_first(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.5, 6))
    add_round(run, 1, tiny_model_dir, pattern(0.5, 6))
    v1 = gate(recipe, run, 1)  # round 0 was never gated (a run from before the gate)
    assert read_verdict(run, 0).promoted and v1.incumbent == 0 and v1.promoted


# ---- promoted/: atomic, and what it holds -----------------------------------------------------------------
def test_serving_md_names_the_promoted_paths(tmp_path, tiny_model_dir):
    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.4, 7))
    add_round(run, 1, tiny_model_dir, pattern(0.6, 7))
    gate(recipe, run, 0)
    serving0 = (promoted_dir(run) / "SERVING.md").read_text()
    base = str(tiny_model_dir.resolve())
    assert "no adapter" in serving0 and f"vllm serve {base} " in serving0 and "--enable-lora" not in serving0
    assert f"python -m sglang.launch_server --model-path {base} " in serving0
    gate(recipe, run, 1)
    info = Promoted.read(promoted_dir(run))
    assert info.round == 1 and info.base_model == base and info.by == GATE
    adapter = run.root.resolve() / "promoted" / "adapter"
    serving = (promoted_dir(run) / "SERVING.md").read_text()
    assert (f"vllm serve {base} --enable-lora --lora-modules gate-test={adapter} --max-lora-rank 8" in serving)
    assert (f"python -m sglang.launch_server --model-path {base} --enable-lora --lora-paths gate-test={adapter}"
            in serving)
    # the named paths hold what a server loads: the adapter and its tokenizer
    assert (adapter / "adapter_config.json").exists() and (adapter / "tokenizer_config.json").exists()
    assert "--chat-template" not in serving  # the base model's own template: nothing to pass
    assert promoted_dir(run).is_symlink()  # swapped in one rename
    assert [p.name for p in (run.root / ".promoted").iterdir()] == [Path(str(promoted_dir(run).readlink())).name]


@pytest.mark.parametrize("crash_in", ["_save_tokenizer", "_swap_link"])
def test_a_crash_while_promoting_leaves_the_old_promoted_checkpoint_whole(tmp_path, tiny_model_dir, monkeypatch,
                                                                          crash_in):
    import trainer.promote as promote

    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.4, 8))
    add_round(run, 1, tiny_model_dir, pattern(0.6, 8))
    gate(recipe, run, 0)
    before = {p.relative_to(promoted_dir(run)): p.read_bytes() for p in promoted_dir(run).rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(promote, crash_in, crash)
    with pytest.raises(KeyboardInterrupt):
        gate(recipe, run, 1)
    after = {p.relative_to(promoted_dir(run)): p.read_bytes() for p in promoted_dir(run).rglob("*") if p.is_file()}
    assert after == before and promoted_now(run).round == 0
    assert read_verdict(run, 1) is None  # not gated: the rerun does it
    monkeypatch.undo()
    assert gate(recipe, run, 1).promoted and promoted_now(run).round == 1
    assert len(list((run.root / ".promoted").iterdir())) == 1  # the half-built version is gone


def test_merged_weights_when_asked(tmp_path, tiny_model_dir):
    """promote.merged: promoted/merged/ is the adapter folded into the base (a real LoRA here)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    recipe, run = make_recipe(tmp_path, merged=True)
    template = tmp_path / "trained.jinja"  # the chat template the rounds trained with (model.chat_template)
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    recipe.model.chat_template = str(template)
    add_round(run, 0, tiny_model_dir, pattern(0.4, 9))
    add_round(run, 1, tiny_model_dir, pattern(0.6, 9))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(run.round_dir(1) / "adapter")
    gate(recipe, run, 0)
    gate(recipe, run, 1)
    merged = promoted_dir(run) / "merged"
    assert (merged / "config.json").exists() and Promoted.read(promoted_dir(run)).merged == "merged"
    assert f"vllm serve {merged.parent.parent.resolve() / 'promoted' / 'merged'}" in (
        promoted_dir(run) / "SERVING.md").read_text()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    folded = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    key = next(k for k in base if "q_proj" in k)
    assert not torch.equal(base[key], folded[key])  # the adapter is in the weights
    from transformers import AutoTokenizer

    for folder in ("adapter", "merged"):  # served with the template it was trained with, either way
        assert AutoTokenizer.from_pretrained(promoted_dir(run) / folder).chat_template == template.read_text()
    # vLLM and SGLang read the base's tokenizer for a LoRA adapter: the lines pass the trained template
    serving = (promoted_dir(run) / "SERVING.md").read_text()
    flag = f"--chat-template {run.root.resolve() / 'promoted' / 'adapter' / 'chat_template.jinja'}"
    assert sum(flag in line for line in serving.splitlines() if "--enable-lora" in line) == 2, serving
    assert (promoted_dir(run) / "adapter" / "chat_template.jinja").read_text() == template.read_text()


# ---- flywheel promote ---------------------------------------------------------------------------------------
def test_flywheel_promote_rolls_back_and_records_who_and_why(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from trainer.cli import main

    recipe, run = make_recipe(tmp_path)
    add_round(run, 0, tiny_model_dir, pattern(0.4, 10))
    add_round(run, 1, tiny_model_dir, pattern(0.6, 10))
    add_round(run, 2, tiny_model_dir, None)
    gate(recipe, run, 0)
    gate(recipe, run, 1)
    monkeypatch.setenv("USER", "alice")
    with run.lock("run"):  # a rollback does not wait for `flywheel run` to finish its round
        assert main(["promote", str(run.root), "--round", "0", "--reason", "round 1 answers in French"]) == 0
    assert "promoted round 0 (was round 1) by alice" in capsys.readouterr().out
    info = promoted_now(run)
    assert info.round == 0 and info.by == "alice" and info.reason == "round 1 answers in French"
    last = read_history(run)[-1]
    assert (last.round, last.decision, last.by, last.incumbent, last.reason) == (
        0, "manual", "alice", 1, "round 1 answers in French")
    assert parent_round(recipe, run, 3) == 0  # the next round trains from the rollback
    assert "by alice: round 1 answers in French" in (promoted_dir(run) / "SERVING.md").read_text()
    # refused: a round without a checkpoint, a round without an evaluation
    assert main(["promote", str(run.root), "--round", "7", "--reason", "x"]) == 2
    err = capsys.readouterr().err
    assert "round 7 has no checkpoint" in err and "0, 1, 2" in err
    assert main(["promote", str(run.root), "--round", "2", "--reason", "x"]) == 2
    assert "round 2 has no evaluation" in capsys.readouterr().err
    assert promoted_now(run).round == 0 and len(read_history(run)) == 3


# ---- the report ------------------------------------------------------------------------------------------
def test_report_rows_show_counts_labels_scores_and_verdicts(tmp_path, tiny_model_dir):
    from eval.report import write_report
    from trainer.promote import report_promoted_line

    recipe, run = make_recipe(tmp_path)
    good = pattern(0.6, 11)
    add_round(run, 0, tiny_model_dir, pattern(0.3, 11))
    add_round(run, 1, tiny_model_dir, good, new_batches=["batch-1", "batch-1b"])
    add_round(run, 2, tiny_model_dir, [ok and i % 2 == 0 for i, ok in enumerate(good)],
              raw={"logs": {"accepted": 37, "files": 2},
                   "labels": {"own": 5, "file": 3, "command": 20, "quarantined": 1, "unlabeled_kept": 0,
                              "unlabeled_dropped": 9}})
    for r in (0, 1, 2):
        gate(recipe, run, r)
    rows = report_rows(recipe, run)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0]["parent"] == "-" and rows[1]["parent"] == "0" and rows[2]["parent"] == "1"
    assert rows[1]["new_records"] == "20" and rows[2]["new_records"] == "37"  # logs.accepted wins
    assert rows[1]["labels"] == "-"
    assert rows[2]["labels"] == "own 5, file 3, command 20, quarantined 1, unlabeled kept 0 / dropped 9"
    assert rows[1]["trained_on"] == "21"
    s1 = run.eval_summary(1)
    assert rows[1]["score"] == f"{s1.success_rate:.3f} [{s1.ci95[0]:.3f}, {s1.ci95[1]:.3f}]"
    assert rows[0]["verdict"] == "promoted" and rows[1]["verdict"].startswith("promoted (p")
    assert rows[2]["verdict"].startswith("rejected: worse than round 1 beyond noise")
    report = write_report(run.root, "t", rounds=rows, promoted=report_promoted_line(recipe, run)).read_text()
    assert "| round | parent | new records | labels by source | trained on: rows (of selected) | held-out success_rate" in report
    assert "Promoted now: **round 1**" in report
    assert "| 2 | 1 | 37 | own 5, file 3, command 20, quarantined 1, unlabeled kept 0 / dropped 9 | 12 |" in report


# ---- the next round's data: new since the last round, whatever the parent ---------------------------------
@pytest.mark.parametrize("parent, expected_parent", [("promoted", 0), ("latest", 1)])
def test_the_round_after_a_rejected_one_selects_data_new_since_the_last_round(tmp_path, tiny_model_dir, parent,
                                                                              expected_parent):
    """Round 1 is rejected; round 2 starts from round 0 (promoted) or, under promote.parent: latest,
    from round 1; either way only its own experience is new (the rejected round's data is not new
    again: with replay_ratio 0 it is not trained on twice)."""
    import shutil as sh

    from tests._round_fixtures import write_maze_episodes
    from trainer.round import ADAPTER, ADAPTER_FILES, FIT_RESULT, finalize_round, prepare_round
    from trainer.rundir import atomic_write_json

    run_dir = tmp_path / "run"
    doc = {"experiment": "gate-data", "run_dir": str(run_dir), "model": {"name_or_path": str(tiny_model_dir)},
           "collect": {"suites": []}, "data": {"success_only": False, "replay_ratio": 0.0},
           "tracking": {"wandb": {"mode": "disabled"}}, "promote": {"parent": parent}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(doc))
    recipe, run = load_recipe(tmp_path / "recipe.yaml"), RunDir(run_dir)
    add_round(run, 0, tiny_model_dir, pattern(0.6, 12))
    m0 = json.loads((run.round_dir(0) / "manifest.json").read_text())
    atomic_write_json(run.round_dir(0) / "manifest.json", m0 | {"batches_seen": [], "new_batches": [],
                                                                "store_batches": {}, "checksums": {}})
    run.experience.mkdir(parents=True)
    for r in (1, 2):
        write_maze_episodes(run.experience / f"round-{r:04d}.jsonl", per_difficulty=4, difficulties=(r,))
    sel1 = prepare_round(recipe, run, 1, progress=False)
    (run.work_dir(1) / ADAPTER).mkdir()
    for name in ADAPTER_FILES:
        (run.work_dir(1) / ADAPTER / name).write_text(name)
    atomic_write_json(run.work_dir(1) / FIT_RESULT, {"rows": sel1.rows, "learning_rate": 1e-3})
    finalize_round(recipe, run, 1)
    results = run.round_dir(0) / "eval"
    sh.copytree(results, run.round_dir(1) / "eval")
    rows = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]
    (run.round_dir(1) / "eval" / "results.jsonl").write_text(
        "".join(json.dumps(dict(x, success=False, score=0.0)) + "\n" for x in rows))  # every task lost
    assert gate(recipe, run, 0).promoted and gate(recipe, run, 1).decision == "rejected"
    sel2 = prepare_round(recipe, run, 2, progress=False)
    assert sel2.parent == f"round-{expected_parent:04d}"
    assert set(sel1.new_batches) < set(sel2.batches_seen)
    round2_batch = set(sel2.batches_seen) - set(sel1.batches_seen)
    assert len(round2_batch) == 1
    assert set(sel2.new_batches) == round2_batch
    assert set(sel2.store_batches) == round2_batch  # replay_ratio 0: the rejected round's data stays out
    if expected_parent == 0:
        assert sel2.parent_adapter is None  # round 0 is the base: a fresh adapter on it
    else:
        assert sel2.parent_adapter == str(run.round_dir(1) / "adapter")


def test_the_slurm_refit_step_gates_the_round(tmp_path, tiny_model_dir):
    """trainer/submit.py `refit` (the job after a round's eval array) gates the round before the next
    round's training job picks its parent, and its report shows the verdict."""
    from trainer.submit import refit

    recipe, run = make_recipe(tmp_path)
    good = pattern(0.6, 13)
    add_round(run, 0, tiny_model_dir, good)
    add_round(run, 1, tiny_model_dir, [ok and i % 2 == 0 for i, ok in enumerate(good)])
    assert refit(str(tmp_path / "recipe.yaml"), 0)["promotion"] == "promoted"
    out = refit(str(tmp_path / "recipe.yaml"), 1)
    assert out["promotion"] == "rejected" and out["eval"] == "summary present"
    assert promoted_now(run).round == 0 and parent_round(recipe, run, 2) == 0
    assert "| 1 | 0 |" in run.report.read_text() and "rejected: worse than round 0" in run.report.read_text()


def test_the_gate_can_be_tuned_in_a_running_experiment_but_not_switched_off(tmp_path):
    """promote.margin / level / merged change between periods without --fork (each verdict records
    its own); promote.enabled and promote.parent change what the next round trains from: a fork."""
    from trainer.recipe import RecipeError
    from trainer.recipe_fork import write_resolved

    run_dir = tmp_path / "run"

    def recipe(**promote):
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({"experiment": "tune", "run_dir": str(run_dir), "model": {"name_or_path": "tiny"},
                                        "promote": promote}))
        return load_recipe(path)

    write_resolved(recipe(), run_dir)
    (run_dir / "experience").mkdir()
    (run_dir / "experience" / "round-0001.jsonl").write_text("")  # the run has produced something
    write_resolved(recipe(margin=0.05, level=0.01, merged=True), run_dir)  # accepted
    assert yaml.safe_load((run_dir / RESOLVED_NAME).read_text())["promote"]["margin"] == 0.05
    for change in ({"enabled": False}, {"parent": "latest"}):
        with pytest.raises(RecipeError, match=f"promote.{next(iter(change))}"):
            write_resolved(recipe(margin=0.05, level=0.01, merged=True, **change), run_dir)
