"""Experiment tracking: every stage's numbers in the run directory, and in Weights & Biases.

Files come first. Each logged stage appends one JSON line to RUN_DIR/tracking/metrics.jsonl, and
everything sent to W&B is read back from the run directory's own files (the round's manifest.json,
eval/summary.json, curve/curve.json and curve.png), so nothing lives only in W&B and a stage run
as a separate job can be logged later by whoever runs next (`log_pending`).

W&B layout, one run per (experiment, job, round):
  project / entity   tracking.wandb.project / entity
  group              the experiment;  job_type: train | eval | curve | gate | promote;  tags: method:<m>, arm:<a>, extra tags
  config             the resolved recipe, its hash, the code version, the round
  train run          summary: data counts, interaction hours, LR, GPU-hours, train loss; history: loss per step;
                     artifacts: uses the parent checkpoint and the experience-store batches it trained on,
                     logs the new checkpoint (alias round-XXXX)
  eval run           summary: held-out metrics with their 95% intervals, per suite; uses the checkpoint,
                     logs the eval results
  curve run          summary: fitted curve parameters with intervals; the curve image
  gate run           the promotion gate's verdict on the round (trainer/promote.py): promoted or not, the
                     paired difference with its interval, p-value, both scores; a promoted round's
                     checkpoint artifact gets the alias `promoted` (W&B moves it from the one before), so
                     the registry shows what to deploy
  promote run        a promotion by hand (`flywheel promote`): who, why, which round; the alias `promoted`
                     moves to that round's checkpoint. Numbered by its line in promotion/history.jsonl
                     (the record's `round` is that entry number, `promoted_round` the round)
Run ids are deterministic, `<experiment>-<job>-r<round>-<run key>` (the run key is drawn once per run
directory and kept in tracking/run_key, so two run directories of one experiment never share W&B
runs), and runs open with resume="allow": a preempted stage reopens its own W&B run on rerun.

Artifacts reference the run directory's files instead of uploading them: the checkpoint's
manifest.json is checksummed (it holds the sha256 of every adapter file), the larger files are
referenced by path. Offline runs cannot call `run.use_artifact`, so inputs are declared the way
`use_artifact` declares a new artifact: logged with `use_after_commit`, which `wandb sync` turns into
the same "used by" edge.

Stages run as their own jobs: `flywheel eval` runs eval/'s evaluator, which never imports the
trainer, so it does not log; its caller side does, from the files the evaluation wrote. `flywheel train` logs
every finished stage not logged yet when it starts (`log_pending`), and `flywheel track RUN_DIR`
does the same at any time (the last job of a Slurm chain runs it). The local loop tracks its stages
directly (`stage`, `log_curve`).

Mode (`resolve_mode`): WANDB_MODE=disabled (or WANDB_DISABLED=true) always turns W&B off; otherwise
the recipe's online / offline / disabled; `auto` follows WANDB_MODE when set, else online when
WANDB_API_KEY is set, else offline. Offline runs are written to RUN_DIR/tracking/wandb/ with
RUN_DIR/tracking/SYNC.md saying how to upload them. Only rank 0 of a distributed job logs.

Secrets: W&B gets the resolved recipe (which holds no secrets) and the numbers above; code saving,
git state, machine metadata (command line, host, environment) and console capture are switched off.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from eval.records import HOURS, EvalSummary, SuiteSummary
from trainer.recipe import Recipe, code_version
from trainer.records import RoundManifest
from trainer.rundir import RunDir, atomic_write_text

JOBS = ("train", "eval", "curve", "gate", "promote")
RECORDS_NAME = "metrics.jsonl"
CURVE_KEYS = ("asymptote", "midpoint", "exponent", "slope_at_midpoint", "learning_speed", "x_to_target")


# ---- mode, ids, records ----------------------------------------------------------------------------
def resolve_mode(recipe_mode: str, env: Mapping[str, str] | None = None) -> str:
    """online | offline | disabled, from the recipe's tracking.wandb.mode and the environment."""
    env = os.environ if env is None else env
    env_mode = env.get("WANDB_MODE", "").strip().lower()
    if env_mode == "disabled" or env.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled"
    if recipe_mode != "auto":
        return recipe_mode
    if env_mode in ("online", "offline"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if env.get("WANDB_API_KEY") else "offline"


def run_key(run: RunDir) -> str:
    """8 hex characters drawn once per run directory (kept in tracking/run_key)."""
    path = run.tracking / "run_key"
    run.tracking.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        for _ in range(50):  # another process created it a moment ago and may still be writing
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.05)
        raise RuntimeError(f"{path} is empty; delete it and rerun") from None
    key = secrets.token_hex(4)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "experiment"


def wandb_run_id(experiment: str, job: str, r: int, key: str) -> str:
    """The W&B run id of one (experiment, job, round) in the run directory with this run key."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r} (known: {', '.join(JOBS)})")
    return f"{_slug(experiment).replace('.', '-')}-{job}-r{r:04d}-{key}"


def artifact_name(experiment: str, kind: str, key: str) -> str:
    """Artifact collection of one run directory: kind = checkpoint | experience | eval."""
    return f"{_slug(experiment)}-{key}-{kind}"


def read_records(run_dir: str | Path) -> list[dict]:
    """Every local tracking record of a run directory (tracking/metrics.jsonl), oldest first."""
    path = Path(run_dir) / "tracking" / RECORDS_NAME
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the stage is logged again on the next pass
    return records


def _append_record(run: RunDir, record: dict) -> None:
    run.tracking.mkdir(parents=True, exist_ok=True)
    with open(run.tracking / RECORDS_NAME, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _recorded(run: RunDir, job: str, r: int, wandb_id: str | None) -> bool:
    """Already logged: a record of (job, round) that reached W&B under this id (or any record of
    (job, round) when W&B is off)."""
    for rec in read_records(run.root):
        if rec.get("job") != job or rec.get("round") != r:
            continue
        wb = rec.get("wandb") or {}
        if wandb_id is None or (wb.get("id") == wandb_id and not wb.get("error")):
            return True
    return False


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0").strip() in ("", "0")


# ---- W&B runs --------------------------------------------------------------------------------------
def _tags(recipe: Recipe, job: str) -> list[str]:
    arm = recipe.tracking.arm or recipe.experiment
    tags = [f"method:{recipe.train.method}", f"arm:{arm}", f"job:{job}", *recipe.tracking.wandb.tags]
    return [t[:64] for t in dict.fromkeys(tags)]


def _config(recipe: Recipe, r: int, key: str) -> dict[str, Any]:
    return {**recipe.resolved_dict(),
            "flywheel": {"round": r, "recipe_hash": recipe.hash(), "code_version": code_version(), "run_key": key}}


def _settings(wandb, job: str):
    # No code, git state, machine metadata (command line, host, environment) or console capture:
    # W&B sees the recipe and the numbers, nothing that could carry a secret.
    return wandb.Settings(silent=True, console="off", disable_code=True, save_code=False, disable_git=True,
                          disable_job_creation=True, x_disable_meta=True, x_disable_machine_info=True,
                          x_disable_stats=job != "train", x_save_requirements=False)


def _open(recipe: Recipe, run: RunDir, job: str, r: int, mode: str):
    """Open (or resume) the W&B run of (experiment, job, round); None when W&B is off or failed."""
    if mode == "disabled":
        return None
    import wandb

    cfg = recipe.tracking.wandb
    key = run_key(run)
    kwargs = dict(project=cfg.project, entity=cfg.entity, group=recipe.experiment, job_type=job,
                  id=wandb_run_id(recipe.experiment, job, r, key),
                  name=f"{recipe.experiment}/{job}/{'entry' if job == 'promote' else 'round'}-{r}",
                  resume="allow", dir=str(run.tracking.resolve()), tags=_tags(recipe, job),
                  config=_config(recipe, r, key), settings=_settings(wandb, job), reinit="create_new")
    try:
        wb = wandb.init(mode=mode, **kwargs)
    except Exception as e:  # noqa: BLE001 - tracking never stops training
        if mode != "online":
            _warn(f"W&B {job} round {r}: cannot open the run ({e}); the local record is still written")
            return None
        _warn(f"W&B {job} round {r}: online logging failed ({e}); logging offline instead")
        mode = "offline"
        try:
            wb = wandb.init(mode=mode, **kwargs)
        except Exception as e2:  # noqa: BLE001
            _warn(f"W&B {job} round {r}: cannot open the run ({e2}); the local record is still written")
            return None
    if mode == "offline":
        write_sync_note(recipe, run)
    return wb


def _warn(msg: str) -> None:
    print(f"flywheel: tracking: {msg}", file=sys.stderr, flush=True)


def _wandb_info(wb) -> dict | None:
    if wb is None:
        return None
    return {"id": wb.id, "mode": "offline" if wb.settings._offline else "online", "project": wb.project,
            "group": wb.group, "job_type": wb.job_type}


def write_sync_note(recipe: Recipe, run: RunDir) -> Path:
    """RUN_DIR/tracking/SYNC.md: where the offline W&B runs are and the command that uploads them."""
    cfg = recipe.tracking.wandb
    wandb_dir = (run.tracking / "wandb").resolve()
    entity = f" --entity {cfg.entity}" if cfg.entity else ""
    text = (f"# Offline W&B runs of `{recipe.experiment}`\n\n"
            f"This experiment logged to Weights & Biases offline (recipe: tracking.wandb.mode = {cfg.mode}; "
            "`auto` logs offline when no WANDB_API_KEY is set or WANDB_MODE=offline). The runs are in\n\n"
            f"    {wandb_dir}/offline-run-*\n\n"
            "Upload them from a machine that reaches the W&B server (log in first with `wandb login`, "
            "or export your API key in that shell only):\n\n"
            f"    wandb sync --project {cfg.project}{entity} {wandb_dir}/offline-run-*\n\n"
            "A stage rerun after a preemption leaves one folder per attempt, all with the same run id, so "
            "they land in the same W&B run. Rerunning the sync skips folders already uploaded. "
            "The same numbers are kept locally in tracking/metrics.jsonl; "
            "`flywheel compare RUN_DIR...` compares runs without W&B.\n")
    path = run.tracking / "SYNC.md"
    atomic_write_text(path, text)
    return path


def sync_command(recipe: Recipe, run: RunDir) -> str | None:
    """The `wandb sync` command that uploads this run directory's offline W&B runs, or None when
    it holds none (W&B disabled, or every stage logged online)."""
    wandb_dir = (run.tracking / "wandb").resolve()
    if not any(wandb_dir.glob("offline-run-*")):
        return None
    cfg = recipe.tracking.wandb
    entity = f" --entity {cfg.entity}" if cfg.entity else ""
    return f"wandb sync --project {cfg.project}{entity} {wandb_dir}/offline-run-*"


# ---- artifacts -------------------------------------------------------------------------------------
def _file_artifact(wandb, name: str, type_: str, root: Path, checksummed: list[str], referenced: list[str],
                   metadata: dict):
    """An artifact of references to files under `root`: small `checksummed` files by content, the
    rest by path (their sha256 sits in a checksummed manifest)."""
    art = wandb.Artifact(name, type=type_, metadata=metadata)
    for rel in checksummed:
        art.add_reference(f"file://{(root / rel).resolve()}", name=rel, checksum=True)
    for rel in referenced:
        art.add_reference(f"file://{(root / rel).resolve()}", name=rel, checksum=False)
    return art


def checkpoint_artifact(wandb, recipe: Recipe, run: RunDir, r: int, key: str):
    """Round r's checkpoint: its manifest.json (checksummed) and the adapter files (by path). The
    same round always gives the same digest, so a later run's input matches the producer's output."""
    m = run.manifest(r)
    files = sorted(f for f in (m.checksums or {}) if f != RoundManifest.FILE)
    meta = {"round": r, "parent": m.parent, "base_model": m.base_model, "method": m.method,
            HOURS: m.cumulative_interaction_hours, "checksums": m.checksums}
    return _file_artifact(wandb, artifact_name(recipe.experiment, "checkpoint", key), "model", run.round_dir(r),
                          [RoundManifest.FILE], files, meta)


def experience_artifact(wandb, recipe: Recipe, run: RunDir, batch_id: str, key: str):
    """One experience-store batch (one version per batch, aliased by its batch id)."""
    root = run.store / "batches" / batch_id
    m = json.loads((root / "manifest.json").read_text())
    files = sorted(f for f in (m.get("checksums") or {}) if (root / f).is_file())
    meta = {"batch_id": batch_id, "count": m.get("count"), "tag": m.get("tag"),
            "interaction_hours": (m.get("interaction_s") or 0.0) / 3600.0, "checksums": m.get("checksums")}
    return _file_artifact(wandb, artifact_name(recipe.experiment, "experience", key), "dataset", root,
                          ["manifest.json"], files, meta)


def _use(wb, artifact, aliases: list[str]) -> None:
    """Declare an input. Online: `use_artifact`. Offline (where use_artifact raises): the artifact is
    logged with use_after_commit, the record `use_artifact` itself writes for a new artifact, which
    `wandb sync` replays as "used by this run"."""
    if not wb.settings._offline:
        wb.use_artifact(artifact, aliases=aliases)
        return
    wb._log_artifact(artifact, aliases=aliases, is_user_created=True, use_after_commit=True)


# ---- what each job logs ----------------------------------------------------------------------------
def _scalars(d: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _log_train(recipe: Recipe, run: RunDir, r: int, wb, key: str | None) -> dict:
    m = run.manifest(r)
    metrics = dict(m.metrics or {})
    losses = [float(v) for v in metrics.pop("loss_history", []) or []]
    record = {"job": "train", "round": r, "hours": m.cumulative_interaction_hours,
              "hours_new": m.interaction_hours_new, "trajectories_used": m.trajectories_used,
              "dataset_rows": metrics.get("rows", 0), "new_batches": len(m.new_batches or []),
              "store_batches": m.store_batches or {}, "learning_rate": m.learning_rate,
              "gpu_hours": m.gpu_hours, "tokens_trained": m.tokens_trained,
              "wall_time_s": m.wall_time_s, "train_loss": metrics.get("train_loss"),
              "steps": metrics.get("steps", 0), "loss_history": losses, "parent": m.parent,
              "adapter": m.adapter, "labels": m.labels or {}}
    if wb is None:
        return record
    import wandb

    wb.define_metric("train/step")
    wb.define_metric("train/loss", step_metric="train/step")
    for i, loss in enumerate(losses):
        wb.log({"train/step": i + 1, "train/loss": loss})
    wb.summary.update({k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    wb.summary.update(_scalars(metrics, "train/"))
    wb.summary.update(_scalars(m.labels or {}, "labels/"))
    parent = int(m.parent.split("-")[1]) if r >= 1 and m.parent else r - 1  # the promoted one, or r - 1
    if r >= 1:
        _use(wb, checkpoint_artifact(wandb, recipe, run, parent, key), [f"round-{parent:04d}"])
    for batch_id in sorted(m.store_batches or {}):
        _use(wb, experience_artifact(wandb, recipe, run, batch_id, key), [batch_id])
    wb.log_artifact(checkpoint_artifact(wandb, recipe, run, r, key), aliases=[f"round-{r:04d}", "latest"])
    record["artifacts"] = {"inputs": ([f"checkpoint:round-{parent:04d}"] if r >= 1 else [])
                           + [f"experience:{b}" for b in sorted(m.store_batches or {})],
                           "output": f"checkpoint:round-{r:04d}"}
    return record


def _interval_scalars(name: str, value: Any, ci: Any) -> dict[str, float]:
    out = {name: value} if isinstance(value, (int, float)) else {}
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        out[f"{name}_lo"], out[f"{name}_hi"] = ci
    return out


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _eval_scalars(summary: SuiteSummary, prefix: str) -> dict[str, float]:
    out = {f"{prefix}episodes": _or(summary.episodes, 0), f"{prefix}tasks": _or(summary.tasks, 0)}
    out.update(_interval_scalars(f"{prefix}success_rate", summary.success_rate, summary.ci95))
    out.update(_interval_scalars(f"{prefix}mean_score", summary.mean_score, summary.mean_score_ci95))
    for k, v in (summary.pass_at_k or {}).items():
        out[f"{prefix}pass@{k}"] = v
    return out


def _log_eval(recipe: Recipe, run: RunDir, r: int, wb, key: str | None) -> dict:
    summary = run.eval_summary(r)
    m = run.manifest(r) or RoundManifest()
    record = {"job": "eval", "round": r, "hours": _or(m.cumulative_interaction_hours, 0.0),
              "gpu_hours": m.gpu_hours, "success_rate": summary.success_rate, "ci95": summary.ci95,
              "mean_score": summary.mean_score, "mean_score_ci95": summary.mean_score_ci95,
              "episodes": summary.episodes, "suites": sorted(summary.suites or {})}
    if wb is None:
        return record
    import wandb

    scalars = {"round": r, HOURS: record["hours"], **_eval_scalars(summary, "heldout/")}
    for suite, s in (summary.suites or {}).items():
        scalars.update(_eval_scalars(s, f"heldout/{suite}/"))
    wb.log(scalars)
    wb.summary.update(scalars)
    _use(wb, checkpoint_artifact(wandb, recipe, run, r, key), [f"round-{r:04d}"])
    eval_dir = run.round_dir(r) / "eval"
    referenced = [f for f in ("results.jsonl", "episodes.jsonl") if (eval_dir / f).is_file()]
    results = _file_artifact(wandb, artifact_name(recipe.experiment, "eval", key), "eval_results", eval_dir,
                             [EvalSummary.FILE], referenced, {"round": r, "success_rate": summary.success_rate})
    wb.log_artifact(results, aliases=[f"round-{r:04d}", "latest"])
    record["artifacts"] = {"inputs": [f"checkpoint:round-{r:04d}"], "output": f"eval:round-{r:04d}"}
    return record


def _curve_record(run: RunDir, r: int) -> tuple[dict, dict]:
    curve = json.loads((run.curve / "curve.json").read_text())
    arms = {}
    for arm, rec in (curve.get("arms") or {}).items():
        fit = rec.get("fit") or {}
        arms[arm] = {"status": fit.get("status"), "reason": fit.get("reason"), "r2": fit.get("r2"),
                     "params": {k: fit.get("derived", {}).get(k) for k in CURVE_KEYS
                                if fit.get("derived", {}).get(k) is not None},
                     "intervals": {k: v for k, v in (fit.get("intervals") or {}).items() if k in CURVE_KEYS},
                     "points": len(fit.get("points") or []),
                     "forecast_mae": (rec.get("forecast") or {}).get("mae")}
    return {"job": "curve", "round": r, "form": curve.get("form"), "x_axis": curve.get("x_axis"), "arms": arms}, curve


def _log_curve(recipe: Recipe, run: RunDir, r: int, wb, key: str | None) -> dict:
    record, _ = _curve_record(run, r)
    if wb is None:
        return record
    import wandb

    scalars: dict[str, Any] = {"round": r}
    for arm, a in record["arms"].items():
        p = f"curve/{arm}/" if len(record["arms"]) > 1 else "curve/"
        scalars[f"{p}fitted"] = int(a["status"] == "ok")
        scalars[f"{p}points"] = a["points"]
        for k, v in a["params"].items():
            scalars.update(_interval_scalars(f"{p}{k}", v, a["intervals"].get(k)))
        for k in ("r2", "forecast_mae"):
            if isinstance(a.get(k), (int, float)):
                scalars[f"{p}{k}"] = a[k]
    png = run.curve / "curve.png"
    wb.summary.update(scalars)
    wb.log({**scalars, **({"curve/plot": wandb.Image(str(png))} if png.exists() else {})})
    return record


def _log_gate(recipe: Recipe, run: RunDir, r: int, wb, key: str | None) -> dict:
    from trainer.promote import read_verdict

    v = read_verdict(run, r)
    record = {"job": "gate", "round": r, "decision": v.decision, "promoted": v.promoted, "incumbent": v.incumbent,
              "candidate_score": v.candidate_score, "incumbent_score": v.incumbent_score,
              "difference": v.difference, "difference_ci95": v.difference_ci95, "p_value": v.p_value,
              "tasks": v.tasks, "margin": v.margin, "level": v.level, "reason": v.reason}
    if wb is None:
        return record
    import wandb

    scalars: dict[str, Any] = {"round": r, "gate/promoted": int(v.promoted), "gate/tasks": v.tasks,
                               "gate/margin": v.margin, "gate/level": v.level}
    scalars.update(_interval_scalars("gate/difference", v.difference, v.difference_ci95))
    for k in ("p_value", "candidate_score", "incumbent_score", "incumbent"):
        if isinstance(getattr(v, k), (int, float)):
            scalars[f"gate/{k}"] = getattr(v, k)
    wb.log(scalars)
    wb.summary.update({**scalars, "gate/decision": v.decision, "gate/reason": v.reason})
    if v.promoted:  # the same files give the same artifact version: the alias moves onto it
        wb.log_artifact(checkpoint_artifact(wandb, recipe, run, r, key), aliases=[f"round-{r:04d}", "promoted"])
        record["artifacts"] = {"output": f"checkpoint:round-{r:04d}", "aliases": ["promoted"]}
    return record


def _log_promote(recipe: Recipe, run: RunDir, entry: int, wb, key: str | None) -> dict:
    from trainer.promote import read_history

    v = read_history(run)[entry - 1]
    record = {"job": "promote", "round": entry, "promoted_round": v.round, "incumbent": v.incumbent,
              "by": v.by, "reason": v.reason, "at": v.at}
    if wb is None:
        return record
    import wandb

    scalars = {"promote/round": v.round, **({"promote/incumbent": v.incumbent} if v.incumbent is not None else {})}
    wb.log(scalars)
    wb.summary.update({**scalars, "promote/by": v.by, "promote/reason": v.reason})
    wb.log_artifact(checkpoint_artifact(wandb, recipe, run, v.round, key), aliases=[f"round-{v.round:04d}", "promoted"])
    record["artifacts"] = {"output": f"checkpoint:round-{v.round:04d}", "aliases": ["promoted"]}
    return record


_LOGGERS = {"train": _log_train, "eval": _log_eval, "curve": _log_curve, "gate": _log_gate, "promote": _log_promote}


def _stage_outputs_exist(run: RunDir, job: str, r: int) -> bool:
    if job == "train":
        return run.manifest(r) is not None
    if job == "eval":
        return run.eval_summary(r) is not None
    if job == "gate":
        from trainer.promote import verdict_path

        return verdict_path(run, r).exists()
    if job == "promote":  # r: the entry's number in promotion/history.jsonl
        from trainer.promote import read_history

        history = read_history(run)
        return 1 <= r <= len(history) and history[r - 1].decision == "manual"
    return (run.curve / "curve.json").exists()


def _finish(recipe: Recipe, run: RunDir, job: str, r: int, wb) -> dict:
    """Log the stage's outputs to the open W&B run (if any), close it, append the local record."""
    key = run_key(run) if wb is not None else None
    info = _wandb_info(wb)
    try:
        record = _LOGGERS[job](recipe, run, r, wb, key)
    except Exception as e:  # noqa: BLE001 - tracking never stops the loop; the record says what failed
        _warn(f"W&B {job} round {r}: logging failed ({type(e).__name__}: {e})")
        record, info = {"job": job, "round": r}, {**(info or {}), "error": f"{type(e).__name__}: {e}"}
    finally:
        if wb is not None:
            with contextlib.suppress(Exception):
                wb.finish()
    record.update({"experiment": recipe.experiment, "time": time.time(), "wandb": info})
    _append_record(run, record)
    return record


# ---- public API ------------------------------------------------------------------------------------
@contextlib.contextmanager
def stage(recipe: Recipe, run: RunDir, job: str, r: int) -> Iterator[None]:
    """Track the train or eval stage of round r around the code that runs it:

        with tracking.stage(recipe, run, "train", r):
            train_round(recipe, run, r)

    Opens (or resumes) the stage's W&B run first, so a preempted stage reopens the same run; on
    success logs what the stage wrote and appends the local record; on failure closes the W&B run
    as failed and re-raises. A stage already logged costs nothing."""
    if job not in ("train", "eval"):
        raise ValueError(f"stage() tracks train or eval, not {job!r}; use log_curve for the curve")
    mode = resolve_mode(recipe.tracking.wandb.mode)
    wb_id = None if mode == "disabled" else wandb_run_id(recipe.experiment, job, r, run_key(run))
    if not _is_rank0() or (_stage_outputs_exist(run, job, r) and _recorded(run, job, r, wb_id)):
        yield
        return
    wb = _open(recipe, run, job, r, mode)
    try:
        yield
    except BaseException:
        if wb is not None:
            with contextlib.suppress(Exception):
                wb.finish(exit_code=1)
        raise
    _finish(recipe, run, job, r, wb)


def log_stage(recipe: Recipe, run: RunDir, job: str, r: int) -> dict | None:
    """Log one finished stage from the run directory's files (train: the round's manifest, eval:
    eval/summary.json, curve: curve/curve.json and curve.png), unless it is logged already. Returns
    the local record written, or None when there was nothing (new) to log."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r} (known: {', '.join(JOBS)})")
    mode = resolve_mode(recipe.tracking.wandb.mode)
    wb_id = None if mode == "disabled" else wandb_run_id(recipe.experiment, job, r, run_key(run))
    if not _is_rank0() or not _stage_outputs_exist(run, job, r) or _recorded(run, job, r, wb_id):
        return None
    return _finish(recipe, run, job, r, _open(recipe, run, job, r, mode))


def log_gate(recipe: Recipe, run: RunDir, r: int) -> dict | None:
    """Log the promotion gate's verdict on round r (promotion/round-XXXX.json), once."""
    return log_stage(recipe, run, "gate", r)


def log_promotions_by_hand(recipe: Recipe, run: RunDir) -> list[dict]:
    """Log the promotions by hand (`flywheel promote`) not logged yet: the alias `promoted` follows."""
    from trainer.promote import read_history

    out = []
    for entry, v in enumerate(read_history(run), 1):
        if v.decision == "manual":
            rec = log_stage(recipe, run, "promote", entry)
            if rec is not None:
                out.append(rec)
    return out


def log_curve(recipe: Recipe, run: RunDir, r: int) -> dict | None:
    """Log the curve refitted after round r (curve/curve.json, curve.png)."""
    return log_stage(recipe, run, "curve", r)


def log_pending(recipe: Recipe, run: RunDir) -> list[dict]:
    """Log every finished stage not logged yet: trainings and evaluations that ran as their own jobs
    (`flywheel eval` does not import the trainer, so its caller logs it here) and the latest curve."""
    written = []
    rounds = run.completed_rounds()
    for r in rounds:
        for job in (("train", "eval", "gate") if r >= 1 else ("eval", "gate")):
            rec = log_stage(recipe, run, job, r)
            if rec is not None:
                written.append(rec)
    written += log_promotions_by_hand(recipe, run)
    evaluated = [r for r in rounds if run.eval_summary(r) is not None]
    if evaluated:
        rec = log_curve(recipe, run, evaluated[-1])
        if rec is not None:
            written.append(rec)
    return written



def track_run(run_dir: str | Path) -> list[dict]:
    """`flywheel track RUN_DIR`: log every finished stage of a run directory not logged yet, with
    the run's own resolved recipe; the records written."""
    from trainer.errors import UserError
    from trainer.recipe import RESOLVED_NAME, load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_NAME).is_file():
        raise UserError(f"{run_dir}: no {RESOLVED_NAME} (is this a flywheel run directory?)")
    recipe = load_recipe(run_dir / RESOLVED_NAME, [])
    return log_pending(recipe, RunDir(run_dir))
