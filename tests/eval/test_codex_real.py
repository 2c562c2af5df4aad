"""OpenAI's Codex CLI (the real binary, `openai-codex-cli-bin` from the package index) against
`flywheel serve` on the real model, SmolLM2-135M-Instruct, over the Responses API: a custom model
provider (`wire_api = "responses"`) in a private CODEX_HOME, one `codex exec` turn. The request
Codex sends (its tools, `prompt_cache_key`, `client_metadata`, `include`, `reasoning.summary`,
streaming) is served; the rollout Codex writes and the server's own log are both ingested, and they
hold the same conversation.

Codex also sends a tool the server cannot run, its hosted `web_search`: the first run leaves it on
and shows the 400's advice reaching the user; the second turns it off as the advice says. Its
sub-agent tools come as a `namespace` tool: served, the model sees them as NAMESPACE.NAME. The 135M model does not call Codex's tools of its own
accord (tool calls parsed and executed are shown by tests/eval/test_inspect_real.py); what is shown
here is the wire protocol of a real coding agent, and its logs feeding the store.

Marked `real`: `make test-real` installs the harness extra (which carries the Codex binary) and the
model."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
CAP = 200  # flywheel serve --max-tokens


def _codex() -> Path:
    try:
        import codex_cli_bin
    except ImportError:
        pytest.fail("the Codex CLI is missing: pip install -e '.[harness]' (make test-real does)")
    exe = Path(codex_cli_bin.__file__).parent / "bin" / "codex"
    assert exe.exists(), exe
    return exe


def _run(exe: Path, home: Path, work: Path, prompt: str, *flags: str) -> list[dict]:
    env = {**os.environ, "CODEX_HOME": str(home), "FLYWHEEL_API_KEY": "k"}
    proc = subprocess.run([str(exe), "exec", "--json", "--skip-git-repo-check", "-c", "analytics.enabled=false",
                           *flags, prompt], cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=900)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return events + [{"type": "exit", "code": proc.returncode, "stderr": proc.stderr[-2000:]}]


def test_codex_exec_turn_against_flywheel_serve(real_model_dir, tmp_path, capsys):
    exe = _codex()
    from data_pipeline.store import ExperienceStore
    from eval.policy import load_checkpoint
    from eval.serve import serving
    from trainer.cli import main as cli

    model, tok = load_checkpoint(real_model_dir)
    home, work, served = tmp_path / "codex-home", tmp_path / "work", tmp_path / "served"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text("hello\n")
    # a reply's length is capped by the server (Codex sends no max_output_tokens); SmolLM2 samples
    # (Codex sends no temperature: 1.0) and mostly stops within a few dozen tokens
    with serving(model, tok, model_name="smollm2", api_key="k", log_dir=served, max_tokens=CAP) as url:
        (home / "config.toml").write_text(
            'model = "smollm2"\nmodel_provider = "flywheel"\n\n[model_providers.flywheel]\nname = "flywheel"\n'
            f'base_url = "{url}"\nenv_key = "FLYWHEEL_API_KEY"\nwire_api = "responses"\n')
        # Codex's own prompt (instructions, skills, permissions, environment: ~4,500 tokens) is more
        # than a 135M model can follow: it rambles into any cap. A short prompt of one's own, as one
        # would give a small local model
        (home / "instructions.md").write_text("You are a helpful assistant. Answer in one short sentence.\n")
        short = ["-c", f'model_instructions_file="{home / "instructions.md"}"', "-c", "include_environment_context=false",
                 "-c", "include_permissions_instructions=false", "-c", "include_apps_instructions=false",
                 "-c", "skills.include_instructions=false"]
        # ---- 1. as configured out of the box: the server's 400 names the tool and what to turn off
        first = _run(exe, home, work, "Say hello.", *short)
        errors = [e["message"] for e in first if e["type"] == "error"]
        assert errors and all("only function and namespace tools are served, got type 'web_search'" in m
                              and "-c web_search=" in m for m in errors), first
        assert first[-1]["code"] != 0 and not any(e["type"] == "turn.completed" for e in first)
        assert not list(served.glob("served-*.jsonl"))  # refused: nothing generated, nothing logged
        for f in home.glob("sessions/*/*/*/rollout-*.jsonl"):  # the refused turn's rollout (no reply)
            f.unlink()
        # ---- 2. as the advice says: the turn is served, streamed, and completes. A sampled reply
        # that runs into the cap is a failed turn for Codex (status incomplete): that, and only
        # that, is tried again (at most 3 turns)
        for attempt in range(3):
            events = _run(exe, home, work, "Say hello.", *short, "-c", 'web_search="disabled"')
            failed = [e["error"]["message"] for e in events if e["type"] == "turn.failed"]
            if not failed:
                break
            assert failed == ["Incomplete response returned, reason: max_output_tokens"], events
            for f in served.glob("served-*.jsonl"):
                f.unlink()
            for f in home.glob("sessions/*/*/*/rollout-*.jsonl"):
                f.unlink()
    assert events[-1]["code"] == 0, events
    assert not [e for e in events if e["type"] in ("error", "turn.failed")], events
    (done,) = [e for e in events if e["type"] == "turn.completed"]
    assert 10 < done["usage"]["input_tokens"] < 1000 and 1 <= done["usage"]["output_tokens"] < CAP
    said = [e["item"]["text"] for e in events if e["type"] == "item.completed"
            and e["item"]["type"] == "agent_message"]
    assert len(said) == 1 and said[0].strip()

    # the server's log: Codex's request as the model saw it, its client_metadata kept
    rows = [json.loads(x) for f in served.glob("served-*.jsonl") for x in f.read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"].strip() == said[0].strip()
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"].startswith("You are a helpful assistant.")  # Codex's developer message
    assert row["messages"][1]["content"] == "Say hello."
    assert "x-codex-turn-metadata" in row["metadata"]["metadata"]["client_metadata"]
    # the tools Codex offered are logged with the conversation (an SFT row renders them as prompted),
    # its sub-agent tools (a `namespace` tool) as NAMESPACE.NAME, the names the model saw
    offered = {t["function"]["name"] for t in row["metadata"]["tools"]}
    assert "exec_command" in offered and "multi_agent_v1.spawn_agent" in offered, offered

    # ---- 3. both logs ingest: Codex's rollout (codex adapter) and the served log (flywheel's own)
    (rollout,) = home.glob("sessions/*/*/*/rollout-*.jsonl")
    capsys.readouterr()
    assert cli(["ingest", str(rollout), str(served), "--store", str(tmp_path / "store"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    assert (summary["accepted"], summary["quarantined"]) == (2, 0), summary
    assert sorted(summary["formats"].values()) == ["codex", "flywheel"]
    trajs = {t.source_format: t for t in ExperienceStore(tmp_path / "store").trajectories()}
    codex_t, served_t = trajs["codex"], trajs["flywheel-serve"]
    assert codex_t.policy == "smollm2" and codex_t.metadata["model_provider"] == "flywheel"
    assert codex_t.metadata["cli_version"] and codex_t.metadata["originator"] == "codex_exec"
    # the same conversation from both sides: Codex's turns and the model's reply
    assert codex_t.messages[-1].content.strip() == served_t.messages[-1].content.strip() == said[0].strip()
    assert [m.content for m in codex_t.messages if m.role == "user"] == \
        [m.content for m in served_t.messages if m.role == "user"]
    assert codex_t.duration_s and codex_t.duration_s > 0
