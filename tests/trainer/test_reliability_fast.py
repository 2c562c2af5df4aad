"""Reliability, the fast subset (`make test`): a few crash kills of ingest, concurrent ingests,
the experiment lock, `flywheel verify`, disk full / read-only, and a few fuzz examples per adapter
and of the recipe loader. The full set is in tests/reliability (`make test-reliability`)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from tests.paths import TESTS

sys.path.insert(0, str(TESTS / "reliability"))

import faults  # noqa: E402
import fuzzing  # noqa: E402
import harness  # noqa: E402
from data_pipeline.store import ExperienceStore  # noqa: E402
from trainer.verify import CheckpointCorrupted, check_checkpoint, verify  # noqa: E402

FUZZ = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), database=None)


# ---- crash --------------------------------------------------------------------------------------
def test_ingest_killed_at_random_points_loses_nothing(tmp_path):
    report = harness.run_stage("ingest", kills=2, seed=0, tmp=tmp_path)
    print(report.line())
    assert not report.failures, report.failures
    assert report.records_lost == 0 and report.records_duplicated == 0
    assert report.recoveries_verified == report.kills_tried + report.finished_before_kill == 2


# ---- concurrency --------------------------------------------------------------------------------
def test_two_ingest_processes_serialize_without_interleaving(tmp_path):
    import subprocess

    a = faults.incompressible_trajectories(tmp_path / "a.jsonl", 1500, 0, 200)
    b = faults.incompressible_trajectories(tmp_path / "b.jsonl", 1500, 1000, 200)  # 500 shared with a
    procs = [subprocess.Popen([sys.executable, "-m", "trainer.cli", "ingest", str(f), "--store", str(tmp_path / "s"),
                               "--tag", tag, "--json"], cwd=harness.REPO, env=harness.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for f, tag in ((a, "a"), (b, "b"))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    store = ExperienceStore(tmp_path / "s")
    batches = store.batches()
    assert len(batches) == 2 and sum(b.count for b in batches) == 2500  # 500 duplicates, stored once
    for info in batches:  # each batch holds one call's records only
        files = set(store.table([info.batch_id], ["source_file"]).column(0).to_pylist())
        assert files == {str(a if info.tag == "a" else b)}
    assert verify(tmp_path / "s")["ok"]


@pytest.mark.parametrize("command", ["train", "run"])
def test_second_writer_of_an_experiment_refuses(tmp_path, command):
    from trainer.rundir import RunDir

    run_dir = tmp_path / "run"
    with RunDir(run_dir).lock("run"):  # an experiment in progress (its process holds the lock)
        r = faults.flywheel(command, str(harness.RECIPE), *harness.TINY, f"run_dir={run_dir}")
    assert r.returncode == 2, r.stderr
    assert "in use by flywheel run (pid" in r.stderr and "Traceback" not in r.stderr


# ---- integrity ----------------------------------------------------------------------------------
def _run_with_store_and_round(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    src = faults.incompressible_trajectories(tmp_path / "a.jsonl", 20, 0, 100)
    src.write_text(src.read_text() + "{not json\n")  # one quarantined record
    ExperienceStore(run / "store").ingest([src])
    faults.fake_checkpoint(run, 1)
    return run


def test_verify_clean_run_exits_0(tmp_path):
    run = _run_with_store_and_round(tmp_path)
    r = faults.flywheel("verify", str(run), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] and result["checked"] == {"batches": 1, "rounds": 1}


@pytest.mark.parametrize("damage", ["adapter_bit", "adapter_missing", "batch_bit", "parquet_missing",
                                    "manifest_json", "orphan_batch", "index_foreign_hash"])
def test_verify_names_what_is_corrupted(tmp_path, damage):
    run = _run_with_store_and_round(tmp_path)
    batch = run / "store" / "batches" / "batch-000001"
    adapter = run / "rounds" / "round-0001" / "adapter" / "adapter_model.safetensors"
    target = {"adapter_bit": adapter, "adapter_missing": adapter, "batch_bit": batch / "trajectories.parquet",
              "parquet_missing": batch / "trajectories.parquet", "manifest_json": run / "rounds" / "round-0001" /
              "manifest.json", "orphan_batch": run / "store" / "batches" / "batch-000002",
              "index_foreign_hash": run / "store" / "index" / "trajectories.bin"}[damage]
    if damage.endswith("_bit"):
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x40
        target.write_bytes(bytes(data))
    elif damage.endswith("_missing"):
        target.unlink()
    elif damage == "manifest_json":
        target.write_text(target.read_text()[:-20])
    elif damage == "orphan_batch":
        target.mkdir()
    else:
        with open(target, "ab") as f:
            f.write(b"\x07" * 16)
    r = faults.flywheel("verify", str(run))
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(target) in r.stdout and "Traceback" not in r.stderr


def test_check_checkpoint_refuses_a_damaged_parent(tmp_path):
    round_dir = faults.fake_checkpoint(tmp_path / "run", 1)
    check_checkpoint(round_dir)  # intact: no error
    with open(round_dir / "adapter" / "adapter_model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(CheckpointCorrupted, match="adapter_model.safetensors: corrupted"):
        check_checkpoint(round_dir)


# ---- disk full, read-only -----------------------------------------------------------------------
def test_ingest_into_a_full_disk_fails_clearly_and_keeps_the_store(tmp_path):
    with faults.small_tmpfs(tmp_path / "mnt") as mnt:
        first = faults.incompressible_trajectories(tmp_path / "first.jsonl", 50)
        assert faults.flywheel("ingest", str(first), "--store", str(mnt / "store")).returncode == 0
        big = faults.incompressible_trajectories(tmp_path / "big.jsonl", 1500, 1000)  # ~2.4 MB > 2 MB
        r = faults.flywheel("ingest", str(big), "--store", str(mnt / "store"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "the disk is full" in r.stderr and str(mnt / "store") in r.stderr
        store = ExperienceStore(mnt / "store")
        assert len(store.trajectories()) == 50 and verify(mnt / "store")["ok"]
        assert not [p for p in (mnt / "store" / "batches").iterdir() if p.name.startswith(".tmp-")]


def test_ingest_into_a_read_only_store_fails_clearly(tmp_path):
    with faults.small_tmpfs(tmp_path / "mnt") as mnt:
        first = faults.incompressible_trajectories(tmp_path / "first.jsonl", 20)
        assert faults.flywheel("ingest", str(first), "--store", str(mnt / "store")).returncode == 0
        faults.remount_readonly(mnt)
        r = faults.flywheel("ingest", str(faults.incompressible_trajectories(tmp_path / "more.jsonl", 5, 100)),
                            "--store", str(mnt / "store"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "read-only" in r.stderr and str(mnt / "store") in r.stderr
        assert len(ExperienceStore(mnt / "store").trajectories()) == 20 and verify(mnt / "store")["ok"]


def test_checkpoint_write_into_a_full_disk_leaves_the_previous_checkpoint(tmp_path):
    with faults.small_tmpfs(tmp_path / "mnt") as mnt:
        run = mnt / "run"
        faults.fake_checkpoint(run, 1)
        with pytest.raises(OSError) as e:
            faults.fake_checkpoint(run, 2, adapter_bytes=os.urandom(3 << 20))
        assert e.value.errno == 28  # ENOSPC
        assert not (run / "rounds" / "round-0002").exists()  # nothing half-written is visible
        check_checkpoint(run / "rounds" / "round-0001")
        assert verify(run)["ok"]


# ---- fuzz ---------------------------------------------------------------------------------------
SAMPLES = fuzzing.sample_files()


@pytest.mark.parametrize("fmt", ["auto"] + fuzzing.adapter_names())
@FUZZ
@given(case=fuzzing.adapter_input(SAMPLES))
def test_adapter_survives_fuzzed_input(tmp_path_factory, fmt, case):
    fuzzing.check_ingest(tmp_path_factory.mktemp("fz"), *case, fmt)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=fuzzing.recipe_text())
def test_recipe_loader_survives_fuzzed_yaml(tmp_path_factory, text):
    fuzzing.check_recipe(tmp_path_factory.mktemp("rc"), text)
