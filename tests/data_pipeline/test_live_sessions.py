"""Session logs as a live source (data_pipeline/live.py): a Claude Code session or Codex rollout is
one file per conversation that grows while the agent works. It is ingested once it has been quiet
for `quiet_s` (collect.session_quiet_s), and a session that grows after it was ingested gives a
continuation whose stored messages are context, so no episode is stored twice, half done, and the
trained turns and interaction time of a session add up across rounds."""
import json
import os
import shutil
import time

import pytest

from data_pipeline.live import collect_logs, pending
from data_pipeline.store import ExperienceStore
from paths import TESTS

SESSION = "5e55-0001"


def turn(i: int) -> str:
    """Turn i of a Claude Code session: a user line and the assistant's reply, a minute apart."""
    stamp = lambda s: f"2026-01-01T00:{2 * i:02d}:{s:02d}Z"  # noqa: E731
    common = {"sessionId": SESSION, "isSidechain": False, "cwd": "/work/demo", "version": "2.0.0"}
    user = {**common, "type": "user", "uuid": f"u{i}", "parentUuid": f"a{i - 1}" if i > 1 else None,
            "timestamp": stamp(0), "message": {"role": "user", "content": f"question {i}"}}
    reply = {**common, "type": "assistant", "uuid": f"a{i}", "parentUuid": f"u{i}", "timestamp": stamp(30),
             "message": {"id": f"msg-{i}", "role": "assistant", "model": "claude-test",
                         "content": [{"type": "text", "text": f"answer {i}"}]}}
    return json.dumps(user) + "\n" + json.dumps(reply) + "\n"


def age(path, seconds: float) -> None:
    """Make `path` look last modified `seconds` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def stored(store: ExperienceStore) -> list:
    return sorted(store.trajectories(), key=lambda t: t.episode_id)


def trained(t) -> list[str]:
    """The messages of `t` that are trained on (not context)."""
    context = set(t.metadata.get("context_messages") or [])
    return [m.content for i, m in enumerate(t.messages) if i not in context]


@pytest.fixture
def live(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    return ExperienceStore(tmp_path / "store"), logs, logs / f"{SESSION}.jsonl"


def ingest(store, logs, **kw):
    return collect_logs(store, [str(logs)], progress=False, **kw)


def test_a_session_written_over_three_rounds_is_one_complete_trajectory(live):
    store, logs, f = live
    f.write_text(turn(1))
    first = ingest(store, logs)  # being written: waits (default quiet time, 600 s)
    assert (first["read"], first["waiting_sessions"], first["batch_id"]) == (0, 1, None)
    assert pending(store.root, [str(logs)])["waiting_sessions"] == 1
    with open(f, "a") as out:
        out.write(turn(2))
    assert ingest(store, logs)["waiting_sessions"] == 1
    with open(f, "a") as out:
        out.write(turn(3))
    age(f, 601)  # quiet since: finished
    assert pending(store.root, [str(logs)]) == {"files": 1, "bytes": f.stat().st_size, "records": 1,
                                                "waiting_sessions": 0}
    third = ingest(store, logs)
    assert (third["read"], third["accepted"], third["waiting_sessions"]) == (1, 1, 0)
    [t] = stored(store)
    assert t.episode_id == SESSION and [m.content for m in t.messages] == [
        "question 1", "answer 1", "question 2", "answer 2", "question 3", "answer 3"]
    assert "context_messages" not in t.metadata
    again = ingest(store, logs)
    assert (again["files"], again["read"], again["waiting_sessions"]) == (0, 0, 0)
    assert len(stored(store)) == 1


def test_quiet_time_is_the_recipes(live):
    store, logs, f = live
    f.write_text(turn(1))
    age(f, 30)
    assert ingest(store, logs, quiet_s=60)["waiting_sessions"] == 1
    assert ingest(store, logs, quiet_s=20)["accepted"] == 1


def test_with_no_quiet_time_each_round_stores_only_the_new_turns(live):
    """quiet_s = 0: read at once; the session resumed in later rounds gives continuations whose
    earlier turns are context: every turn is trained once, the counts and times add up."""
    store, logs, f = live
    counts = []
    for i in (1, 2, 3):
        with open(f, "a") as out:
            out.write(turn(i) if i < 3 else turn(3) + turn(4))
        counts.append(ingest(store, logs, quiet_s=0))
    assert [(c["read"], c["accepted"], c["duplicates"], c["waiting_sessions"]) for c in counts] == [(1, 1, 0, 0)] * 3
    first, second, third = sorted(stored(store), key=lambda t: len(t.messages))
    assert first.episode_id == SESSION and trained(first) == ["question 1", "answer 1"]
    assert second.episode_id == f"{SESSION}/resumed-line-3" and trained(second) == ["question 2", "answer 2"]
    assert third.episode_id == f"{SESSION}/resumed-line-5"
    assert trained(third) == ["question 3", "answer 3", "question 4", "answer 4"]
    assert second.metadata["resumed"] == {"episode_id": SESSION, "from_line": 3, "stored_messages": 2}
    assert third.metadata["resumed"]["episode_id"] == SESSION  # what the store had: the whole of lines 1-4
    assert all(t.task_id == f"claude-code/{SESSION}" for t in (first, second, third))
    # each trained turn once, across the three trajectories: the whole session
    assert sum((trained(t) for t in (first, second, third)), []) == [m.content for m in third.messages]
    # the interaction time adds up to the session's (00:02:00 to 00:08:30)
    assert sum(t.interaction_s for t in (first, second, third)) == pytest.approx(390.0)
    assert sum(store.manifest(b.batch_id)["read"] for b in store.batches(include_empty=True)) == 3
    assert ingest(store, logs, quiet_s=0)["read"] == 0


def test_a_session_resumed_after_it_was_read_waits_then_gives_its_new_turns(live):
    store, logs, f = live
    f.write_text(turn(1) + turn(2))
    age(f, 700)
    assert ingest(store, logs)["accepted"] == 1
    with open(f, "a") as out:  # resumed: being written again
        out.write(turn(3))
    assert ingest(store, logs)["waiting_sessions"] == 1
    age(f, 700)
    resumed = ingest(store, logs)
    assert (resumed["read"], resumed["accepted"], resumed["duplicates"]) == (1, 1, 0)
    whole, cont = sorted(stored(store), key=lambda t: len(t.messages))
    assert trained(cont) == ["question 3", "answer 3"] and len(cont.messages) == 6
    assert cont.metadata["context_messages"] == [0, 1, 2, 3]


def test_a_session_that_only_gained_bookkeeping_lines_gives_nothing_new(live):
    store, logs, f = live
    f.write_text(turn(1))
    assert ingest(store, logs, quiet_s=0)["accepted"] == 1
    with open(f, "a") as out:
        out.write(json.dumps({"type": "summary", "summary": "a demo", "leafUuid": "a1"}) + "\n")
    again = ingest(store, logs, quiet_s=0)
    assert (again["files"], again["read"], again["accepted"]) == (1, 0, 0)  # read on, nothing stored
    assert len(stored(store)) == 1
    assert ingest(store, logs, quiet_s=0)["files"] == 0


def test_a_broken_line_is_quarantined_once_across_resumes(live):
    store, logs, f = live
    f.write_text(turn(1) + "{not json\n")
    first = ingest(store, logs, quiet_s=0)
    assert (first["accepted"], first["quarantined"]) == (1, 1)
    with open(f, "a") as out:
        out.write(turn(2))
    second = ingest(store, logs, quiet_s=0)
    assert (second["accepted"], second["quarantined"]) == (1, 0)


def test_a_failed_ingest_of_a_resumed_session_reruns_without_duplicates(live, monkeypatch):
    """The continuation is committed with the session's new watermark, atomically: an ingest that
    dies while reading it stores neither, and the rerun stores it once."""
    from data_pipeline.adapters import claude_code

    store, logs, f = live
    f.write_text(turn(1))
    ingest(store, logs, quiet_s=0)
    with open(f, "a") as out:
        out.write(turn(2))
    real = claude_code.read

    def dies(path):
        yield from real(path)
        raise KeyboardInterrupt  # as a kill would, after the records were read

    monkeypatch.setattr(claude_code, "read", dies)
    with pytest.raises(KeyboardInterrupt):
        ingest(store, logs, quiet_s=0)
    monkeypatch.setattr(claude_code, "read", real)
    assert len(stored(store)) == 1
    rerun = ingest(store, logs, quiet_s=0)
    assert (rerun["read"], rerun["accepted"], rerun["duplicates"]) == (1, 1, 0)
    assert sorted(t.episode_id for t in stored(store)) == [SESSION, f"{SESSION}/resumed-line-3"]
    assert ingest(store, logs, quiet_s=0)["read"] == 0


def test_codex_rollouts_are_sessions_too_and_line_formats_never_wait(live):
    store, logs, _ = live
    sample = next((TESTS / "fixtures" / "samples" / "codex" / "synthetic").glob("*.jsonl"))
    shutil.copyfile(sample, logs / sample.name)
    (logs / "agent.jsonl").write_text(json.dumps({"task_id": "live/t1", "suite": "live", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    out = ingest(store, logs)  # both just written: the rollout waits, the line log does not
    assert (out["accepted"], out["waiting_sessions"]) == (1, 1)
    age(logs / sample.name, 601)
    out = ingest(store, logs)
    assert (out["accepted"], out["waiting_sessions"]) == (1, 0)
    assert sorted(t.source_format for t in stored(store)) == ["codex", "openai"]
