"""The experience store: append-only batches, dedupe across calls, crash safety, concurrent
ingests, incremental index, held-out spec."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from data_pipeline import store as store_mod
from data_pipeline.errors import IngestError
from data_pipeline.heldout import HeldoutSpec
from data_pipeline.schema import Trajectory
from data_pipeline.store import ExperienceStore, canonical_dict, content_hash


def episode(i: int, task: str | None = None, score: float = 1.0, duration: float = 2.0) -> dict:
    return {"episode_id": f"e{i}", "task_id": task or f"maze/d1/s{i}", "suite": "maze", "duration_s": duration,
            "messages": [{"role": "user", "content": f"maze {i}"},
                         {"role": "assistant", "content": "", "tool_calls": [{"name": "move", "arguments": {"d": "up"}}]},
                         {"role": "tool", "content": "moved", "name": "move"},
                         {"role": "assistant", "content": "done"}],
            "outcome": {"success": score >= 1.0, "score": score}}


def write(path: Path, eps: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in eps))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_fast_hash_equals_schema_hash():
    t = Trajectory.from_dict(episode(3))
    assert content_hash(canonical_dict(t)) == t.content_hash()
    assert canonical_dict(t) == t.to_dict()


def test_batches_manifest_and_dedupe_across_calls(tmp_path):
    s = ExperienceStore(tmp_path / "store")
    a = s.ingest([write(tmp_path / "a.jsonl", [episode(i) for i in range(5)])], tag="round-1")
    b = s.ingest([write(tmp_path / "b.jsonl", [episode(i) for i in range(3, 8)])], tag="round-2")
    assert (a.accepted, b.accepted, b.duplicates) == (5, 3, 2)
    infos = s.batches()
    assert [i.batch_id for i in infos] == [a.batch_id, b.batch_id] and infos[0].created_at <= infos[1].created_at
    assert [i.count for i in infos] == [5, 3] and infos[1].tag == "round-2"
    assert infos[0].interaction_s == pytest.approx(10.0)
    src = infos[0].sources[0]
    assert src["path"] == str(tmp_path / "a.jsonl") and len(src["sha256"]) == 64 and src["accepted"] == 5
    assert set(infos[0].checksums) == {"trajectories.parquet"}
    assert store_mod.sha256_file(infos[0].path / "trajectories.parquet") == infos[0].checksums["trajectories.parquet"]
    assert [t.episode_id for t in s.trajectories([b.batch_id])] == ["e5", "e6", "e7"]
    assert len(s.trajectories()) == 8
    before = snapshot(tmp_path / "store")
    again = s.ingest([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert (again.accepted, again.duplicates, again.batch_id) == (0, 10, None)
    assert snapshot(tmp_path / "store") == before  # a rerun adds nothing


def test_crash_before_commit_leaves_store_as_before(tmp_path, monkeypatch):
    s = ExperienceStore(tmp_path / "store")
    s.ingest([write(tmp_path / "a.jsonl", [episode(i) for i in range(3)])])
    before = snapshot(tmp_path / "store")

    def crash(*a, **k):
        raise OSError("power cut")

    monkeypatch.setattr(store_mod.os, "rename", crash)
    with pytest.raises(OSError):
        s.ingest([write(tmp_path / "b.jsonl", [episode(i) for i in range(3, 6)])])
    monkeypatch.undo()
    leftovers = [p.name for p in (tmp_path / "store/batches").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers  # the half-written batch exists only as a temporary directory
    assert len(ExperienceStore(tmp_path / "store").trajectories()) == 3
    r = ExperienceStore(tmp_path / "store").ingest([tmp_path / "b.jsonl"])
    assert r.accepted == 3 and not [p for p in (tmp_path / "store/batches").iterdir() if p.name.startswith(".tmp-")]
    assert set(before) <= set(snapshot(tmp_path / "store"))


def test_crash_after_commit_before_index_update_is_repaired(tmp_path, monkeypatch):
    s = ExperienceStore(tmp_path / "store")
    f = write(tmp_path / "a.jsonl", [episode(i) for i in range(4)])

    def crash(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr(store_mod._HashIndex, "add_batch", crash)
    with pytest.raises(OSError):
        s.ingest([f])
    monkeypatch.undo()
    assert len(s.batches()) == 1  # committed
    r = ExperienceStore(tmp_path / "store").ingest([f])
    assert (r.accepted, r.duplicates) == (0, 4)  # the index folded the batch in


def test_incremental_ingest_does_not_read_old_batches(tmp_path, monkeypatch):
    s = ExperienceStore(tmp_path / "store")
    s.ingest([write(tmp_path / "a.jsonl", [episode(i) for i in range(50)])])

    def no_reads(*a, **k):
        raise AssertionError("ingest re-read stored rows")

    monkeypatch.setattr(store_mod.pq, "read_table", no_reads)
    r = s.ingest([write(tmp_path / "b.jsonl", [episode(i) for i in range(45, 60)])])
    assert (r.accepted, r.duplicates) == (10, 5)


def _ingest_proc(root: str, path: str, q) -> None:
    q.put(ExperienceStore(root).ingest([path]).accepted)


def test_concurrent_ingests_serialize(tmp_path):
    f = write(tmp_path / "a.jsonl", [episode(i) for i in range(200)])
    ExperienceStore(tmp_path / "store")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ingest_proc, args=(str(tmp_path / "store"), str(f), q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(q.get(timeout=5) for _ in procs) == [0, 0, 200]
    assert len(ExperienceStore(tmp_path / "store").batches()) == 1


def test_heldout_spec_recorded_merged_and_applied(tmp_path):
    s = ExperienceStore(tmp_path / "store")
    eps = [episode(i) for i in range(4)] + [episode(9, task="maze/d3/s1000000005")]
    spec = HeldoutSpec(patterns=[r"/s1\d{9}$"])
    r = s.ingest([write(tmp_path / "a.jsonl", eps)], heldout=spec)
    assert r.heldout_seen == 1 and r.accepted == 5
    s.set_heldout(HeldoutSpec(task_ids={"maze/d1/s0"}, suites={"tau"}))
    h = ExperienceStore(tmp_path / "store").heldout
    assert h.patterns == [r"/s1\d{9}$"] and h.task_ids == {"maze/d1/s0"} and h.suites == {"tau"}
    assert sorted(t.task_id for t in s.trajectories()) == ["maze/d1/s1", "maze/d1/s2", "maze/d1/s3"]
    assert len(s.trajectories(include_heldout=True)) == 5
    assert s.stats()["heldout_trajectories"] == 2
    assert h.matches("x", suite="tau") and not h.matches("maze/d3/s999")


def test_heldout_file_formats(tmp_path):
    txt = tmp_path / "heldout.txt"
    txt.write_text("# held-out tasks\nmaze/d1/s7\nsuite:tau2-bench\nre:^maze/.*/s1\\d{9}$\n")
    spec = HeldoutSpec.load(txt)
    assert spec.task_ids == {"maze/d1/s7"} and spec.suites == {"tau2-bench"} and spec.matches("maze/d2/s1000000001")
    yml = tmp_path / "heldout.yaml"
    yml.write_text("task_ids: [a]\npatterns: ['(']\n")
    with pytest.raises(IngestError, match="not a valid regex"):
        HeldoutSpec.load(yml)


def test_store_errors_are_user_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(IngestError):
        ExperienceStore(tmp_path / "file")
    s = ExperienceStore(tmp_path / "store")
    with pytest.raises(IngestError, match="no batch"):
        s.trajectories(["batch-999999"])
    with pytest.raises(IngestError, match="no such file"):
        s.ingest([tmp_path / "missing"])
    assert not s.batches()
