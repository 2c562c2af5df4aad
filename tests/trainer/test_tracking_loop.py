"""Tracking through the real loop: two quickstart experiments of two rounds each on the tiny model
(W&B offline, a planted API key and secret in the environment), read back from the offline .wandb
files with wandb's protobuf records; then `flywheel compare` on the two run directories.

About 40-60 s on two idle cores (two tiny loops), hence slow: `pytest -m slow tests/trainer/test_tracking_loop.py`.
The same tracking code runs in tests/trainer/test_tracking.py on hand-made run directories in seconds."""
from __future__ import annotations

import json

import pytest

from test_tracking import FAKE_KEY, FAKE_SECRET, offline_runs
from trainer import tracking
from trainer.cli import main as flywheel
from trainer.loop import run_experiment
from trainer.recipe import load_recipe

pytestmark = pytest.mark.slow

TINY = ["train.rounds=2", "collect.suites.0.episodes=24", "eval.suites.0.episodes=16", "train.epochs=1",
        "collect.policy.batch_size=24", "eval.policy.batch_size=16", "tracking.wandb.mode=offline",
        "tracking.wandb.project=flywheel-loop-test"]


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    recipes = [load_recipe("recipes/quickstart.yaml", TINY + [f"run_dir={root / 'accumulate'}"]),
               load_recipe("recipes/quickstart.yaml", TINY + ["experiment=quickstart-latest", "data.replay_ratio=0",
                                                              f"run_dir={root / 'latest'}"])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_API_KEY", FAKE_KEY)
        mp.setenv("FLYWHEEL_TEST_SECRET", FAKE_SECRET)
        runs = [run_experiment(recipe, progress=False) for recipe in recipes]
    return recipes, runs


def test_rounds_evals_and_curves_are_in_the_offline_wandb_files(two_experiments):
    (recipe, _), (run, _) = two_experiments
    key = tracking.run_key(run)
    runs = offline_runs(run.root)
    ids = {tracking.wandb_run_id("quickstart", job, r, key) for job, r in
           [("eval", 0), ("gate", 0), ("curve", 0), ("train", 1), ("eval", 1), ("gate", 1), ("curve", 1),
            ("train", 2), ("eval", 2), ("gate", 2), ("curve", 2)]}
    assert set(runs) == ids and all(len(v) == 1 and v[0]["exit"] == 0 for v in runs.values())
    # the gate's verdicts: the `promoted` alias is on the checkpoint of each round the gate promoted
    for r in (0, 1, 2):
        (gate,) = runs[tracking.wandb_run_id("quickstart", "gate", r, key)]
        verdict = json.loads((run.root / "promotion" / f"round-{r:04d}.json").read_text())
        assert gate["summary"]["gate/promoted"] == int(verdict["promoted"])
        assert ["promoted" in a.aliases for a in gate["artifacts"]] == ([True] if verdict["promoted"] else [])

    for r in (1, 2):
        manifest = run.manifest(r)
        (train,) = runs[tracking.wandb_run_id("quickstart", "train", r, key)]
        assert (train["run"].project, train["run"].run_group, train["run"].job_type) == ("flywheel-loop-test", "quickstart", "train")
        assert "method:sft" in train["run"].tags and "arm:quickstart" in train["run"].tags
        assert train["config"]["collect"]["suites"][0]["episodes"] == 24 and train["config"]["flywheel"]["round"] == r
        assert train["summary"]["trajectories_used"] == manifest["trajectories_used"]
        assert train["summary"]["hours"] == pytest.approx(manifest["cumulative_interaction_hours"])
        assert train["summary"]["train_loss"] == pytest.approx(manifest["metrics"]["train_loss"])
        losses = [h["train/loss"] for h in train["history"] if "train/loss" in h]
        assert losses == pytest.approx(manifest["metrics"]["loss_history"]) and losses
        (output,) = [a for a in train["artifacts"] if not a.use_after_commit]
        assert f"round-{r:04d}" in output.aliases
        adapter_files = {f for f in manifest["checksums"] if f.startswith("adapter/")}
        assert adapter_files and adapter_files <= {e.path for e in output.manifest.contents}
        assert all(e.ref.startswith(f"file://{run.round_dir(r).resolve()}/") for e in output.manifest.contents)
        datasets = [a for a in train["artifacts"] if a.use_after_commit and a.type == "dataset"]
        assert datasets and sorted(json.loads(a.metadata)["batch_id"] for a in datasets) == sorted(manifest["store_batches"])
        (parent,) = [a for a in train["artifacts"] if a.use_after_commit and a.type == "model"]
        assert f"round-{r - 1:04d}" in parent.aliases
        if r == 2:  # round 2's parent is the artifact round 1 logged
            (train1,) = runs[tracking.wandb_run_id("quickstart", "train", 1, key)]
            (out1,) = [a for a in train1["artifacts"] if not a.use_after_commit]
            assert parent.digest == out1.digest

    for r in (0, 1, 2):
        summary = run.eval_summary(r)
        (ev,) = runs[tracking.wandb_run_id("quickstart", "eval", r, key)]
        assert ev["run"].job_type == "eval"
        assert ev["summary"]["heldout/success_rate"] == pytest.approx(summary["success_rate"])
        assert [ev["summary"]["heldout/success_rate_lo"], ev["summary"]["heldout/success_rate_hi"]] == pytest.approx(summary["ci95"])
        assert ev["summary"]["heldout/episodes"] == 16
    (curve,) = runs[tracking.wandb_run_id("quickstart", "curve", 2, key)]
    assert curve["summary"]["curve/points"] == 3 and curve["summary"]["curve/plot"]["_type"] == "image-file"

    records = tracking.read_records(run.root)
    assert [(x["job"], x["round"]) for x in records] == [("eval", 0), ("gate", 0), ("curve", 0), ("train", 1),
                                                         ("eval", 1), ("gate", 1), ("curve", 1), ("train", 2),
                                                         ("eval", 2), ("gate", 2), ("curve", 2)]
    assert "wandb sync" in (run.tracking / "SYNC.md").read_text()


def test_a_rerun_opens_no_new_wandb_runs(two_experiments):
    (recipe, _), (run, _) = two_experiments
    before = sorted(p.name for p in (run.tracking / "wandb").glob("offline-run-*"))
    run_experiment(recipe, progress=False)
    assert sorted(p.name for p in (run.tracking / "wandb").glob("offline-run-*")) == before


def test_no_planted_secret_in_the_run_directories(two_experiments):
    _, runs = two_experiments
    for run in runs:
        files = [p for p in run.root.rglob("*") if p.is_file()]
        assert any(p.suffix == ".wandb" for p in files)
        for p in files:
            data = p.read_bytes()
            for planted in (FAKE_KEY, FAKE_SECRET):
                assert planted.encode() not in data, f"{p} contains a planted secret"


def test_compare_two_quickstart_runs_with_different_recipes(two_experiments, tmp_path, capsys):
    _, runs = two_experiments
    out = tmp_path / "cmp"
    assert flywheel(["compare", *(str(r.root) for r in runs), "--out", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| quickstart")]
    assert [row.split(" | ")[0] for row in rows] == ["| quickstart", "| quickstart-latest"]
    for row, run in zip(rows, runs):
        final = run.eval_summary(2)
        assert f"{final['success_rate']:.3g} [" in row and "@ round 2" in row
        assert "no fit: fewer than 4 points" in row  # two rounds: points shown, no curve yet
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((out / "compare.json").read_text())
    assert [r["interaction_hours"] for r in result["runs"]] == pytest.approx(
        [r.manifest(2)["cumulative_interaction_hours"] for r in runs])
