"""Logs as a live source (data_pipeline/live.py): each log record reaches the store exactly once
across appends, a half-written last line, rename and rotation, truncate-and-rewrite, changed whole
documents and a SIGKILL in the middle of the ingest; the counts add up to what was written."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_pipeline.live import collect_logs, pending, watermarks
from data_pipeline.store import ExperienceStore
from paths import REPO


def record(i: int, success: bool = True) -> str:
    """One canonical (flywheel-format) trajectory as a JSON line, task `live/t<i>`."""
    return json.dumps({"episode_id": f"ep-{i}", "task_id": f"live/t{i}", "suite": "live",
                       "messages": [{"role": "user", "content": f"question {i}"},
                                    {"role": "assistant", "content": f"answer {i}"}],
                       "started_at": 1000.0 + i, "ended_at": 1010.0 + i,
                       "outcome": {"success": success, "score": 1.0 if success else 0.0}}) + "\n"


def lines(*ids: int) -> str:
    return "".join(record(i) for i in ids)


def stored_tasks(store: ExperienceStore) -> list[str]:
    return sorted(store.table(columns=["task_id"]).column("task_id").to_pylist())


def ingest(store, logs, **kw):
    return collect_logs(store, [str(logs)], progress=False, **kw)


@pytest.fixture
def live(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    return ExperienceStore(tmp_path / "store"), logs


def test_appends_give_only_the_new_lines(live):
    store, logs = live
    f = logs / "agent.jsonl"
    f.write_text(lines(1, 2, 3))
    first = ingest(store, logs)
    assert (first["files"], first["read"], first["accepted"], first["duplicates"]) == (1, 3, 3, 0)
    with open(f, "a") as out:
        out.write(lines(4, 5))
    second = ingest(store, logs)
    assert (second["read"], second["accepted"], second["duplicates"]) == (2, 2, 0)  # not 5 read, 3 duplicates
    third = ingest(store, logs)
    assert (third["files"], third["read"], third["batch_id"]) == (0, 0, None)
    assert stored_tasks(store) == [f"live/t{i}" for i in range(1, 6)]


def test_a_half_written_last_line_waits_and_is_read_once_completed(live):
    store, logs = live
    f = logs / "agent.jsonl"
    whole = record(2)
    f.write_text(record(1) + whole[:25])  # the agent is in the middle of writing line 2
    first = ingest(store, logs)
    assert (first["read"], first["accepted"], first["quarantined"]) == (1, 1, 0)
    assert first["waiting_bytes"] == 25
    assert pending(store.root, [str(logs)]) == {"files": 0, "bytes": 0, "records": 0,
                                                "waiting_sessions": 0}
    assert ingest(store, logs)["read"] == 0  # still half: waits again, nothing quarantined
    with open(f, "a") as out:
        out.write(whole[25:] + record(3))
    assert pending(store.root, [str(logs)]) == {"files": 1, "bytes": len(whole) + len(record(3)), "records": 2,
                                                "waiting_sessions": 0}
    second = ingest(store, logs)
    assert (second["read"], second["accepted"], second["waiting_bytes"]) == (2, 2, 0)
    assert stored_tasks(store) == ["live/t1", "live/t2", "live/t3"] and not store.quarantine()


def test_a_renamed_or_rotated_file_is_not_read_twice(live):
    store, logs = live
    f = logs / "agent.jsonl"
    f.write_text(lines(1, 2))
    ingest(store, logs)
    with open(f, "a") as out:  # written just before the rotation
        out.write(lines(3))
    os.rename(f, logs / "agent.jsonl.1")  # logrotate: x -> x.1, a new x started
    f.write_text(lines(4))
    out = ingest(store, logs)
    assert (out["files"], out["read"], out["accepted"], out["duplicates"]) == (2, 2, 2, 0)
    os.rename(logs / "agent.jsonl.1", logs / "old-agent.jsonl")  # renamed again: still known by its content
    assert ingest(store, logs)["read"] == 0
    assert stored_tasks(store) == ["live/t1", "live/t2", "live/t3", "live/t4"]


def test_a_truncated_and_rewritten_file_is_noticed(live):
    store, logs = live
    f = logs / "agent.jsonl"
    f.write_text(lines(1, 2, 3))
    ingest(store, logs)
    f.write_text(lines(1, 7))  # truncated, rewritten: its first bytes no longer match the watermark
    out = ingest(store, logs)
    assert (out["read"], out["accepted"], out["duplicates"]) == (2, 1, 1)
    f.write_text(lines(8, 9, 10, 11))  # rewritten longer than before: still not a continuation
    out = ingest(store, logs)
    assert (out["read"], out["accepted"]) == (4, 4)
    assert stored_tasks(store) == sorted(f"live/t{i}" for i in (1, 2, 3, 7, 8, 9, 10, 11))


def test_quarantine_names_the_original_file_and_its_real_line_number(live):
    store, logs = live
    f = logs / "agent.jsonl"
    f.write_text(lines(1, 2))
    ingest(store, logs)
    with open(f, "a") as out:
        out.write(record(3) + "{not json\n" + record(4))
    out = ingest(store, logs)
    assert (out["read"], out["accepted"], out["quarantined"]) == (3, 2, 1)
    (q,) = store.quarantine()
    assert q["file"] == str(f) and q["record"] == "line 4" and q["field"] == "<json>"


def test_whole_documents_are_read_when_new_or_changed(live):
    store, logs = live
    doc = logs / "run.json"  # an OpenAI-format JSON array: a whole document, not JSON Lines
    chat = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}],
             "reward": 1.0} for i in range(3)]
    doc.write_text(json.dumps(chat[:2]))
    assert ingest(store, logs)["accepted"] == 2
    assert ingest(store, logs)["read"] == 0  # unchanged
    doc.write_text(json.dumps(chat))
    out = ingest(store, logs)
    assert (out["read"], out["accepted"], out["duplicates"]) == (3, 1, 2)  # the overlap dedupes by content
    os.rename(doc, logs / "renamed.json")
    assert ingest(store, logs)["read"] == 0


def test_paths_globs_and_counts_add_up(live, tmp_path):
    store, logs = live
    (logs / "a.jsonl").write_text(lines(1, 2))
    (logs / "sub").mkdir()
    (logs / "sub" / "b.jsonl").write_text(lines(3))
    (logs / "README.md").write_text("not a log")
    out = collect_logs(store, ["logs/*.jsonl"], base_dir=tmp_path, progress=False)  # relative to base_dir
    assert (out["files"], out["accepted"]) == (1, 2)
    out = collect_logs(store, ["logs"], base_dir=tmp_path, progress=False)  # a folder: walked, docs skipped
    assert (out["files"], out["accepted"], out["skipped"]) == (1, 1, 1)
    assert collect_logs(store, ["nothing-yet/*.jsonl"], base_dir=tmp_path, progress=False)["read"] == 0
    from data_pipeline.errors import FlywheelError

    with pytest.raises(FlywheelError, match="no such file or folder .*missing"):
        collect_logs(store, ["missing"], base_dir=tmp_path, progress=False)
    assert sum(s["read"] for b in store.batches(include_empty=True) for s in b.sources) == 3
    assert sorted(Path(w["path"]).name for w in watermarks(store.root)) == ["a.jsonl", "b.jsonl"]


KILLED_INGEST = r'''
import sys, time
from pathlib import Path
from data_pipeline.adapters import flywheel
from data_pipeline.live import collect_logs
from data_pipeline.store import ExperienceStore

real_read, seen = flywheel.read, [0]

def slow_read(path):  # the real adapter, stopping for good after `stop_after` records
    for rec in real_read(path):
        seen[0] += 1
        if seen[0] == int(sys.argv[3]):
            Path(sys.argv[4]).write_text("in the middle")
            time.sleep(600)
        yield rec

flywheel.read = slow_read
collect_logs(ExperienceStore(sys.argv[1]), [sys.argv[2]], progress=False)
'''


def test_a_sigkill_in_the_middle_of_the_ingest_reruns_without_duplicates_or_losses(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    store_dir = tmp_path / "store"
    for k in range(4):  # 4 files of 5 records; the kill comes in the third file
        (logs / f"agent-{k}.jsonl").write_text(lines(*range(10 * k, 10 * k + 5)))
    store = ExperienceStore(store_dir)
    with open(logs / "agent-0.jsonl", "a") as out:
        out.write(record(5))
    first = collect_logs(store, [str(logs)], progress=False)
    assert first["read"] == 21
    for k in range(4):  # a second wave, appended to every file
        with open(logs / f"agent-{k}.jsonl", "a") as out:
            out.write(lines(10 * k + 6, 10 * k + 7))
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(store_dir), str(logs), "5", str(marker)],
                            env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "the ingest never reached its fifth record"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = ExperienceStore(store_dir)
    assert len(store.batches()) == 1  # the killed ingest committed nothing
    rerun = collect_logs(store, [str(logs)], progress=False)
    assert (rerun["read"], rerun["accepted"], rerun["duplicates"]) == (8, 8, 0)
    written = 21 + 8
    tasks = stored_tasks(store)
    assert len(tasks) == len(set(tasks)) == written  # every record once
    assert sum(store.manifest(b.batch_id)["read"] for b in store.batches(include_empty=True)) == written
    assert collect_logs(store, [str(logs)], progress=False)["read"] == 0


def test_long_inputs_show_progress_unless_quiet(live, capsys):
    store, logs = live
    for k in range(25):  # many files: a bar on stderr
        (logs / f"agent-{k:02d}.jsonl").write_text(lines(k))
    collect_logs(store, [str(logs)], tag="wave-1", progress=False)
    assert capsys.readouterr().err == ""
    for k in range(25):
        with open(logs / f"agent-{k:02d}.jsonl", "a") as out:
            out.write(lines(100 + k))
    assert collect_logs(store, [str(logs)], tag="wave-2", progress=True)["accepted"] == 25
    assert "wave-2: 25 files" in capsys.readouterr().err


def test_interaction_time_comes_from_the_logs_own_timestamps(live):
    """OpenAI-format lines give their time as started_at/ended_at (ISO or epoch) or a duration,
    top-level or in metadata; a malformed time is quarantined naming its field."""
    store, logs = live
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    rows = [{"messages": chat, "started_at": "2026-12-01T10:00:00Z", "ended_at": "2026-12-01T10:01:30Z"},
            {"messages": chat + [{"role": "user", "content": "more"}], "metadata": {"duration_s": 12}},
            {"messages": chat + [{"role": "user", "content": "again"}], "started_at": 100.0, "ended_at": 130.5},
            {"messages": chat + [{"role": "user", "content": "when?"}], "started_at": "yesterday"}]
    (logs / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = ingest(store, logs)
    assert (out["accepted"], out["quarantined"]) == (3, 1)
    assert store.stats()["interaction_hours"] * 3600 == pytest.approx(90 + 12 + 30.5)
    (q,) = store.quarantine()
    assert q["field"] == "started_at" and q["record"] == "line 4" and "yesterday" in q["reason"]


def test_flywheel_ingest_shows_progress_on_long_inputs_unless_quiet(tmp_path, capsys):
    from trainer.cli import main as cli

    logs = tmp_path / "logs"
    logs.mkdir()
    for k in range(25):
        (logs / f"agent-{k:02d}.jsonl").write_text(lines(k))
    assert cli(["ingest", str(logs), "--store", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "25 files" not in capsys.readouterr().err
    assert cli(["ingest", str(logs), "--store", str(tmp_path / "store")]) == 0
    assert "ingest: 25 files" in capsys.readouterr().err
