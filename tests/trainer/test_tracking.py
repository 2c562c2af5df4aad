"""Tracking layer on hand-made run directories (no training): W&B offline runs read back from their
.wandb files, local records, idempotence, resume of a failed stage, disabled mode, no secrets.

The .wandb transaction log is read with `read_wandb_file`: the leveldb-log framing (wandb 0.31 ships
no Python reader any more; wandb-core writes the file) and wandb's own protobuf `Record` for every
record, so the test sees what `wandb sync` would upload, not what the code meant to send."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import yaml

from trainer import tracking
from trainer.recipe import load_recipe
from trainer.recipe_fork import write_resolved
from trainer.rundir import RunDir, atomic_write_json, dir_checksums

FAKE_KEY = "local-0f1e2d3c4b5a69788796a5b4c3d2e1f0deadbeef"  # shaped like a W&B API key
FAKE_SECRET = "sk-flywheel-planted-secret-5d41402abc4b2a76"


# ---- reading offline runs back ---------------------------------------------------------------------
def read_wandb_file(path: Path) -> list:
    """Every record of a .wandb file as wandb_internal_pb2.Record, checksums verified."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B transaction log"
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer: too short for a header
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad checksum"
        chunks += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(chunks)
            records.append(rec)
            chunks = b""
    return records


def offline_runs(run_dir: Path) -> dict[str, list[dict]]:
    """run id -> one dict per offline folder (oldest first): run, config, summary, history, artifacts, exit."""
    out: dict[str, list[dict]] = {}
    for folder in sorted((run_dir / "tracking" / "wandb").glob("offline-run-*")):
        (wandb_file,) = folder.glob("*.wandb")
        info = {"folder": folder, "config": {}, "summary": {}, "history": [], "artifacts": [], "exit": None}
        for rec in read_wandb_file(wandb_file):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                info["run"] = rec.run
                info["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                info["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "summary":
                for i in rec.summary.update:
                    _set(info["summary"], i)
            elif kind == "history":
                row: dict = {}
                for i in rec.history.item:
                    _set(row, i)
                info["history"].append(row)
            elif kind == "artifact":
                info["artifacts"].append(rec.artifact)
            elif kind == "exit":
                info["exit"] = rec.exit.exit_code
        out.setdefault(info["run"].run_id, []).append(info)
    return out


def _set(target: dict, item) -> None:
    """A summary / history item: `key`, or `nested_key` [top, sub, ...] for nested values (images)."""
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def artifact_refs(artifact) -> dict[str, str]:
    return {e.path: e.ref for e in artifact.manifest.contents}


# ---- a hand-made run directory -----------------------------------------------------------------------
def make_run(tmp_path: Path, rounds: int = 2, mode: str = "offline", name: str = "tracktest") -> tuple:
    """A run directory with the files the loop writes: resolved recipe, round manifests (with an
    adapter file and store batches), eval summaries; no training."""
    run_dir = tmp_path / name
    recipe = load_recipe("recipes/quickstart.yaml", [f"experiment={name}", f"run_dir={run_dir}",
                                                      f"train.rounds={rounds}", f"tracking.wandb.mode={mode}",
                                                      "tracking.wandb.project=flywheel-test",
                                                      "tracking.wandb.tags=[unit]"])
    run = RunDir(run_dir)
    write_resolved(recipe, run_dir)
    seen: list[str] = []
    for r in range(rounds + 1):
        batch = f"batch-{r:06d}"
        if r:
            bdir = run.store / "batches" / batch
            bdir.mkdir(parents=True)
            (bdir / "trajectories.parquet").write_bytes(b"PAR1" + bytes(r))
            atomic_write_json(bdir / "manifest.json", {"batch_id": batch, "count": 10 * r, "tag": f"round-{r:04d}",
                                                       "interaction_s": 360.0 * r,
                                                       "checksums": {"trajectories.parquet": "0" * 64}})
            seen.append(batch)
        rdir = run.round_dir(r)
        rdir.mkdir(parents=True)
        if r:
            (rdir / "adapter").mkdir()
            (rdir / "adapter" / "adapter_model.safetensors").write_bytes(bytes([r]) * 64)
        manifest = {"round": r, "parent": f"round-{r - 1:04d}" if r else None, "base_model": str(run.base_model),
                    "adapter": "adapter" if r else None, "method": "sft" if r else None,
                    "store_batches": {b: 10 for b in seen}, "batches_seen": list(seen), "new_batches": seen[-1:] if r else [],
                    "trajectories_used": 10 * r, "cumulative_interaction_hours": 0.1 * r * (r + 1) / 2,
                    "interaction_hours_new": 0.1 * r, "learning_rate": 5e-3, "gpu_hours": 0.0, "tokens_trained": 1000 * r,
                    "metrics": {"rows": 8 * r, "train_loss": 2.0 / (r + 1), "steps": 3,
                                "loss_history": [2.5, 2.0, 1.5]} if r else {},
                    "checksums": dir_checksums(rdir), "created_at": 1.0, "wall_time_s": 1.0}
        atomic_write_json(rdir / "manifest.json", manifest)
        write_summary(run, r, 0.2 + 0.1 * r)
    from trainer.loop import refresh_curve_and_report

    refresh_curve_and_report(recipe, run)
    return recipe, run


def write_summary(run: RunDir, r: int, success: float) -> None:
    eval_dir = run.round_dir(r) / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "results.jsonl").write_text('{"task_id": "maze/d3/s1000000000", "success": true}\n')
    atomic_write_json(eval_dir / "summary.json", {
        "episodes": 20, "tasks": 20, "success_rate": success, "ci95": [success - 0.1, success + 0.1],
        "mean_score": success / 2, "mean_score_ci95": [success / 2 - 0.05, success / 2 + 0.05],
        "per_task": {}, "per_task_success": {},
        "suites": {"maze": {"episodes": 20, "success_rate": success, "ci95": [success - 0.1, success + 0.1],
                            "mean_score": success / 2}}})


# ---- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe_mode, env, expected", [
    ("auto", {}, "offline"),
    ("auto", {"WANDB_API_KEY": FAKE_KEY}, "online"),
    ("auto", {"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"}, "offline"),
    ("auto", {"WANDB_MODE": "online"}, "online"),
    ("auto", {"WANDB_MODE": "dryrun"}, "offline"),
    ("offline", {"WANDB_API_KEY": FAKE_KEY}, "offline"),
    ("online", {}, "online"),
    ("disabled", {"WANDB_API_KEY": FAKE_KEY}, "disabled"),
    ("online", {"WANDB_MODE": "disabled"}, "disabled"),
    ("offline", {"WANDB_DISABLED": "true"}, "disabled"),
])
def test_mode_from_recipe_and_environment(recipe_mode, env, expected):
    assert tracking.resolve_mode(recipe_mode, env) == expected


def test_run_ids_are_deterministic_per_experiment_job_round_and_run_directory(tmp_path):
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    key_a = tracking.run_key(a)
    assert tracking.run_key(a) == key_a and tracking.run_key(b) != key_a
    ids = {tracking.wandb_run_id("exp", job, r, key_a) for job in tracking.JOBS for r in range(3)}
    assert len(ids) == 15
    assert tracking.wandb_run_id("exp", "train", 2, key_a) == f"exp-train-r0002-{key_a}"
    assert tracking.wandb_run_id("my exp/v2", "eval", 1, key_a).startswith("my-exp-v2-eval-r0001-")
    with pytest.raises(ValueError):
        tracking.wandb_run_id("exp", "deploy", 1, key_a)


def test_offline_runs_carry_config_metrics_and_artifact_lineage(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe, run = make_run(tmp_path, rounds=2)
    written = tracking.log_pending(recipe, run)
    assert [(w["job"], w["round"]) for w in written] == [("eval", 0), ("train", 1), ("eval", 1), ("train", 2),
                                                          ("eval", 2), ("curve", 2)]
    key = tracking.run_key(run)
    runs = offline_runs(run.root)
    assert set(runs) == {tracking.wandb_run_id("tracktest", j, r, key)
                         for j, r in [("eval", 0), ("train", 1), ("eval", 1), ("train", 2), ("eval", 2), ("curve", 2)]}

    train2 = runs[tracking.wandb_run_id("tracktest", "train", 2, key)][0]
    assert train2["run"].project == "flywheel-test" and train2["run"].run_group == "tracktest"
    assert train2["run"].job_type == "train"
    assert {"method:sft", "arm:tracktest", "job:train", "unit"} <= set(train2["run"].tags)
    assert train2["config"]["experiment"] == "tracktest" and train2["config"]["train"]["rounds"] == 2
    assert train2["config"]["flywheel"]["round"] == 2 and train2["config"]["flywheel"]["recipe_hash"] == recipe.hash()
    assert train2["summary"]["trajectories_used"] == 20 and train2["summary"]["dataset_rows"] == 16
    assert train2["summary"]["hours"] == pytest.approx(0.3)
    assert [h["train/loss"] for h in train2["history"] if "train/loss" in h] == [2.5, 2.0, 1.5]
    assert train2["exit"] == 0
    # lineage: the parent checkpoint and both store batches in, the new checkpoint out
    used = [a for a in train2["artifacts"] if a.use_after_commit]
    logged = [a for a in train2["artifacts"] if not a.use_after_commit]
    assert sorted((a.type, min(set(a.aliases) - {"latest"})) for a in used) == [
        ("dataset", "batch-000001"), ("dataset", "batch-000002"), ("model", "round-0001")]
    (out,) = logged
    assert out.type == "model" and "round-0002" in out.aliases
    refs = artifact_refs(out)
    assert refs["manifest.json"] == f"file://{(run.round_dir(2) / 'manifest.json').resolve()}"
    assert refs["adapter/adapter_model.safetensors"].endswith("rounds/round-0002/adapter/adapter_model.safetensors")
    # the parent used by round 2 is the very artifact round 1 logged (same digest)
    train1 = runs[tracking.wandb_run_id("tracktest", "train", 1, key)][0]
    (out1,) = [a for a in train1["artifacts"] if not a.use_after_commit]
    parent = next(a for a in used if a.type == "model")
    assert parent.digest == out1.digest and parent.name == out1.name

    eval2 = runs[tracking.wandb_run_id("tracktest", "eval", 2, key)][0]
    assert eval2["run"].job_type == "eval"
    assert eval2["summary"]["heldout/success_rate"] == pytest.approx(0.4)
    assert eval2["summary"]["heldout/success_rate_lo"] == pytest.approx(0.3)
    assert eval2["summary"]["heldout/success_rate_hi"] == pytest.approx(0.5)
    assert eval2["summary"]["heldout/maze/success_rate"] == pytest.approx(0.4)
    (ckpt_in,) = [a for a in eval2["artifacts"] if a.use_after_commit]
    assert ckpt_in.digest == out.digest

    curve = runs[tracking.wandb_run_id("tracktest", "curve", 2, key)][0]
    assert curve["run"].job_type == "curve" and curve["summary"]["curve/points"] == 3

    records = tracking.read_records(run.root)
    assert [(r["job"], r["round"]) for r in records] == [(w["job"], w["round"]) for w in written]
    assert all(r["wandb"]["mode"] == "offline" for r in records)
    sync = (run.tracking / "SYNC.md").read_text()
    assert f"wandb sync --project flywheel-test {(run.tracking / 'wandb').resolve()}/offline-run-*" in sync

    assert tracking.log_pending(recipe, run) == []  # nothing logged twice
    assert len(list((run.tracking / "wandb").glob("offline-run-*"))) == 6


def test_curve_run_has_parameters_with_intervals_and_the_image(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe, run = make_run(tmp_path, rounds=5)
    for r, s in enumerate([0.1, 0.2, 0.35, 0.5, 0.58, 0.62]):
        write_summary(run, r, s)
    from trainer.loop import refresh_curve_and_report

    refresh_curve_and_report(recipe, run)
    rec = tracking.log_curve(recipe, run, 5)
    (arm,) = rec["arms"].values()
    assert arm["status"] == "ok" and set(arm["intervals"]) >= {"asymptote", "midpoint"}
    key = tracking.run_key(run)
    (curve,) = offline_runs(run.root)[tracking.wandb_run_id("tracktest", "curve", 5, key)]
    s = curve["summary"]
    assert s["curve/fitted"] == 1
    assert s["curve/asymptote_lo"] <= s["curve/asymptote"] <= s["curve/asymptote_hi"]
    assert s["curve/plot"]["_type"] == "image-file"
    assert (curve["folder"] / "files" / s["curve/plot"]["path"]).is_file()


def test_gate_runs_carry_the_verdict_and_the_promoted_alias_follows_the_promotions(tmp_path, monkeypatch):
    """Round 1 promoted, round 2 rejected: each verdict is a `gate` run with its numbers, and the
    checkpoint artifact of each promoted round is logged again with the alias `promoted` (the same
    digest as the round's own checkpoint: W&B moves the alias onto that version)."""
    from trainer.promote import Verdict, verdict_path

    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe, run = make_run(tmp_path, rounds=2)
    verdicts = {0: Verdict(round=0, promoted=True, decision="promoted", reason="the base model, initially"),
                1: Verdict(round=1, promoted=True, decision="promoted", reason="not worse", incumbent=0, tasks=20,
                           candidate_score=0.3, incumbent_score=0.2, difference=0.1, difference_ci95=[0.02, 0.18],
                           upper_bound=0.16, p_value=0.99),
                2: Verdict(round=2, promoted=False, decision="rejected", reason="worse beyond noise", incumbent=1,
                           tasks=20, candidate_score=0.1, incumbent_score=0.3, difference=-0.2,
                           difference_ci95=[-0.3, -0.1], upper_bound=-0.12, p_value=0.001)}
    for r, v in verdicts.items():
        verdict_path(run, r).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(verdict_path(run, r), v.to_dict())
    written = tracking.log_pending(recipe, run)
    assert [(w["job"], w["round"]) for w in written if w["job"] == "gate"] == [("gate", 0), ("gate", 1), ("gate", 2)]
    key = tracking.run_key(run)
    runs = offline_runs(run.root)
    (g1,) = runs[tracking.wandb_run_id("tracktest", "gate", 1, key)]
    (g2,) = runs[tracking.wandb_run_id("tracktest", "gate", 2, key)]
    assert g1["run"].job_type == "gate" and g1["exit"] == 0
    assert g1["summary"]["gate/promoted"] == 1 and g1["summary"]["gate/decision"] == "promoted"
    assert (g1["summary"]["gate/difference_lo"], g1["summary"]["gate/difference_hi"]) == (0.02, 0.18)
    assert g2["summary"]["gate/promoted"] == 0 and g2["summary"]["gate/p_value"] == pytest.approx(0.001)
    assert g2["summary"]["gate/reason"] == "worse beyond noise" and g2["artifacts"] == []
    (promoted,) = g1["artifacts"]
    assert "promoted" in promoted.aliases and promoted.type == "model"
    (train1,) = runs[tracking.wandb_run_id("tracktest", "train", 1, key)]
    (ckpt1,) = [a for a in train1["artifacts"] if not a.use_after_commit]
    assert promoted.digest == ckpt1.digest  # the alias lands on round 1's own checkpoint version
    records = [r for r in tracking.read_records(run.root) if r["job"] == "gate"]
    assert [(r["round"], r["decision"]) for r in records] == [(0, "promoted"), (1, "promoted"), (2, "rejected")]
    assert tracking.log_pending(recipe, run) == []  # each verdict logged once

    # a roll forward by hand to the rejected round 2 (`flywheel promote` appends it to history.jsonl)
    history = run.root / "promotion" / "history.jsonl"
    lines = [json.dumps(v.to_dict()) for v in verdicts.values()]
    manual = Verdict(round=2, promoted=True, decision="manual", incumbent=1, reason="hotfix", by="alice", test="by hand")
    history.write_text("\n".join(lines + [json.dumps(manual.to_dict())]) + "\n")
    (rec,) = tracking.log_promotions_by_hand(recipe, run)
    assert (rec["job"], rec["round"], rec["promoted_round"], rec["by"]) == ("promote", 4, 2, "alice")
    (p4,) = offline_runs(run.root)[tracking.wandb_run_id("tracktest", "promote", 4, key)]
    assert p4["run"].job_type == "promote" and p4["run"].display_name == "tracktest/promote/entry-4"
    assert p4["summary"]["promote/round"] == 2 and p4["summary"]["promote/reason"] == "hotfix"
    (moved,) = p4["artifacts"]
    (train2,) = runs[tracking.wandb_run_id("tracktest", "train", 2, key)]
    (ckpt2,) = [a for a in train2["artifacts"] if not a.use_after_commit]
    assert "promoted" in moved.aliases and moved.digest == ckpt2.digest
    assert tracking.log_pending(recipe, run) == []


def test_failed_stage_is_marked_failed_and_its_rerun_resumes_the_same_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe, run = make_run(tmp_path, rounds=1)
    manifest = run.round_dir(1) / "manifest.json"
    saved = manifest.read_text()
    manifest.unlink()  # round 1 not finished yet
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage(recipe, run, "train", 1):
            raise KeyboardInterrupt  # preempted mid-round
    assert tracking.read_records(run.root) == []
    with tracking.stage(recipe, run, "train", 1):
        manifest.write_text(saved)  # the rerun completes the round
    run_id = tracking.wandb_run_id("tracktest", "train", 1, tracking.run_key(run))
    attempts = offline_runs(run.root)[run_id]
    assert [a["exit"] for a in attempts] == [1, 0]
    assert all(a["run"].run_id == run_id for a in attempts)
    assert [(r["job"], r["round"]) for r in tracking.read_records(run.root)] == [("train", 1)]
    with tracking.stage(recipe, run, "train", 1):  # done and logged: no new W&B run
        pass
    assert len(offline_runs(run.root)[run_id]) == 2


def test_disabled_mode_writes_local_records_only(tmp_path):
    recipe, run = make_run(tmp_path, rounds=1, mode="disabled")
    written = tracking.log_pending(recipe, run)
    assert [(w["job"], w["wandb"]) for w in written] == [("eval", None), ("train", None), ("eval", None), ("curve", None)]
    assert not (run.tracking / "wandb").exists() and not (run.tracking / "SYNC.md").exists()
    assert written[2]["success_rate"] == pytest.approx(0.3) and written[2]["ci95"] == pytest.approx([0.2, 0.4])
    assert tracking.log_pending(recipe, run) == []


def test_only_rank_zero_logs(tmp_path, monkeypatch):
    recipe, run = make_run(tmp_path, rounds=1)
    monkeypatch.setenv("RANK", "1")
    assert tracking.log_pending(recipe, run) == []
    assert tracking.read_records(run.root) == []


def test_no_secret_reaches_the_run_directory_or_wandb_files(tmp_path, monkeypatch):
    """A planted API key and secret in the environment appear in no file under the run directory
    (records, SYNC.md, offline W&B runs with their logs and config)."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("FLYWHEEL_TEST_SECRET", FAKE_SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")  # with a key, auto would go online
    recipe, run = make_run(tmp_path, rounds=1, mode="auto")
    assert len(tracking.log_pending(recipe, run)) == 4
    files = [p for p in run.root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "debug.log" for p in files)
    for p in files:
        data = p.read_bytes()
        for planted in (FAKE_KEY, FAKE_SECRET, FAKE_KEY[6:]):
            assert planted.encode() not in data, f"{p} contains a planted secret"
    config = offline_runs(run.root)[tracking.wandb_run_id("tracktest", "train", 1, tracking.run_key(run))][0]["config"]
    assert "WANDB_API_KEY" not in json.dumps(config) and "FLYWHEEL_TEST_SECRET" not in json.dumps(config)


def test_track_command_logs_a_run_directory_with_its_own_recipe(tmp_path, monkeypatch, capsys):
    from trainer.cli import main as flywheel

    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe, run = make_run(tmp_path, rounds=1)
    assert flywheel(["track", str(run.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"eval round 0: W&B run {tracking.wandb_run_id('tracktest', 'eval', 0, tracking.run_key(run))} (offline)"
    assert len(out) == 4
    assert flywheel(["track", str(run.root)]) == 0 and capsys.readouterr().out == ""
    assert flywheel(["track", str(tmp_path / "nowhere")]) == 2
    assert "no recipe.resolved.yaml" in capsys.readouterr().err
