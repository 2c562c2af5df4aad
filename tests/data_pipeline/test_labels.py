"""Outcome labels (data_pipeline/labels.py, issue 15): outcomes read where users put them, a store
of only unlabeled logs explained, labelled by a side file or by the user's verifier (a real Python
script run as label.command: parallel, cached, failures quarantined with their reason), unlabeled
never a negative, and the label counts adding up in a round's selection and manifest."""
from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from pathlib import Path

import datasets
import pytest

from data_pipeline import builders
from data_pipeline.errors import FlywheelError
from data_pipeline.labels import LabelError, LabelSettings, apply_labels, quarantined_labels, read_label_file
from data_pipeline.store import ExperienceStore
from trainer.cli import main

VERIFIER = r'''
import json, os, sys, time
t = json.load(sys.stdin)
answer = [m["content"] for m in t["messages"] if m["role"] == "assistant"][-1]
with open(os.environ["CALLS_FILE"], "a") as f:
    f.write(json.dumps({"episode": t["episode_id"], "start": time.time(), "cwd": os.getcwd()}) + "\n")
if "crash" in answer:
    print("boom: cannot judge", file=sys.stderr); sys.exit(3)
if "slow" in answer:
    time.sleep(30)
if "garbage" in answer:
    print("it looks fine to me"); sys.exit(0)
time.sleep(float(os.environ.get("VERIFIER_SLEEP", "0")))
print("judging...")
print(1.0 if "good" in answer else 0.25)
'''


def chat_line(i: int, task: str, answer: str, **extra) -> dict:
    """One OpenAI-format conversation of `task` answering `answer`."""
    return {"id": f"ep{i}", "task_id": task, "model": "gpt-x",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"solve {task}"},
                         {"role": "assistant", "content": answer}], **extra}


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def verifier(tmp_path, monkeypatch):
    """label.command running the verifier script; returns (command, calls file)."""
    script = tmp_path / "verify.py"
    script.write_text(VERIFIER)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS_FILE", str(calls))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", calls


def n_calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def unlabeled_store(tmp_path, answers: list[str], task=lambda i: f"t{i}") -> ExperienceStore:
    """A store of only unlabeled OpenAI logs (plain production logs), through `flywheel ingest`."""
    logs = write_lines(tmp_path / "logs.jsonl", [chat_line(i, task(i), a) for i, a in enumerate(answers)])
    assert main(["ingest", str(logs), "--store", str(tmp_path / "store"), "--quiet"]) == 0
    return ExperienceStore(tmp_path / "store")


# ---------------------------------------------------------------- outcome fields in the logs

def test_outcome_fields_are_read_in_every_natural_place(tmp_path, capsys):
    places = [{"reward": 0.5}, {"score": 1.0}, {"success": False}, {"metadata": {"reward": 0.75}},
              {"metadata": {"success": True}}, {"outcome": {"reward": 0.2}}, {"outcome": {"success": True}},
              {"metadata": {"score": 0.1}, "outcome": {"score": 0.9}},  # outcome, the most explicit, wins
              {}]
    openai = [chat_line(i, "a", f"x{i}", **extra) for i, extra in enumerate(places)]
    sharegpt = [{"id": f"sg{i}", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": f"a{i}"}],
                 **extra} for i, extra in enumerate([{"reward": 1.0}, {"metadata": {"score": 0.4}},
                                                     {"outcome": {"success": False}}, {}])]
    canonical = [{"episode_id": f"fw{i}", "task_id": "f", "messages": [{"role": "user", "content": "q"},
                                                                       {"role": "assistant", "content": f"a{i}"}],
                  **extra} for i, extra in enumerate([{"outcome": {"reward": 0.6}}, {"metadata": {"success": False}},
                                                      {"reward": 1.0}, {}])]
    files = [write_lines(tmp_path / "openai.jsonl", openai), tmp_path / "sg.json",
             write_lines(tmp_path / "fw.jsonl", canonical)]
    files[1].write_text(json.dumps(sharegpt))
    assert main(["ingest", *map(str, files), "--store", str(tmp_path / "store"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["formats"].values()) == {"openai", "sharegpt", "flywheel"}
    assert (summary["accepted"], summary["quarantined"], summary["with_outcome"]) == (17, 0, 14)
    got = {t.episode_id: (t.outcome.success, t.outcome.score) for t in ExperienceStore(tmp_path / "store").trajectories()}
    assert [got[f"ep{i}"] for i in range(9)] == [
        (False, 0.5), (True, 1.0), (False, None), (None, 0.75), (True, None), (None, 0.2), (True, None),
        (None, 0.9), (None, None)]
    assert [got[f"sg{i}"] for i in range(4)] == [(True, 1.0), (None, 0.4), (False, None), (None, None)]
    assert [got[f"fw{i}"] for i in range(4)] == [(None, 0.6), (False, None), (True, 1.0), (None, None)]


def test_ingest_output_counts_records_with_an_outcome(tmp_path, capsys):
    logs = write_lines(tmp_path / "l.jsonl", [chat_line(0, "a", "x", reward=1), chat_line(1, "b", "y"),
                                              chat_line(2, "c", "z")])
    assert main(["ingest", str(logs), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "with an outcome: 1 of 3 accepted (2 unlabeled: label them with label.file / label.command" in out


@pytest.mark.parametrize("extra, field, words", [
    ({"reward": 1.5}, "reward", "must lie in [0, 1], got 1.5"),
    ({"score": -0.2}, "score", "must lie in [0, 1], got -0.2"),
    ({"success": "yes"}, "success", "expected true/false, got 'yes'"),
    ({"outcome": {"reward": 7}}, "outcome.reward", "must lie in [0, 1], got 7"),
    ({"outcome": {"success": 1}}, "outcome.success", "expected true/false, got 1"),
    ({"metadata": {"reward": "high"}}, "metadata.reward", "expected a number in [0, 1], got 'high'"),
])
def test_out_of_range_or_non_boolean_outcomes_are_quarantined_with_the_reason(tmp_path, extra, field, words):
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([write_lines(tmp_path / "bad.jsonl", [chat_line(0, "a", "x", **extra), chat_line(1, "a", "y")])])
    assert (s.accepted, s.quarantined, s.with_outcome) == (1, 1, 0)
    (q,) = store.quarantine()
    assert (q["record"], q["field"]) == ("line 1", field) and words in q["reason"]


def test_out_of_range_rewards_in_other_formats_are_quarantined_not_clipped(tmp_path):
    sg = tmp_path / "sg.json"
    sg.write_text(json.dumps([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                               "reward": 2.0}]))
    fw = write_lines(tmp_path / "fw.jsonl", [{"episode_id": "e", "task_id": "t", "reward": -1,
                                              "messages": [{"role": "user", "content": "q"}]}])
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([sg, fw])
    assert (s.accepted, s.quarantined) == (0, 2)
    assert sorted((q["field"], q["reason"]) for q in store.quarantine()) == [
        ("reward", "must lie in [0, 1], got -1"), ("reward", "must lie in [0, 1], got 2.0")]


# ---------------------------------------------------------------- a store of only unlabeled logs

def test_only_unlabeled_default_build_explains_in_numbers(tmp_path, capsys):
    store = unlabeled_store(tmp_path, [f"answer {i}" for i in range(7)])
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "sft", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no sft rows: 7 usable trajectories" in err and "7 without an outcome" in err
    assert "--unlabeled keep" in err and "label.command" in err and "label.file" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.build-*"))


def test_only_unlabeled_unlabeled_keep_builds_it(tmp_path, capsys):
    store = unlabeled_store(tmp_path, [f"answer {i}" for i in range(7)])
    out = tmp_path / "sft"
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "sft", "--out", str(out),
                 "--unlabeled", "keep", "--quiet"]) == 0
    assert "7 unlabeled kept" in capsys.readouterr().out
    ds = datasets.load_from_disk(str(out))
    assert sorted(r["messages"][-1]["content"] for r in ds) == [f"answer {i}" for i in range(7)]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["labels"] == {"own": 0, "file": 0, "command": 0, "quarantined": 0, "unlabeled_kept": 7,
                              "unlabeled_dropped": 0}
    # kto never takes unlabeled trajectories, whatever --unlabeled says
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "kto", "--out", str(tmp_path / "k"),
                 "--unlabeled", "keep"]) == 2
    err = capsys.readouterr().err
    assert "no kto rows: 7 usable trajectories" in err and "--kind sft --unlabeled keep" in err


def test_only_unlabeled_label_command_labels_it(tmp_path, verifier, capsys):
    cmd, calls = verifier
    store = unlabeled_store(tmp_path, ["good 0", "bad 1", "good 2", "bad 3"])
    out = tmp_path / "kto"
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "kto", "--out", str(out),
                 "--label-command", cmd, "--quiet"]) == 0
    assert "labels: 4 command" in capsys.readouterr().out
    rows = datasets.load_from_disk(str(out)).to_list()
    assert sorted((r["completion"][0]["content"], r["label"]) for r in rows) == [
        ("bad 1", False), ("bad 3", False), ("good 0", True), ("good 2", True)]
    assert n_calls(calls) == 4


# ---------------------------------------------------------------- label.file

def test_label_file_labels_by_episode_id_and_by_task_id(tmp_path):
    store = unlabeled_store(tmp_path, ["a0", "a1", "a2", "a3", "a4"], task=lambda i: f"t{i % 2}")
    # t0: ep0, ep2, ep4; t1: ep1, ep3. ep2 by its episode id beats its task's label
    labels = write_lines(tmp_path / "labels.jsonl", [{"episode_id": "ep2", "score": 0.3}, {"task_id": "t0", "success": True},
                                                     {"episode_id": "ep3", "success": False, "score": 0.1}])
    trajs, counts = apply_labels(store.trajectories(), LabelSettings(file=str(labels)), store.root)
    got = {t.episode_id: (t.outcome.success, t.outcome.score, t.metadata["label_source"]) for t in trajs}
    assert got == {"ep0": (True, None, "file"), "ep2": (None, 0.3, "file"), "ep4": (True, None, "file"),
                   "ep3": (False, 0.1, "file")}
    assert counts == {"own": 0, "file": 4, "command": 0, "quarantined": 0, "unlabeled_kept": 0,
                      "unlabeled_dropped": 1}
    # the same labels as CSV and as a JSON mapping
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["episode_id", "task_id", "score", "success"], ["ep2", "", "0.3", ""], ["", "t0", "", "true"],
                     ["ep3", "", "0.1", "false"]])
    assert read_label_file(tmp_path / "labels.csv") == read_label_file(labels)
    # `flywheel dataset build --label-file` labels the same way
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "kto", "--out", str(tmp_path / "kto"),
                 "--label-file", str(tmp_path / "labels.csv"), "--quiet"]) == 0
    kto = datasets.load_from_disk(str(tmp_path / "kto"))
    assert sorted((r["completion"][0]["content"], r["label"]) for r in kto) == [
        ("a0", True), ("a2", False), ("a3", False), ("a4", True)]
    (tmp_path / "labels.json").write_text(json.dumps({"ep2": 0.3, "t1": True}))
    by_episode, by_task = read_label_file(tmp_path / "labels.json")
    assert by_episode["ep2"].score == 0.3 and by_task["t1"].success is True
    # the log's own outcome comes first: a file never overrides it
    own = write_lines(tmp_path / "own.jsonl", [chat_line(9, "t0", "own", reward=0.0)])
    store.ingest([own])
    trajs, counts = apply_labels(store.trajectories(), LabelSettings(file=str(labels)), store.root, unlabeled="keep")
    assert {t.episode_id: t.outcome.score for t in trajs}["ep9"] == 0.0 and counts["own"] == 1
    assert counts["unlabeled_kept"] == 1 and len(trajs) == 6


@pytest.mark.parametrize("name, text, words", [
    ("l.jsonl", '{"episode_id": "e", "score": 1.5}\n', "l.jsonl line 1, field score: expected a score in [0, 1]"),
    ("l.jsonl", '{"score": 0.5}\n', "l.jsonl line 1: names no episode_id or task_id"),
    ("l.csv", "id,score\nx,1\n", "the CSV header must name episode_id or task_id"),
    ("l.csv", "task_id,success\nx,maybe\n", "l.csv row 2, field success"),
    ("l.txt", "x", "unknown kind .txt"),
    ("l.jsonl", "{oops\n", "not valid JSON at line 1"),
])
def test_a_bad_label_file_names_file_row_and_field(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(LabelError, match=None) as e:
        read_label_file(tmp_path / name)
    assert words in str(e.value) and isinstance(e.value, FlywheelError)


# ---------------------------------------------------------------- label.command

def test_label_command_runs_in_parallel_and_is_cached(tmp_path, verifier, monkeypatch):
    cmd, calls = verifier
    monkeypatch.setenv("VERIFIER_SLEEP", "0.6")
    store = unlabeled_store(tmp_path, ["good 0", "bad 1", "good 2", "bad 3"])
    settings = LabelSettings(command=cmd, workers=4, timeout_s=20, workdir=str(tmp_path))
    t0 = time.time()
    trajs, counts = apply_labels(store.trajectories(), settings, store.root)
    assert time.time() - t0 < 4 * 0.6  # four 0.6 s calls, not one after the other
    starts = sorted(json.loads(line)["start"] for line in calls.read_text().splitlines())
    assert starts[-1] - starts[0] < 0.6 and n_calls(calls) == 4  # all four started before the first ended
    assert {json.loads(line)["cwd"] for line in calls.read_text().splitlines()} == {str(tmp_path)}
    assert {t.episode_id: t.outcome.score for t in trajs} == {"ep0": 1.0, "ep1": 0.25, "ep2": 1.0, "ep3": 0.25}
    assert counts["command"] == 4 and counts["unlabeled_dropped"] == 0
    # a second run (fresh objects from the store) is answered from the store's cache: no call
    again, counts2 = apply_labels(store.trajectories(), settings, store.root)
    assert n_calls(calls) == 4 and counts2 == counts
    assert [t.outcome.score for t in again] == [t.outcome.score for t in trajs]
    # another command is another judge: not answered from this one's cache
    apply_labels(store.trajectories(), LabelSettings(command=cmd + " --v2", workdir=str(tmp_path)), store.root)
    assert n_calls(calls) == 8


def test_failing_timed_out_and_garbage_answers_are_quarantined_and_counted(tmp_path, verifier):
    cmd, calls = verifier
    store = unlabeled_store(tmp_path, ["good 0", "crash 1", "slow 2", "garbage 3", "bad 4"])
    settings = LabelSettings(command=cmd, workers=5, timeout_s=2)
    t0 = time.time()
    trajs, counts = apply_labels(store.trajectories(), settings, store.root, unlabeled="keep")
    assert time.time() - t0 < 15  # the slow call was stopped at its time-out
    assert counts == {"own": 0, "file": 0, "command": 2, "quarantined": 3, "unlabeled_kept": 3,
                      "unlabeled_dropped": 0}
    reasons = {q["episode_id"]: q["reason"] for q in quarantined_labels(store.root)}
    assert reasons == {"ep1": "exited with code 3: boom: cannot judge",
                       "ep2": "timed out after 2 s (label.timeout_s)",
                       "ep3": "last line 'it looks fine to me' is not a score in [0, 1] or true/false"}
    assert all(not t.outcome.labeled for t in trajs if t.episode_id in reasons)
    # quarantined answers are retried on the next run (and not recorded twice); good ones are cached
    apply_labels(store.trajectories(), settings, store.root)
    assert n_calls(calls) == 5 + 3 and len(quarantined_labels(store.root)) == 3


def test_kto_and_dpo_never_use_unlabeled_as_negatives(tmp_path, verifier):
    cmd, _ = verifier
    # one task, four answers: two labelled by the verifier (good / bad), one crashes it, one has no label
    store = unlabeled_store(tmp_path, ["good 0", "bad 1", "crash 2", "good 3"], task=lambda i: "t")
    (tmp_path / "labels.jsonl").write_text(json.dumps({"episode_id": "ep3", "score": 0.5}) + "\n")
    settings = LabelSettings(command=cmd, file=str(tmp_path / "labels.jsonl"))
    for unlabeled in ("keep", "drop"):
        kto_trajs, counts = apply_labels(store.trajectories(), settings, store.root, unlabeled=unlabeled, kind="kto")
        assert counts["unlabeled_dropped"] == 1 and counts["unlabeled_kept"] == 0
        kto = builders.build_kto(kto_trajs)
        assert sorted((r["completion"][0]["content"], r["label"]) for r in kto) == [
            ("bad 1", False), ("good 0", True), ("good 3", False)]
        dpo = builders.build_dpo(apply_labels(store.trajectories(), settings, store.root, unlabeled=unlabeled,
                                              kind="dpo")[0])
        pairs = {(r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in dpo}
        assert pairs == {("good 0", "bad 1")} and not any("crash" in p for pair in pairs for p in pair)
    # sft all-scores: the unlabeled one is imitated with weight 1 under keep, never weight 0
    sft_trajs, counts = apply_labels(store.trajectories(), settings, store.root, unlabeled="keep", kind="sft")
    sft = builders.build_sft(sft_trajs, success_only=False, unlabeled="keep")
    weights = {m[-1]["content"]: w for m, w in zip(sft["messages"], sft["weight"])}
    assert weights == {"good 0": 1.0, "bad 1": 0.25, "crash 2": 1.0, "good 3": 0.5}


# ---------------------------------------------------------------- a round: the counts add up

def test_round_selection_and_manifest_count_labels_that_add_up(tmp_path, verifier):
    import yaml

    from trainer.recipe import load_recipe
    from trainer.round import ADAPTER, ADAPTER_FILES, FIT_RESULT, finalize_round, prepare_round
    from trainer.rundir import RunDir, atomic_write_json

    cmd, calls = verifier
    logs = write_lines(tmp_path / "logs.jsonl", [
        chat_line(0, "a", "x", reward=1.0), chat_line(1, "b", "good 1"), chat_line(2, "c", "bad 2"),
        chat_line(3, "d", "crash 3"), chat_line(4, "e", "file says 4"), chat_line(5, "f", "good 5", metadata={"success": False})])
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "labels.csv").write_text("episode_id,score\nep4,1\n")
    recipe_path = tmp_path / "conf" / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "experiment": "labels", "model": {"name_or_path": "tiny"}, "run_dir": str(tmp_path / "run"),
        "collect": {"suites": [], "logs": [str(logs)]}, "train": {"rounds": 1},
        "data": {"unlabeled": "keep"},
        "label": {"file": "labels.csv", "command": cmd, "workers": 2}}))
    recipe = load_recipe(recipe_path)
    assert recipe.label.file == str(tmp_path / "conf" / "labels.csv")  # relative to the recipe file
    assert recipe.label.workdir == str(tmp_path / "conf")
    run = RunDir(recipe.run_path())
    atomic_write_json(run.round_dir(0) / "manifest.json", {
        "round": 0, "parent": None, "base_model": str(tmp_path / "base"), "adapter": None, "batches_seen": [],
        "cumulative_interaction_hours": 0.0, "gpu_hours": 0.0, "tokens_trained": 0, "checksums": {}})
    sel = prepare_round(recipe, run, 1, progress=False)
    assert sel.labels == {"own": 2, "file": 1, "command": 2, "quarantined": 1, "unlabeled_kept": 1,
                          "unlabeled_dropped": 0}
    selected = sum(sel.store_batches.values())
    assert selected == 6 == sum(v for k, v in sel.labels.items() if k != "quarantined")
    assert sel.trajectories_used == selected - sel.labels["unlabeled_dropped"]
    # sft, success only: ep0 (reward 1), ep1 (verifier 1.0), ep4 (file 1) and the kept unlabeled ep3
    assert sel.rows == 4
    assert {json.loads(line)["cwd"] for line in calls.read_text().splitlines()} == {str(tmp_path / "conf")}
    adapter = run.work_dir(1) / ADAPTER
    adapter.mkdir()
    for name in ADAPTER_FILES:
        (adapter / name).write_text(name)
    atomic_write_json(run.work_dir(1) / FIT_RESULT, {"rows": sel.rows, "learning_rate": 1e-3})
    manifest = finalize_round(recipe, run, 1)
    assert manifest.labels == sel.labels
    assert json.loads((run.round_dir(1) / "manifest.json").read_text())["labels"] == sel.labels
