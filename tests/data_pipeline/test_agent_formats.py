"""The agent trace formats read from real public samples under tests/fixtures/samples/ (each with
its SOURCE.md and LICENSE): ATIF (Harbor / Terminal-Bench). Counts add up, tool calls are paired
with their results, copied context is marked, and values match the original files. Auto-detection
picks the right format for these files and the new detectors claim none of the shared samples."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline import sources
from data_pipeline.adapters import atif, formats
from data_pipeline.store import ExperienceStore
from tests.paths import TESTS
from tests.samples import shared_samples

SAMPLES = TESTS / "fixtures" / "samples"
ATIF = SAMPLES / "atif"
GOLDEN = ATIF / "harbor" / "tests" / "golden"
NEW = {"atif": atif}


def _ingest(tmp_path: Path, root: Path):
    store = ExperienceStore(tmp_path / "store")
    summary = store.ingest([root])
    trajs = list(store.trajectories(include_heldout=True))
    return store, summary, trajs


def _sample_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and sources.skip_note(p) is None]


@pytest.mark.parametrize("fmt", sorted(NEW))
def test_auto_detection_picks_the_format(fmt):
    files = _sample_files(SAMPLES / fmt)
    assert files
    for f in files:
        assert sources.detect(f) == fmt, f


@pytest.mark.skipif(not shared_samples().is_dir(), reason="shared trajectory samples not present")
def test_new_detectors_claim_no_shared_sample():
    for f in _sample_files(shared_samples()):
        with open(f, "rb") as fh:
            head = fh.read(64 * 1024)
        for name, mod in NEW.items():
            assert not mod.detect(f, head), f"{name} claims {f}"


def test_registry_has_the_new_formats():
    assert set(NEW) <= set(formats())


# ---- ATIF ------------------------------------------------------------------------------------
def test_atif_counts_add_up(tmp_path):
    store, s, trajs = _ingest(tmp_path, ATIF)
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert s.quarantined == 0, store.quarantine()
    assert set(s.formats.values()) == {"atif"}
    # 3 harbor files + the synthetic v1.7 file (root + 1 embedded subagent)
    assert s.read == 5 and s.accepted == 5
    assert {Path(p).name for p, _ in s.skipped} >= {"LICENSE", "SOURCE.md"}


def _one(trajs, pred):
    hits = [t for t in trajs if pred(t)]
    assert len(hits) == 1, len(hits)
    return hits[0]


def test_atif_terminus_tool_calls_results_and_token_metrics(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "terminus_2" / "hello-world-context-summarization.trajectory.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.episode_id == f"{doc['session_id']}/{f.name}")
    assert t.policy == doc["agent"]["model_name"] == "openai/gpt-4o" and t.category == "terminus-2"
    agent_steps = [s for s in doc["steps"] if s["source"] == "agent"]
    assistants = [m for m in t.messages if m.role == "assistant"]
    assert len(assistants) == len(agent_steps)
    step, mine = agent_steps[0], assistants[0]
    call = step["tool_calls"][0]
    assert mine.content == step["message"]
    assert (mine.tool_calls[0].id, mine.tool_calls[0].name, mine.tool_calls[0].arguments) == (
        call["tool_call_id"], call["function_name"], call["arguments"])
    assert mine.token_ids == step["metrics"]["completion_token_ids"]
    assert mine.logprobs == pytest.approx(step["metrics"]["logprobs"])
    # terminus-2 writes each command's output without source_call_id: it answers the step's call
    i = t.messages.index(mine)
    result = t.messages[i + 1]
    assert result.role == "tool" and result.tool_call_id == call["tool_call_id"] and result.name == "bash_command"
    assert result.content == step["observation"]["results"][0]["content"]
    # every call with a result is answered right after its step
    calls = {c.id for m in t.messages for c in m.tool_calls}
    assert {m.tool_call_id for m in t.messages if m.role == "tool"} <= calls
    # the summarisation handoff (a system step) references the subagent trajectories
    assert [r["step"] for r in t.metadata["subagent_refs"]] == [
        i for i, s in enumerate(doc["steps"]) if s.get("observation") and any(
            r.get("subagent_trajectory_ref") for r in s["observation"]["results"])]
    assert t.outcome.success is None  # ATIF has no reward field and no trial directory is beside it


def test_atif_copied_context_is_marked(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "terminus_2" / "hello-world-context-summarization-linear-history.trajectory.cont-1.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.episode_id.endswith(f.name))
    copied = [s for s in doc["steps"] if s.get("is_copied_context")]
    assert len(copied) == 4 and t.metadata["context_messages"] == [0, 1, 2, 3]
    assert t.messages[2].role == "assistant" and t.messages[2].content == copied[2]["message"]
    # agent steps without tool calls: their observation is environment feedback, a user turn
    assert [m.role for m in t.messages[4:6]] == ["assistant", "user"]
    assert t.messages[5].content == doc["steps"][4]["observation"]["results"][0]["content"]


def test_atif_openhands_tools_and_pairing(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    f = GOLDEN / "openhands" / "hello-world.trajectory.json"
    doc = json.loads(f.read_text())
    t = _one(trajs, lambda t: t.category == "openhands")
    assert [m.role for m in t.messages] == ["system", "user", "system", "system", "assistant", "tool", "assistant"]
    assert t.metadata["tools"][0]["function"]["name"] == doc["agent"]["tool_definitions"][0]["function"]["name"]
    res = doc["steps"][4]["observation"]["results"][0]
    assert t.messages[5].tool_call_id == res["source_call_id"] == t.messages[4].tool_calls[0].id
    assert t.messages[5].content == res["content"]
    assert t.messages[6].tool_calls[0].name == "finish"


def test_atif_embedded_subagents_synthetic(tmp_path):
    _, _, trajs = _ingest(tmp_path, ATIF)
    root = _one(trajs, lambda t: t.task_id == "synthetic/count-lines")
    child = _one(trajs, lambda t: t.task_id == "synthetic/count-lines/subagent/child-1")
    assert root.outcome.success is True and root.outcome.score == 1.0  # extra.reward
    assert child.metadata["parent"]["episode_id"] == root.episode_id and child.outcome.labeled is False
    assert root.messages[2].tool_calls[0].name == "delegate_task" and root.messages[3].tool_call_id == "call_delegate_1"
    assert root.metadata["reasoning"] == {"2": "A subagent with a shell can do this."}
    assert root.interaction_s == pytest.approx(9.0)
    assert [m.role for m in child.messages] == ["user", "assistant", "tool", "assistant"]


def test_atif_harbor_trial_directory_joins_task_and_reward(tmp_path):
    trial = tmp_path / "trials" / "hello-world__abc"
    (trial / "agent").mkdir(parents=True)
    (trial / "verifier").mkdir()
    src = GOLDEN / "openhands" / "hello-world.trajectory.json"
    (trial / "agent" / "trajectory.json").write_bytes(src.read_bytes())
    (trial / "result.json").write_text(json.dumps({"task_name": "hello-world"}))
    (trial / "verifier" / "reward.txt").write_text("1\n")
    recs = list(atif.read(trial / "agent" / "trajectory.json"))
    assert len(recs) == 1 and recs[0].data["task_id"] == "hello-world"
    assert recs[0].data["outcome"] == {"success": True, "score": 1.0}
    (trial / "verifier" / "reward.txt").write_text("7\n")
    rec = next(atif.read(trial / "agent" / "trajectory.json"))
    assert rec.error == ("verifier/reward.txt", "must lie in [0, 1], got 7.0")


def test_atif_malformed_records_are_quarantined_with_the_field(tmp_path):
    doc = json.loads((ATIF / "synthetic" / "synthetic-v1.7-embedded-subagent.trajectory.json").read_text())
    doc["steps"][2]["tool_calls"][0].pop("function_name")
    doc["subagent_trajectories"][0]["steps"][0]["source"] = "robot"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    recs = list(atif.read(f))
    assert [r.error[0] for r in recs] == ["steps[2].tool_calls[0].function_name", "<parent>"]
    doc["steps"][2]["tool_calls"][0]["function_name"] = "delegate_task"
    f.write_text(json.dumps(doc))
    recs = list(atif.read(f))
    assert recs[0].data is not None and recs[1].error == ("steps[0].source", "expected system, user or agent, got 'robot'")
