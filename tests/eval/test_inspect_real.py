"""A real agent harness on the real model, end to end (issue 18's first Must-show): inspect_ai runs a
small local task with an `add` tool against `flywheel serve` on SmolLM2-135M-Instruct (inspect's
`openai-api/flywheel/NAME` provider, FLYWHEEL_BASE_URL / FLYWHEEL_API_KEY); the server parses the
model's tool calls and inspect executes them; `flywheel ingest --score includes` reads the `.eval` log
inspect wrote, sample by sample with the chosen scorer; `flywheel train` trains one round on it (a
recipe whose collect.logs is inspect's log folder).

Marked `real`: `make test-real` installs the harness extra (inspect-ai, openai) and the model. The
assertions are about the mechanics (calls parsed and executed, counts, one round trained), not the
135M model's arithmetic: the call is forced with inspect's `tool_choice`, and after it inspect
lets the model answer (`auto`), capped by the message limit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import trl
import yaml

pytestmark = pytest.mark.real

# SmolLM2's own ChatML template prints no tool calls, so training on tool-use logs needs one that
# does (README "Models, chat templates"): TRL's qwen2_5 template is ChatML with Hermes' <tool_call>
# marks, the marks the server parses for SmolLM2; it serves and trains alike.
TEMPLATE = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"
PROBLEMS = [(2, 3), (4, 1), (7, 6), (10, 12)]


def _inspect():
    try:
        import inspect_ai  # noqa: F401
        import openai  # noqa: F401
    except ImportError:
        pytest.fail("inspect_ai / openai missing: pip install -e '.[harness]' (make test-real does)")


def test_inspect_task_on_the_real_model_ingested_and_trained(real_model_dir, tmp_path, monkeypatch, capsys):
    _inspect()
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes, match
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import ToolFunction, tool

    from data_pipeline.store import ExperienceStore
    from eval.models import LoadOptions
    from eval.policy import load_checkpoint
    from eval.serve import serving
    from trainer.cli import main as cli
    from trainer.rundir import RunDir

    @tool
    def add():
        async def execute(x: int, y: int):
            """Add two integers.

            Args:
                x: The first integer.
                y: The second integer.
            """
            return str(x + y)

        return execute

    # ---- 1. inspect drives the served real model; the server parses the calls, inspect runs them
    model, tok = load_checkpoint(real_model_dir, load=LoadOptions(chat_template=str(TEMPLATE)))
    logs, served = tmp_path / "inspect-logs", tmp_path / "served"
    task = Task(dataset=[Sample(input=f"What is {x} + {y}? Use the add tool.", target=str(x + y), id=f"add-{x}-{y}")
                         for x, y in PROBLEMS],
                solver=[use_tools(add(), tool_choice=ToolFunction("add")), generate()],
                scorer=[match(), includes()], message_limit=5, name="add_real")
    with serving(model, tok, model_name="smollm2", api_key="k", log_dir=served) as url:
        monkeypatch.setenv("FLYWHEEL_BASE_URL", url)
        monkeypatch.setenv("FLYWHEEL_API_KEY", "k")
        (log,) = inspect_eval(task, model="openai-api/flywheel/smollm2", log_dir=str(logs), display="none",
                              max_tokens=48, temperature=0, seed=0, max_connections=1)
    assert log.status == "success", log.error
    assert len(log.samples) == len(PROBLEMS)
    (eval_file,) = logs.glob("*.eval")
    for s in log.samples:
        assert not s.error
        tool_events = [e for e in s.events if e.event == "tool"]
        model_events = [e for e in s.events if e.event == "model"]
        # the first reply: a tool call the server returned as OpenAI tool_calls (finish_reason tool_calls)
        first = model_events[0].output
        assert first.stop_reason == "tool_calls", first
        (call,) = first.message.tool_calls
        assert call.function == "add" and set(call.arguments) == {"x", "y"}
        # ... and inspect executed it: its tool event and the tool message carry the sum
        ran = tool_events[0]
        assert ran.function == "add" and ran.arguments == call.arguments and not ran.error
        assert ran.result == str(call.arguments["x"] + call.arguments["y"])
        result = next(m for m in s.messages if m.role == "tool")
        assert result.tool_call_id == call.id and result.text == ran.result
        assert set(s.scores) == {"match", "includes"}
    # the server's own log of what it returned: one reply per model call, the forced ones as tool calls
    served_rows = [json.loads(line) for f in served.glob("served-*.jsonl") for line in f.read_text().splitlines()]
    n_calls = sum(1 for s in log.samples for e in s.events if e.event == "model")
    assert len(served_rows) == n_calls
    assert sum(bool(r["messages"][-1].get("tool_calls")) for r in served_rows) >= len(PROBLEMS)

    # ---- 2. flywheel ingest --score includes: one record per sample, the chosen scorer's outcome
    capsys.readouterr()
    assert cli(["ingest", str(logs), "--store", str(tmp_path / "store"), "--score", "includes", "--json",
                "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["formats"] == {str(eval_file): "inspect"}
    assert summary["read"] == len(PROBLEMS)  # samples, not files
    assert summary["read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    assert (summary["accepted"], summary["quarantined"]) == (len(PROBLEMS), 0)
    trajs = {t.episode_id: t for t in ExperienceStore(tmp_path / "store").trajectories()}
    assert len(trajs) == len(PROBLEMS)
    for s in log.samples:
        t = trajs[s.uuid]
        assert t.source_format == "inspect" and t.task_id == f"add_real/{s.id}"
        want = s.scores["includes"].value == "C"
        assert t.outcome.success is want and t.outcome.score == (1.0 if want else 0.0)
        calls = {c.id: c for m in t.messages if m.role == "assistant" for c in m.tool_calls}
        results = [m for m in t.messages if m.role == "tool"]
        assert calls and results and all(m.tool_call_id in calls for m in results)  # paired
        assert [m.role for m in t.messages] == [m.role for m in s.messages]
        assert t.metadata["tools"][0]["function"]["name"] == "add"
    # ingesting the same log again: every sample a duplicate, the counts still add up
    capsys.readouterr()
    assert cli(["ingest", str(logs), "--store", str(tmp_path / "store"), "--score", "includes", "--json",
                "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["read"], again["accepted"], again["duplicates"], again["quarantined"]) == (len(PROBLEMS), 0,
                                                                                             len(PROBLEMS), 0)

    # ---- 3. one round trained on inspect's log folder (collect.logs), on the real model
    recipe = tmp_path / "inspect-round.yaml"
    recipe.write_text(yaml.safe_dump({
        "experiment": "inspect-real", "run_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(real_model_dir), "chat_template": str(TEMPLATE)},
        "collect": {"logs": [str(logs)], "suites": []},
        "ingest": {"format": "inspect", "score": "includes"},
        "data": {"success_only": False},  # every sample, correct or not (the mechanics, not the accuracy)
        "train": {"method": "sft", "rounds": 1, "max_steps": 2, "batch_size": 2, "max_length": 768,
                  "learning_rate": 1e-3, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "eval": {"suites": []}, "curve": {"bootstrap": 0}, "tracking": {"wandb": {"mode": "disabled"}},
    }, sort_keys=False))
    assert cli(["train", str(recipe), "--quiet"]) == 0
    run = RunDir(tmp_path / "run")
    m = run.manifest(1)
    assert m is not None and m.method == "sft" and m.parent == "round-0000"
    assert {k: m.logs[k] for k in ("files", "read", "accepted", "duplicates", "quarantined")} == {
        "files": 1, "read": len(PROBLEMS), "accepted": len(PROBLEMS), "duplicates": 0, "quarantined": 0}
    assert m.trajectories_used == len(PROBLEMS) and len(m.new_batches) == 1
    assert m.labels["own"] == len(PROBLEMS)  # every sample's outcome from the includes scorer
    assert m.tokens_trained > 0 and m.adapter == "adapter"
    assert (run.round_dir(1) / "adapter" / "adapter_config.json").exists()
    run_trajs = ExperienceStore(run.store).trajectories()
    assert {t.episode_id: t.outcome.success for t in run_trajs} == {k: t.outcome.success for k, t in trajs.items()}
