"""Every leaf key of the recipe schema changes what a run does.

For each leaf key (list items through index 0: `collect.suites[0].name`), the key is set to a valid
value other than the base recipe's (derived from the field's type, bounds and Literal choices, or
taken from the table where no automatic value is valid) and one cheap *observation* of what would
be run must differ from the base recipe's. The observations call the code that reads the keys:

- trainer_config   the TRL config a round's method builds (TrainingArguments + method keys), its LoRA config
- divergence_guard the round's guard against an exploding gradient norm
- model_load       how every stage loads the model (LoadOptions, from_pretrained's keywords, chat template)
- base_model       the tiny base model built from model.tiny
- memory           the memory plan of a round and its fit warning (`flywheel recipe show`)
- data_selection   rounds 1 and 2 prepared as `flywheel train --stage prepare` prepares them
- empty_round      a round of a logs-only run with nothing new: skipped, or prepared on replay
- collection       a round's experience collection (the acting policy's settings and its episodes)
- evaluation       a checkpoint's held-out evaluation (the acting policy's settings, results, summary)
- slurm_jobs       the job scripts and sbatch lines of `flywheel submit --dry-run`
- tracking         the W&B mode, tags and sync note
- curve_fit        the improvement-curve fit, forecast check and comparison of two arms
- study_plan       the study's arm runs, forgetting tasks and budget check
- promotion        the promotion gate's verdicts on three evaluated rounds, promoted/'s files, the next parent

No observation trains or loads real weights: collection and evaluation run the real rollout and
evaluator code with a stand-in for the model's policy (uniform over the valid actions), which records
the settings the stage built it with; kto/dpo/grpo configs are captured where the method hands them to
TRL's trainer. An option this CPU machine cannot honour (QLoRA, flash attention, Liger) counts as read
when the error it raises names the key. The recipe hash is never an observation: every key changes it.

`test_every_leaf_key_is_observed` fails for a schema key without a row in KEYS: a new key must
show what it changes, or go. `test_each_method_loads_the_base_with_the_recipes_model_keys` checks
that the model.* load options reach the training of every method, not only the other stages.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import shlex
import shutil
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import pytest
import yaml

from trainer.recipe import (Recipe, all_key_paths, annotation_at, dotted, field_at, list_item_of, load_recipe,
                            section_of)
from tests.paths import TESTS

AUTO = object()  # value: derived from the field's type (see auto_value)
VOLATILE = {"episode_id", "started_at", "ended_at", "created_at", "prepare_s", "wall_time_s", "duration_s"}


# ---------------------------------------------------------------- the workspace: base recipe and its files

@dataclass
class Workspace:
    """The base recipe (as a mapping) and the fixed files the observations read, under one folder."""
    root: Path
    base_doc: dict
    files: dict[str, Path] = field(default_factory=dict)
    baselines: dict[tuple, Any] = field(default_factory=dict)  # (observation, context) -> its base outcome


@dataclass
class Case:
    """One recipe to observe: the loaded recipe, its file, and a scratch folder at a fixed path (the
    same for the base and the changed recipe, so paths in an observation never differ by themselves)."""
    recipe: Recipe
    path: Path
    dir: Path
    ws: Workspace


def _trajectory(task: int, success: bool, score: float, text: str = "go north"):
    """A one-step maze episode (task `maze/d1/s<task>`) in the canonical schema."""
    from data_pipeline.schema import Message, Outcome, Trajectory

    return Trajectory(episode_id=f"ep-{task}", task_id=f"maze/d1/s{task}", suite="maze", source_format="flywheel",
                      messages=[Message("user", f"task {task}: {text}"), Message("assistant", "north", duration_s=2.0)],
                      duration_s=2.0, outcome=Outcome(success=success, score=score),
                      metadata={"seed": task, "difficulty": 1})


def _write_trajectories(path: Path, trajs) -> Path:
    """Trajectories as canonical JSONL (what collection writes and ingest reads)."""
    from eval.rollout import write_jsonl

    write_jsonl(trajs, path)
    return path


def _write_curve_run(root: Path, top: float) -> Path:
    """A run directory of 9 evaluated rounds whose held-out score rises towards `top`."""
    for r in range(9):
        x = 0.4 * r
        success = 0.1 + (top - 0.1) / (1 + (1.6 / x) ** 2) if x else 0.1
        success += 0.01 * (-1) ** r
        d = root / "rounds" / f"round-{r:04d}"
        (d / "eval").mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"round": r, "cumulative_interaction_hours": x,
                                                     "gpu_hours": x * x, "tokens_trained": 1000 * r}))
        (d / "eval" / "summary.json").write_text(json.dumps({"success_rate": success, "mean_score": success ** 2,
                                                             "episodes": 64}))
    return root


# label.command's verifier, by its argument: `one` scores 1; `slow` too, after 0.5 s; `alone` scores 1
# when no other call ran beside it, else 0.5 (label.workers); `cwd` scores 1 when its working
# directory holds a file `ok`, else 0.5 (label.workdir)
VERIFIER = """import os, sys, time, uuid
mode = sys.argv[1]
sys.stdin.read()
if mode == "slow":
    time.sleep(0.5)
if mode == "alone":  # waits up to 2 s for another call to show up beside it
    os.makedirs("running", exist_ok=True)
    me = os.path.join("running", uuid.uuid4().hex)
    open(me, "w").close()
    end, others = time.time() + 2.0, 0
    while not others and time.time() < end:
        time.sleep(0.05)
        others = len(os.listdir("running")) - 1
    time.sleep(0.5 if others else 0)  # long enough for the other call to see this one too
    os.remove(me)
    print(0.5 if others else 1.0)
elif mode == "cwd":
    print(1.0 if os.path.exists("ok") else 0.5)
else:
    print(1.0)
"""


def _verifier(mode: str) -> Callable[[Workspace], str]:
    """A value: label.command running the workspace's verifier in `mode`."""
    return lambda w: f"{shlex.quote(sys.executable)} {shlex.quote(str(w.files['verifier']))} {mode}"


def _unlabeled_sources(w: Workspace) -> list[str]:
    return [str(w.files["unlabeled"])]


def _inspect_log(w: Workspace) -> list[str]:
    return [str(TESTS / "fixtures" / "inspect" / "arith_zstd.eval")]


def _fresh_session(w: Workspace) -> list[str]:
    """A Claude Code session file modified just now (as one still being written)."""
    sample = TESTS / "fixtures" / "samples" / "claude-code" / "kvsankar-agent-history" / "session-01.jsonl"
    path = w.root / "sessions" / sample.name
    path.parent.mkdir(exist_ok=True)
    shutil.copyfile(sample, path)
    return [str(path)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """The base recipe and its files: logged episodes (the sources, with an e-mail address to
    redact, and each round's experience), a held-out task list, a chat template, a model folder with
    a config.json, a base recipe for `base:`, a slow external suite, and two runs to fit curves on."""
    root = tmp_path_factory.mktemp("keys")
    w = Workspace(root=root, base_doc={})
    f = w.files
    f["source"] = _write_trajectories(root / "source.jsonl", [
        _trajectory(101, True, 0.9, "write to alice@example.com when done"), _trajectory(102, False, 0.2),
        _trajectory(103, True, 0.3)])
    f["source2"] = _write_trajectories(root / "source2.jsonl", [_trajectory(201, True, 1.0)])
    # plain logs without an outcome, their side file of labels and a verifier (label.*, data.unlabeled)
    f["unlabeled"] = _write_trajectories(root / "unlabeled.jsonl", [
        _trajectory(301, None, None, "go east"), _trajectory(302, None, None, "go west")])
    f["labels"] = root / "labels.csv"
    f["labels"].write_text("episode_id,success\nep-301,true\n")
    f["verifier"] = root / "verifier.py"
    f["verifier"].write_text(VERIFIER)
    f["judge_dir"] = root / "judge"
    f["judge_dir"].mkdir()
    (f["judge_dir"] / "ok").write_text("")
    f["round1"] = _write_trajectories(root / "round1.jsonl", [
        _trajectory(1, True, 0.8), _trajectory(2, False, 0.1), _trajectory(3, True, 0.4)])
    f["round2"] = _write_trajectories(root / "round2.jsonl", [
        _trajectory(4, True, 0.7), _trajectory(5, True, 0.2), _trajectory(6, False, 0.0)])
    f["heldout_tasks"] = root / "heldout.txt"
    f["heldout_tasks"].write_text("maze/d1/s4\n")
    f["chat_template"] = root / "template.jinja"
    f["chat_template"].write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    f["model"] = root / "llama-like"
    f["model"].mkdir()
    (f["model"] / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000, "torch_dtype": "bfloat16"}))
    (root / "parent.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3.0}}))
    f["harness"] = root / "harness.py"
    f["harness"].write_text("import json, sys, time\ntime.sleep(0.5)\n"
                            "open(sys.argv[1], 'w').write(json.dumps({'score': 1.0, 'success': True}))\n")
    f["slow_suite"] = root / "slow-suite.yaml"
    f["slow_suite"].write_text(yaml.safe_dump({"name": "slow", "tasks": ["t1"],
                                               "command": f"{shlex.quote(sys.executable)} "
                                                          f"{shlex.quote(str(f['harness']))} {{out}}"}))
    f["curve_a"] = _write_curve_run(root / "curve-a", 0.8)
    f["curve_b"] = _write_curve_run(root / "curve-b", 0.6)
    w.base_doc = {
        "experiment": "keys",
        "model": {"name_or_path": "tiny"},
        "collect": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 2}], "logs": [str(f["source"])]},
        "train": {"rounds": 1},
        "eval": {"suites": [{"name": "maze", "difficulty": 1, "episodes": 2}]},
        "curve": {"bootstrap": 10},  # the fewest resamples that still give intervals
        "study": {"arms": [{"name": "a", "kind": "accumulate"}]},
    }
    return w


# ---------------------------------------------------------------- observations

def _plain(obj: Any) -> Any:
    """A JSON-like copy (numbers, strings, lists, dicts) without the volatile keys (ids, clocks)."""
    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=str)
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in VOLATILE}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return strip(json.loads(json.dumps(obj, default=default, sort_keys=True)))


def _jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file ([] when there is none)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class _Built(Exception):
    """Raised by the stand-in for TRL's trainer: carries the config the method handed it."""

    def __init__(self, config):
        super().__init__("built")
        self.config = config


def _method_dataset(method: str):
    """One row with the columns kto (label), dpo and grpo (a replayable maze task) read before
    they build their config."""
    from datasets import Dataset

    prompt = [{"role": "user", "content": "task 1"}]
    return Dataset.from_list([{"prompt": prompt, "task_id": "maze/d1/s1", "suite": "maze", "label": True,
                               "completion": [{"role": "assistant", "content": "north"}]}])


def _method_args(case: Case, seed: int, lr: float, deepspeed: str | None, load):
    """The TRL config kto/dpo/grpo build in their train(), up to TRL's trainer (model loading and the
    trainer are stand-ins; the config is built by the method's own code)."""
    import trl

    from trainer import common
    from trainer.common import lora_config
    from trainer.methods import METHODS

    method = case.recipe.train.method
    module = METHODS[method]
    trainer_class = {"kto": "KTOTrainer", "dpo": "DPOTrainer", "grpo": "GRPOTrainer"}[method]

    def trainer(*args, **kwargs):
        raise _Built(kwargs["args"])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "load_policy_for_training", lambda base, parent, cfg, load: (None, None, lora_config(cfg)))
        mp.setattr(trl, trainer_class, trainer)
        try:
            module.train(case.dir / "base", None, _method_dataset(method), case.recipe.train, seed, case.dir / "work",
                         lr, deepspeed, load=load)
        except _Built as built:
            return built.config
    raise AssertionError(f"trainer.methods.{method}.train never reached {trainer_class}")


def trainer_config(case: Case) -> dict:
    """The TRL config round 2's method builds (sft: `sft_args`; kto/dpo/grpo: their train()) with the
    round's seed, decayed learning rate, DeepSpeed config and load options, and the LoRA config."""
    from trainer.common import lora_config
    from trainer.round import deepspeed_config_path, load_options, round_learning_rate, round_seed
    from trainer.methods.sft import sft_args

    recipe, r = case.recipe, 2
    seed, lr = round_seed(recipe, r), round_learning_rate(recipe, r)
    deepspeed, load = deepspeed_config_path(recipe.train.deepspeed), load_options(recipe)
    if recipe.train.method == "sft":
        args = sft_args(recipe.train, seed, case.dir / "work", lr, deepspeed, load)
    else:
        args = _method_args(case, seed, lr, deepspeed, load)
    return _plain({"args": args.to_dict(), "lora": lora_config(recipe.train).to_dict()})


def divergence_guard(case: Case) -> str:
    """What the round's divergence guard does at a logged gradient norm of 7500."""
    from trainer.common import TrainingDiverged, _divergence_guard

    guard = _divergence_guard(case.recipe.train.grad_norm_limit)
    try:
        guard.on_log(None, types.SimpleNamespace(global_step=3), None, logs={"loss": 1.0, "grad_norm": 7500.0})
    except TrainingDiverged as e:
        return f"stops: {e}"
    return "continues"


def model_load(case: Case) -> dict:
    """How every stage loads the model: the LoadOptions, `from_pretrained`'s keyword arguments (an
    option this machine cannot honour raises) and the chat template set on the tokenizer."""
    from eval.models import load_tokenizer, model_kwargs
    from trainer.round import load_options
    from trainer.tiny import TOKENIZER_DIR

    load = load_options(case.recipe)
    tokenizer = load_tokenizer(TOKENIZER_DIR, load)
    return _plain({"options": load, "kwargs": model_kwargs(load),
                   "template": [tokenizer.chat_template, tokenizer.flywheel_template_source]})


def base_model(case: Case) -> dict:
    """The base model a run starts from: for 'tiny', the model built from model.tiny (config, weights)."""
    from trainer.round import base_model_path
    from trainer.rundir import RunDir

    path = base_model_path(case.recipe, RunDir(case.dir))
    weights = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    return {"config": json.loads((path / "config.json").read_text()), "weights": weights}


def memory(case: Case) -> dict:
    """The memory plan of one training round and its warning against slurm.gpu_memory_gb."""
    from trainer.memory_plan import fit_warning, memory_plan

    plan = memory_plan(case.recipe)
    return _plain({"plan": plan, "warning": fit_warning(case.recipe, plan)})


def data_selection(case: Case) -> dict:
    """Rounds 1 and 2 prepared as `flywheel train --stage prepare` does (ingest of the live logs and
    of each round's experience, selection with replay, dataset build); round 1's fit is a stand-in
    adapter, finalized by the real code so that round 2 has a parent."""
    from datasets import load_from_disk

    from trainer.round import DATASET, prepare_round
    from trainer.rundir import RunDir

    recipe, run = case.recipe, RunDir(case.dir / "run")
    _round0(case, run)
    run.experience.mkdir(parents=True)
    for r in (1, 2):
        shutil.copyfile(case.ws.files[f"round{r}"], run.experience / f"round-{r:04d}.jsonl")
    out = {}
    for r in (1, 2):
        selection = prepare_round(recipe, run, r, progress=False)
        rows = load_from_disk(str(run.work_dir(r) / DATASET)).to_list() if selection["rows"] else []
        out[f"round{r}"] = {"selection": selection, "rows": rows}
        if r == 1:
            _finish_with_stand_in(recipe, run, r, selection)
    return _plain(out)


def _round0(case: Case, run) -> None:
    """A round-0 manifest (the base checkpoint) in the run directory `run`."""
    from trainer.rundir import atomic_write_json

    atomic_write_json(run.round_dir(0) / "manifest.json", {
        "round": 0, "parent": None, "base_model": str(case.dir / "base"), "adapter": None, "batches_seen": [],
        "cumulative_interaction_hours": 0.0, "gpu_hours": 0.0, "tokens_trained": 0, "checksums": {}})


def _finish_with_stand_in(recipe: Recipe, run, r: int, selection) -> None:
    """Round r's fit as a stand-in adapter, finalized by the real code (the next round's parent)."""
    from trainer.round import ADAPTER, ADAPTER_FILES, FIT_RESULT, finalize_round
    from trainer.rundir import atomic_write_json

    adapter = run.work_dir(r) / ADAPTER
    adapter.mkdir()
    for name in ADAPTER_FILES:
        (adapter / name).write_text(name)
    atomic_write_json(run.work_dir(r) / FIT_RESULT, {"rows": selection["rows"], "learning_rate": 1e-3})
    finalize_round(recipe, run, r)


def empty_round(case: Case) -> dict:
    """Round 2 of a run that learns from the live logs alone (collect.suites emptied) when nothing new
    has arrived since round 1: skipped (the reason in its marker) or prepared on replayed experience."""
    from trainer.round import RoundSkipped, prepare_round, skipped_path
    from trainer.rundir import RunDir

    recipe, run = case.recipe.model_copy(deep=True), RunDir(case.dir / "run")
    recipe.collect.suites = []
    _round0(case, run)
    _finish_with_stand_in(recipe, run, 1, prepare_round(recipe, run, 1, progress=False))
    try:
        selection = prepare_round(recipe, run, 2, progress=False)
    except RoundSkipped:
        return {"skipped": json.loads(skipped_path(run, 2).read_text())["reason"]}
    return _plain({"selection": selection})


class _StandInPolicy:
    """Stands in for eval.policy.HFPolicy: keeps the settings the stage built it with, acts uniformly
    over the valid actions with each episode's own generator, and records each step's batch size."""

    made: list["_StandInPolicy"] = []

    def __init__(self, model, tokenizer, **settings):
        self.settings, self.name, self.batches = settings, settings.get("name", "policy"), []
        _StandInPolicy.made.append(self)

    def act(self, conversations, valid_actions, rngs):
        self.batches.append(len(conversations))
        return [str(rng.choice(valid)) if valid else "" for valid, rng in zip(valid_actions, rngs)]


@contextlib.contextmanager
def _stand_in_policy():
    """eval.policy's HFPolicy and load_checkpoint replaced for the stages that import them."""
    import eval.policy

    _StandInPolicy.made = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eval.policy, "HFPolicy", _StandInPolicy)
        mp.setattr(eval.policy, "load_checkpoint", lambda base, adapter, load: (None, None))
        yield _StandInPolicy.made


def collection(case: Case) -> dict:
    """Round 1's experience collection (trainer.round.collect): the acting policy's settings and
    batches, and the episodes written."""
    from trainer.round import collect
    from trainer.rundir import RunDir

    parent = {"round": 0, "base_model": str(case.dir / "base"), "adapter": None}
    with _stand_in_policy() as made:
        path = collect(case.recipe, RunDir(case.dir), 1, parent, progress=False)
    return _plain({"policies": [[p.settings, p.batches] for p in made], "episodes": _jsonl(path) if path else []})


def collection_rounds(case: Case) -> dict:
    """Rounds 1 and 2 of experience collection (trainer.round.collect), the second after the first's
    episodes are written (collect.curriculum reads them): each round's task ids, which carry the
    difficulty the round collected at."""
    from trainer.round import collect
    from trainer.rundir import RunDir

    parent = {"round": 0, "base_model": str(case.dir / "base"), "adapter": None}
    out = {}
    with _stand_in_policy():
        for r in (1, 2):
            path = collect(case.recipe, RunDir(case.dir), r, parent, progress=False)
            out[f"round{r}"] = [(e["task_id"], e["outcome"]["success"]) for e in _jsonl(path)] if path else []
    return out


def memory_rounds(case: Case) -> dict:
    """Round 2's collection after round 1's episodes reached the store as prepare_round puts them
    there: what each round-2 episode recalled (metadata.memory: episodes, tokens), or nothing."""
    from trainer.round import collect, open_store
    from trainer.rundir import RunDir

    run = RunDir(case.dir)
    parent = {"round": 0, "base_model": str(case.dir / "base"), "adapter": None}
    with _stand_in_policy():
        first = collect(case.recipe, run, 1, parent, progress=False)
        open_store(case.recipe, run).ingest([first], fmt="flywheel", tag="round-0001")
        second = collect(case.recipe, run, 2, parent, progress=False)
    return {"recalled": [e["metadata"].get("memory") for e in _jsonl(second)]}


def evaluation(case: Case) -> dict:
    """Round 0's held-out evaluation (trainer.loop.evaluate_round): the acting policy's settings and
    batches, the result rows and the summary."""
    from trainer.loop import evaluate_round
    from trainer.rundir import RunDir, atomic_write_json

    run = RunDir(case.dir)
    atomic_write_json(run.round_dir(0) / "manifest.json", {"round": 0, "base_model": str(case.dir / "base"),
                                                           "adapter": None})
    with _stand_in_policy() as made:
        summary = evaluate_round(case.recipe, run, 0, progress=False)
    rows = _jsonl(run.round_dir(0) / "eval" / "results.jsonl")
    return _plain({"policies": [[p.settings, p.batches] for p in made], "rows": rows, "summary": summary})


def slurm_jobs(case: Case) -> str:
    """What `flywheel submit --dry-run` prints: every job script of the chain and the sbatch lines."""
    from trainer.rundir import RunDir
    from trainer.sbatch import make_context
    from trainer.job_capabilities import Capabilities
    from trainer.slurm_chain import plan, print_dry_run

    ctx = make_context(case.recipe, caps=Capabilities(), workdir=case.dir, python="/opt/fw/bin/python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_dry_run(ctx, plan(ctx, RunDir(ctx.run_dir), {}, {}))
    return out.getvalue()


def tracking(case: Case) -> dict:
    """The W&B mode (no W&B variables set), a train run's tags, and the offline sync note."""
    from trainer.rundir import RunDir
    from trainer.tracking import _tags, resolve_mode, write_sync_note

    return {"mode": resolve_mode(case.recipe.tracking.wandb.mode, env={}), "tags": _tags(case.recipe, "train"),
            "sync_note": write_sync_note(case.recipe, RunDir(case.dir)).read_text()}


def curve_fit(case: Case) -> dict:
    """The curve of two runs as the loop and `flywheel study` fit it: the points (curve.x,
    curve.metric), each arm's fit, forecast check and window sensitivity, and their comparison."""
    from eval.curve_inputs import points_from_run
    from eval.curve_report import analyse_arm, compare_arms

    cfg = case.recipe.curve
    fits, out = {}, {}
    for arm in ("curve_a", "curve_b"):
        points, _ = points_from_run(case.ws.files[arm], cfg.x, cfg.metric, arm=arm)
        fits[arm], record = analyse_arm(points, cfg)
        out[arm] = {"points": points, "record": record}
    return _plain({"arms": out, "comparisons": compare_arms(fits, cfg.margin)})


def study_plan(case: Case) -> dict:
    """What `flywheel study` runs and checks: each arm x seed's run (its recipe less the study
    section, which arms never read), the forgetting check's earliest tasks, and the budget check."""
    from trainer.rundir import RunDir
    from trainer.study import arm_label, arm_overrides, select
    from trainer.study_controls import earliest_tasks
    from trainer.study_report import budget_check

    study = case.recipe
    arms, seeds = select(study, None, None)
    runs = {}
    for seed in seeds:
        for arm in arms:
            recipe = load_recipe(case.path, arm_overrides(study, arm, seed))
            runs[arm_label(arm, seed)] = {k: v for k, v in recipe.resolved_dict().items() if k != "study"}
    run = RunDir(case.dir)
    run.experience.mkdir(parents=True)
    shutil.copyfile(case.ws.files["round1"], run.experience / "round-0001.jsonl")
    earliest = [(sc.name, difficulty, seeds) for sc, difficulty, seeds in earliest_tasks(study, run)]
    budget = budget_check({"a-seed0": [0.0, 1.0, 2.0], "b-seed0": [0.0, 1.08, 2.16]}, study.study.budget_tolerance)
    return _plain({"runs": runs, "earliest_tasks": earliest, "budget": budget})


def _promotion_checkpoints(w: Workspace) -> tuple[Path, Path]:
    """A tiny base model and a real LoRA adapter on it (made once per workspace)."""
    from trainer.tiny import materialize_tiny

    base = materialize_tiny(w.root / "promote-base")
    adapter = w.root / "promote-lora"
    if not (adapter / "adapter_config.json").exists():
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
        model.save_pretrained(adapter)
    return base, adapter


def promotion(case: Case) -> dict:
    """The promotion gate after three evaluated rounds written by hand (40 held-out tasks: round 1 a
    little better than the base, round 2 clearly worse than round 1): each round's verdict (without
    the margin and level it echoes), the files of promoted/ and its PROMOTED.json, and the parent
    round 3 would start from."""
    from trainer.promote import Promoted, gate, parent_round, promoted_dir
    from trainer.records import RoundManifest
    from trainer.rundir import RunDir

    base, adapter = _promotion_checkpoints(case.ws)
    run = RunDir(case.dir / "run")
    wins = {0: 28, 1: 30, 2: 15}  # tasks 0..n-1 succeed
    for r, n in wins.items():
        d = run.round_dir(r)
        (d / "eval").mkdir(parents=True)
        if r:
            shutil.copytree(adapter, d / "adapter")
        RoundManifest(round=r, parent=f"round-{r - 1:04d}" if r else None, base_model=str(base),
                      adapter="adapter" if r else None).write(d)
        rows = [{"suite": "maze", "task_id": f"maze/d1/s{1000000000 + i}", "sample": 0, "success": i < n,
                 "score": float(i < n)} for i in range(40)]
        (d / "eval" / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        (d / "eval" / "summary.json").write_text(json.dumps({"episodes": 40, "success_rate": n / 40,
                                                             "ci95": [0.0, 1.0], "mean_score": n / 40}))
    verdicts = {}
    for r in wins:
        v = gate(case.recipe, run, r)
        verdicts[r] = None if v is None else {k: x for k, x in v.to_dict().items() if k not in ("at", "margin", "level")}
    promoted = promoted_dir(run)
    info = Promoted.read(promoted)
    return _plain({"verdicts": verdicts, "parent_of_round_3": parent_round(case.recipe, run, 3),
                   "promoted_files": sorted(str(p.relative_to(promoted)) for p in promoted.rglob("*")) if info else None,
                   "promoted": None if info is None else {k: x for k, x in info.to_dict().items()
                                                           if k not in ("at", "checkpoint", "base_model")}})


# ---------------------------------------------------------------- the table: key -> observation (and value)

@dataclass(frozen=True)
class Key:
    """How one key is shown in use: the observation that differs, the value tried (AUTO: derived from
    the field; a callable gets the workspace), and `context`, keys set alike in the base and the
    changed recipe where the key only acts together with another (train.beta needs a method with a
    reference)."""
    observe: Callable[[Case], Any]
    value: Any = AUTO
    context: tuple[tuple[str, Any], ...] = ()


def _file(name: str) -> Callable[[Workspace], str]:
    """A value: the path of one of the workspace's files."""
    return lambda w: str(w.files[name])


KEYS: dict[str, Key] = {
    "experiment": Key(slurm_jobs),
    "base": Key(trainer_config, "parent.yaml"),
    "seed": Key(trainer_config),
    "run_dir": Key(slurm_jobs),
    "model.name_or_path": Key(memory, _file("model")),
    "model.dtype": Key(model_load),
    "model.attn_implementation": Key(model_load, "flash_attention_2"),
    "model.chat_template": Key(model_load, _file("chat_template")),
    "model.tiny.hidden_size": Key(base_model, 64),
    "model.tiny.layers": Key(base_model),
    "model.tiny.heads": Key(base_model, 8),
    "model.tiny.intermediate_size": Key(base_model),
    "model.tiny.init_seed": Key(base_model),
    "model.tiny.init_std": Key(base_model),
    "model.trust_remote_code": Key(model_load),
    "ingest.format": Key(data_selection, "sharegpt"),
    "ingest.redact": Key(data_selection),
    "ingest.heldout_suites": Key(data_selection, ["maze"]),
    "ingest.heldout_tasks_file": Key(data_selection, _file("heldout_tasks")),
    # inspect's .eval fixture (scorers match, parts, points on 0-10): another scorer, another outcome
    "ingest.score": Key(data_selection, "points", context=(("collect.logs", _inspect_log),
                                                           ("ingest.score_range", "0:10"))),
    # points without a range lie outside [0, 1] and are quarantined; with 0:10 they are mapped
    "ingest.score_range": Key(data_selection, "0:10", context=(("collect.logs", _inspect_log),
                                                               ("ingest.score", "points"))),
    "data.success_only": Key(data_selection),
    "data.min_score": Key(data_selection),
    "data.replay_ratio": Key(data_selection),
    # logs without an outcome: kept (imitated) instead of dropped
    "data.unlabeled": Key(data_selection, "keep", context=(("collect.logs", _unlabeled_sources),)),
    "label.file": Key(data_selection, _file("labels"), context=(("collect.logs", _unlabeled_sources),)),
    "label.command": Key(data_selection, _verifier("one"), context=(("collect.logs", _unlabeled_sources),)),
    # a verifier taking 0.5 s: a 0.1 s time-out quarantines its answers
    "label.timeout_s": Key(data_selection, 0.1, context=(("collect.logs", _unlabeled_sources),
                                                        ("label.command", _verifier("slow")))),
    # the verifier scores 1 only when no other call ran beside it: one worker at a time
    "label.workers": Key(data_selection, 1, context=(("collect.logs", _unlabeled_sources),
                                                     ("label.command", _verifier("alone")))),
    "label.workdir": Key(data_selection, _file("judge_dir"), context=(("collect.logs", _unlabeled_sources),
                                                                      ("label.command", _verifier("cwd")))),
    "collect.suites[0].name": Key(collection, "knapsack"),
    "collect.suites[0].difficulty": Key(collection),
    "collect.suites[0].episodes": Key(collection),
    "collect.suites[0].samples_per_task": Key(collection),
    "collect.policy.temperature": Key(collection),
    "collect.policy.constrained": Key(collection),
    "collect.policy.max_new_tokens": Key(collection),
    "collect.policy.batch_size": Key(collection, 1),
    "collect.hours_per_round": Key(collection, 1e-6),  # spent by the first episode: the second is never run
    "collect.logs": Key(data_selection, lambda w: [str(w.files["source"]), str(w.files["source2"])]),
    "collect.when_empty": Key(empty_round),
    "collect.session_quiet_s": Key(data_selection, 0, context=(("collect.logs", _fresh_session),)),
    # the schedule starts at the range min (2 = 4 - 2), not at the suite's difficulty 4
    "collect.curriculum": Key(collection_rounds, "horizon", context=(("collect.suites[0].difficulty", 4),)),
    # round 2 after a round-1 success rate inside the default band [0.2, 0.8]: above [0.0, 0.01], one harder
    "collect.curriculum_band": Key(collection_rounds, [0.0, 0.01], context=(("collect.curriculum", "adaptive"),
                                                                            ("collect.suites[0].difficulty", 2))),
    "collect.curriculum_range": Key(collection_rounds, [2, 3], context=(("collect.curriculum", "horizon"),)),
    "memory.enabled": Key(memory_rounds),
    "memory.k": Key(memory_rounds, 1, context=(("memory.enabled", True),)),
    "memory.max_tokens": Key(memory_rounds, 40, context=(("memory.enabled", True),)),
    "train.method": Key(data_selection),
    "train.rounds": Key(slurm_jobs),
    "train.adapter": Key(data_selection, "reset"),  # merge would merge the stand-in adapter into real weights
    "train.update_weights": Key(data_selection),
    "train.reference": Key(data_selection, context=(("train.method", "kto"),)),
    "train.learning_rate": Key(trainer_config),
    "train.lr_scheduler": Key(trainer_config, "cosine"),
    "train.lr_decay_per_round": Key(trainer_config),
    "train.warmup_ratio": Key(trainer_config),
    "train.epochs": Key(trainer_config),
    "train.max_steps": Key(trainer_config, 10),
    "train.batch_size": Key(trainer_config),
    "train.grad_accum": Key(trainer_config),
    "train.max_length": Key(trainer_config),
    "train.max_grad_norm": Key(trainer_config),
    "train.grad_norm_limit": Key(divergence_guard),
    "train.beta": Key(trainer_config, context=(("train.method", "dpo"),)),
    "train.save_steps": Key(trainer_config),
    "train.deepspeed": Key(trainer_config),
    "train.nproc": Key(slurm_jobs),
    "train.gradient_checkpointing": Key(trainer_config),
    "train.liger_kernel": Key(trainer_config),
    "train.lora.r": Key(trainer_config),
    "train.lora.alpha": Key(trainer_config),
    "train.lora.dropout": Key(trainer_config),
    "train.lora.target_modules": Key(trainer_config, ["q_proj", "v_proj"]),
    "train.lora.qlora": Key(model_load),
    "train.sft.packing": Key(trainer_config),
    "train.grpo.generations": Key(trainer_config, 2, context=(("train.method", "grpo"),)),
    "eval.suites[0].name": Key(evaluation, "knapsack"),
    "eval.suites[0].difficulty": Key(evaluation),
    "eval.suites[0].episodes": Key(evaluation),
    "eval.suites[0].samples_per_task": Key(evaluation),
    "eval.policy.temperature": Key(evaluation),
    "eval.policy.constrained": Key(evaluation),
    "eval.policy.max_new_tokens": Key(evaluation),
    "eval.policy.batch_size": Key(evaluation, 1),
    "eval.seed": Key(evaluation),
    # an external suite whose harness takes 0.5 s: a 0.1 s time-out would stop it
    "eval.timeout_s": Key(evaluation, 0.1,
                          context=(("eval.suites", lambda w: [{"name": str(w.files["slow_suite"])}]),)),
    "curve.form": Key(curve_fit),
    "curve.x": Key(curve_fit),
    "curve.metric": Key(curve_fit),
    "curve.horizon_hours": Key(curve_fit),
    "curve.target_score": Key(curve_fit),
    "curve.bootstrap": Key(curve_fit),
    "curve.forecast_fraction": Key(curve_fit),
    "curve.skip_initial_x": Key(curve_fit),
    "curve.margin": Key(curve_fit, 0.5),  # wider than the two arms' asymptote gap: the verdict changes
    "curve.seed": Key(curve_fit),
    "tracking.wandb.mode": Key(tracking),
    "tracking.wandb.project": Key(tracking),
    "tracking.wandb.entity": Key(tracking),
    "tracking.wandb.tags": Key(tracking),
    "tracking.arm": Key(tracking),
    "slurm.partition": Key(slurm_jobs),
    "slurm.account": Key(slurm_jobs),
    "slurm.qos": Key(slurm_jobs),
    "slurm.nodes": Key(slurm_jobs),
    "slurm.gpus_per_node": Key(slurm_jobs),
    "slurm.cpus_per_task": Key(slurm_jobs),
    "slurm.mem": Key(slurm_jobs, "64G"),
    "slurm.gpu_memory_gb": Key(memory, 1e-4),  # below the tiny model's plan: the warning appears
    "slurm.time_train": Key(slurm_jobs, "1-00:00:00"),
    "slurm.time_eval": Key(slurm_jobs, "00:30:00"),
    "slurm.eval_shards": Key(slurm_jobs),
    "slurm.launcher": Key(slurm_jobs),
    "slurm.signal_seconds": Key(slurm_jobs),
    "slurm.setup": Key(slurm_jobs),
    "slurm.venv": Key(slurm_jobs),
    "slurm.extra_sbatch": Key(slurm_jobs),
    "study.arms[0].name": Key(study_plan),
    "study.arms[0].kind": Key(study_plan),
    "study.arms[0].overrides": Key(study_plan, ["train.learning_rate=0.5"]),
    "study.seeds": Key(study_plan),
    "study.forgetting_episodes": Key(study_plan, 1),
    "study.budget_tolerance": Key(study_plan),
    "promote.enabled": Key(promotion),  # off: no verdicts, nothing promoted, round 3 starts from round 2
    "promote.margin": Key(promotion, 0.5),  # round 2's drop (0.375) is within it: promoted
    "promote.level": Key(promotion, 1e-9),  # round 2's p (about 1e-5) is above it: promoted
    "promote.parent": Key(promotion),  # latest: round 3 starts from the rejected round 2
    "promote.merged": Key(promotion),  # promoted/merged/, round 1's adapter folded into the base
}


# ---------------------------------------------------------------- values, recipes, outcomes

def leaf_keys() -> list[str]:
    """Every key of the schema that holds a value (not a section, not a list of sections)."""
    out = []
    for path in all_key_paths():
        annotation = annotation_at(path)
        item = list_item_of(annotation)
        if section_of(annotation) is None and not (item is not None and section_of(item) is not None):
            out.append(dotted(path))
    return out


def key_path(key: str) -> tuple:
    """`collect.suites[0].name` -> ("collect", "suites", 0, "name")."""
    return tuple(int(p) if p.isdigit() else p for p in key.replace("[", ".").replace("]", "").split("."))


def _bounds(path: tuple) -> dict[str, float]:
    """The field's numeric bounds ({"gt": 0, "le": 1}, ...)."""
    info = field_at(path)
    return {name: getattr(m, name) for m in (info.metadata if info else []) for name in ("gt", "ge", "lt", "le")
            if getattr(m, name, None) is not None}


def _within(value: float, b: dict[str, float]) -> bool:
    """`value` respects the bounds `b`."""
    return (("gt" not in b or value > b["gt"]) and ("ge" not in b or value >= b["ge"])
            and ("lt" not in b or value < b["lt"]) and ("le" not in b or value <= b["le"]))


def auto_value(path: tuple, current: Any) -> Any:
    """A valid value other than `current` for the key at `path`: another Literal choice, the other
    boolean, a neighbouring number within the field's bounds, a changed string, a longer list."""
    annotation = annotation_at(path)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [a for a in (typing.get_args(annotation) if union else (annotation,)) if a is not type(None)]
    b = _bounds(path)
    for kind in kinds:
        if typing.get_origin(kind) is Literal:
            return next(c for c in typing.get_args(kind) if c != current)
        if kind is bool:
            return not current
        if kind is int:
            base = current if current is not None else int(b.get("ge", b.get("gt", 0)))
            return next(v for v in (base + 1, base - 1) if _within(v, b) and v != current)
        if kind is float:
            if current is None:
                return (b.get("ge", b.get("gt", 0.0)) + b.get("le", b.get("lt", 1.0))) / 2
            candidates = (current / 2, current * 2, current + 0.5, current - 0.5)
            return next(v for v in candidates if _within(v, b) and v != current)
        if kind is str:
            return f"{current}-x" if current else "x"
        if typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            return [*current, "x"] if item is str else [*current, max(current, default=0) + 1]
    raise AssertionError(f"no automatic value for {dotted(path)} ({annotation_at(path)}): add one to KEYS")


def _get(doc: Any, path: tuple) -> Any:
    """The value at a key path of a nested mapping."""
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: dict, path: tuple, value: Any) -> None:
    """Set the value at a key path of a nested mapping (missing sections are created)."""
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value


def _resolve(value: Any, w: Workspace) -> Any:
    """A table value as used: a callable gets the workspace (for paths of its files)."""
    return value(w) if callable(value) else value


def _write_recipe(w: Workspace, name: str, changes: list[tuple[str, Any]]) -> Path:
    """The base recipe with `changes` (key, value) applied, as a file next to the base's files."""
    doc = copy.deepcopy(w.base_doc)
    for key, value in changes:
        _set(doc, key_path(key), value)
    path = w.root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _outcome(observe: Callable[[Case], Any], path: Path, w: Workspace) -> tuple[str, Any]:
    """("ok", observation) or ("error", message) of `observe` on the recipe file at `path`."""
    scratch = w.root / "scratch" / observe.__name__
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    case = Case(recipe=load_recipe(path), path=path, dir=scratch, ws=w)
    try:
        return "ok", observe(case)
    except Exception as e:  # noqa: BLE001 - an option this machine refuses is an outcome too
        return "error", f"{type(e).__name__}: {e}"


def _baseline(spec: Key, w: Workspace) -> tuple[str, Any]:
    """The observation of the base recipe (with the key's context), computed once per observation
    and context; it must not fail."""
    context = [(k, _resolve(v, w)) for k, v in spec.context]
    cache = (spec.observe.__name__, json.dumps(context, sort_keys=True))
    if cache not in w.baselines:
        kind, seen = _outcome(spec.observe, _write_recipe(w, "base-recipe.yaml", context), w)
        assert kind == "ok", f"{spec.observe.__name__} fails on the base recipe: {seen}"
        w.baselines[cache] = kind, seen
    return w.baselines[cache]


# ---------------------------------------------------------------- the tests

def test_every_leaf_key_is_observed():
    """KEYS covers exactly the schema's leaf keys: a new key needs the observation that shows it."""
    leaves = set(leaf_keys())
    unobserved = sorted(leaves - set(KEYS))
    assert not unobserved, "\n".join(f"key {k} changes nothing observable: wire it or delete it "
                                     "(or add the observation that shows it to KEYS)" for k in unobserved)
    assert not set(KEYS) - leaves, f"KEYS names keys the schema no longer has: {sorted(set(KEYS) - leaves)}"


@pytest.mark.parametrize("key", list(KEYS))
def test_key_changes_what_is_run(key, ws):
    """Set `key` to another valid value: its observation differs from the base recipe's, or the
    observation refuses the value with an error that names the key (an option this machine lacks)."""
    spec = KEYS[key]
    base = _baseline(spec, ws)
    context = [(k, _resolve(v, ws)) for k, v in spec.context]
    base_recipe = load_recipe(_write_recipe(ws, "base-recipe.yaml", context))
    value = _resolve(spec.value, ws)
    if value is AUTO:
        value = auto_value(key_path(key), _get(base_recipe.resolved_dict(), key_path(key)))
    changed_path = _write_recipe(ws, "changed-recipe.yaml", [*context, (key, value)])
    kind, seen = _outcome(spec.observe, changed_path, ws)
    if kind == "error":
        assert key in seen, (f"{key}={value!r} makes {spec.observe.__name__} fail with an error that does not name "
                             f"the key; give KEYS a valid value: {seen}")
        return  # refused with a message naming the key: the key is read
    if seen == base[1]:
        pytest.fail(f"key {key} changes nothing observable: wire it or delete it "
                    f"({key}={value!r} leaves {spec.observe.__name__} as the base recipe has it)", pytrace=False)


class _Loaded(Exception):
    """Raised by the stand-in for `load_policy_for_training`: carries the load options it got."""

    def __init__(self, load):
        super().__init__("loaded")
        self.load = load


@pytest.mark.parametrize("method", ["sft", "kto", "dpo", "grpo"])
def test_each_method_loads_the_base_with_the_recipes_model_keys(method, ws):
    """The round's fit hands every method the recipe's load options (model.dtype, attention kernel,
    chat template, trust_remote_code): each method must load the policy it trains with them."""
    from eval.models import LoadOptions

    load = LoadOptions(dtype="bfloat16", attn_implementation="eager", trust_remote_code=True,
                       chat_template=str(ws.files["chat_template"]))
    from trainer import common
    from trainer.methods import METHODS

    module = METHODS[method]
    recipe = load_recipe(_write_recipe(ws, "base-recipe.yaml", []))

    def loading(base, parent, cfg, load):
        raise _Loaded(load)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "load_policy_for_training", loading)
        with pytest.raises(_Loaded) as got:
            module.train(ws.root / "base", None, _method_dataset(method), recipe.train, 0, ws.root / "work", 1e-3,
                         None, load=load)
    assert got.value.load == load, (f"trainer.methods.{method}.train loads the base with {got.value.load}, not the "
                                    f"recipe's {load}: model.* keys do not reach {method} training")
