"""Malformed input never stops an ingest or reaches the user as a traceback: every bad record is
quarantined with file, record, field and reason, and read = accepted + duplicates + quarantined."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data_pipeline.store import ExperienceStore
from trainer.cli import main


def good(i: int, **extra) -> dict:
    return {"episode_id": f"e{i}", "task_id": f"t{i}", "suite": "s",
            "messages": [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": "ok"}],
            "outcome": {"success": True, "score": 1.0}, **extra}


def write_lines(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return path


@pytest.fixture
def malformed(tmp_path) -> tuple[Path, dict[str, str]]:
    """A flywheel JSONL with one bad record per kind; returns (file, {line locator: expected field})."""
    bad_msg = lambda **m: good(99, messages=[{"role": "user", "content": "x"}, m])  # noqa: E731
    cases = [
        (b'{"episode_id": "e1", "task_id": "t1", "messages": [{"role": "us', "<json>"),  # truncated
        (good(2, task_id=7), "task_id"),  # wrong type
        (good(3, messages="hello"), "messages"),
        (good(4, outcome={"success": "yes"}), "outcome.success"),
        (good(5, outcome={"score": 1.7}), "outcome.score"),
        (bad_msg(role="wizard", content="hi"), "messages[1].role"),  # unknown role
        (bad_msg(role="assistant", content=3), "messages[1].content"),
        (bad_msg(role="assistant", tool_calls=[{"name": "f", "arguments": "{\"a\": 1,"}]), "messages[1].tool_calls[0].arguments"),
        (bad_msg(role="assistant", tool_calls=[{"arguments": {}}]), "messages[1].tool_calls[0].name"),
        (good(10, messages=[]), "messages"),  # empty conversation
        (b'{"episode_id": "e11", "task_id": "caf\xe9", "messages": []}', "<encoding>"),  # latin-1, not UTF-8
        (b"\x00\x9f\x92\x96\xff\xfe garbage \x01\x02", "<encoding>"),
        (b"[1, 2, 3]", "<record>"),
        (b"{" * 100_000, "<json>"),  # nesting deeper than the parser allows
    ]
    lines, expected = [good(0)], {}
    for i, (rec, fld) in enumerate(cases, start=2):
        lines.append(rec)
        expected[f"line {i}"] = fld
    lines.append(good(0))  # an exact duplicate of line 1
    return write_lines(tmp_path / "episodes.jsonl", lines), expected


def test_every_bad_record_is_quarantined_with_a_reason(tmp_path, malformed):
    path, expected = malformed
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([path], fmt="flywheel")
    assert (s.read, s.accepted, s.duplicates, s.quarantined) == (len(expected) + 2, 1, 1, len(expected))
    assert sum(s.quarantine_reasons.values()) == s.quarantined
    entries = {q["record"]: q for q in store.quarantine()}
    assert set(entries) == set(expected)
    for loc, fld in expected.items():
        q = entries[loc]
        assert q["field"] == fld, (loc, q)
        assert q["reason"] and q["file"] == str(path)
    # rerun: same counts reported, nothing new stored
    again = store.ingest([path], fmt="flywheel")
    assert (again.read, again.accepted, again.duplicates, again.quarantined) == (s.read, 0, 2, s.quarantined)
    assert len(store.quarantine()) == len(expected) and again.batch_id is None


def test_huge_record_and_binary_file(tmp_path):
    huge = good(1, metadata={"blob": "x" * (50 * 2**20)})
    path = write_lines(tmp_path / "big.jsonl", [good(0), huge])
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(os.urandom(4096).replace(b"\n", b"\x00"))
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([path, garbage])
    assert s.formats[str(path)] == "flywheel" and s.formats[str(garbage)] == "unrecognised"
    assert (s.read, s.accepted, s.quarantined) == (3, 1, 2)
    reasons = {q["record"]: q for q in store.quarantine()}
    assert "MiB" in reasons["line 2"]["reason"]
    assert reasons["file"]["field"] == "<format>"
    assert all(len(q["excerpt"]) <= 300 for q in store.quarantine())


def test_adapter_level_errors_name_the_field(tmp_path):
    openai = write_lines(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None,
                      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
        {"messages": [{"role": "narrator", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "yes"}]},
    ])
    share = tmp_path / "share.json"
    share.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "{not json"}]},
        {"conversations": [{"from": "alien", "value": "hi"}]},
        {"conversations": []},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ]))
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([openai, share])
    assert s.formats == {str(openai): "openai", str(share): "sharegpt"}
    assert (s.read, s.accepted, s.quarantined) == (7, 2, 5)
    fields = sorted(q["field"] for q in store.quarantine())
    assert fields == sorted(["messages[1].tool_calls[0].arguments", "messages[0].role", "conversations[1].value",
                             "conversations[0].from", "messages"])


def test_cli_prints_no_traceback(tmp_path, malformed, capsys):
    path, expected = malformed
    rc = main(["ingest", str(path), "--store", str(tmp_path / "store"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out + err
    d = json.loads(out.strip().splitlines()[-1])
    assert d["read"] == d["accepted"] + d["duplicates"] + d["quarantined"] and d["quarantined"] == len(expected)
    rc = main(["ingest", str(tmp_path / "missing.jsonl"), "--store", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert rc == 2 and "no such file" in err and "Traceback" not in err
    rc = main(["ingest", str(path), "--store", str(tmp_path / "store"), "--format", "nope"])
    out, err = capsys.readouterr()
    assert rc == 2 and "unknown format 'nope'" in err
