"""`flywheel dataset build` streams the store (data_pipeline/dataset_build.py): read a slice of rows
at a time and written in chunks, it gives the same rows, columns and provenance as the in-memory
builders over `ExperienceStore.trajectories()`."""
from __future__ import annotations

import json

import datasets
import pytest

from data_pipeline import builders, dataset_build
from data_pipeline.store import ExperienceStore


def _line(i: int) -> dict:
    """Trajectory i: tasks of three episodes, every third unlabeled, every fifth with tool schemas."""
    d = {"episode_id": f"e{i}", "task_id": f"t{i // 3}", "suite": "s", "duration_s": 1.0 + i,
         "messages": [{"role": "user", "content": f"task {i // 3}"},
                      {"role": "assistant", "content": f"try {i}"},
                      {"role": "user", "content": "and?"}, {"role": "assistant", "content": f"done {i}"}],
         "outcome": {} if i % 3 == 0 else {"success": i % 2 == 0, "score": (i % 10) / 10}}
    if i % 5 == 0:
        d["metadata"] = {"tools": [{"type": "function", "function": {"name": f"tool{i % 2}", "parameters": {}}}]}
    return d


@pytest.fixture
def store(tmp_path) -> ExperienceStore:
    s = ExperienceStore(tmp_path / "store")
    for part in range(3):  # three batches
        path = tmp_path / f"p{part}.jsonl"
        path.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(part * 23, (part + 1) * 23)))
        s.ingest([path])
    return s


def _in_memory(store: ExperienceStore, kind: str, **kw):
    trajs = store.trajectories()
    fn = getattr(builders, f"build_{kind}")
    return fn(trajs, heldout=store.heldout, **kw)


@pytest.mark.parametrize("kind, cli, kw", [
    ("sft", {}, {}), ("sft", {"all_scores": True, "min_score": 0.2}, {"success_only": False, "min_score": 0.2}),
    ("sft", {"all_scores": True, "unlabeled": "keep"}, {"success_only": False, "unlabeled": "keep"}),
    ("kto", {}, {}), ("dpo", {}, {}), ("rl", {}, {})])
def test_streamed_build_equals_the_in_memory_builders(store, tmp_path, monkeypatch, kind, cli, kw):
    monkeypatch.setattr(dataset_build, "CHUNK_ROWS", 7)  # several chunks, the last one short
    reads = []
    real = store.iter_trajectories

    def small_slices(*a, **k):  # several Parquet slices per batch
        reads.append(1)
        return real(*a, **{**k, "rows_at_once": 5})

    monkeypatch.setattr(ExperienceStore, "iter_trajectories", lambda self, *a, **k: small_slices(*a, **k))
    out = tmp_path / "out"
    prov = dataset_build.build_dataset_dir(store.root, kind, out, **cli)
    assert reads
    expected = _in_memory(store, kind, **kw)
    got = datasets.load_from_disk(str(out))
    assert len(expected) > 7 or kind == "dpo"
    assert got.to_list() == expected.to_list()
    assert got.features == expected.features
    want = builders.provenance(expected)
    assert {k: v for k, v in prov.items() if k != "labels"} == want
    assert builders.provenance(got) == prov == json.loads((out / "provenance.json").read_text())


def test_streamed_build_without_tools_has_no_tools_column(tmp_path):
    s = ExperienceStore(tmp_path / "store")
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps({**_line(i), "metadata": {}}) + "\n" for i in range(1, 12)))
    s.ingest([p])
    dataset_build.build_dataset_dir(s.root, "kto", tmp_path / "out")
    got = datasets.load_from_disk(str(tmp_path / "out"))
    assert "tools" not in got.column_names and got.to_list() == _in_memory(s, "kto").to_list()


def test_iter_trajectories_is_trajectories_one_at_a_time(store):
    whole = [t.to_dict() for t in store.trajectories()]
    assert [t.to_dict() for t in store.iter_trajectories(rows_at_once=4)] == whole
    ids = [b.batch_id for b in store.batches()][1:]
    assert [t.episode_id for t in store.iter_trajectories(ids)] == [t.episode_id for t in store.trajectories(ids)]
