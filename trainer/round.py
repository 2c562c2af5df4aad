"""One round: (parent checkpoint, data selection, recipe, seed) -> new checkpoint.

1. collect: the parent policy acts on fresh training tasks; episodes -> experience/round-XXXX.jsonl
2. ingest:  that file goes into the experience store (deduplicated, redacted, held-out guarded)
3. select:  every store batch new since the parent's round + a replay sample of older ones
4. train:   the method's module drives TRL's trainer on the built dataset (LoRA)
5. save:    adapter + manifest.json, written atomically as rounds/round-XXXX/

Every step is idempotent, so a killed round reruns from where it stopped: collection is skipped
when its file exists, ingest adds nothing twice, training resumes from its intra-round checkpoint,
and a completed round (manifest present) is never rerun.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from data_pipeline.heldout import HeldoutSpec
from data_pipeline.store import ExperienceStore
from eval.envs.base import HELDOUT_SEED_START
from trainer.cli import UserError
from trainer.recipe import Recipe, code_version, load_recipe, write_resolved
from trainer.rundir import RunDir, atomic_write_json, dir_checksums, write_dir_atomically

METHODS = ("sft", "kto", "dpo", "grpo")
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
    return spec


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
def ensure_round0(recipe: Recipe, run: RunDir) -> dict:
    """Round 0 is the base policy: a manifest with no adapter and no interaction consumed."""
    m = run.manifest(0)
    if m is not None:
        return m
    base = base_model_path(recipe, run)
    manifest = {
        "round": 0, "parent": None, "base_model": str(base), "adapter": None, "method": None,
        "store_batches": {}, "batches_seen": [], "new_batches": [], "trajectories_used": 0,
        "cumulative_interaction_hours": 0.0, "interaction_hours_new": 0.0, "gpu_hours": 0.0,
        "tokens_trained": 0, "recipe_hash": recipe.hash(), "code_version": code_version(),
        "seed": recipe.seed, "metrics": {}, "wall_time_s": 0.0, "created_at": time.time(), "checksums": {},
    }
    write_dir_atomically(run.round_dir(0), lambda tmp: atomic_write_json(tmp / "manifest.json", manifest))
    return manifest


def checkpoint_paths(run: RunDir, manifest: dict) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) of a round's checkpoint."""
    r = manifest["round"]
    adapter = run.round_dir(r) / manifest["adapter"] if manifest.get("adapter") else None
    return Path(manifest["base_model"]), adapter


# ---- 1-2. collect and ingest ---------------------------------------------------------------------
def collect(recipe: Recipe, run: RunDir, r: int, parent: dict, progress: bool = True) -> Path | None:
    """The parent policy acts on round r's training tasks (fresh seeds every round)."""
    out = run.experience / f"round-{r:04d}.jsonl"
    suites = [s for s in recipe.collect.suites if s.episodes > 0]
    if out.exists() or not suites:
        return out if out.exists() else None
    from eval.policy import HFPolicy, load_checkpoint
    from eval.rollout import run_episodes, write_jsonl
    from eval.suites import get_suite

    base, adapter = checkpoint_paths(run, parent)
    model, tokenizer = load_checkpoint(base, adapter, recipe.model.dtype)
    pc = recipe.collect.policy
    policy = HFPolicy(model, tokenizer, temperature=pc.temperature, constrained=pc.constrained,
                      max_new_tokens=pc.max_new_tokens, name=f"{recipe.experiment}/round-{parent['round']:04d}")
    trajs = []
    for sc in suites:
        suite = get_suite(sc.name)
        seeds = suite.train_seeds(sc.episodes, offset=(r - 1) * sc.episodes)
        trajs += run_episodes(suite, sc.difficulty, seeds, policy, batch_size=pc.batch_size,
                              rng_seed=round_seed(recipe, r), desc=f"round {r} collect {sc.name}", progress=progress)
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajs, tmp)
    tmp.rename(out)
    return out


def ingest_sources(recipe: Recipe, store: ExperienceStore) -> None:
    """External logs named by the recipe go in before round 1 (a rerun adds nothing twice)."""
    if recipe.ingest.sources:
        store.ingest(recipe.ingest.sources, fmt=recipe.ingest.format, tag="sources", redact=recipe.ingest.redact)


# ---- 3. select -----------------------------------------------------------------------------------
def select_data(store: ExperienceStore, parent: dict, replay_ratio: float, seed: int):
    """New batches since the parent's round, plus `replay_ratio` of the older trajectories."""
    seen_before = set(parent.get("batches_seen", []))
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


def build_dataset(method: str, trajs, recipe: Recipe, store: ExperienceStore):
    from data_pipeline import builders

    if method == "sft":
        return builders.build_sft(trajs, success_only=recipe.data.success_only, min_score=recipe.data.min_score,
                                  heldout=store.heldout)
    return getattr(builders, f"build_{'rl' if method == 'grpo' else method}")(trajs, heldout=store.heldout)


# ---- 4-5. train and save -------------------------------------------------------------------------
def deepspeed_config_path(name: str) -> str | None:
    if name == "none":
        return None
    return str(Path(__file__).parent / "deepspeed" / f"{name}.json")


def train_round(recipe: Recipe, run: RunDir, r: int, progress: bool = True) -> dict:
    """Run round r (collect, ingest, select, train, save); returns its manifest."""
    done = run.manifest(r)
    if done is not None:
        return done
    parent = run.manifest(r - 1)
    if parent is None:
        raise UserError(f"round {r} needs round {r - 1} first (no {run.round_dir(r - 1)}/manifest.json)")
    t0 = time.time()
    store = open_store(recipe, run)
    ingest_sources(recipe, store)
    collected = collect(recipe, run, r, parent, progress)
    if collected is not None:
        store.ingest([collected], fmt="flywheel", tag=f"round-{r:04d}", redact=recipe.ingest.redact)
    seed = round_seed(recipe, r)
    trajs, used, seen, new, hours, new_hours = select_data(store, parent, recipe.data.replay_ratio, seed)
    leaked = [t.task_id for t in trajs if store.heldout.matches(t)]
    if leaked:
        raise UserError(f"held-out tasks reached round {r}'s data: {leaked[:5]}")
    base, parent_adapter = checkpoint_paths(run, parent)
    if recipe.train.adapter == "reset":
        parent_adapter = None
    method = recipe.train.method
    lr = recipe.train.learning_rate * recipe.train.lr_decay_per_round ** (r - 1)
    dataset = build_dataset(method, trajs, recipe, store)
    metrics: dict[str, Any] = {"rows": len(dataset)}
    model = None
    if len(dataset) > 0:
        import importlib

        module = importlib.import_module(f"trainer.{method}")
        result = module.train(base, parent_adapter, dataset, recipe.train, seed, run.work_dir(r), lr,
                              deepspeed_config_path(recipe.train.deepspeed))
        model = result.pop("model")
        metrics.update(result)
    manifest = {
        "round": r, "parent": f"round-{r - 1:04d}", "base_model": str(base),
        "adapter": "adapter" if (model is not None or parent_adapter is not None) else None,
        "method": method, "store_batches": used, "batches_seen": seen, "new_batches": new,
        "trajectories_used": len(trajs), "cumulative_interaction_hours": hours,
        "interaction_hours_new": new_hours, "learning_rate": lr,
        "gpu_hours": parent.get("gpu_hours", 0.0) + (time.time() - t0) / 3600.0 * _gpus(),
        "tokens_trained": parent.get("tokens_trained", 0) + int(metrics.get("tokens_trained", 0)),
        "recipe_hash": recipe.hash(), "code_version": code_version(), "seed": seed, "metrics": metrics,
        "created_at": time.time(),
    }

    def fill(tmp: Path) -> None:
        if model is not None:
            model.save_pretrained(tmp / "adapter")
        elif parent_adapter is not None:  # nothing new to learn from: the parent's adapter carries on
            shutil.copytree(parent_adapter, tmp / "adapter")
        manifest["wall_time_s"] = time.time() - t0
        manifest["checksums"] = dir_checksums(tmp)
        atomic_write_json(tmp / "manifest.json", manifest)

    write_dir_atomically(run.round_dir(r), fill)
    shutil.rmtree(run.work_dir(r), ignore_errors=True)
    return manifest


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---- CLI -----------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="flywheel train", description="Run the next training round of an experiment.")
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")
    ap.add_argument("--round", type=int, default=None, help="round to run (default: the next one)")
    ap.add_argument("--fork", action="store_true", help="allow a changed recipe in an existing run directory")
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    run = RunDir(recipe.run_path())
    with run.lock("train"):
        write_resolved(recipe, run.root, fork=args.fork)
        ensure_round0(recipe, run)
        r = args.round if args.round is not None else max(run.completed_rounds()) + 1
        if r < 1:
            raise UserError("--round must be >= 1 (round 0 is the base model)")
        m = train_round(recipe, run, r)
    print(json.dumps({"round": r, "checkpoint": str(run.round_dir(r)),
                      "cumulative_interaction_hours": m["cumulative_interaction_hours"],
                      "trajectories_used": m["trajectories_used"]}))
    return 0
