"""Every real sample under shared/data/trajectories ingests with format auto, the counts add up,
and a few fields of each format match the original file."""
from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from data_pipeline.store import ExperienceStore
from tests.samples import shared_samples

SAMPLES = shared_samples()
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared trajectory samples not present")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    store = ExperienceStore(tmp_path_factory.mktemp("store"))
    summary = store.ingest([SAMPLES])
    by_format: dict[str, list] = {}
    for t in store.trajectories(include_heldout=True):
        by_format.setdefault(t.source_format, []).append(t)
    return store, summary, by_format


def _one(by_format, fmt, pred):
    hits = [t for t in by_format[fmt] if pred(t)]
    assert len(hits) == 1, f"{fmt}: expected one match, got {len(hits)}"
    return hits[0]


def test_counts_add_up_and_every_file_has_a_format(ingested):
    store, s, _ = ingested
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert s.quarantined == 0, store.quarantine()
    assert "unrecognised" not in s.formats.values()
    skipped = {Path(p).name for p, _ in s.skipped}
    assert {"LICENSE", "SOURCE.md", "INDEX.md", "preds.json", "all_preds.jsonl"} <= skipped
    assert set(s.formats.values()) == {"inspect", "sharegpt", "mini-swe-agent", "openhands", "openhands-eval",
                                       "swe-agent", "tau-bench", "tau2-bench"}
    assert store.stats()["trajectories"] == s.accepted


def test_tau_bench(ingested):
    _, _, by = ingested
    raw = json.loads(gzip.open(SAMPLES / "tau-bench/historical_trajectories/gpt-4o-airline.json.gz").read())
    assert len(by["tau-bench"]) == len(raw) == 200
    rec = raw[5]
    t = _one(by, "tau-bench", lambda t: t.episode_id == f"gpt-4o-airline/task{rec['task_id']}/trial{rec['trial']}")
    assert t.task_id == f"tau-bench/airline/{rec['task_id']}" and t.policy == "gpt-4o"
    assert t.outcome.score == rec["reward"] and len(t.messages) == len(rec["traj"])
    call = next(m for m in rec["traj"] if m.get("tool_calls"))["tool_calls"][0]
    mine = next(m for m in t.messages if m.tool_calls).tool_calls[0]
    assert (mine.name, mine.arguments, mine.id) == (call["function"]["name"], json.loads(call["function"]["arguments"]), call["id"])
    assert sum(t.outcome.success for t in by["tau-bench"]) == 84


def test_tau2_bench(ingested):
    _, _, by = ingested
    f = SAMPLES / "tau2-bench/src/experiments/model_training/results/ft_gpt-4.1-2025-04-14_sierra_tau2-full-sft_BzrYdMNm_airline_default_gpt-4.1_1trials.json"
    doc = json.loads(f.read_text())
    sim = doc["simulations"][3]
    t = _one(by, "tau2-bench", lambda t: t.episode_id == sim["id"])
    assert t.task_id == f"tau2-bench/airline/{sim['task_id']}" and t.duration_s == pytest.approx(sim["duration"])
    assert t.outcome.score == sim["reward_info"]["reward"] and t.policy == doc["info"]["agent_info"]["llm"]
    assert t.messages[0].role == "system" and len(t.messages) == len(sim["messages"]) + 1
    telecom = [t for t in by["tau2-bench"] if t.category == "telecom"]
    assert len(telecom) == 20 and sum(t.outcome.success for t in telecom) == 14
    # user-side tool calls stay user turns, never agent tool calls
    assert any("(user tool call)" in m.content for t in telecom for m in t.messages if m.role == "user")


def test_swe_agent(ingested):
    _, _, by = ingested
    f = next(SAMPLES.glob("swe-agent/trajectories/demonstrations/replay__*/*.traj"))
    doc = json.loads(f.read_text())
    t = _one(by, "swe-agent", lambda t: t.task_id == "marshmallow-code__marshmallow-1867")
    assert len(t.messages) == len(doc["history"]) and t.metadata["exit_status"] == doc["info"]["exit_status"]
    tool_msgs = [m for m in t.messages if m.role == "tool"]
    first_tool = next(m for m in doc["history"] if m["role"] == "tool")
    assert tool_msgs[0].tool_call_id == first_tool["tool_call_ids"][0]
    assert tool_msgs[0].duration_s == pytest.approx(doc["trajectory"][0]["execution_time"])
    assert t.outcome.success is None  # no SWE-bench report beside this run


def test_mini_swe_agent_joins_report(ingested):
    _, _, by = ingested
    f = SAMPLES / "mini-swe-agent/output/deepseek_chat_dev/pylint-dev__astroid-1978/pylint-dev__astroid-1978.traj.json"
    doc = json.loads(f.read_text())
    t = _one(by, "mini-swe-agent", lambda t: t.task_id == "pylint-dev__astroid-1978")
    assert t.outcome.success is False  # listed in the report's unresolved_ids
    assert _one(by, "mini-swe-agent", lambda t: t.task_id == "sqlfluff__sqlfluff-2419").outcome.success is True
    # the reasoner run is not graded by the deepseek-chat report
    assert _one(by, "mini-swe-agent", lambda t: t.task_id == "pvlib__pvlib-python-1854").outcome.success is None
    stamps = [m["extra"]["timestamp"] for m in doc["messages"] if "timestamp" in (m.get("extra") or {})]
    assert t.interaction_s == pytest.approx(max(stamps) - min(stamps))
    assert len(t.messages) == len(doc["messages"]) - 1  # the final exit message is dropped
    assert t.policy == "deepseek/deepseek-chat" and t.metadata["prediction_found"]


def test_openhands_events_and_eval(ingested):
    _, _, by = ingested
    events = json.loads((SAMPLES / "openhands/tests/runtime/trajs/basic.json").read_text())
    t = _one(by, "openhands", lambda t: t.task_id == "openhands/basic")
    call = t.messages[1].tool_calls[0]
    assert call.id == events[1]["tool_call_metadata"]["tool_call_id"] and call.name == "str_replace_editor"
    assert t.messages[2].role == "tool" and t.messages[2].tool_call_id == call.id
    lines = (SAMPLES / "openhands/evaluation/benchmarks/multi_swe_bench/examples/output.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    e = _one(by, "openhands-eval", lambda t: t.task_id == rec["instance_id"])
    assert e.policy == rec["metadata"]["llm_config"]["model"] and e.suite == "multi-swe-bench"
    resolver = [t for t in by["openhands-eval"] if t.suite == "openhands-resolver"]
    assert len(resolver) == 2 and all(isinstance(t.outcome.success, bool) for t in resolver)


def test_inspect_json_and_eval_zip(ingested):
    _, _, by = ingested
    doc = json.loads(next(SAMPLES.glob("inspect-ai/tests/analysis/test_logs/*.json")).read_text())
    s = doc["samples"][0]
    t = _one(by, "inspect", lambda t: t.task_id == "browser/1")
    assert t.duration_s == pytest.approx(s["working_time"]) and t.outcome.success is True
    assert [m.role for m in t.messages] == [m["role"] for m in s["messages"]]
    assert t.messages[1].tool_calls[0].arguments == s["messages"][1]["tool_calls"][0]["arguments"]
    z = zipfile.ZipFile(next(SAMPLES.glob("inspect-ai/tests/scorer/logs/*.eval")))
    n_samples = sum(1 for n in z.namelist() if n.startswith("samples/"))
    assert len([t for t in by["inspect"] if t.suite == "popularity"]) == n_samples + 1  # + log_read_sample.eval


def test_sharegpt_tool_calls(ingested):
    _, s, by = ingested
    raw = json.loads((SAMPLES / "llamafactory-sharegpt-toolcall/data/glaive_toolcall_en_demo.json").read_text())
    distinct = {json.dumps(r["conversations"], sort_keys=True) for r in raw}
    assert len(by["sharegpt"]) == len(distinct)  # exact repeats are counted as duplicates
    t = _one(by, "sharegpt", lambda t: t.episode_id.endswith(":record 0"))
    fc = json.loads(raw[0]["conversations"][3]["value"])
    call = t.messages[3].tool_calls[0]
    assert (call.name, call.arguments) == (fc["name"], fc["arguments"])
    assert t.messages[4].role == "tool" and t.messages[4].tool_call_id == call.id
    assert t.metadata["tools"][0]["function"]["name"] == json.loads(raw[0]["tools"])[0]["name"]
