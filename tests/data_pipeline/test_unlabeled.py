"""Trajectories whose log carries no outcome are unlabeled: never a failure in a KTO, DPO or SFT
dataset, counted apart in provenance and `store stats`; the OpenAI-chat adapter reads outcomes
from `outcome`, `metadata.success` and `metadata.reward` / `metadata.score`."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from data_pipeline import builders
from data_pipeline.store import ExperienceStore
from trainer.cli import main

# (task, where the outcome is) per line; episode id and answer text are "ep{i}" / "answer {i}"
LINES = [
    ("a", {"outcome": {"success": True, "score": 1.0}}),
    ("a", {"outcome": {"success": False, "score": 0.0}}),
    ("a", {"metadata": {"reward": 0.5}}),
    ("a", {}),
    ("b", {"outcome": {"success": True}}),
    ("b", {"metadata": {"success": False}}),
    ("b", {}),
    ("c", {"metadata": {"success": True, "user": "u1"}}),
    ("c", {"metadata": {"score": 1.0}}),
    ("c", {"reward": 0.0}),
    ("c", {"metadata": {"user": "u2"}}),
    ("d", {}),
    ("d", {}),
]
LABELED, SUCCESSES, TOTAL = 8, 4, len(LINES)


def chat_line(i: int, task: str, **extra) -> dict:
    """One OpenAI-format conversation of `task`; the prompt is shared by the task's lines."""
    return {"id": f"ep{i}", "task_id": task, "model": "gpt-x",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"solve {task}"},
                         {"role": "assistant", "content": f"answer {i}"}], **extra}


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def unlabeled_answers() -> set[str]:
    """Answer texts of the lines that give no outcome anywhere."""
    return {f"answer {i}" for i, (_, extra) in enumerate(LINES)
            if "outcome" not in extra and "reward" not in extra
            and not {"success", "reward", "score"} & set(extra.get("metadata", {}))}


@pytest.fixture
def store(tmp_path) -> ExperienceStore:
    """The mixed lines, split over two files, ingested through the real store."""
    lines = [chat_line(i, task, **extra) for i, (task, extra) in enumerate(LINES)]
    s = ExperienceStore(tmp_path / "store")
    summary = s.ingest([write_lines(tmp_path / "one.jsonl", lines[:6]), write_lines(tmp_path / "two.jsonl", lines[6:])])
    assert (summary.accepted, summary.quarantined) == (TOTAL, 0), s.quarantine()
    assert set(summary.formats.values()) == {"openai"}
    return s


def texts(rows: list) -> set[str]:
    """Every message content in a list of dataset rows (any column)."""
    return {m["content"] for row in rows for col in row.values() if isinstance(col, list)
            for m in col if isinstance(m, dict) and "content" in m}


def test_adapter_reads_the_three_outcome_places(store):
    by_id = {t.episode_id: t.outcome for t in store.trajectories()}
    assert (by_id["ep0"].success, by_id["ep0"].score) == (True, 1.0)  # flywheel's own `outcome`
    assert (by_id["ep4"].success, by_id["ep4"].score) == (True, None)
    assert (by_id["ep5"].success, by_id["ep7"].success) == (False, True)  # metadata.success
    assert (by_id["ep2"].score, by_id["ep8"].score) == (0.5, 1.0)  # metadata.reward / metadata.score
    assert by_id["ep8"].succeeded and not by_id["ep2"].succeeded
    unlabeled = {e for e, o in by_id.items() if not o.labeled}
    assert unlabeled == {"ep3", "ep6", "ep10", "ep11", "ep12"}
    assert all((by_id[e].success, by_id[e].score) == (None, None) for e in unlabeled)


def test_bad_metadata_outcomes_are_quarantined_naming_the_field(tmp_path):
    bad = [chat_line(0, "a", metadata={"reward": 1.5}), chat_line(1, "a", metadata={"score": -0.1}),
           chat_line(2, "a", metadata={"success": "yes"}), chat_line(3, "a", metadata={"reward": "high"}),
           chat_line(4, "a", outcome={"score": 2}), chat_line(5, "a", outcome="won"), chat_line(6, "a")]
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([write_lines(tmp_path / "bad.jsonl", bad)])
    assert (s.read, s.accepted, s.quarantined) == (7, 1, 6)
    q = {e["record"]: (e["field"], e["reason"]) for e in store.quarantine()}
    assert [q[f"line {i}"][0] for i in range(1, 7)] == ["metadata.reward", "metadata.score", "metadata.success",
                                                        "metadata.reward", "outcome.score", "outcome"]
    assert "[0, 1]" in q["line 1"][1] and "1.5" in q["line 1"][1]


def test_kto_skips_unlabeled_and_counts_them(store):
    kto = builders.build_kto(store.trajectories())
    prov = builders.provenance(kto)
    assert sorted(kto["label"]) == [False] * (LABELED - SUCCESSES) + [True] * SUCCESSES
    assert not texts(kto.to_list()) & unlabeled_answers()
    assert (prov["trajectories"], prov["unlabeled_dropped"]) == (LABELED, TOTAL - LABELED)
    assert prov["trajectories"] + prov["unlabeled_dropped"] == TOTAL


def test_dpo_pairs_only_labeled(store):
    dpo = builders.build_dpo(store.trajectories())
    assert sorted((r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in dpo) == [
        ("answer 0", "answer 1"), ("answer 4", "answer 5"), ("answer 7", "answer 9")]
    assert builders.provenance(dpo)["unlabeled_dropped"] == TOTAL - LABELED


def test_sft_drops_unlabeled_unless_asked_to_keep(store):
    trajs = store.trajectories()
    ok = builders.build_sft(trajs)
    prov = builders.provenance(ok)
    assert len(ok) == SUCCESSES and not texts(ok.to_list()) & unlabeled_answers()
    assert prov["trajectories"] + (LABELED - SUCCESSES) + prov["unlabeled_dropped"] == TOTAL
    weighted = builders.build_sft(trajs, success_only=False)
    assert sorted(weighted["weight"]) == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert builders.provenance(weighted)["unlabeled_dropped"] == TOTAL - LABELED
    every = builders.build_sft(trajs, success_only=False, unlabeled="keep")
    prov = builders.provenance(every)
    assert len(every) == TOTAL and (prov["unlabeled_kept"], prov["unlabeled_dropped"]) == (5, 0)
    assert sorted(w for r, w in zip(every["messages"], every["weight"])
                  if r[-1]["content"] in unlabeled_answers()) == [1.0] * 5
    assert len(builders.build_sft(trajs, unlabeled="keep")) == SUCCESSES + TOTAL - LABELED
    with pytest.raises(ValueError, match="drop, keep"):
        builders.build_sft(trajs, unlabeled="weight")


def test_store_stats_rate_is_over_labeled(store, capsys):
    stats = store.stats()
    assert (stats["labeled"], stats["unlabeled"], stats["successes"]) == (LABELED, TOTAL - LABELED, SUCCESSES)
    assert stats["success_rate"] == SUCCESSES / LABELED
    assert main(["store", "stats", str(store.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["success_rate"] == 0.5
    assert main(["store", "stats", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "0.5 (4 of 8 labeled)" in out and "unlabeled              5" in out


def test_cli_build_reports_unlabeled_dropped(store, tmp_path, capsys):
    out = tmp_path / "kto"
    assert main(["dataset", "build", "--store", str(store.root), "--kind", "kto", "--out", str(out)]) == 0
    assert "5 unlabeled dropped" in capsys.readouterr().out
    assert json.loads((out / "provenance.json").read_text())["unlabeled_dropped"] == 5


def test_all_unlabeled_build_names_the_cause_and_the_way_forward(tmp_path, capsys):
    plain = write_lines(tmp_path / "plain.jsonl", [chat_line(i, f"t{i}") for i in range(6)])
    st = str(tmp_path / "store")
    assert main(["ingest", str(plain), "--store", st]) == 0
    capsys.readouterr()
    build = ["dataset", "build", "--store", st, "--out"]
    assert main(build + [str(tmp_path / "sft"), "--kind", "sft"]) == 2
    err = capsys.readouterr().err
    assert "no sft rows: 6 usable trajectories" in err and "6 without an outcome (all unlabeled" in err
    assert "outcome.success / outcome.score, metadata.success / metadata.reward" in err
    assert "--label-command, label.command" in err and "--label-file, label.file" in err
    assert "--unlabeled keep" in err and "held-out tasks excluded)" in err
    assert main(build + [str(tmp_path / "kto"), "--kind", "kto"]) == 2
    assert "--kind sft --unlabeled keep" in capsys.readouterr().err
    assert main(build + [str(tmp_path / "sft"), "--kind", "sft", "--unlabeled", "keep"]) == 0
    assert len(datasets.load_from_disk(str(tmp_path / "sft"))) == 6


def test_no_success_build_suggests_all_scores(tmp_path, capsys):
    fails = write_lines(tmp_path / "fails.jsonl", [chat_line(i, "t", reward=0.0) for i in range(3)])
    st = str(tmp_path / "store")
    assert main(["ingest", str(fails), "--store", st]) == 0
    capsys.readouterr()
    assert main(["dataset", "build", "--store", st, "--kind", "sft", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "3 with an outcome (0 successful, 0 without an outcome)" in err and "--all-scores" in err
