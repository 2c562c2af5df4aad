"""Dataset builders: TRL column layouts, held-out refusal, provenance; and the CLI around them."""
from __future__ import annotations

import json

import datasets
import pytest

from data_pipeline import builders
from data_pipeline.errors import HeldoutLeakError
from data_pipeline.heldout import HeldoutSpec
from data_pipeline.store import ExperienceStore
from trainer.cli import main

TOOLS = [{"type": "function", "function": {"name": "move", "description": "move", "parameters": {"type": "object"}}}]


def episode(i: int, task: str, score: float, tools: bool = True) -> dict:
    return {"episode_id": f"e{i}", "task_id": task, "suite": "maze", "duration_s": 1.0,
            "messages": [{"role": "system", "content": "solve the maze"}, {"role": "user", "content": f"maze {task}"},
                         {"role": "assistant", "content": "", "tool_calls": [{"name": "move", "arguments": {"d": "up", "n": i}, "id": f"c{i}"}]},
                         {"role": "tool", "content": "moved", "tool_call_id": f"c{i}", "name": "move"},
                         {"role": "assistant", "content": f"answer {i}"}],
            "outcome": {"success": score >= 1.0, "score": score},
            "metadata": {"tools": TOOLS} if tools else {}}


@pytest.fixture
def store(tmp_path) -> ExperienceStore:
    s = ExperienceStore(tmp_path / "store")
    eps = [episode(0, "a", 1.0), episode(1, "a", 0.0), episode(2, "a", 0.5), episode(3, "b", 1.0),
           episode(4, "c", 0.0), episode(5, "maze/d3/s1000000005", 1.0)]
    f = tmp_path / "eps.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in eps[:3]))
    s.ingest([f], tag="first")
    f.write_text("".join(json.dumps(e) + "\n" for e in eps[3:]))
    s.ingest([f], heldout=HeldoutSpec(patterns=[r"/s1\d{9}$"]))
    return s


def test_sft_success_filter_tools_and_provenance(store):
    trajs = store.trajectories()
    ds = builders.build_sft(trajs, heldout=store.heldout)
    assert ds.column_names == ["messages", "tools"] and len(ds) == 2
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    call = row["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "move", "arguments": {"d": "up", "n": 0}} and call["type"] == "function"
    assert row["tools"] == TOOLS
    prov = builders.provenance(ds)
    assert prov["batches"] == [b.batch_id for b in store.batches()] and prov["trajectories"] == 2
    weighted = builders.build_sft(trajs, success_only=False, min_score=0.5)
    assert sorted(weighted["weight"]) == [0.5, 1.0, 1.0]
    no_tools = builders.build_sft([t for t in trajs if t.task_id == "a"][:0] + [
        type(trajs[0]).from_dict(episode(7, "z", 1.0, tools=False))])
    assert no_tools.column_names == ["messages"]


def test_kto_dpo_rl_layouts(store):
    trajs = store.trajectories()
    kto = builders.build_kto(trajs)
    assert kto.column_names == ["prompt", "completion", "label", "tools"] and len(kto) == 5
    assert kto[0]["completion"][0]["content"] == "answer 0" and kto[0]["prompt"][-1]["role"] == "tool"
    assert sorted(kto["label"]) == [False, False, False, True, True]
    dpo = builders.build_dpo(trajs)
    assert len(dpo) == 1  # task a: 1.0 vs 0.0; the middle one has no partner; b and c have one each
    assert dpo[0]["chosen"][-1]["content"] == "answer 0" and dpo[0]["rejected"][-1]["content"] == "answer 1"
    assert [m["role"] for m in dpo[0]["prompt"]] == ["system", "user"]
    rl = builders.build_rl(trajs)
    assert sorted(rl["task_id"]) == ["a", "b", "c"] and rl[0]["env"] == {"suite": "maze", "task_id": "a"}
    assert [m["role"] for m in rl[0]["prompt"]] == ["system", "user"]


def test_heldout_is_refused_by_every_builder(store):
    leaked = store.trajectories(include_heldout=True)
    for build in (builders.build_sft, builders.build_kto, builders.build_dpo, builders.build_rl):
        with pytest.raises(HeldoutLeakError, match="maze/d3/s1000000005"):
            build(leaked, heldout=store.heldout)


def test_cli_ingest_stats_and_build(tmp_path, capsys):
    f = tmp_path / "eps.jsonl"
    f.write_text("".join(json.dumps(episode(i, f"t{i % 3}", float(i < 3))) + "\n" for i in range(6)))
    held = tmp_path / "heldout.txt"
    held.write_text("t2\n")
    st = str(tmp_path / "store")
    assert main(["ingest", str(f), "--store", st, "--heldout", str(held), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"read", "accepted", "duplicates", "quarantined", "quarantine_reasons", "redactions", "heldout_seen"} <= set(d)
    assert (d["read"], d["accepted"], d["heldout_seen"]) == (6, 6, 2)
    assert main(["store", "stats", st, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["trajectories"], stats["batches"], stats["quarantined"], stats["heldout_trajectories"]) == (6, 1, 0, 2)
    assert main(["store", "stats", st]) == 0 and "trajectories" in capsys.readouterr().out
    for kind in ("sft", "kto", "dpo", "rl"):
        out = tmp_path / kind
        assert main(["dataset", "build", "--store", st, "--kind", kind, "--out", str(out)]) == 0
        ds = datasets.load_from_disk(str(out))
        assert "maze t2" not in json.dumps(ds.to_list()) and len(ds), kind  # held-out task never built
        assert json.loads((out / "provenance.json").read_text())["kind"] == kind
    capsys.readouterr()
    assert main(["dataset", "build", "--store", st, "--kind", "ppo", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    empty = str(tmp_path / "empty")
    assert main(["ingest", str(held), "--store", empty, "--json"]) == 0  # only a skipped .txt: an empty store
    assert main(["dataset", "build", "--store", empty, "--kind", "sft", "--out", str(tmp_path / "y")]) == 2
    assert "no sft rows" in capsys.readouterr().err
    assert main(["store", "stats", str(tmp_path / "nowhere")]) == 2
    assert "not an experience store" in capsys.readouterr().err
