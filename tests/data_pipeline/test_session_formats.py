"""Coding-agent session logs: Claude Code session JSONL and Codex CLI rollouts, on the real public
samples under tests/fixtures/samples/{claude-code,codex} (see their SOURCE.md), checked against the
original files, plus the broken cases (quarantined with the field, nothing dropped)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.adapters import HEAD_BYTES, claude_code, codex, formats
from data_pipeline.adapters.common import iso_seconds
from data_pipeline.builders import _sft_messages
from data_pipeline.schema import trajectory_from_dict
from data_pipeline.store import ExperienceStore

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
CC = SAMPLES / "claude-code"
INIT = CC / "d-kimuson-claude-code-viewer" / "1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl"
SIDE = CC / "d-kimuson-claude-code-viewer" / "5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl"
CC2 = CC / "kvsankar-agent-history" / "session-01.jsonl"
CX = SAMPLES / "codex" / "kvsankar-agent-history" / "session-01.jsonl"
CX_SYN = next((SAMPLES / "codex" / "synthetic").glob("synthetic-rollout-*.jsonl"))
CODEMIE = SAMPLES / "codex" / "codemie-ai-codemie-code"
CX_EXEC = CODEMIE / "rollout-2026-01-02T18-39-45-019b7f94-51b4-7593-922e-ba12b5b73b52.jsonl"  # codex exec 0.77
CX_TUI = CODEMIE / "rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-3724b5ddb799.jsonl"  # codex-tui 0.125


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def trajectories(mod, path: Path) -> list:
    recs = list(mod.read(path))
    assert all(r.error is None for r in recs), [r.error for r in recs if r.error]
    return [trajectory_from_dict(r.data) for r in recs]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    store = ExperienceStore(tmp_path_factory.mktemp("store"))
    summary = store.ingest([CC, SAMPLES / "codex"])
    return store, summary


def test_ingest_counts_add_up_and_formats_are_detected(ingested):
    store, s = ingested
    assert s.read == s.accepted + s.duplicates + s.quarantined
    assert s.quarantined == 0, store.quarantine()
    fmt = {Path(p).name: f for p, f in s.formats.items()}
    assert fmt[INIT.name] == fmt[SIDE.name] == "claude-code" and fmt[CX_SYN.name] == "codex"
    assert fmt[CX_EXEC.name] == fmt[CX_TUI.name] == "codex"
    assert sorted(s.formats.values()) == ["claude-code"] * 3 + ["codex"] * 4
    # 3 Claude Code sessions + the 2 inline sidechains of one of them, 4 Codex rollouts
    assert s.accepted == 9 and store.stats()["formats"] == {"claude-code": 5, "codex": 4}
    # these logs carry no outcome: every one unlabeled, none counted as a failure
    assert store.stats()["unlabeled"] == 9 and store.stats()["labeled"] == 0
    assert {Path(p).name for p, _ in s.skipped} == {"LICENSE", "SOURCE.md"}


def test_detection_is_specific():
    for path, name in [(INIT, "claude-code"), (SIDE, "claude-code"), (CC2, "claude-code"), (CX, "codex"),
                       (CX_SYN, "codex")]:
        head = path.read_bytes()[:HEAD_BYTES]
        assert [k for k, m in formats().items() if m.detect(path, head)] == [name]
    # a first line longer than the head is still recognised
    big = INIT.read_bytes()
    assert claude_code.detect(INIT, big[:200]) and not codex.detect(INIT, big[:200])
    assert codex.detect(CX, CX.read_bytes()[:120]) and not claude_code.detect(CX, CX.read_bytes()[:120])


def test_claude_code_session_against_the_file():
    raw = lines(INIT)
    (t,) = trajectories(claude_code, INIT)
    assert t.source_format == "claude-code" and t.task_id == "claude-code/1af7fc5e-8455-4414-9ccd-011d40f70b2a"
    assert t.suite == "claude-code" and t.category == "Demo" and t.policy == "claude-sonnet-4-20250514"
    assert t.outcome.success is None and t.outcome.score is None
    # the first user line as written (the slash command), then the expanded isMeta prompt
    assert t.messages[0].role == "user" and t.messages[0].content == raw[0]["message"]["content"]
    assert t.messages[1].content == raw[1]["message"]["content"][0]["text"]
    # every tool_use of the file is one tool call, in order, with its input and id
    uses = [b for e in raw if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"]
    calls = [c for m in t.messages for c in m.tool_calls]
    assert len(calls) == len(uses) == 12
    assert [(c.name, c.arguments, c.id) for c in calls] == [(u["name"], u["input"], u["id"]) for u in uses]
    # lines sharing a message.id are one assistant turn: line 6-10 are one response with 5 calls
    assert [len(m.tool_calls) for m in t.messages if m.role == "assistant"] == [1, 5, 3, 1, 1, 1, 0]
    assert t.messages[2].content == raw[2]["message"]["content"][0]["text"]
    assert t.messages[2].tool_calls[0].name == "TodoWrite"
    # every tool result answers a call made before it, carries that call's name and the result text
    results = [b for e in raw if e["type"] == "user" for b in e["message"]["content"] if isinstance(b, dict)
               and b.get("type") == "tool_result"]
    tools = [m for m in t.messages if m.role == "tool"]
    assert [m.tool_call_id for m in tools] == [r["tool_use_id"] for r in results]
    seen: dict[str, str] = {}
    for m in t.messages:
        seen.update({c.id: c.name for c in m.tool_calls})
        if m.role == "tool":
            assert seen.pop(m.tool_call_id) == m.name
    assert not seen
    assert tools[0].content == results[0]["content"]
    # interaction time: first and last timestamp of the file
    assert t.started_at == iso_seconds(raw[0]["timestamp"]) and t.ended_at == iso_seconds(raw[-1]["timestamp"])
    assert t.interaction_s == pytest.approx(t.ended_at - t.started_at) and t.interaction_s > 30


def test_claude_code_sidechains_are_their_own_trajectories():
    raw = lines(SIDE)
    main, *sides = trajectories(claude_code, SIDE)
    assert main.task_id == "claude-code/5c0375b4-57a5-4f26-b12d-d022ee4e51b7" and not main.metadata["sidechain"]
    roots = [e for e in raw if e.get("isSidechain") and e["parentUuid"] is None]
    assert len(sides) == len(roots) == 2
    for side, root in zip(sides, roots):
        assert side.task_id == f"{main.task_id}/agent-{root['uuid']}" and side.metadata["sidechain"]
        assert side.messages[0].role == "user" and side.messages[0].content == root["message"]["content"]
        assert side.messages[-1].role == "assistant" and not side.messages[-1].tool_calls
    # each line is in exactly one trajectory: sidechain turns never in the main chain
    n_side = sum(1 for e in raw if e.get("isSidechain"))
    assert n_side == 22
    side_texts = {r["message"]["content"] for r in roots}
    assert not any(m.content in side_texts for m in main.messages)
    # the main chain keeps the Task calls and their results (the subagents' reports)
    tasks = [c for m in main.messages for c in m.tool_calls if c.name == "Task"]
    assert len(tasks) == 3
    answered = {m.tool_call_id for m in main.messages if m.role == "tool"}
    assert {c.id for c in tasks} <= answered
    # each subagent's first turn is the prompt of the Task call that started it (the first Task
    # call of the file has no prompt and started none)
    prompts = [c.arguments.get("prompt") for c in tasks]
    assert prompts[0] is None and [s.messages[0].content for s in sides] == prompts[1:]


def test_claude_code_current_version_bookkeeping_lines():
    (t,) = trajectories(claude_code, CC2)
    assert [m.role for m in t.messages] == ["user", "assistant"] and t.policy == "claude-opus-4-7"
    assert t.messages[1].content == "[REDACTED_ASSISTANT_TEXT]"
    assert t.metadata["entries"] == {"queue-operation": 2, "last-prompt": 1} and t.metadata["versions"] == ["2.1.152"]
    assert t.category == "workspace"


def test_codex_real_rollout_against_the_file():
    raw = lines(CX)
    (t,) = trajectories(codex, CX)
    meta = raw[0]["payload"]
    assert t.task_id == f"codex/{meta['id']}" and t.episode_id == meta["id"] and t.suite == "codex"
    assert t.policy == "gpt-5.5" and t.metadata["cli_version"] == "0.135.0"
    # base instructions, the developer message (system), environment context and prompt (user), the answer
    assert [m.role for m in t.messages] == ["system", "system", "user", "user", "assistant"]
    assert t.messages[0].content == meta["base_instructions"]["text"]
    assert t.messages[-1].content == raw[8]["payload"]["content"][0]["text"]
    # interaction time: the turns' task_complete duration_ms; start and end from the timestamps
    assert t.duration_s == pytest.approx(6.074) and t.interaction_s == pytest.approx(6.074)
    assert t.started_at == iso_seconds(raw[0]["timestamp"]) and t.ended_at == iso_seconds(raw[-1]["timestamp"])
    assert t.outcome.success is None and t.outcome.score is None
    assert t.metadata["events"]["token_count"] == 1


def test_codex_tool_calls_paired_with_outputs():
    raw = [x["payload"] for x in lines(CX_SYN) if x["type"] == "response_item"]
    (t,) = trajectories(codex, CX_SYN)
    calls = [c for m in t.messages for c in m.tool_calls]
    src = [p for p in raw if p["type"] in ("function_call", "custom_tool_call")]
    assert [c.id for c in calls] == [p["call_id"] for p in src]
    assert calls[0].name == "shell" and calls[0].arguments == json.loads(src[0]["arguments"])
    assert calls[1].name == "apply_patch" and calls[1].arguments == {"input": src[1]["input"]}
    tools = [m for m in t.messages if m.role == "tool"]
    assert [(m.tool_call_id, m.name) for m in tools] == [(c.id, c.name) for c in calls]
    assert tools[2].content == ".\n1 passed in 0.01s"  # output given as content items
    # the first call belongs to the assistant message of the same response
    first = next(m for m in t.messages if m.tool_calls)
    assert first.content == "Let me run the tests first." and t.metadata["reasoning_items"] == 1
    assert t.duration_s == pytest.approx(7.99)


def _items(path: Path, *kinds: str) -> list[dict]:
    return [x["payload"] for x in lines(path) if x["type"] == "response_item" and x["payload"]["type"] in kinds]


def test_codex_exec_real_rollout_with_shell_calls():
    """A real `codex exec` session (Codex CLI 0.77, gpt-5.1-codex): three shell calls, each answered."""
    raw = lines(CX_EXEC)
    (t,) = trajectories(codex, CX_EXEC)
    meta = raw[0]["payload"]
    assert t.task_id == f"codex/{meta['id']}" and t.policy == "gpt-5-1-codex-2025-11-13"
    assert t.metadata["cli_version"] == "0.77.0" and t.metadata["originator"] == "codex_exec"
    assert t.metadata["reasoning_items"] == 3 and t.metadata["items"] == {"ghost_snapshot": 1}
    # AGENTS.md, the environment context and the question are the user's turns, in file order
    users = [m.content for m in t.messages if m.role == "user"]
    assert users[0].startswith("# AGENTS.md instructions for") and users[1].startswith("<environment_context>")
    assert users[2] == "what is current repository about? summarize purpuse and explain goals"
    src_calls = _items(CX_EXEC, "function_call")
    src_outs = _items(CX_EXEC, "function_call_output")
    calls = [c for m in t.messages for c in m.tool_calls]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        (p["call_id"], "shell", json.loads(p["arguments"])) for p in src_calls]
    assert calls[0].arguments["command"] == ["bash", "-lc", "ls"]
    tools = [m for m in t.messages if m.role == "tool"]
    # each output answers its call by id, its text as the model saw it (Codex 0.77: a JSON string)
    assert [(m.tool_call_id, m.name, m.content) for m in tools] == [
        (p["call_id"], "shell", p["output"]) for p in src_outs]
    assert json.loads(tools[1].content) == {"output": "docs/AGENTS.md\n", "metadata": {"exit_code": 0,
                                                                                   "duration_seconds": 0.4}}
    # every call is answered right after the assistant turn that made it
    for i, m in enumerate(t.messages):
        if m.tool_calls:
            assert t.messages[i + 1].role == "tool" and t.messages[i + 1].tool_call_id == m.tool_calls[0].id
    # no task_complete in this log: the time is the first and last timestamp
    assert t.started_at == iso_seconds(raw[0]["timestamp"]) and t.ended_at == iso_seconds(raw[-1]["timestamp"])
    assert t.outcome.success is None


def test_codex_tui_real_rollout_function_custom_and_web_search_calls():
    """A real Codex TUI session (0.125, gpt-5.5): 99 exec/write_stdin function calls, 3 apply_patch
    custom tool calls, 3 server-side web searches, two user turns."""
    raw = lines(CX_TUI)
    (t,) = trajectories(codex, CX_TUI)
    assert t.policy == "gpt-5.5" and t.metadata["originator"] == "codex-tui"
    fn, custom = _items(CX_TUI, "function_call"), _items(CX_TUI, "custom_tool_call")
    outs = {p["call_id"]: p["output"] for p in _items(CX_TUI, "function_call_output", "custom_tool_call_output")}
    assert (len(fn), len(custom), len(outs)) == (99, 3, 102)
    calls = {c.id: c for m in t.messages for c in m.tool_calls}
    assert len(calls) == 105  # no two calls share an id
    for p in fn:
        assert calls[p["call_id"]].name == p["name"] and calls[p["call_id"]].arguments == json.loads(p["arguments"])
    for p in custom:
        assert calls[p["call_id"]].name == "apply_patch" and calls[p["call_id"]].arguments == {"input": p["input"]}
        assert p["input"].startswith("*** Begin Patch")
    tools = [m for m in t.messages if m.role == "tool"]
    assert len(tools) == 102 and {m.tool_call_id for m in tools} == set(outs)
    assert all(m.name == calls[m.tool_call_id].name for m in tools)
    # web searches run server-side: a call without a result item, its id from the web_search_end event
    ends = [x["payload"] for x in raw if x["type"] == "event_msg" and x["payload"]["type"] == "web_search_end"]
    searches = [c for c in calls.values() if c.name == "web_search"]
    assert [(c.id, c.arguments["query"]) for c in searches] == [(e["call_id"], e["query"]) for e in ends]
    assert not {c.id for c in searches} & {m.tool_call_id for m in tools}
    # two turns: task_complete durations sum to the duration
    done = [x["payload"]["duration_ms"] for x in raw if x["type"] == "event_msg"
            and x["payload"]["type"] == "task_complete"]
    assert len(done) == 2 and t.duration_s == pytest.approx(sum(done) / 1000)
    assert t.messages[0].role == "system" and t.messages[0].content.startswith("You are Codex")


def _write(tmp_path: Path, name: str, rows: list) -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_claude_code_broken_lines_are_quarantined_not_dropped(tmp_path):
    raw = INIT.read_text().splitlines()
    p = _write(tmp_path, "s.jsonl", raw[:5] + ['{"type": "assistant", "message": '] + raw[5:])
    recs = list(claude_code.read(p))
    errs = [r for r in recs if r.error]
    assert len(errs) == 1 and errs[0].locator == "line 6" and errs[0].error[0] == "<json>"
    assert sum(1 for r in recs if r.data) == 1
    # a session of bookkeeping lines only: one quarantined record saying so
    p = _write(tmp_path, "empty.jsonl", [{"type": "summary", "summary": "Nothing", "leafUuid": "x"}])
    (r,) = list(claude_code.read(p))
    assert r.error[0] == "<session>" and "summary x1" in r.error[1]
    # a bad timestamp names its line and field
    bad = json.loads(raw[2])
    bad["timestamp"] = "yesterday"
    (r,) = list(claude_code.read(_write(tmp_path, "ts.jsonl", [raw[0], json.dumps(bad)])))
    assert r.error == ("line 2.timestamp", "expected an ISO-8601 time, got 'yesterday'")
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([tmp_path / "s.jsonl", tmp_path / "empty.jsonl", tmp_path / "ts.jsonl"])
    assert (s.read, s.accepted, s.quarantined) == (4, 1, 3)


def test_claude_code_synthetic_assistant_lines_are_context(tmp_path):
    raw = lines(CC2)
    err = dict(raw[3], uuid="u-err", isApiErrorMessage=True,
               message={**raw[3]["message"], "model": "<synthetic>", "id": "m-err",
                        "content": [{"type": "text", "text": "API Error: 529 overloaded"}]})
    (t,) = trajectories(claude_code, _write(tmp_path, "e.jsonl", raw[:4] + [err]))
    assert [m.role for m in t.messages] == ["user", "assistant", "assistant"]
    assert t.metadata["context_messages"] == [2] and t.policy == "claude-opus-4-7"
    assert [m["context"] for m in _sft_messages(t)] == [False, False, True]


def test_codex_malformed(tmp_path):
    rows = lines(CX)
    rows[8] = {**rows[8], "payload": {**rows[8]["payload"], "role": "narrator"}}
    (r,) = list(codex.read(_write(tmp_path, "r.jsonl", rows)))
    assert r.error == ("line 9.payload.role", "unknown role 'narrator'")
    rows = lines(CX)[:2] + ["not json"] + lines(CX)[2:]
    recs = list(codex.read(_write(tmp_path, "j.jsonl", rows)))
    assert [r.locator for r in recs if r.error] == ["line 3"] and sum(1 for r in recs if r.data) == 1
    (r,) = list(codex.read(_write(tmp_path, "m.jsonl", lines(CX)[:2])))
    assert r.error[0] == "response_item"
    # a line in the rollout envelope of a type this adapter does not know (Codex 0.163 writes
    # world_state and token_usage_record lines) is bookkeeping: counted, the session accepted
    rows = lines(CX)
    stamp = rows[3]["timestamp"]
    rows[4:4] = [{"timestamp": stamp, "type": "world_state", "payload": {"full": True, "state": {}}},
                 {"timestamp": stamp, "type": "token_usage_record", "payload": {"turn_id": "t"}}]
    (t,) = trajectories(codex, _write(tmp_path, "new.jsonl", rows))
    assert t.metadata["items"] == {"line:world_state": 1, "line:token_usage_record": 1}
    assert [m.role for m in t.messages] == ["system", "system", "user", "user", "assistant"]
    # a call of a namespace tool's function (Codex's sub-agents) is NAMESPACE.NAME, as flywheel serve
    # offers it to the model; its output keeps that name
    rows = lines(CX)
    stamp = rows[8]["timestamp"]
    rows[9:9] = [{"timestamp": stamp, "type": "response_item", "payload": {
                     "type": "function_call", "namespace": "multi_agent_v1", "name": "spawn_agent",
                     "arguments": "{\"message\": \"review\"}", "call_id": "call_spawn"}},
                 {"timestamp": stamp, "type": "response_item", "payload": {
                     "type": "function_call_output", "call_id": "call_spawn", "output": "agent-1"}}]
    (t,) = trajectories(codex, _write(tmp_path, "ns.jsonl", rows))
    (call,) = [c for m in t.messages for c in m.tool_calls]
    assert (call.name, call.arguments, call.id) == ("multi_agent_v1.spawn_agent", {"message": "review"}, "call_spawn")
    assert [(m.name, m.content) for m in t.messages if m.role == "tool"] == [("multi_agent_v1.spawn_agent", "agent-1")]
    # a line outside the envelope is still quarantined with its line and field
    rows = lines(CX)[:3] + [{"type": "world_state", "state": {}}] + lines(CX)[3:]
    recs = list(codex.read(_write(tmp_path, "odd.jsonl", rows)))
    assert [(r.locator, r.error[0]) for r in recs if r.error] == [("line 4", "type")]


def test_claude_code_one_response_split_by_its_tool_results(tmp_path):
    """Claude Code may write a tool result before the next block of the same API response (tools
    run while the response streams): the response stays one assistant turn, results after it."""
    raw = INIT.read_text().splitlines()
    moved = raw[:6] + [raw[10]] + raw[6:10] + raw[11:]  # result of line 6's call now right after it
    (t,) = trajectories(claude_code, _write(tmp_path, "i.jsonl", moved))
    (orig,) = trajectories(claude_code, INIT)
    assert [(m.role, m.content, m.tool_call_id, [c.id for c in m.tool_calls]) for m in t.messages] == \
        [(m.role, m.content, m.tool_call_id, [c.id for c in m.tool_calls]) for m in orig.messages]
    assert "forks" not in orig.metadata
    # a rewound turn: two children of one entry, both kept in file order and counted
    e = json.loads(raw[-1])
    (t,) = trajectories(claude_code, _write(tmp_path, "f.jsonl", raw + [json.dumps(dict(e, uuid="other"))]))
    assert t.metadata["forks"] == 1


def test_codex_legacy_rollout(tmp_path):
    """Before Codex CLI 0.44 a rollout had no envelope (openai/codex codex-rs/core/src/rollout.rs
    of mid 2025): a `{id, timestamp, instructions}` line, then bare response items and
    `{"record_type": "state"}` lines. Built here from the synthetic rollout's items."""
    rows = lines(CX_SYN)
    meta = rows[0]["payload"]
    legacy = [{"id": meta["id"], "timestamp": meta["timestamp"], "instructions": "Use pytest."},
              {"record_type": "state"}]
    legacy += [r["payload"] for r in rows if r["type"] == "response_item"] + [{"record_type": "state"}]
    p = _write(tmp_path, "rollout-2025-06-01T10-00-00-x.jsonl", legacy)
    head = p.read_bytes()[:HEAD_BYTES]
    assert [k for k, m in formats().items() if m.detect(p, head)] == ["codex"]
    (t,) = trajectories(codex, p)
    (modern,) = trajectories(codex, CX_SYN)
    assert t.metadata["legacy"] and t.metadata["instructions"] == "Use pytest."
    assert t.metadata["items"] == {"record_type:state": 2}
    # the same conversation, without the base instructions (not in a legacy rollout)
    assert [(m.role, m.content, [(c.name, c.arguments, c.id) for c in m.tool_calls], m.tool_call_id)
            for m in t.messages] == [(m.role, m.content, [(c.name, c.arguments, c.id) for c in m.tool_calls],
                                      m.tool_call_id) for m in modern.messages[1:]]
    # only the start is known
    assert t.started_at == iso_seconds(meta["timestamp"]) and t.ended_at is None and t.interaction_s == 0
    # a JSONL file whose first line merely has an id and a timestamp is not a Codex rollout
    other = _write(tmp_path, "events.jsonl", [{"id": "1", "timestamp": "2025-01-01T00:00:00Z"}, {"event": "x"}])
    assert not codex.detect(other, other.read_bytes())


def test_claude_code_subagent_transcript_file(tmp_path):
    """Claude Code 2.x writes a subagent's turns to <session>/subagents/agent-<id>.jsonl, every line
    `isSidechain: true` with its `agentId`: the file is that subagent's trajectory."""
    side = [dict(e, agentId="a1b2c3d") for e in lines(SIDE) if e.get("isSidechain")][7:]  # the second subagent
    (tmp_path / "subagents").mkdir()
    p = _write(tmp_path / "subagents", "agent-a1b2c3d.jsonl", side)
    (t,) = trajectories(claude_code, p)
    assert t.task_id == "claude-code/5c0375b4-57a5-4f26-b12d-d022ee4e51b7/agent-a1b2c3d"
    assert t.metadata["agent_id"] == "a1b2c3d" and t.metadata["sidechain"]
    (_, _, second) = trajectories(claude_code, SIDE)
    assert [(m.role, m.content) for m in t.messages] == [(m.role, m.content) for m in second.messages]
