"""Inspect AI logs as inspect_ai 0.3.x writes them: `.eval` zips with zstd entries (method 93),
one record per sample (counts by sample, a damaged entry quarantines only its sample), the scorer
chosen with --score NAME[:KEY] / --score-range LO:HI, failed samples quarantined with their error,
task-written assistant turns (source "input") marked as context, and an ingest that accepts
nothing exiting 2.

tests/fixtures/inspect/arith_zstd.eval is a real log written by inspect_ai 0.3.285 (mockllm; see
make_arith_eval.py beside it): samples plain (answered wrong), fewshot (an assistant turn in the
input), tools (a tool call) and broken (an error), scored by match (C/I), parts ({acc, f1}) and
points (0-10). The other zstd zips are written by `write_zstd_zip` below from real entries."""
from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

from data_pipeline.adapters import inspect_ai
from data_pipeline.adapters.inspect_ai import ScoreOptions, read, score_options
from data_pipeline.errors import IngestError
from data_pipeline.store import ExperienceStore
from tests.samples import shared_samples
from trainer.cli import main
from tests.paths import TESTS

FIXTURE = TESTS / "fixtures" / "inspect" / "arith_zstd.eval"
POPULARITY = next(iter(sorted(shared_samples().glob("inspect-ai/tests/scorer/logs/*.eval"))), None)
needs_shared = pytest.mark.skipif(POPULARITY is None, reason="shared trajectory samples not present")


# ---- fixtures made here ----------------------------------------------------------------------
def write_zstd_zip(path: Path, entries: dict[str, bytes], frame: int = 1 << 30, local_extra: bytes = b"") -> Path:
    """A zip whose entries are zstd-compressed (method 93), as inspect_ai 0.3.x writes `.eval` logs.

    zipfile cannot write method 93 before Python 3.14, so the records are written here (PKWARE
    APPNOTE 4.3.7 local file header, 4.3.12 central directory header, 4.3.16 end record): per entry
    the 30-byte local header, name, `local_extra` and the data, then the central directory (46-byte
    headers, no extra field) and the end record. `frame`: input bytes per zstd frame (inspect starts
    a new frame every 200 MiB; a small value makes multi-frame entries). `local_extra` is an extra
    field in the local headers only, as a reader must take the lengths from the local header."""
    out, central = bytearray(), bytearray()
    for name, data in entries.items():
        comp = b"".join(zstandard.ZstdCompressor().compress(data[i:i + frame])
                        for i in range(0, max(len(data), 1), frame))
        n = name.encode()
        # version needed 6.3, flags, method 93, time 00:00, date 1980-01-01, crc-32, sizes, name length
        common = struct.pack("<HHHHHLLLH", 63, 0, inspect_ai.ZIP_ZSTD, 0, 0x21, zlib.crc32(data), len(comp),
                             len(data), len(n))
        central += b"PK\x01\x02" + struct.pack("<H", 63) + common + struct.pack("<HHHHLL", 0, 0, 0, 0, 0, len(out)) + n
        out += b"PK\x03\x04" + common + struct.pack("<H", len(local_extra)) + n + local_extra + comp
    end = b"PK\x05\x06" + struct.pack("<HHHHLLH", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def entries_of(path: Path) -> dict[str, bytes]:
    """Every entry of an `.eval` zip, uncompressed (deflate or zstd), in zip order."""
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        return {i.filename: inspect_ai.zip_entry(z, f, i) for i in z.infolist()}


def damage_entry(src: Path, dst: Path, name: str) -> Path:
    """A copy of `src` with bytes in the middle of entry `name`'s compressed data flipped."""
    raw = bytearray(src.read_bytes())
    info = zipfile.ZipFile(src).getinfo(name)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    mid = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])
    dst.write_bytes(bytes(raw))
    return dst


def json_log(path: Path, values: dict[str, object]) -> Path:
    """A JSON Inspect log (the other format) of the fixture's "plain" sample, once per match value."""
    e = entries_of(FIXTURE)
    doc = json.loads(e["header.json"])
    plain = json.loads(e["samples/plain_epoch_1.json"])
    doc["samples"] = [{**plain, "id": sid, "uuid": sid, "scores": {"match": {"value": v}}} for sid, v in values.items()]
    path.write_text(json.dumps(doc))
    return path


def ingest(store_dir: Path, paths: list[Path], **score) -> tuple[ExperienceStore, object, ScoreOptions]:
    """Ingest with `ScoreOptions.parse(**score)`; returns (store, summary, options); checks the sum."""
    store = ExperienceStore(store_dir)
    with score_options(ScoreOptions.parse(**score)) as opts:
        s = store.ingest(paths)
    assert s.read == s.accepted + s.duplicates + s.quarantined
    return store, s, opts


def by_id(store: ExperienceStore) -> dict:
    return {t.task_id.split("/")[-1]: t for t in store.trajectories(include_heldout=True)}


# ---- 1. zstd entries ---------------------------------------------------------------------------
def test_real_inspect_zstd_log_reads_every_sample():
    with zipfile.ZipFile(FIXTURE) as z:
        assert {i.compress_type for i in z.infolist()} == {inspect_ai.ZIP_ZSTD}  # what inspect writes today
        # the stdlib cannot: the bug this fixes (unless inspect_ai was imported in this process: it
        # patches zipfile's decompressors, as the real-model inspect test run in the same session does)
        if not getattr(zipfile, "_inspect_ai_multiframe_installed", False):
            with pytest.raises(NotImplementedError):
                z.read("header.json")
    recs = list(read(FIXTURE))
    assert [r.locator for r in recs] == [f"samples/{s}_epoch_1.json" for s in ("broken", "fewshot", "plain", "tools")]
    assert [r.error is None for r in recs] == [False, True, True, True]
    tools = recs[3].data
    assert tools["task_id"] == "arith/tools" and tools["policy"] == "mockllm/model"
    assert [m["role"] for m in tools["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert tools["messages"][1]["tool_calls"][0]["name"] == "add"
    assert tools["messages"][1]["tool_calls"][0]["arguments"] == {"x": 20, "y": 22}
    assert tools["messages"][2]["content"] == "42" and tools["metadata"]["tools"][0]["function"]["name"] == "add"


def test_zip_entry_handles_multi_frame_entries_and_local_extra_fields(tmp_path):
    entries = entries_of(FIXTURE)
    made = write_zstd_zip(tmp_path / "multi.eval", entries, frame=1000, local_extra=b"\xfe\xca\x04\x00pad!")
    assert entries_of(made) == entries
    sample = made.read_bytes()
    assert sample.count(b"\x28\xb5\x2f\xfd") > len(entries)  # zstd frame magic: several frames per entry
    assert [r.data for r in read(made)] == [r.data for r in read(FIXTURE)]


@needs_shared
def test_deflate_sample_rezipped_with_zstd_gives_the_same_trajectories(tmp_path):
    zst = write_zstd_zip(tmp_path / "popularity.eval", entries_of(POPULARITY), frame=4096)
    assert {i.compress_type for i in zipfile.ZipFile(zst).infolist()} == {inspect_ai.ZIP_ZSTD}
    assert {i.compress_type for i in zipfile.ZipFile(POPULARITY).infolist()} == {zipfile.ZIP_DEFLATED}
    deflated, zstd = list(read(POPULARITY)), list(read(zst))
    assert len(zstd) == 10 and all(r.error is None for r in zstd)
    assert [r.data for r in zstd] == [r.data for r in deflated]
    store, s, _ = ingest(tmp_path / "store", [POPULARITY, zst])
    assert (s.read, s.accepted, s.duplicates, s.quarantined) == (20, 10, 10, 0)


# ---- 2. one record per sample ------------------------------------------------------------------
def test_counts_are_by_sample(tmp_path):
    store, s, _ = ingest(tmp_path / "store", [FIXTURE])
    assert (s.read, s.accepted, s.duplicates, s.quarantined) == (4, 3, 0, 1)
    src = store.manifest(s.batch_id)["sources"][0]
    assert (src["read"], src["accepted"], src["quarantined"]) == (4, 3, 1)
    _, again, _ = ingest(tmp_path / "store", [FIXTURE])
    assert (again.read, again.accepted, again.duplicates, again.quarantined) == (4, 0, 3, 1)


def test_damaged_entry_quarantines_only_its_sample(tmp_path):
    bad = damage_entry(FIXTURE, tmp_path / "damaged.eval", "samples/plain_epoch_1.json")
    store, s, _ = ingest(tmp_path / "store", [bad])
    assert (s.read, s.accepted, s.quarantined) == (4, 2, 2)
    q = {e["record"]: e for e in store.quarantine()}
    assert set(q) == {"samples/plain_epoch_1.json", "samples/broken_epoch_1.json"}
    plain = q["samples/plain_epoch_1.json"]
    assert plain["file"] == str(bad) and plain["field"] == "<file>"
    assert "damaged .eval zip entry samples/plain_epoch_1.json in damaged.eval" in plain["reason"]
    assert set(by_id(store)) == {"fewshot", "tools"}


def test_damaged_header_quarantines_each_sample(tmp_path):
    bad = damage_entry(FIXTURE, tmp_path / "nohead.eval", "header.json")
    store, s, _ = ingest(tmp_path / "store", [bad])
    assert (s.read, s.accepted, s.quarantined) == (4, 0, 4)
    assert {e["field"] for e in store.quarantine()} == {"header.json"}
    assert all("damaged .eval zip entry header.json in nohead.eval" in e["reason"] for e in store.quarantine())


# ---- 3. which score ------------------------------------------------------------------------------
def test_default_scorer_is_the_first(tmp_path):
    store, _, opts = ingest(tmp_path / "store", [FIXTURE])
    t = by_id(store)
    assert (t["plain"].outcome.success, t["plain"].outcome.score) == (False, 0.0)  # match: "I"
    assert (t["tools"].outcome.success, t["tools"].outcome.score) == (True, 1.0)  # match: "C"
    assert t["tools"].metadata["scores"]["points"]["value"] == 7 and not opts.warnings


def test_dict_valued_score_takes_the_key_or_warns(tmp_path):
    store, s, opts = ingest(tmp_path / "a", [FIXTURE], score="parts:acc")
    assert s.accepted == 3 and not opts.warnings
    assert [by_id(store)[k].outcome.score for k in ("plain", "fewshot", "tools")] == [0.0, 1.0, 1.0]
    store, s, opts = ingest(tmp_path / "b", [FIXTURE], score="parts")
    assert s.accepted == 3 and sum(opts.warnings.values()) == 3
    assert "--score parts:KEY" in next(iter(opts.warnings))
    t = by_id(store)["fewshot"]
    assert (t.outcome.success, t.outcome.score) == (None, None)
    assert t.metadata["scores"]["parts"]["value"] == {"acc": 1.0, "f1": 0.5}
    store, s, _ = ingest(tmp_path / "c", [FIXTURE], score="parts:recall")
    assert (s.accepted, s.quarantined) == (0, 4)
    assert any("no key 'recall'" in e["reason"] for e in store.quarantine())


def test_numeric_scores_out_of_range_are_quarantined_unless_a_range_is_declared(tmp_path):
    store, s, _ = ingest(tmp_path / "a", [FIXTURE], score="points")
    assert (s.accepted, s.quarantined, s.quarantine_reasons) == (0, 4, {"error": 1, "scores.points.value": 3})
    assert any("score 7 is outside [0, 1]" in e["reason"] for e in store.quarantine())
    store, s, _ = ingest(tmp_path / "b", [FIXTURE], score="points", score_range="0:10")
    t = by_id(store)
    assert s.accepted == 3 and t["plain"].outcome.score == pytest.approx(0.2) and t["tools"].outcome.score == 0.7
    assert t["tools"].outcome.success is False
    store, s, _ = ingest(tmp_path / "c", [FIXTURE], score="points", score_range="0:5")
    assert (s.accepted, s.quarantined) == (1, 3)  # 7 is outside [0, 5]; 2 maps to 0.4
    odd = json_log(tmp_path / "odd.json", {"nan": float("nan"), "big": 10 ** 400, "neg": -0.5})
    store, s, _ = ingest(tmp_path / "d", [odd])
    assert (s.accepted, s.quarantined, s.quarantine_reasons) == (0, 3, {"scores.match.value": 3})


def test_missing_scorer_is_quarantined_and_bad_flags_refused(tmp_path):
    store, s, _ = ingest(tmp_path / "a", [FIXTURE], score="nope")
    assert (s.accepted, s.quarantined) == (0, 4)
    assert any("no scorer 'nope' in this sample (it has: match, parts, points)" in e["reason"]
               for e in store.quarantine())
    for score, rng in [(":acc", None), ("parts:", None), (None, "1"), (None, "a:b"), (None, "5:5")]:
        with pytest.raises(IngestError):
            ScoreOptions.parse(score, rng)


def test_letter_boolean_and_number_values(tmp_path):
    values = {"c": "C", "i": "I", "p": "P", "n": "N", "yes": True, "quarter": 0.25, "odd": "maybe"}
    store, s, opts = ingest(tmp_path / "store", [json_log(tmp_path / "letters.json", values)])
    assert (s.read, s.accepted) == (7, 7)
    got = {k: (t.outcome.success, t.outcome.score) for k, t in by_id(store).items()}
    assert got == {"c": (True, 1.0), "i": (False, 0.0), "p": (False, 0.5), "n": (False, 0.0), "yes": (True, 1.0),
                   "quarter": (False, 0.25), "odd": (None, None)}
    assert sum(opts.warnings.values()) == 1


# ---- 4. failed samples ----------------------------------------------------------------------------
def test_sample_with_error_is_quarantined_with_its_message(tmp_path):
    store, _, _ = ingest(tmp_path / "store", [FIXTURE])
    (q,) = store.quarantine()
    assert (q["record"], q["field"]) == ("samples/broken_epoch_1.json", "error")
    assert q["reason"] == "the sample failed: RuntimeError('sandbox exploded while setting up the task')"


# ---- 5. context turns -----------------------------------------------------------------------------
def test_assistant_turns_from_the_input_are_marked_as_context(tmp_path):
    store, _, _ = ingest(tmp_path / "store", [FIXTURE])
    t = by_id(store)
    few = t["fewshot"]
    assert [(m.role, m.content) for m in few.messages] == [("user", "What is 2+2?"), ("assistant", "4"),
                                                            ("user", "What is 3+3?"), ("assistant", "6")]
    assert few.metadata["context_messages"] == [1]  # "4" was written by the task; "6" was generated
    assert "context_messages" not in t["plain"].metadata and "context_messages" not in t["tools"].metadata


# ---- 6. the CLI ------------------------------------------------------------------------------------
def test_cli_flags_warnings_and_exit_codes(tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["ingest", str(FIXTURE), "--store", store, "--score", "parts", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (d["read"], d["accepted"], d["quarantined"]) == (4, 3, 1) and sum(d["warnings"].values()) == 3
    assert main(["ingest", str(FIXTURE), "--store", store, "--score", "parts"]) == 0  # all stored: no error
    out = capsys.readouterr().out
    assert "read 4: accepted 0, duplicates 3, quarantined 1" in out and "warning: scorer 'parts' gives a dict" in out
    rc = main(["ingest", str(FIXTURE), "--store", str(tmp_path / "s2"), "--score", "points"])
    out, err = capsys.readouterr()
    assert rc == 2 and "read 4: accepted 0, duplicates 0, quarantined 4" in out
    assert "largest group scores.points.value x3: score 7 is outside [0, 1]" in err and "Traceback" not in err
    rc = main(["ingest", str(FIXTURE), "--store", str(tmp_path / "s3"), "--score-range", "9:1"])
    assert rc == 2 and "LO must be below HI" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists()
    p = json_log(tmp_path / "ranged.json", {"a": 3, "b": 4})
    assert main(["ingest", str(p), "--store", str(tmp_path / "s4"), "--score-range", "0:4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (d["accepted"], d["quarantined"]) == (2, 0)


@needs_shared
def test_cli_on_the_shared_inspect_sample(tmp_path, capsys):
    assert main(["ingest", str(POPULARITY.parents[3]), "--store", str(tmp_path / "store"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (d["read"], d["accepted"], d["duplicates"], d["quarantined"]) == (12, 12, 0, 0)
