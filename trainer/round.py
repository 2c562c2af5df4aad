"""One round: (parent checkpoint, data selection, recipe, seed) -> new checkpoint.

1. collect: what is new in the live logs (collect.logs) goes into the experience store, each record
            once; the parent policy acts on fresh training tasks (collect.suites), episodes ->
            experience/round-XXXX.jsonl
2. ingest:  that file goes into the experience store (deduplicated, redacted, held-out guarded)
3. select:  every store batch new since round r - 1 + a replay sample of older ones, with
            outcome labels applied (the log's own, label.file, label.command; data_pipeline/labels.py);
            with nothing new the round is skipped (RoundSkipped, rounds/round-XXXX.skipped.json)
            unless collect.when_empty is replay
4. train:   the method's module (trainer/methods/) drives TRL's trainer on the built dataset (LoRA)
5. save:    adapter + manifest.json, written atomically as rounds/round-XXXX/

`flywheel train --stage` splits this for multi-process and Slurm jobs, through the round's work
dir rounds/.work-XXXX/: `prepare` (1-3 + the dataset -> dataset/, selection.json), `fit` (4, on
every rank under torchrun/deepspeed; rank 0 writes adapter/ and fit.json), `finalize` (5). `all`
runs the three in turn, fit as a `torchrun --nproc_per_node train.nproc` child when nproc > 1.

Every step is idempotent, so a killed round reruns from where it stopped: collection is skipped
when its file exists, ingest adds nothing twice, a prepared dataset is reused, training resumes
from its newest complete intra-round checkpoint (same batches, optimizer, scheduler and RNG
state), and a completed round (manifest present) is never rerun. A diverged round writes no
checkpoint and records why in rounds/round-XXXX.failed.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from data_pipeline.heldout import HeldoutSpec
from data_pipeline.store import ExperienceStore
from eval.checkpoints import checkpoint_of
from eval.envs.base import HELDOUT_SEED_START
from eval.records import HOURS
from trainer import curriculum, tracking
from trainer.errors import UserError
from trainer.common import (FINAL_ADAPTER, TrainingDiverged, dist_env, quiet_libraries, remove_checkpoints,
                            set_progress)
from trainer.methods import METHODS
from trainer.model_check import require_loadable
from trainer.recipe import RESOLVED_NAME, Recipe, code_version, load_recipe
from trainer.recipe_fork import write_resolved
from trainer.records import DataSelection, RoundManifest
from trainer.rundir import RunDir, atomic_write_json, dir_checksums, write_dir_atomically

# Built-in suites' held-out tasks: task ids end in the seed, and held-out seeds start at 1e9.
BUILTIN_HELDOUT = HeldoutSpec(patterns=[rf"/s[1-9]\d{{{len(str(HELDOUT_SEED_START)) - 1}}}$"])


def round_seed(recipe: Recipe, r: int) -> int:
    return int(hashlib.sha256(f"{recipe.seed}-{r}".encode()).hexdigest()[:8], 16)


def heldout_spec(recipe: Recipe) -> HeldoutSpec:
    spec = HeldoutSpec(task_ids=set(BUILTIN_HELDOUT.task_ids), suites=set(recipe.ingest.heldout_suites),
                       patterns=list(BUILTIN_HELDOUT.patterns))
    if recipe.ingest.heldout_tasks_file:
        extra = HeldoutSpec.load(recipe.ingest.heldout_tasks_file)
        spec = HeldoutSpec(task_ids=spec.task_ids | extra.task_ids, suites=spec.suites | extra.suites,
                           patterns=spec.patterns + extra.patterns)
    external = external_heldout_tasks(recipe)
    if external:  # the tasks of the user's own held-out harness never enter training either
        spec = HeldoutSpec(task_ids=spec.task_ids | external, suites=spec.suites, patterns=spec.patterns)
    return spec


def external_heldout_tasks(recipe: Recipe) -> set[str]:
    """Task ids of the external suites (a user's harness, eval/external.py) in `eval.suites`."""
    from eval.external import is_external_suite, load_external_suite

    return {t for sc in recipe.eval.suites if is_external_suite(sc.name) for t in load_external_suite(sc.name).task_ids}


def load_options(recipe: Recipe):
    """How every stage of this experiment loads its model (eval.models.LoadOptions)."""
    from eval.models import LoadOptions

    return LoadOptions.of(recipe.model, load_in_4bit=recipe.train.lora.qlora)


def base_model_path(recipe: Recipe, run: RunDir) -> Path:
    """The base model as a local folder: the tiny model is built into the run directory once."""
    if recipe.model.name_or_path == "tiny":
        from trainer.tiny import materialize_tiny

        t = recipe.model.tiny
        return materialize_tiny(run.base_model, t.hidden_size, t.layers, t.heads, t.intermediate_size,
                                t.init_seed, t.init_std)
    return Path(recipe.model.name_or_path)


def open_store(recipe: Recipe, run: RunDir) -> ExperienceStore:
    store = ExperienceStore(run.store)
    store.set_heldout(heldout_spec(recipe))
    return store


# ---- 0. round 0: the base checkpoint ------------------------------------------------------------
def ensure_round0(recipe: Recipe, run: RunDir) -> RoundManifest:
    """Round 0 is the base policy: a manifest with no adapter and no interaction consumed."""
    m = run.manifest(0)
    if m is not None:
        return m
    base = base_model_path(recipe, run)
    manifest = RoundManifest(
        round=0, parent=None, base_model=str(base), adapter=None, method=None, store_batches={}, batches_seen=[],
        new_batches=[], trajectories_used=0, cumulative_interaction_hours=0.0, interaction_hours_new=0.0,
        gpu_hours=0.0, tokens_trained=0, recipe_hash=recipe.hash(), code_version=code_version(), seed=recipe.seed,
        metrics={}, wall_time_s=0.0, created_at=time.time(), checksums={})
    write_dir_atomically(run.round_dir(0), manifest.write)
    return manifest


def checkpoint_paths(run: RunDir, manifest: RoundManifest) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) of a round's checkpoint (eval.checkpoints, the
    same resolution as `flywheel eval` / `flywheel serve`)."""
    return checkpoint_of(run.round_dir(manifest.round), manifest)


def checkpoint_policy(recipe: Recipe, run: RunDir, manifest: RoundManifest, policy_config, name: str,
                      memory_upto: int | None = None):
    """The acting policy of a round's checkpoint (eval.policy.policy_for), loaded as the recipe says;
    with `memory.enabled` and `memory_upto` given, its prompts carry the memory of what the run
    collected in rounds 1..memory_upto (eval.memory)."""
    from eval.policy import policy_for

    policy = policy_for(checkpoint_paths(run, manifest), policy_config, load_options(recipe), name)
    if recipe.memory.enabled and memory_upto is not None:
        from eval.memory import MemoryPolicy

        policy = MemoryPolicy(policy, memory_of(recipe, run, memory_upto, _token_counter(policy)))
    return policy


def memory_of(recipe: Recipe, run: RunDir, upto: int, count_tokens=None):
    """The memory of rounds 1..upto: the episodes this run collected itself (store batches tagged
    round-XXXX; never `collect.logs` batches, never a held-out task), oldest first."""
    from eval.memory import ExperienceMemory, whitespace_tokens

    store = open_store(recipe, run)
    tags = {f"round-{i:04d}" for i in range(1, upto + 1)}
    ids = [b.batch_id for b in store.batches() if b.tag in tags]
    spec, external = store.heldout, external_heldout_tasks(recipe)
    return ExperienceMemory(store.trajectories(ids) if ids else [], k=recipe.memory.k,
                            max_tokens=recipe.memory.max_tokens, count_tokens=count_tokens or whitespace_tokens,
                            exclude=lambda t: spec.matches(t) or t.task_id in external)


def memory_wrapper(recipe: Recipe, checkpoint: str | Path):
    """For `flywheel eval` of a round of a memory run (memory.enabled, CHECKPOINT = one of the recipe's
    run's rounds/round-XXXX): policy -> the policy with the memory of rounds 1..XXXX. None otherwise:
    any other checkpoint is evaluated as it is."""
    if not recipe.memory.enabled:
        return None
    ckpt = Path(checkpoint).resolve()
    run = RunDir(recipe.run_path())
    m = re.fullmatch(r"round-(\d{4,})", ckpt.name)
    if m is None or ckpt.parent != (run.root / "rounds").resolve():
        return None
    from eval.memory import MemoryPolicy

    upto = int(m.group(1))
    return lambda policy: MemoryPolicy(policy, memory_of(recipe, run, upto, _token_counter(policy)))


def _token_counter(policy):
    tok = getattr(policy, "tokenizer", None)
    if tok is None:
        return None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


# ---- 1-2. collect and ingest ---------------------------------------------------------------------
def collect(recipe: Recipe, run: RunDir, r: int, parent: RoundManifest | dict, progress: bool = True) -> Path | None:
    """The parent policy acts on round r's training tasks (fresh seeds every round)."""
    out = run.experience / f"round-{r:04d}.jsonl"
    suites = [s for s in recipe.collect.suites if s.episodes > 0]
    if out.exists() or not suites:
        return out if out.exists() else None
    from eval.rollout import run_episodes, write_jsonl
    from eval.suites import get_suite

    parent = RoundManifest.of(parent)
    pc = recipe.collect.policy
    # memory (memory.enabled): what the run collected before this round
    policy = checkpoint_policy(recipe, run, parent, pc, f"{recipe.experiment}/round-{parent.round:04d}",
                               memory_upto=r - 1)
    trajs = []
    levels = curriculum.difficulties(recipe, run, r)  # collect.curriculum; empty: each suite's own difficulty
    budget_h, pool = recipe.collect.hours_per_round, sum(sc.episodes for sc in suites)
    for sc in suites:
        suite = get_suite(sc.name)
        seeds = suite.train_seeds(sc.episodes, offset=(r - 1) * sc.episodes)
        step = len(seeds) if budget_h is None else pc.batch_size
        share_s = None if budget_h is None else budget_h * 3600.0 * sc.episodes / pool
        first = len(trajs)
        for sample, start in _batches(len(seeds), step, sc.samples_per_task):  # a spent budget stops early
            trajs += run_episodes(suite, levels.get(sc.name, sc.difficulty), seeds[start:start + step], policy,
                                  batch_size=pc.batch_size,
                                  rng_seed=round_seed(recipe, r) + sample, desc=f"round {r} collect {sc.name}",
                                  progress=progress)
            if share_s is not None and _spent_to(trajs, share_s, first):
                break
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajs, tmp)
    tmp.rename(out)
    return out


def _batches(n: int, step: int, samples: int):
    """(sample, first seed index) of each collection batch: every task once, then again for each
    further sample (`samples_per_task`, each attempt with its own random draws)."""
    return [(sample, start) for sample in range(samples) for start in range(0, n, step)]


def _spent_to(trajs: list, budget_s: float, first: int) -> bool:
    """Cut trajs[first:] (one suite's episodes, in seed order) right after the episode whose
    interaction time (s) reaches `budget_s`; True when the budget is spent. Every episode draws from
    its own seeded generator, so the ones cut are as if never run."""
    spent = 0.0
    for i in range(first, len(trajs)):
        spent += trajs[i].interaction_s
        if spent >= budget_s:
            del trajs[i + 1:]
            return True
    return False


def logs_tag(r: int) -> str:
    """The store tag of the batches that round r's `collect.logs` ingest committed."""
    return f"logs/round-{r:04d}"


def collect_logs(recipe: Recipe, store: ExperienceStore, r: int, progress: bool = True) -> dict | None:
    """`collect.logs`: what is new in the live logs since the previous round goes into the store,
    each record once (data_pipeline/live.py). Returns the round's counts (every batch its attempts
    committed, so a rerun after a kill still counts what the first attempt stored), or None when
    the recipe names no logs."""
    if not recipe.collect.logs:
        return None
    from data_pipeline.adapters import inspect_ai
    from data_pipeline.live import collect_logs as ingest_new, tagged_counts

    scoring = inspect_ai.ScoreOptions.parse(recipe.ingest.score, recipe.ingest.score_range)
    with inspect_ai.score_options(scoring):  # inspect logs: the recipe's scorer (ingest.score)
        now = ingest_new(store, recipe.collect.logs, fmt=recipe.ingest.format, tag=logs_tag(r),
                         redact=recipe.ingest.redact, progress=progress, quiet_s=recipe.collect.session_quiet_s)
    counts = tagged_counts(store, logs_tag(r)) or {k: 0 for k in ("files", "read", "accepted", "duplicates",
                                                                  "quarantined")} | {"batch_id": None}
    return {**counts, "waiting_bytes": now["waiting_bytes"], "waiting_sessions": now.get("waiting_sessions", 0)}


class RoundSkipped(UserError):
    """A round with nothing new to learn from (collect.when_empty: skip): no round number is used;
    rounds/round-XXXX.skipped.json says why until the round completes."""


def skipped_path(run: RunDir, r: int) -> Path:
    return run.root / "rounds" / f"round-{r:04d}.skipped.json"


def _skip(recipe: Recipe, run: RunDir, r: int, why: str) -> RoundSkipped:
    where = (f"looked in collect.logs ({', '.join(recipe.collect.logs)})" if recipe.collect.logs
             else "collect.logs names no logs")
    suites = "" if recipe.collect.suites else " and collect.suites is empty"
    reason = f"round {r}: nothing new to train on: {why}; {where}{suites}"
    atomic_write_json(skipped_path(run, r), {"round": r, "reason": reason, "at": time.time()})
    return RoundSkipped(f"{reason}. Round {r} is skipped (recorded in {skipped_path(run, r)}); rerun when new "
                        "logs have arrived, or set collect.when_empty=replay to train on older experience")


# ---- 3. select -----------------------------------------------------------------------------------
def select_data(store: ExperienceStore, previous: RoundManifest, replay_ratio: float, seed: int):
    """New batches since `previous` (round r - 1), plus `replay_ratio` of the older trajectories."""
    seen_before = set(previous.batches_seen)
    batches = store.batches()
    new = [b.batch_id for b in batches if b.batch_id not in seen_before]
    old = [b.batch_id for b in batches if b.batch_id in seen_before]
    trajs = store.trajectories(new) if new else []
    if old and replay_ratio > 0:
        older = store.trajectories(old)
        k = round(replay_ratio * len(older))
        trajs += older if k >= len(older) else random.Random(seed).sample(older, k)
    used: dict[str, int] = {}
    for t in trajs:
        used[t.metadata["store_batch_id"]] = used.get(t.metadata["store_batch_id"], 0) + 1
    hours = sum(b.interaction_s for b in batches) / 3600.0
    new_hours = sum(b.interaction_s for b in batches if b.batch_id in set(new)) / 3600.0
    return trajs, used, [b.batch_id for b in batches], new, hours, new_hours


def store_episodes(store: ExperienceStore) -> int:
    """Trajectories in the store (the curve's episodes axis)."""
    return sum(b.count for b in store.batches())


# ---- 4-5. the stages of `flywheel train`: prepare -> fit -> finalize ---------------------------
STAGES = ("all", "prepare", "fit", "finalize")
SELECTION, FIT_RESULT, DATASET, ADAPTER = DataSelection.FILE, "fit.json", "dataset", "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class RoundFailed(UserError):
    """Training stopped (divergence guard): no checkpoint was written, the parent stays current."""


def deepspeed_config_path(name: str) -> str | None:
    if name == "none":
        return None
    return str(Path(__file__).parent / "deepspeed" / f"{name}.json")


def failure_path(run: RunDir, r: int) -> Path:
    return run.root / "rounds" / f"round-{r:04d}.failed.json"


def round_learning_rate(recipe: Recipe, r: int) -> float:
    return recipe.train.learning_rate * recipe.train.lr_decay_per_round ** (r - 1)


def _previous(run: RunDir, r: int) -> RoundManifest:
    """Round r - 1's manifest: rounds are trained in order, whichever checkpoint round r starts from."""
    previous = run.manifest(r - 1)
    if previous is None:
        raise UserError(f"round {r} needs round {r - 1} first (no {run.round_dir(r - 1)}/manifest.json)")
    return previous


def _parent(run: RunDir, r: int, recipe: Recipe | None = None) -> RoundManifest:
    """The checkpoint round r starts from (collects with, trains on top of): under `promote.parent:
    promoted` the promoted checkpoint (trainer/promote.py `parent_round`; a rejected round is
    skipped), else round r - 1. Without a recipe: round r - 1. What counts as new data is decided by
    round r - 1 whatever the parent: a rejected round's data is not new again (it comes back only
    as replay), and a period with nothing new since the last round is skipped."""
    from trainer.promote import parent_round
    from trainer.verify import check_checkpoint

    previous = _previous(run, r)
    p = parent_round(recipe, run, r) if recipe is not None else r - 1
    parent = previous if p == r - 1 else run.manifest(p)
    check_checkpoint(run.round_dir(p))  # never train or collect from a damaged parent adapter
    return parent


def _selection(run: RunDir, r: int) -> DataSelection:
    sel = DataSelection.read(run.work_dir(r))
    if sel is None:
        raise UserError(f"round {r} has no prepared data ({run.work_dir(r) / SELECTION} missing): "
                        "run `flywheel train ... --stage prepare` first")
    return sel


def prepare_round(recipe: Recipe, run: RunDir, r: int, progress: bool = True) -> DataSelection | None:
    """Stages 1-3 (collect, ingest, select) and the dataset build, saved to the round's work dir as
    dataset/ + selection.json. Skipped when already prepared; None for a completed round."""
    if run.manifest(r) is not None:
        return None
    work = run.work_dir(r)
    if (work / SELECTION).exists():
        return DataSelection.read(work)
    parent = _parent(run, r, recipe)
    quiet_libraries()
    t0 = time.time()
    store = open_store(recipe, run)
    logs = collect_logs(recipe, store, r, progress)
    collected = collect(recipe, run, r, parent, progress)
    if collected is not None:
        store.ingest([collected], fmt="flywheel", tag=f"round-{r:04d}", redact=recipe.ingest.redact)
    seed = round_seed(recipe, r)
    # new = since the last round that ran (r - 1), not since the parent: a rejected round's data is old
    trajs, used, seen, new, hours, new_hours = select_data(store, _previous(run, r), recipe.data.replay_ratio, seed)
    if not new:  # nothing reached the store since round r - 1
        if recipe.collect.when_empty == "skip":
            raise _skip(recipe, run, r, f"no trajectory reached the store since round {r - 1}"
                        + (f" ({logs['read']} log records read, {logs['duplicates']} already stored, "
                           f"{logs['quarantined']} quarantined)" if logs and logs["read"] else ""))
        if not trajs:
            raise _skip(recipe, run, r, "collect.when_empty is replay but no older experience was selected "
                        f"(data.replay_ratio={recipe.data.replay_ratio})")
    leaked = [t.task_id for t in trajs if store.heldout.matches(t)]
    if leaked:
        raise UserError(f"held-out tasks reached round {r}'s data: {leaked[:5]}")
    base, parent_adapter = checkpoint_paths(run, parent)
    method = METHODS[recipe.train.method]
    # outcome labels (the log's own, label.file, label.command), applied to the selected data: the
    # store is never rewritten; what the method does not use unlabeled is dropped and counted
    from data_pipeline.labels import apply_labels

    trajs, labels = apply_labels(trajs, recipe.label, store.root, progress, unlabeled=recipe.data.unlabeled,
                                 kind=method.DATASET)
    # KTO/DPO/GRPO reference: the parent's adapter (previous policy) or none (the base weights)
    reference_adapter = parent_adapter if method.REFERENCE and recipe.train.reference == "previous" else None
    if recipe.train.adapter == "reset":
        parent_adapter = None
    elif recipe.train.adapter == "merge" and parent_adapter is not None:
        from trainer.merge import merge_adapter, merged_base_dir

        base = merge_adapter(base, parent_adapter, merged_base_dir(run.root, r))
        parent_adapter = reference_adapter = None  # the parent's policy is now the base itself
    # update_weights off (the study's retry control): an empty dataset, so the round trains nothing
    dataset = method.build_dataset(trajs if recipe.train.update_weights else [], recipe, store.heldout)
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f".{DATASET}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(work / DATASET, ignore_errors=True)
    os.rename(tmp, work / DATASET)
    selection = DataSelection(
        round=r, parent=f"round-{parent.round:04d}", base_model=str(base),
        parent_adapter=str(parent_adapter) if parent_adapter else None, method=recipe.train.method,
        reference_adapter=str(reference_adapter) if reference_adapter else None,
        seed=seed, rows=len(dataset), store_batches=used, batches_seen=seen, new_batches=new,
        trajectories_used=len(trajs), cumulative_interaction_hours=hours, interaction_hours_new=new_hours,
        started_at=t0, prepare_s=time.time() - t0, cumulative_episodes=store_episodes(store), logs=logs,
        labels=labels, curriculum=curriculum.record(recipe, run, r))
    selection.write(work)  # written last: its presence means "prepared"
    return selection


def fit_round(recipe: Recipe, run: RunDir, r: int) -> dict | None:
    """Stage 4: train on the prepared dataset. Runs on every rank under torchrun/deepspeed; rank 0
    writes the adapter (work dir adapter/) and fit.json. Resumes from the newest intra-round
    checkpoint; a diverged round records why in rounds/round-XXXX.failed.json and raises
    RoundFailed. Skipped when fitted already; None for a completed round."""
    if run.manifest(r) is not None:
        return None
    work, env = run.work_dir(r), dist_env()
    if (work / FIT_RESULT).exists():
        return json.loads((work / FIT_RESULT).read_text())
    sel = _selection(run, r)
    quiet_libraries()
    from datasets import load_from_disk

    # an empty dataset (nothing succeeded; update_weights off) does not survive save/load_from_disk
    dataset = load_from_disk(str(work / DATASET)) if sel.rows else []
    lr = round_learning_rate(recipe, r)
    metrics: dict[str, Any] = {"rows": len(dataset), "learning_rate": lr, "fit_s": 0.0, "gpus": 0}
    if len(dataset) > 0:
        from transformers import set_seed

        t0 = time.time()
        set_seed(sel.seed)  # a fresh LoRA's initial weights and any dropout draw from here
        method = METHODS[sel.method]
        parent_adapter = Path(sel.parent_adapter) if sel.parent_adapter else None
        try:
            reference = {"reference_adapter": Path(sel.reference_adapter)} if sel.reference_adapter else {}
            result = method.train(Path(sel.base_model), parent_adapter, dataset, recipe.train, sel.seed, work,
                                  lr, deepspeed_config_path(recipe.train.deepspeed), **reference,
                                  load=load_options(recipe))
        except TrainingDiverged as e:
            if env.is_main:
                record_failure(recipe, run, r, str(e), lr)
                remove_checkpoints(work)  # they lead to the divergence; a rerun starts from the parent
            raise RoundFailed(_failure_message(run, r, str(e))) from None
        model = result.pop("model")
        metrics.update({k: v for k, v in result.items() if _jsonable(v)})
        metrics["fit_s"] = time.time() - t0
        metrics["gpus"] = env.world_size if _gpus() else 0
        metrics["processes"] = env.world_size  # training compute = fit_s x processes (x GPUs on a GPU node)
        if env.is_main:
            keep_adapter(work, model, recipe.model.name_or_path)
    if env.is_main:
        atomic_write_json(work / FIT_RESULT, metrics)
    return metrics


def keep_adapter(work: Path, model, base_name: str) -> Path:
    """The trained adapter as work_dir/adapter/: only the adapter files, and a config that names
    the base as the recipe does (not this run directory's path) and lists module sets sorted (PEFT
    writes them in the process's hash order), so the same round gives the same bytes wherever and
    in whichever process it runs."""
    src = work / FINAL_ADAPTER
    if not (src / "adapter_model.safetensors").exists():  # a method that did not go through run_trainer
        src = work / ".model.tmp"
        model.save_pretrained(src)
    tmp = work / f".{ADAPTER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ADAPTER_FILES:
        shutil.copyfile(src / name, tmp / name)
    config = json.loads((tmp / "adapter_config.json").read_text())
    config.update(base_model_name_or_path=base_name, revision=None)
    for key in ("target_modules", "modules_to_save", "exclude_modules"):  # sets, listed in hash order
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work / ADAPTER, ignore_errors=True)
    os.rename(tmp, work / ADAPTER)
    return work / ADAPTER


def record_failure(recipe: Recipe, run: RunDir, r: int, reason: str, lr: float) -> Path:
    path = failure_path(run, r)
    sel = DataSelection.read(run.work_dir(r))
    parent = sel.parent if sel is not None else f"round-{r - 1:04d}"
    atomic_write_json(path, {"round": r, "parent": parent, "reason": reason, "learning_rate": lr,
                             "recipe_hash": recipe.hash(), "code_version": code_version(), "failed_at": time.time()})
    return path


def _failure_message(run: RunDir, r: int, reason: str) -> str:
    sel = DataSelection.read(run.work_dir(r))
    parent = sel.parent.replace("round-", "round ") if sel is not None else f"round {r - 1}"
    return (f"round {r} stopped: {reason}. No checkpoint was written; {parent} stays the current policy "
            f"(recorded in {failure_path(run, r)})")


def finalize_round(recipe: Recipe, run: RunDir, r: int) -> RoundManifest:
    """Stage 5: rounds/round-XXXX/{adapter/, manifest.json}, written atomically; the work dir goes."""
    done = run.manifest(r)
    if done is not None:
        return done
    work = run.work_dir(r)
    sel = _selection(run, r)
    if not (work / FIT_RESULT).exists():
        raise UserError(f"round {r} has not been trained ({work / FIT_RESULT} missing): run `--stage fit` first")
    metrics = json.loads((work / FIT_RESULT).read_text())
    previous = _previous(run, r)  # compute and tokens count every round trained so far, rejected ones too
    adapter = work / ADAPTER if (work / ADAPTER).exists() else (
        Path(sel.parent_adapter) if sel.parent_adapter else None)  # nothing new learnt: the parent's carries on
    manifest = RoundManifest(
        round=r, parent=sel.parent, base_model=sel.base_model, adapter=ADAPTER if adapter is not None else None,
        method=sel.method, store_batches=sel.store_batches, batches_seen=sel.batches_seen,
        new_batches=sel.new_batches, trajectories_used=sel.trajectories_used,
        cumulative_interaction_hours=sel.cumulative_interaction_hours, interaction_hours_new=sel.interaction_hours_new,
        cumulative_episodes=sel.cumulative_episodes, logs=sel.logs, learning_rate=metrics["learning_rate"],
        gpu_hours=previous.gpu_hours + metrics.get("fit_s", 0.0) / 3600.0 * metrics.get("gpus", 0),
        tokens_trained=previous.tokens_trained + int(metrics.get("tokens_trained", 0)),
        recipe_hash=recipe.hash(), code_version=code_version(), seed=sel.seed, metrics=metrics,
        created_at=time.time(), labels=sel.labels, curriculum=sel.curriculum)

    def fill(tmp: Path) -> None:
        if adapter is not None:
            shutil.copytree(adapter, tmp / ADAPTER)
        manifest.wall_time_s = time.time() - sel.started_at
        manifest.checksums = dir_checksums(tmp)
        manifest.write(tmp)

    write_dir_atomically(run.round_dir(r), fill)
    shutil.rmtree(work, ignore_errors=True)
    failure_path(run, r).unlink(missing_ok=True)
    skipped_path(run, r).unlink(missing_ok=True)
    return manifest


def launch_fit(recipe: Recipe, run: RunDir, r: int, progress: bool = True) -> None:
    """The fit stage on `train.nproc` local processes: `torchrun --nproc_per_node N -m trainer.cli
    train <run's resolved recipe> --round r --stage fit`."""
    resolved = run.root / RESOLVED_NAME
    if not resolved.exists():
        write_resolved(recipe, run.root)
    n = recipe.train.nproc
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "trainer.cli", "train", str(resolved), "--round", str(r), "--stage", "fit"]
    cmd += [] if progress else ["--quiet"]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        failure = failure_path(run, r)
        if failure.exists():
            raise RoundFailed(_failure_message(run, r, json.loads(failure.read_text())["reason"]))
        raise UserError(f"round {r}: the {n}-process fit stage exited with code {rc} (its output is above); "
                        "rerun to resume from its last intra-round checkpoint")


def train_round(recipe: Recipe, run: RunDir, r: int, progress: bool = True) -> RoundManifest:
    """Run round r (prepare, fit, finalize); returns its manifest. A completed round is returned
    as it is, never rerun; an interrupted one continues from where it stopped."""
    done = run.manifest(r)
    if done is not None:
        return done
    set_progress(progress)
    prepare_round(recipe, run, r, progress)
    if recipe.train.nproc > 1 and not dist_env().distributed:
        launch_fit(recipe, run, r, progress)
    else:
        fit_round(recipe, run, r)
    return finalize_round(recipe, run, r)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---- the command -----------------------------------------------------------------------------------------
def _next_round(run: RunDir) -> int:
    done = run.completed_rounds()
    if not done:
        raise UserError(f"{run.root} has no round 0 yet: run `flywheel train RECIPE` (or --stage prepare) first")
    return max(done) + 1


def train_command(recipe: Recipe, r: int | None = None, stage: str = "all", fork: bool = False,
                  progress: bool = True) -> dict | None:
    """`flywheel train`: run `stage` (STAGES) of round r (default: the next one) of the recipe's run,
    under the run directory's lock except for `fit` (which every rank runs). Returns what the command
    prints (None on a non-zero rank)."""
    require_loadable(recipe)  # before the lock, the resolved recipe or any stage touches the run directory
    run = RunDir(recipe.run_path())
    env = dist_env()
    set_progress(progress)
    if r is not None and r < 1:
        raise UserError("--round must be >= 1 (round 0 is the base model)")
    if env.distributed and stage != "fit":
        raise UserError(f"under a distributed launch (WORLD_SIZE={env.world_size}) only `--stage fit` runs on every "
                        "rank; run prepare and finalize once, outside the launcher")
    if stage == "fit":  # no lock: the job that prepared the round holds the run, and every rank gets here
        r = r if r is not None else _next_round(run)
        fit_round(recipe, run, r)
        return {"round": r, "stage": "fit", "work_dir": str(run.work_dir(r))} if env.is_main else None
    with run.lock("train"):
        write_resolved(recipe, run.root, fork=fork)
        ensure_round0(recipe, run)
        r = r if r is not None else _next_round(run)
        tracking.log_pending(recipe, run)  # stages run as their own jobs (`flywheel eval`) are logged here
        if stage == "prepare":
            sel = prepare_round(recipe, run, r, progress=progress)
            return {"round": r, "stage": "prepare", "work_dir": str(run.work_dir(r)),
                    "rows": sel.rows if sel else None, "completed": sel is None}
        if stage == "all" and run.manifest(r) is None:
            prepare_round(recipe, run, r, progress=progress)  # nothing new: RoundSkipped before a W&B run opens
        with tracking.stage(recipe, run, "train", r):  # W&B train run (resumed after a preemption) + local record
            m = finalize_round(recipe, run, r) if stage == "finalize" else train_round(recipe, run, r, progress=progress)
    return {"round": r, "checkpoint": str(run.round_dir(r)),
            HOURS: m.cumulative_interaction_hours, "trajectories_used": m.trajectories_used,
            "tokens_trained": m.tokens_trained, **({"curriculum": m.curriculum} if m.curriculum else {})}
