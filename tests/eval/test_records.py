"""The records stages hand each other (round manifest, data selection, eval summary, the study's
arm results): written and read back equal, the files written byte for byte as before the records,
run directories written before them still read, and each key spelled only where its record lives."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from eval.curve_inputs import CurveInputError, points_from_run
from eval.records import CheckpointManifest, EvalSummary, SuiteSummary
from eval.report import rounds_table
from eval.stats import wilson_interval
from trainer.errors import UserError
from trainer.records import DataSelection, RoundManifest
from trainer.rundir import RunDir
from trainer.study_controls import ArmResult, ArmRound
from trainer.study_controls import BestOfK, ForgettingScore, RetryScores
from tests.paths import REPO

REPO = REPO
OLD_RUN = REPO / "tests" / "fixtures" / "records" / "run"  # written by the code before the records (see README)


def _old_json(obj: dict) -> str:
    """How trainer/rundir.py's atomic_write_json wrote a manifest or a selection."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


# ---- the files of an older run directory -------------------------------------------------------
def test_an_old_run_directory_reads_and_rewrites_byte_for_byte(tmp_path):
    run = RunDir(OLD_RUN)
    m0, m1 = run.manifest(0), run.manifest(1)
    assert isinstance(m1, RoundManifest) and m1.round == 1 and m1.parent == "round-0000"
    assert m0.adapter is None and m0.learning_rate is None and m1.adapter == "adapter"
    assert m1.cumulative_interaction_hours > 0 and m1.learning_rate > 0 and m1.metrics["steps"] > 0
    assert set(m1.store_batches) <= set(m1.batches_seen)
    for r in (0, 1, 2):
        m = run.manifest(r)
        m.write(tmp_path / f"r{r}")
        assert (tmp_path / f"r{r}" / RoundManifest.FILE).read_bytes() == \
            (run.round_dir(r) / RoundManifest.FILE).read_bytes()
    s = run.eval_summary(1)
    assert isinstance(s.suites["maze"], SuiteSummary) and s.episodes == s.suites["maze"].episodes
    assert s.ci95[0] <= s.success_rate <= s.ci95[1] and set(s.pass_at_k) == {"1"}
    s.write(tmp_path)
    assert (tmp_path / EvalSummary.FILE).read_bytes() == (run.round_dir(1) / "eval" / EvalSummary.FILE).read_bytes()
    sel = DataSelection.read(run.work_dir(3))
    assert sel.round == 3 and sel.parent == "round-0002" and sel.rows > 0 and sel.reference_adapter is None
    assert sel.cumulative_interaction_hours > run.manifest(2).cumulative_interaction_hours
    sel.write(tmp_path)
    assert (tmp_path / DataSelection.FILE).read_bytes() == (run.work_dir(3) / DataSelection.FILE).read_bytes()


def test_eval_reads_the_old_run_directory_through_its_own_view():
    view = CheckpointManifest.read(OLD_RUN / "rounds" / "round-0001")
    full = RoundManifest.read(OLD_RUN / "rounds" / "round-0001")
    assert type(view) is CheckpointManifest and not hasattr(view, "store_batches")
    assert (view.round, view.cumulative_interaction_hours, view.gpu_hours, view.tokens_trained) == \
        (full.round, full.cumulative_interaction_hours, full.gpu_hours, full.tokens_trained)
    points, notes = points_from_run(OLD_RUN, "hours", "success_rate")
    assert [p.x for p in points[:2]] == [0.0, full.cumulative_interaction_hours] and len(points) == 3 and not notes
    assert points[1].score == EvalSummary.read(OLD_RUN / "rounds" / "round-0001" / "eval").success_rate
    assert "| 1 | " in "\n".join(rounds_table(OLD_RUN))


# ---- round trips --------------------------------------------------------------------------------
def _manifest(r: int) -> dict:
    """A manifest as trainer/round.py wrote it (round 0 has no learning_rate)."""
    doc = {"round": r, "parent": f"round-{r - 1:04d}" if r else None, "base_model": "/runs/x/base_model",
           "adapter": "adapter" if r else None, "method": "sft" if r else None,
           "store_batches": {"batch-000001": 12}, "batches_seen": ["batch-000001"], "new_batches": ["batch-000001"],
           "trajectories_used": 12, "cumulative_interaction_hours": 1.25, "interaction_hours_new": 1.25,
           "gpu_hours": 0.0, "tokens_trained": 4096, "recipe_hash": "abc", "code_version": "git:1234",
           "seed": 7, "metrics": {"rows": 10, "loss_history": [2.0, 1.5]}, "wall_time_s": 3.5,
           "created_at": 1.7e9, "checksums": {"adapter/adapter_model.safetensors": "0" * 64}}
    if r:
        doc["learning_rate"] = 0.005
    return doc


@pytest.mark.parametrize("r", [0, 1])
def test_round_manifest_round_trip(tmp_path, r):
    doc = _manifest(r)
    m = RoundManifest.from_dict(doc)
    assert m.to_dict() == doc
    m.write(tmp_path)
    assert (tmp_path / RoundManifest.FILE).read_text() == _old_json(doc)
    assert RoundManifest.read(tmp_path) == m
    assert m["cumulative_interaction_hours"] == m.cumulative_interaction_hours == 1.25
    with pytest.raises(KeyError):
        m["date"]  # an absent optional key stays absent
    if r == 0:
        with pytest.raises(KeyError):
            m["learning_rate"]


def test_data_selection_round_trip(tmp_path):
    sel = DataSelection(round=2, parent="round-0001", base_model="/b", parent_adapter="/r/adapter", method="kto",
                        reference_adapter=None, seed=99, rows=5, store_batches={"batch-000002": 5},
                        batches_seen=["batch-000001", "batch-000002"], new_batches=["batch-000002"],
                        trajectories_used=5, cumulative_interaction_hours=2.5, interaction_hours_new=1.25,
                        started_at=1.0, prepare_s=0.5)
    sel.write(tmp_path)
    assert DataSelection.read(tmp_path) == sel
    assert json.loads((tmp_path / DataSelection.FILE).read_text())["reference_adapter"] is None
    assert DataSelection.read(tmp_path / "elsewhere") is None


def test_eval_summary_round_trip_keeps_absent_keys_absent(tmp_path):
    suite = {"episodes": 4, "tasks": 2, "samples_per_task": 2, "success_rate": 0.5, "ci95": [0.15, 0.85],
             "mean_score": 0.5, "mean_score_ci95": [0.0, 1.0], "per_task": {"a": 1.0, "b": 0.0},
             "per_task_success": {"a": 1.0, "b": 0.0}, "pass_at_k": {"1": 0.5, "2": 0.5},
             "pass_at_k_ci95": {"1": [0.0, 1.0], "2": [0.0, 1.0]}}
    doc = {**suite, "suites": {"maze": suite, "ext.yaml": {**suite, "status_counts": {"ok": 4, "timeout": 0,
                                                                                       "error": 0}}},
           "checkpoint": "/r/adapter", "seed": 3}
    s = EvalSummary.from_dict(doc)
    assert s.to_dict() == doc and s.status_counts is None and s.suites["ext.yaml"].status_counts["ok"] == 4
    s.write(tmp_path)
    assert (tmp_path / EvalSummary.FILE).read_text() == json.dumps(doc, indent=2, sort_keys=True)
    assert EvalSummary.read(tmp_path) == s
    hand_made = EvalSummary.from_dict({"success_rate": 0.25, "episodes": 8})
    assert hand_made.to_dict() == {"success_rate": 0.25, "episodes": 8} and hand_made.mean_score is None


def test_study_records_round_trip(tmp_path):
    row = ArmRound(round=1, hours=4.0, adapter="adapter", success_rate=0.5, mean_score=0.5, episodes=12,
                   per_task_success={"t": 0.5}, per_task={"t": 0.5}, ci95=[0.2, 0.8], k=1)
    forgetting = ForgettingScore(round=1, success_rate=0.25, ci95=[0.1, 0.5], episodes=4, per_task_success={"t": 0.0})
    result = ArmResult(run_dir="/r", kind="accumulate", rounds=[row], forgetting=[forgetting])
    assert ArmResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.without_tasks()["rounds"] == [{k: v for k, v in row.to_dict().items()
                                                 if k not in ("per_task", "per_task_success")}]
    assert ArmResult(run_dir="/r", kind="latest", rounds=[row]).without_tasks()["forgetting"] == []
    retry = RetryScores(eval_pass_hours=0.5, samples_per_task=3,
                        rounds=[BestOfK(round=0, hours=0.0, k=1, success_rate=0.2, mean_score=0.2, tasks=5,
                                        per_task_success={}, per_task={})])
    assert RetryScores.from_dict(json.loads(json.dumps(retry.to_dict()))) == retry


# ---- readers of hand-made or damaged files -------------------------------------------------------
def test_a_partial_manifest_reads_and_the_curve_names_what_is_missing(tmp_path):
    shutil.copytree(OLD_RUN / "rounds", tmp_path / "run" / "rounds")
    path = tmp_path / "run" / "rounds" / "round-0001" / RoundManifest.FILE
    path.write_text(json.dumps({"round": 1, "gpu_hours": 0.5}))
    m = RoundManifest.read(path.parent)
    assert m.cumulative_interaction_hours is None and m.trajectories_used == 0 and m.store_batches == {}
    assert [p.x for p in points_from_run(tmp_path / "run", "gpu_hours")[0]][:2] == [0.0, 0.5]
    with pytest.raises(CurveInputError, match="missing field 'cumulative_interaction_hours'"):
        points_from_run(tmp_path / "run", "hours")
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="corrupted manifest"):
        RunDir(tmp_path / "run").manifest(1)


# ---- one interval helper --------------------------------------------------------------------------
def test_wilson_interval():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0
    assert wilson_interval(0.3, 0) == (0.0, 1.0)
    from eval.evaluator import summarize

    s = summarize({f"t{i}": [(i < 3, float(i < 3))] for i in range(10)}, 1)
    assert s.ci95 == list(wilson_interval(0.3, 10))


def test_policy_for_builds_the_acting_policy(tiny_model_dir):
    from eval.config import PolicyConfig
    from eval.policy import HFPolicy, policy_for

    policy = policy_for((tiny_model_dir, None), PolicyConfig(temperature=0.5, constrained=False, max_new_tokens=7), name="p")
    assert isinstance(policy, HFPolicy) and policy.name == "p"
    assert (policy.temperature, policy.constrained, policy.max_new_tokens) == (0.5, False, 7)


# ---- each key spelled once -------------------------------------------------------------------------
OWNED_KEYS = {"cumulative_interaction_hours": "eval/records.py"}


def _string_literals(path: Path):
    """(literal, line) of every string constant of a module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno


@pytest.mark.parametrize("key", sorted(OWNED_KEYS))
def test_a_record_key_is_spelled_only_in_its_owner(key):
    found = [f"{p.relative_to(REPO)}:{line}" for package in ("data_pipeline", "eval", "trainer")
             for p in sorted((REPO / package).rglob("*.py")) for value, line in _string_literals(p) if value == key]
    assert found and all(f.startswith(OWNED_KEYS[key] + ":") for f in found), found
