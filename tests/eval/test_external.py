"""External suites: a real subprocess harness (tests/fixtures/external/harness.py) per task."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from eval.external import ExternalSuiteError, is_external_suite, load_external_suite
from tests.paths import TESTS

HARNESS = TESTS / "fixtures" / "external" / "harness.py"
COMMAND = f"{sys.executable} {HARNESS} --task {{task_id}} --out {{out}} --checkpoint {{checkpoint}}"


def write_suite(tmp_path: Path, **overrides) -> Path:
    body = {"name": "demo-harness", "category": "software", "command": COMMAND,
            "tasks": ["ok"], "timeout_s": 20, "env": {"HARNESS_SCORE": "0.75"}}
    body.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def test_ok_timeout_crash_and_malformed_are_recorded_without_stopping(tmp_path):
    suite = load_external_suite(write_suite(tmp_path, timeout_s=2,
                                            tasks=["ok", "slow", "crash", "malformed", "missing", "out_of_range"]))
    started = time.monotonic()
    results = suite.run("/ckpt/round-0001", None, tmp_path / "out")
    assert time.monotonic() - started < 15  # the slow task was cut at its time-out
    by_id = {r.task_id: r for r in results}
    assert [r.task_id for r in results] == ["ok", "slow", "crash", "malformed", "missing", "out_of_range"]

    ok = by_id["ok"]
    assert (ok.status, ok.success, ok.score, ok.duration_s, ok.error) == ("ok", True, 0.75, 42.5, None)
    assert Path(ok.trajectory_path).read_text() == "{}\n"
    assert "checkpoint=/ckpt/round-0001" in (tmp_path / "out" / "ok" / "stdout.log").read_text()

    slow = by_id["slow"]
    assert (slow.status, slow.success, slow.score) == ("timeout", False, 0.0)
    assert "timed out after 2 s" in slow.error and slow.duration_s >= 2
    child = int((tmp_path / "out" / "slow" / "child.pid").read_text())
    assert not _alive(child), "the harness's own child must die with it"

    crash = by_id["crash"]
    assert (crash.status, crash.score) == ("error", 0.0)
    assert "exit code 1" in crash.error and "blew up on purpose" in crash.error

    assert by_id["malformed"].status == "error" and "not valid JSON" in by_id["malformed"].error
    assert by_id["missing"].status == "error" and "no result written" in by_id["missing"].error
    assert by_id["out_of_range"].status == "error" and "score" in by_id["out_of_range"].error

    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["ok", "timeout", "error", "error", "error", "error"]


def _alive(pid: int) -> bool:
    for _ in range(50):  # the kill is asynchronous; a zombie awaiting its reaper counts as dead
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        if "State:\tZ" in state:
            return False
        time.sleep(0.1)
    return True


def test_concurrency_runs_tasks_at_the_same_time(tmp_path):
    suite = load_external_suite(write_suite(tmp_path, tasks=["nap1", "nap2", "nap3"], concurrency=3))
    suite.run("ck", None, tmp_path / "out")
    spans = [json.loads((tmp_path / "out" / t / "result.json").read_text()) for t in ("nap1", "nap2", "nap3")]
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans), "all three naps overlapped"


def test_task_ids_subset_tasks_file_and_odd_ids(tmp_path):
    (tmp_path / "tasks.txt").write_text("# comment\nok\n\nmissing\n")
    suite = load_external_suite(write_suite(tmp_path, tasks=None, tasks_file="tasks.txt"))
    assert suite.task_ids == ["ok", "missing"]
    assert [r.status for r in suite.run("ck", None, tmp_path / "out", task_ids=["ok"])] == ["ok"]

    odd = load_external_suite(write_suite(tmp_path, tasks=["a/b c"]))
    (res,) = odd.run("ck", None, tmp_path / "odd")
    assert res.task_id == "a/b c" and res.status == "error"  # the harness does not know it: no result
    assert len(list((tmp_path / "odd").iterdir())) == 2  # one task folder + results.jsonl, no nested a/


@pytest.mark.parametrize("overrides, words", [
    ({"retries": 3}, ["retries", "Extra inputs"]),
    ({"timeout_s": -1}, ["timeout_s"]),
    ({"tasks_file": "t.txt"}, ["exactly one of 'tasks' or 'tasks_file'"]),
    ({"command": "run {model} {out}"}, ["command", "unknown placeholder", "model"]),
    ({"command": "run {task_id}"}, ["command", "{out}"]),
    ({"command": "run 'unclosed {out}"}, ["command", "cannot split"]),
    ({"tasks": None, "tasks_file": "nowhere.txt"}, ["tasks_file", "nowhere.txt"]),
    ({"env": {"N": 3}}, ["env.N"]),
])
def test_bad_yaml_names_file_and_key(tmp_path, overrides, words):
    path = write_suite(tmp_path, **overrides)
    with pytest.raises(ExternalSuiteError) as e:
        load_external_suite(path)
    assert str(path) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_unreadable_or_non_mapping_yaml(tmp_path):
    with pytest.raises(ExternalSuiteError, match="cannot read"):
        load_external_suite(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ExternalSuiteError, match="not valid YAML"):
        load_external_suite(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ExternalSuiteError, match="mapping"):
        load_external_suite(bad)


def test_missing_checkpoint_for_a_command_that_needs_it(tmp_path):
    suite = load_external_suite(write_suite(tmp_path))
    with pytest.raises(ExternalSuiteError, match=r"uses \{checkpoint\}"):
        suite.run(None, "http://localhost:8000/v1", tmp_path / "out")


def test_command_that_cannot_start_is_an_error_result(tmp_path):
    suite = load_external_suite(write_suite(tmp_path, command="/no/such/binary {out}"))
    (res,) = suite.run(None, None, tmp_path / "out")
    assert res.status == "error" and "cannot start" in res.error


def test_is_external_suite():
    assert is_external_suite("suites/edgebench.yaml") and not is_external_suite("maze")


def test_progress_counts_outcomes_and_results_keep_task_order(tmp_path, capsys):
    suite = load_external_suite(write_suite(tmp_path, timeout_s=2, concurrency=3, tasks=["slow", "ok", "crash"]))
    results = suite.run("ck", None, tmp_path / "out", progress=True)
    assert [r.task_id for r in results] == ["slow", "ok", "crash"]  # "slow" ends last, listed first
    bar = capsys.readouterr().err
    assert "eval demo-harness" in bar and "3/3" in bar, bar
    assert "success=1, timeout=1, error=1" in bar, bar
    suite.run("ck", None, tmp_path / "quiet")
    assert capsys.readouterr().err == ""
