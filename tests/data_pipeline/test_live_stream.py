"""Stream formats as a live source (data_pipeline/live.py, `STREAM` adapters): an OTLP GenAI or Agents
SDK export file gets a line per export batch while the agent works, so one conversation's spans (and
traces) arrive over many lines. A round that reads the file mid-conversation stores the part it saw;
the next round stores only the rest, as a continuation whose earlier messages are context. Whatever
the point where a round cut the file, or the exporter rotated it, the messages trained on and the
interaction time add up to those of the file read whole, each message once."""
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from data_pipeline import live
from data_pipeline.live import collect_logs, pending
from data_pipeline.streams import message_key
from data_pipeline.store import ExperienceStore
from paths import TESTS

SAMPLES = TESTS / "fixtures" / "samples"
WEATHER = SAMPLES / "otel-genai" / "otel-python-openai-v2-weather.jsonl"  # 8 OTLP export lines, one conversation
SYNTHETIC = SAMPLES / "otel-genai" / "synthetic-otlp-genai-traces.jsonl"  # 2 lines: 2 conversations (9 and 2 messages)
AGENTS = SAMPLES / "openai-agents" / "agents-sdk-0.24.0-handoff-tools.jsonl"  # 13 lines: a trace and its 12 spans

MORE = {WEATHER: SYNTHETIC, AGENTS: SAMPLES / "openai-agents" / "generated-by-openai-agents-0.24.0.jsonl"}


def own(store: ExperienceStore) -> tuple[Counter, float]:
    """The messages that carry training (not context) across the store, and its interaction seconds."""
    msgs: Counter = Counter()
    for t in store.trajectories(include_heldout=True):
        context = set(t.metadata.get("context_messages") or [])
        d = t.to_dict()
        msgs.update(message_key(m) for i, m in enumerate(d["messages"]) if i not in context)
    return msgs, sum(t.interaction_s for t in store.trajectories(include_heldout=True))


def grow(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime even on a coarse clock


@pytest.mark.parametrize("sample", [WEATHER, AGENTS], ids=["otel-genai", "openai-agents"])
def test_a_conversation_cut_by_a_round_is_stored_once_wherever_the_cut(tmp_path, sample):
    whole = ExperienceStore(tmp_path / "whole")
    whole.ingest([sample])
    want_msgs, want_s = own(whole)
    assert want_msgs and want_s > 0
    lines = sample.read_text().splitlines(keepends=True)
    for k in range(1, len(lines)):
        d = tmp_path / f"cut-{k}"
        (d / "logs").mkdir(parents=True)
        log = d / "logs" / "export.jsonl"
        log.write_text("".join(lines[:k]))
        store = ExperienceStore(d / "store")
        first = collect_logs(store, [str(d / "logs")], progress=False, quiet_s=0)
        complete = own(store)[0] == want_msgs  # the cut came after the conversation's last message
        grow(log, "".join(lines))
        assert pending(store.root, [str(d / "logs")], quiet_s=0)["files"] == 1
        second = collect_logs(store, [str(d / "logs")], progress=False, quiet_s=0)
        for r in (first, second):
            assert r["read"] == r["accepted"] + r["duplicates"] + r["quarantined"]
        got_msgs, got_s = own(store)
        assert got_msgs == want_msgs, f"cut after line {k}"
        if complete:  # nothing new to say: not stored again (the outer span's last moments are not counted)
            assert second["accepted"] == 0 and want_s - 0.01 < got_s <= want_s
        else:
            assert got_s == pytest.approx(want_s), f"cut after line {k}"
        ts = list(store.trajectories(include_heldout=True))
        resumed = [t for t in ts if "resumed" in t.metadata]
        if len(ts) == 2:  # the part, and the rest as its continuation (context: the part's messages)
            part = next(t for t in ts if t not in resumed)
            (rest,) = resumed
            assert rest.metadata["context_messages"] == list(range(len(part.messages)))
            assert rest.metadata["resumed"]["stored_messages"] == len(part.messages)
            assert rest.episode_id.endswith(f"/resumed-export.jsonl-line-{k + 1}")
        else:  # the round cut before any conversation could be read, or after it ended
            assert len(ts) == 1 and not resumed
        # a third round: nothing new
        assert pending(store.root, [str(d / "logs")], quiet_s=0)["files"] == 0
        assert collect_logs(store, [str(d / "logs")], progress=False, quiet_s=0)["read"] == 0


def test_a_half_written_export_line_waits_and_rotation_reads_nothing_twice(tmp_path):
    lines = WEATHER.read_text().splitlines(keepends=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "export.jsonl"
    half = lines[4][: len(lines[4]) // 2]
    log.write_text("".join(lines[:4]) + half)
    store = ExperienceStore(tmp_path / "store")
    first = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert first["waiting_bytes"] == len(half.encode()) and first["quarantined"] == 0
    assert [len(t.messages) for t in store.trajectories()] == [5]
    grow(log, "".join(lines))
    second = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert second["waiting_bytes"] == 0 and (second["accepted"], second["quarantined"]) == (1, 0)
    msgs, _ = own(store)
    whole = ExperienceStore(tmp_path / "whole")
    whole.ingest([WEATHER])
    assert msgs == own(whole)[0]
    # the file rotated (export.jsonl -> export.jsonl.1) and a new one begun: the rotated file is known
    # by its content and not read again, the new one gives only its own conversations
    shutil.move(log, logs / "export.jsonl.1")
    shutil.copy(SYNTHETIC, logs / "export.jsonl")
    third = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert third["files"] == 1 and third["read"] == third["accepted"] == 2
    assert sum(own(store)[0].values()) == sum(msgs.values()) + 9 + 2


def test_a_watermark_written_before_stream_mode_is_continued(tmp_path, monkeypatch):
    """A store whose rounds read an export file as a whole document (before stream mode) continues
    from that watermark: the next round stores only what grew."""
    lines = WEATHER.read_text().splitlines(keepends=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "export.jsonl"
    log.write_text("".join(lines[:5]))
    store = ExperienceStore(tmp_path / "store")
    with monkeypatch.context() as m:
        m.setattr(live, "_mode", lambda path, fmt: "document")
        collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert [t["mode"] for t in live.watermarks(store.root)] == ["document"]
    grow(log, "".join(lines))
    second = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert second["accepted"] == 1
    assert [t["mode"] for t in live.watermarks(store.root)] == ["stream"]
    whole = ExperienceStore(tmp_path / "whole")
    whole.ingest([WEATHER])
    assert own(store)[0] == own(whole)[0]
    assert any("resumed" in t.metadata for t in store.trajectories())


@pytest.mark.parametrize("sample", [WEATHER, AGENTS], ids=["otel-genai", "openai-agents"])
def test_a_conversation_across_a_rotation_is_stored_once_wherever_the_cuts(tmp_path, sample):
    """Round 1 reads the first `a` lines; then the exporter writes up to line `b`, rotates the file
    (export.jsonl -> export.jsonl.1) and writes the rest into a new export.jsonl. Round 2 reads the
    rotated file on from its watermark and the new one after it (its lead), so the conversation
    that goes on across the rotation is its stored part plus the rest, each message once."""
    whole = ExperienceStore(tmp_path / "whole")
    whole.ingest([sample])
    want_msgs, want_s = own(whole)
    more = ExperienceStore(tmp_path / "more")
    more_read = more.ingest([MORE[sample]])
    lines = sample.read_text().splitlines(keepends=True)
    for a in range(1, len(lines)):
        for b in range(a, len(lines)):
            d = tmp_path / f"cut-{a}-{b}"
            logs = d / "logs"
            logs.mkdir(parents=True)
            log = logs / "export.jsonl"
            log.write_text("".join(lines[:a]))
            os.utime(log, ns=(10**18, 10**18))
            store = ExperienceStore(d / "store")
            collect_logs(store, [str(logs)], progress=False, quiet_s=0)
            log.write_text("".join(lines[:b]))
            os.utime(log, ns=(2 * 10**18, 2 * 10**18))
            shutil.move(log, logs / "export.jsonl.1")
            log.write_text("".join(lines[b:]))
            os.utime(log, ns=(3 * 10**18, 3 * 10**18))
            second = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
            assert second["read"] == second["accepted"] + second["duplicates"] + second["quarantined"]
            got_msgs, got_s = own(store)
            assert got_msgs == want_msgs, f"cut after line {a}, rotated after line {b}"
            assert want_s * 0.95 < got_s <= want_s + 1e-9, f"cut after line {a}, rotated after line {b}"
            # a third round after more conversations were appended stores only those
            grow(log, "".join(lines[b:]) + MORE[sample].read_text())
            third = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
            assert (third["read"], third["accepted"], third["quarantined"]) == (
                more_read.read, more_read.accepted, more_read.quarantined)
            assert own(store)[0] == want_msgs + own(more)[0]


def test_a_part_once_continued_is_not_continued_again_by_another_conversation(tmp_path):
    """A stored part that a later round continued is covered for good (its manifest entry says so):
    another conversation that begins with the same messages but goes its own way is stored whole,
    not as a second continuation of that part."""
    text = WEATHER.read_text()
    lines = text.splitlines(keepends=True)
    other = text.replace("conv_weather_0001", "conv_weather_0002").replace("Lyon is sunny", "Lyon is cloudy")
    for tid in set(re.findall(r'"traceId":"([0-9a-f]+)"', text)):
        other = other.replace(tid, tid[::-1])
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "export.jsonl"
    log.write_text("".join(lines[:4]))
    store = ExperienceStore(tmp_path / "store")
    collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    grow(log, text)
    collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert sum(own(store)[0].values()) == 9  # the part, and the rest as its continuation
    grow(log, text + other)
    third = collect_logs(store, [str(logs)], progress=False, quiet_s=0)
    assert (third["read"], third["accepted"]) == (1, 1)
    (new,) = [t for t in store.trajectories() if "conv_weather_0002" in t.episode_id]
    assert len(new.messages) == 9 and not new.metadata.get("context_messages") and "resumed" not in new.metadata
    assert new.messages[-1].content == "Lyon is cloudy, 18°C."


@pytest.mark.parametrize("sample", [WEATHER, AGENTS], ids=["otel-genai", "openai-agents"])
def test_flywheel_ingest_of_rotated_export_files_reads_a_conversation_across_them_once(tmp_path, sample):
    """`flywheel ingest FOLDER` of an exporter's rotated files (not a live source): each file is read
    after the one it took the place of, so a conversation cut by the rotation is its first part plus
    the rest; ingesting the folder again gives only duplicates."""
    whole = ExperienceStore(tmp_path / "whole")
    whole.ingest([sample])
    want_msgs, want_s = own(whole)
    lines = sample.read_text().splitlines(keepends=True)
    for b in range(1, len(lines)):
        logs = tmp_path / f"rotated-{b}"
        logs.mkdir()
        (logs / "export.jsonl.1").write_text("".join(lines[:b]))
        os.utime(logs / "export.jsonl.1", ns=(10**18, 10**18))
        (logs / "export.jsonl").write_text("".join(lines[b:]))  # sorts first by name, written later
        os.utime(logs / "export.jsonl", ns=(2 * 10**18, 2 * 10**18))
        store = ExperienceStore(tmp_path / f"store-{b}")
        first = store.ingest([logs])
        assert first.read == first.accepted + first.duplicates + first.quarantined
        got_msgs, got_s = own(store)
        assert got_msgs == want_msgs, f"rotated after line {b}"
        assert want_s * 0.95 < got_s <= want_s + 1e-9
        again = store.ingest([logs])
        assert (again.accepted, again.duplicates) == (0, first.accepted)


def test_a_lead_deleted_before_it_is_read_leaves_the_file_alone(tmp_path):
    """The file before a stream file is its lead; when the exporter deletes it (max_backups) between
    the scan and the read, the file is read alone, not quarantined as unreadable."""
    from data_pipeline import sources
    from data_pipeline.adapters import LineWindow
    from data_pipeline.streams import StreamSource

    lines = WEATHER.read_text().splitlines(keepends=True)
    (tmp_path / "old.jsonl").write_text("".join(lines[:4]))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(lines[4:]))
    lead = (str(tmp_path / "old.jsonl"), (tmp_path / "old.jsonl").stat().st_size)
    src = StreamSource(new, "otel-genai", window=LineWindow(0, new.stat().st_size, 1, lead),
                       stored=LineWindow(0, 0, 1, lead))
    together = [r for r in src.read()]
    assert [len(r.data["messages"]) for r in together] == [9] and together[0].data["metadata"]["resumed"]
    (tmp_path / "old.jsonl").unlink()
    alone = [r for r in src.read()]
    assert all(r.error is None for r in alone)
    assert [r.data["episode_id"] for r in alone] == [r.data["episode_id"] for r in sources.Source(new, "otel-genai").read()]
