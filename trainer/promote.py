"""The promotion gate: which checkpoint of a run is the one to deploy.

After round r's held-out evaluation, `gate(recipe, run, r)` compares it with the promoted checkpoint
ON THE SAME TASKS and promotes it unless it is worse beyond noise:

    RUN_DIR/promotion/round-XXXX.json   the gate's verdict on round r (a `Verdict`), written last:
                                        its presence means "gated", and a rerun returns it unchanged
    RUN_DIR/promotion/history.jsonl     append-only: every verdict and every promotion by hand
    RUN_DIR/promoted/                   the checkpoint to deploy: adapter/ (with its tokenizer),
                                        PROMOTED.json, SERVING.md, merged/ (promote.merged)

Round 0 (the base model) is promoted when it is gated first. A rejected round stays in the lineage
(its directory, manifest and evaluation are untouched; its verdict says why); under
`promote.parent: promoted` the next round trains from the promoted checkpoint instead
(trainer/round.py `_parent`). `flywheel promote RUN_DIR --round N --reason TEXT` (`promote_by_hand`)
rolls back or forward by hand, recorded with the user's name and reason.

The test (`paired_test`). Per task, the candidate's and the promoted checkpoint's held-out results are
averaged over the task's samples (the curve's metric: success fraction for `success_rate`, mean score
for `mean_score`), and d_i = candidate_i - promoted_i over the tasks both were evaluated on. H0: the mean
difference is >= -margin (the candidate is at most `margin` worse); H1: it is worse by more than the
margin. The candidate is rejected when the one-sided paired t-test's p-value is below `level`, i.e.
when the upper (1 - level) confidence bound of the mean difference lies below -margin. So an equal or
noisy-but-equal candidate is promoted (it is rejected by chance with probability at most `level`), and
only one worse beyond noise is held back. Why a paired t on per-task means:
- pairing by task removes what varies most between held-out tasks (their difficulty), so the test
  sees the checkpoints' difference, not the task mix; per-task means keep the k samples of one task
  from counting as independent evidence;
- the held-out score IS the mean over tasks, and the t-test tests exactly that mean (with the margin
  in the same score points); a sign or Wilcoxon test tests a median or a shift of ranks instead,
  drops the magnitudes of fractional scores (pass@k, partial credit) and cannot take a margin in mean
  points;
- per-task differences are bounded in [-1, 1], so with the tens to hundreds of tasks of a held-out
  suite their mean is close to normal; a percentile bootstrap would give a random verdict and
  under-covers with few tasks.
Degenerate cases: all differences equal (no spread) decide by the mean alone (p = 0 or 1); fewer than
two common tasks also decide by the mean alone, and the verdict says so; no common task rejects, with
what to do.

The brief phrased H0 as "the candidate is worse by more than the margin" (a non-inferiority test,
which would hold back every candidate that cannot prove itself equal, noisy-but-equal ones included);
the issue asks for "promoted only if ... not worse than the promoted one's beyond noise", so the
burden of proof is on "worse" here.

`promoted/` is replaced atomically: each promotion is built complete under RUN_DIR/.promoted/<name>/
and `promoted` is a relative symbolic link swapped in one rename (os.replace), so a reader or a crash
at any point sees either the old promoted checkpoint, whole, or the new one, whole.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import getpass
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import ClassVar, Iterator

from data_pipeline.atomic import atomic_write_json, atomic_write_text
from eval.checkpoints import checkpoint_of
from eval.records import Record
from trainer.curriculum import summary as curriculum_summary
from trainer.errors import UserError
from trainer.recipe import Recipe
from trainer.rundir import RunDir

PROMOTED = "promoted"  # RUN_DIR/promoted -> .promoted/<version> (a symbolic link)
VERSIONS = ".promoted"  # RUN_DIR/.promoted/<version>/: built complete, then linked
PROMOTION = "promotion"  # RUN_DIR/promotion/: verdicts and history
HISTORY = "history.jsonl"
GATE = "gate"  # Verdict.by of the automatic gate (a person's name otherwise)
TEST = "one-sided paired t-test on per-task mean differences"
# vLLM takes --max-lora-rank only from this list (vllm/config: possible_max_ranks)
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclasses.dataclass(kw_only=True)
class Verdict(Record):
    """promotion/round-XXXX.json (the gate's verdict on a round) and one line of history.jsonl (a
    verdict, or a promotion by hand: `by` names who asked)."""

    round: int
    promoted: bool  # this round is (became) the promoted checkpoint
    decision: str  # "promoted", "rejected", or "manual" (by hand, `flywheel promote`)
    reason: str  # one line: why
    incumbent: int | None = None  # the promoted round it was compared with (None: nothing to compare)
    metric: str = "success_rate"  # per-task metric compared (the recipe's curve.metric)
    candidate_score: float | None = None  # mean over the common tasks
    incumbent_score: float | None = None
    tasks: int = 0  # tasks both checkpoints were evaluated on
    difference: float | None = None  # mean of candidate - incumbent per task
    difference_ci95: list[float] | None = None  # two-sided 95% t interval of the difference
    upper_bound: float | None = None  # one-sided (1 - level) upper bound of the difference
    p_value: float | None = None  # one-sided p of "worse by more than margin"
    margin: float = 0.0
    level: float = 0.05
    test: str = TEST
    by: str = GATE  # "gate", or the user who promoted by hand
    at: float = 0.0  # unix time, s

    def line(self) -> str:
        """One line for the console and the report."""
        if self.difference is None:
            return f"round {self.round} {self.decision}: {self.reason}"
        lo, hi = self.difference_ci95 or (float("nan"), float("nan"))
        return (f"round {self.round} {self.decision}: {self.metric} {self.candidate_score:.3f} vs "
                f"{self.incumbent_score:.3f} (round {self.incumbent}) on {self.tasks} tasks, difference "
                f"{self.difference:+.3f} [{lo:+.3f}, {hi:+.3f}]: {self.reason}")


@dataclasses.dataclass(kw_only=True)
class Promoted(Record):
    """promoted/PROMOTED.json: which checkpoint promoted/ holds, and who put it there and why."""

    FILE: ClassVar[str] = "PROMOTED.json"

    round: int
    checkpoint: str  # the round directory it came from
    base_model: str  # the base the adapter applies to (a folder, or a hub id)
    adapter: str | None  # "adapter" (relative to promoted/), or None: the base model alone
    merged: str | None = None  # "merged" (relative to promoted/) when promote.merged
    metric: str = "success_rate"
    score: float | None = None  # its held-out score (the whole evaluation)
    score_ci95: list[float] | None = None
    served_name: str = ""  # the name SERVING.md serves it under
    at: float = 0.0  # unix time of the promotion, s
    by: str = GATE  # "gate", or the user who promoted it by hand
    reason: str = ""

    @classmethod
    def read(cls, folder: str | Path) -> "Promoted | None":
        p = Path(folder) / cls.FILE
        return cls.load(p) if p.exists() else None


# ---- where things are ------------------------------------------------------------------------------
def verdict_path(run: RunDir, r: int) -> Path:
    return run.root / PROMOTION / f"round-{r:04d}.json"


def history_path(run: RunDir) -> Path:
    return run.root / PROMOTION / HISTORY


def promoted_dir(run: RunDir) -> Path:
    return run.root / PROMOTED


def read_verdict(run: RunDir, r: int) -> Verdict | None:
    p = verdict_path(run, r)
    return Verdict.load(p) if p.exists() else None


def read_history(run: RunDir) -> list[Verdict]:
    p = history_path(run)
    if not p.exists():
        return []
    return [Verdict.from_dict(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]


def promoted_now(run: RunDir) -> Promoted | None:
    """What RUN_DIR/promoted/ holds now (None: nothing promoted yet)."""
    return Promoted.read(promoted_dir(run))


def promoted_round(run: RunDir) -> int | None:
    p = promoted_now(run)
    return None if p is None else p.round


# ---- the statistics --------------------------------------------------------------------------------
def per_task_scores(run: RunDir, r: int, metric: str) -> dict[str, float]:
    """Round r's held-out result per task (suite + task id), averaged over the task's samples:
    success fraction (`success_rate`) or mean score (`mean_score`). From eval/results.jsonl (one
    line per task and sample); a hand-made evaluation without it gives its summary's per-task values."""
    folder = run.round_dir(r) / "eval"
    results = folder / "results.jsonl"
    key = "success" if metric == "success_rate" else "score"
    if results.exists():
        sums: dict[str, list[float]] = {}
        for n, line in enumerate(results.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                value = float(row[key])
                task = f"{row.get('suite', '')}\t{row['task_id']}"
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{results}: line {n}: not a result row ({e!r}); "
                                f"rerun the evaluation of round {r}") from None
            if math.isfinite(value):
                sums.setdefault(task, []).append(value)
        return {t: sum(v) / len(v) for t, v in sums.items()}
    summary = run.eval_summary(r)
    per = (summary.per_task_success if metric == "success_rate" else summary.per_task) if summary else None
    return {f"\t{t}": float(v) for t, v in (per or {}).items()}


def _t_cdf(t: float, df: int) -> float:
    from scipy.stats import t as student

    return float(student.cdf(t, df))


def _t_quantile(q: float, df: int) -> float:
    from scipy.stats import t as student

    return float(student.ppf(q, df))


def paired_test(candidate: dict[str, float], incumbent: dict[str, float], margin: float, level: float) -> dict:
    """The one-sided paired t-test of the module docstring on the tasks both dicts hold. Returns
    {tasks, candidate_score, incumbent_score, difference, difference_ci95, upper_bound, p_value,
    worse} where `worse` is True when the candidate is worse than the incumbent by more than
    `margin` beyond noise (p < level)."""
    common = sorted(set(candidate) & set(incumbent))
    n = len(common)
    if n == 0:
        return {"tasks": 0, "candidate_score": None, "incumbent_score": None, "difference": None,
                "difference_ci95": None, "upper_bound": None, "p_value": None, "worse": True}
    d = [candidate[t] - incumbent[t] for t in common]
    mean = sum(d) / n
    cand = sum(candidate[t] for t in common) / n
    inc = sum(incumbent[t] for t in common) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    se = sd / math.sqrt(n)
    if n < 2 or se == 0.0:  # no spread to test against: the mean alone decides
        p = 0.0 if mean < -margin else 1.0
        ci, upper = [mean, mean], mean
    else:
        p = _t_cdf((mean + margin) / se, n - 1)
        half = _t_quantile(0.975, n - 1) * se
        ci, upper = [mean - half, mean + half], mean + _t_quantile(1 - level, n - 1) * se
    return {"tasks": n, "candidate_score": cand, "incumbent_score": inc, "difference": mean,
            "difference_ci95": ci, "upper_bound": upper, "p_value": p, "worse": p < level}


def _p_text(p: float | None) -> str:
    """`p=0.0312`, `p<1e-4`, or `p=-` (no test)."""
    return "p=-" if p is None else (f"p={p:.3g}" if p >= 1e-4 else "p<1e-4")


# ---- the gate --------------------------------------------------------------------------------------
@contextlib.contextmanager
def promotion_lock(run: RunDir) -> Iterator[None]:
    """One promotion at a time per run (the loop's or a Slurm refit job's gate, `flywheel promote`):
    waits for the other to finish. Not the run's own lock, so a rollback by hand works while
    `flywheel run` trains the next round."""
    folder = run.root / PROMOTION
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def gate(recipe: Recipe, run: RunDir, r: int) -> Verdict | None:
    """Round r's verdict after its evaluation: promoted (promoted/ now holds it) or rejected (promoted/
    unchanged). None when the gate is off (`promote.enabled: false`) or round r has no evaluation yet
    (a Slurm round with a missing eval shard). Idempotent: a gated round's recorded verdict is
    returned as it is."""
    if not recipe.promote.enabled:
        return None
    with promotion_lock(run):
        return _gate(recipe, run, r)


def _gate(recipe: Recipe, run: RunDir, r: int) -> Verdict | None:
    cfg = recipe.promote
    done = read_verdict(run, r)
    if done is not None:
        _append_history(run, done)  # a crash between the history and the verdict file left it out
        return done
    if run.manifest(r) is None or run.eval_summary(r) is None:
        return None
    metric = recipe.curve.metric
    current = promoted_now(run)
    if current is None and r > 0 and run.eval_summary(0) is not None:
        _gate(recipe, run, 0)  # the base is promoted first, so round r has something to beat
        current = promoted_now(run)
    base = {"round": r, "metric": metric, "margin": cfg.margin, "level": cfg.level, "at": time.time()}
    if current is None:
        why = ("round 0, the base model, is promoted initially" if r == 0
               else "nothing was promoted before (round 0 has no evaluation)")
        verdict = Verdict(promoted=True, decision="promoted", reason=why, **base)
    elif current.round == r:
        verdict = Verdict(promoted=True, decision="promoted", incumbent=r, reason="already promoted", **base)
    else:
        stats = paired_test(per_task_scores(run, r, metric), per_task_scores(run, current.round, metric),
                            cfg.margin, cfg.level)
        worse = stats.pop("worse")
        verdict = Verdict(promoted=not worse, decision="rejected" if worse else "promoted", incumbent=current.round,
                          reason=_reason(stats, worse, current.round, cfg.margin, cfg.level), **stats, **base)
    if verdict.promoted and (current is None or current.round != r):
        write_promoted(recipe, run, r, by=GATE, reason=verdict.reason)
    _append_history(run, verdict)
    atomic_write_json(verdict_path(run, r), verdict.to_dict())  # last: its presence means "gated"
    return verdict


def _reason(stats: dict, worse: bool, incumbent: int, margin: float, level: float) -> str:
    n = stats["tasks"]
    if n == 0:
        return (f"no held-out task in common with promoted round {incumbent}: nothing to compare "
                "(the eval suites changed?); promote it by hand with `flywheel promote` if it should be deployed")
    few = f" (only {n} common task{'s' if n != 1 else ''}: decided by the means alone)" if n < 2 else ""
    worse_by = f"worse by more than {margin:g}" if margin else "worse"
    if worse:
        return f"{worse_by} than round {incumbent} beyond noise ({_p_text(stats['p_value'])}, level {level:g}){few}"
    return f"not {worse_by} than round {incumbent} beyond noise ({_p_text(stats['p_value'])}, level {level:g}){few}"


def _append_history(run: RunDir, verdict: Verdict) -> None:
    """Append a verdict to history.jsonl, once: a gate verdict already there is not written again."""
    path = history_path(run)
    if verdict.by == GATE and any(v.by == GATE and v.round == verdict.round for v in read_history(run)):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(verdict.to_dict(), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- promoted/ -------------------------------------------------------------------------------------
def served_name(recipe: Recipe) -> str:
    """The name the promoted adapter is served under (the experiment's, safe for a command line)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", recipe.experiment).strip("-") or "flywheel"


def _base_text(base: Path) -> str:
    """The base model as SERVING.md names it: an absolute folder, or a hub id as it is."""
    return str(base.resolve()) if base.exists() else str(base)


def _lora_rank(adapter: Path) -> int | None:
    try:
        return int(json.loads((adapter / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def serving_text(recipe: Recipe, run: RunDir, promoted: Promoted, rank: int | None = None) -> str:
    """SERVING.md: the exact lines that serve the promoted checkpoint with vLLM and SGLang, naming
    the stable paths under RUN_DIR/promoted/ (the link, not the version it points at today).
    `rank`: the adapter's LoRA rank (vLLM reserves memory for --max-lora-rank)."""
    root = run.root.resolve() / PROMOTED
    name, base = promoted.served_name, promoted.base_model
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(promoted.at))
    lines = [f"# Serving the promoted checkpoint of {recipe.experiment}", "",
             f"Promoted: round {promoted.round} ({promoted.checkpoint}), {when}, by {promoted.by}: {promoted.reason}.",
             f"Held-out {promoted.metric}: " + ("-" if promoted.score is None else f"{promoted.score:.3f}")
             + (f" (95% interval {promoted.score_ci95[0]:.3f}-{promoted.score_ci95[1]:.3f})" if promoted.score_ci95 else ""),
             ""]
    # A recipe's own chat template (model.chat_template) is what the rounds trained and were evaluated
    # with; a server reads the base model's template unless told otherwise (vLLM and SGLang take the
    # tokenizer of the base, not of a LoRA adapter), so the lines pass it.
    template = None
    if recipe.model.chat_template:
        template = (root / promoted.adapter / "chat_template.jinja") if promoted.adapter else \
            Path(recipe.model.chat_template).resolve()
    flag = f" --chat-template {template}" if template else ""
    if template:
        lines += [f"The rounds were trained and evaluated with the recipe's chat template, not the base model's own: "
                  f"the lines pass it (`{template}`).", ""]
    if promoted.adapter is None:
        lines += [f"Round {promoted.round} is the base model itself: there is no adapter; serve the base.", "",
                  "vLLM:", "", "```", f"vllm serve {base} --served-model-name {name}{flag}", "```", "",
                  "SGLang:", "", "```",
                  f"python -m sglang.launch_server --model-path {base} --served-model-name {name}{flag}", "```", ""]
    else:
        adapter = root / promoted.adapter
        rank = rank or 16
        vllm_rank = next((v for v in VLLM_RANKS if v >= rank), rank)
        lines += [f"The LoRA adapter (with its tokenizer) is `{adapter}`; its base model is `{base}`.",
                  f"Requests name the model `{name}`.", "",
                  "vLLM:", "", "```",
                  f"vllm serve {base} --enable-lora --lora-modules {name}={adapter} --max-lora-rank {vllm_rank}{flag}",
                  "```", "", "SGLang:", "", "```",
                  f"python -m sglang.launch_server --model-path {base} --enable-lora --lora-paths {name}={adapter} "
                  f"--max-lora-rank {rank}{flag}",
                  "```", ""]
        if promoted.merged:
            merged = root / promoted.merged
            lines += ["Merged weights (the adapter folded into the base; a plain model folder with the tokenizer and "
                      "chat template it was trained with, no LoRA flags):", "",
                      "```", f"vllm serve {merged} --served-model-name {name}",
                      f"python -m sglang.launch_server --model-path {merged} --served-model-name {name}", "```", ""]
    lines += ["This folder is replaced as a whole when another round is promoted (a symbolic link swapped in one "
              "step); a server started on these paths keeps what it loaded.", ""]
    return "\n".join(lines)


def _save_tokenizer(recipe: Recipe, base: Path, dest: Path) -> None:
    """The base's tokenizer next to the adapter, with the recipe's chat template when it sets one
    (the template the checkpoint was trained and evaluated with)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True,
                                              trust_remote_code=recipe.model.trust_remote_code)
    if recipe.model.chat_template:
        tokenizer.chat_template = Path(recipe.model.chat_template).read_text()
    tokenizer.save_pretrained(str(dest))


def write_promoted(recipe: Recipe, run: RunDir, r: int, by: str, reason: str) -> Promoted:
    """Make round r the promoted checkpoint: build its folder complete under .promoted/, then swap
    the `promoted` link to it in one rename; the old version is removed after the swap."""
    manifest = run.manifest(r)
    base, adapter = checkpoint_of(run.round_dir(r), manifest)  # as trainer.round.checkpoint_paths
    summary = run.eval_summary(r)
    metric = recipe.curve.metric
    score = getattr(summary, metric, None) if summary else None
    ci = (summary.ci95 if metric == "success_rate" else summary.mean_score_ci95) if summary else None
    info = Promoted(round=r, checkpoint=str(run.round_dir(r).resolve()), base_model=_base_text(base),
                    adapter="adapter" if adapter else None, merged="merged" if adapter and recipe.promote.merged else None,
                    metric=metric, score=score, score_ci95=ci, served_name=served_name(recipe), at=time.time(),
                    by=by, reason=reason)
    versions = run.root / VERSIONS
    version = f"round-{r:04d}-{time.time_ns()}"
    tmp = versions / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if adapter is not None:
        shutil.copytree(adapter, tmp / "adapter")
        _save_tokenizer(recipe, base, tmp / "adapter")
        if recipe.promote.merged:
            from trainer.merge import merge_adapter

            merge_adapter(base, adapter, tmp / "merged")
            _save_tokenizer(recipe, base, tmp / "merged")  # the template it was trained with, as the adapter's
    atomic_write_text(tmp / Promoted.FILE, json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    rank = _lora_rank(tmp / "adapter") if adapter is not None else None
    atomic_write_text(tmp / "SERVING.md", serving_text(recipe, run, info, rank))
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    os.rename(tmp, versions / version)
    _swap_link(run, version)
    return info


def _swap_link(run: RunDir, version: str) -> None:
    """Point RUN_DIR/promoted at .promoted/<version> in one rename, then drop the other versions."""
    link = promoted_dir(run)
    tmp_link = run.root / f".{PROMOTED}.link.tmp"
    tmp_link.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{version}", tmp_link)
    if link.exists() and not link.is_symlink():  # a folder put there by hand: it cannot be swapped over
        shutil.rmtree(link)
    os.replace(tmp_link, link)
    fd = os.open(run.root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in (run.root / VERSIONS).iterdir():
        if old.name != version:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


# ---- by hand: `flywheel promote` ----------------------------------------------------------------------
def user_name() -> str:
    """Who asked: the user name of the environment (USER, LOGNAME, else the login name)."""
    for var in ("USER", "LOGNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def promote_by_hand(run_dir: str | Path, r: int, reason: str, user: str | None = None) -> Verdict:
    """`flywheel promote RUN_DIR --round N --reason TEXT`: make round N the promoted checkpoint (a
    rollback or a roll forward), recorded in promotion/history.jsonl with who asked and why. Refused
    for a round without a checkpoint or an evaluation."""
    from trainer.recipe import RESOLVED_NAME, load_recipe

    run = RunDir(run_dir)
    resolved = run.root / RESOLVED_NAME
    if not resolved.exists():
        raise UserError(f"{run.root}: not a run directory (no {RESOLVED_NAME}); give the RUN_DIR `flywheel run` "
                        "or `flywheel submit` wrote")
    if not reason or not reason.strip():
        raise UserError("--reason is empty: say why this round is promoted by hand (it is recorded)")
    if run.manifest(r) is None:
        done = run.completed_rounds()
        raise UserError(f"round {r} has no checkpoint ({run.round_dir(r) / 'manifest.json'} missing); "
                        f"rounds with one: {', '.join(map(str, done)) or 'none'}")
    if run.eval_summary(r) is None:
        raise UserError(f"round {r} has no evaluation ({run.round_dir(r) / 'eval' / 'summary.json'} missing): "
                        f"evaluate it first (`flywheel eval {resolved} --checkpoint {run.round_dir(r)}`)")
    recipe = load_recipe(resolved)
    user = user or user_name()
    with promotion_lock(run):
        before = promoted_round(run)
        write_promoted(recipe, run, r, by=user, reason=reason.strip())
        summary = run.eval_summary(r)
        verdict = Verdict(round=r, promoted=True, decision="manual", incumbent=before, metric=recipe.curve.metric,
                          candidate_score=getattr(summary, recipe.curve.metric, None),
                          reason=reason.strip(), margin=recipe.promote.margin, level=recipe.promote.level,
                          test="by hand", by=user, at=time.time())
        _append_history(run, verdict)
    return verdict


# ---- the parent of the next round -----------------------------------------------------------------
def parent_round(recipe: Recipe, run: RunDir, r: int) -> int:
    """The round round r trains (and collects) from: under `promote.parent: promoted` (and the gate
    on) the promoted checkpoint when one is promoted, else the latest round, r - 1."""
    if recipe.promote.enabled and recipe.promote.parent == "promoted":
        p = promoted_round(run)
        if p is not None and p < r and run.manifest(p) is not None:
            return p
    return r - 1


# ---- the report's per-round table ------------------------------------------------------------------
def _labels_text(labels: dict | None) -> str:
    if not labels:
        return "-"
    parts = [f"{k} {labels.get(k, 0)}" for k in ("own", "file", "command") if labels.get(k)]
    if labels.get("quarantined"):
        parts.append(f"quarantined {labels['quarantined']}")
    if labels.get("unlabeled_kept") or labels.get("unlabeled_dropped"):
        parts.append(f"unlabeled kept {labels.get('unlabeled_kept', 0)} / dropped {labels.get('unlabeled_dropped', 0)}")
    return ", ".join(parts) or "none"


def _trained_on(m) -> str:
    """Dataset rows the round trained on, and the trajectories selected when they differ (SFT keeps
    only successes under data.success_only; DPO rows are pairs)."""
    rows = (m.metrics or {}).get("rows")
    if rows is None or rows == m.trajectories_used:
        return str(m.trajectories_used)
    return f"{rows} (of {m.trajectories_used})"


def report_rows(recipe: Recipe, run: RunDir) -> list[dict]:
    """One row per round for report.md's rounds table (eval/report.py renders it): round, parent,
    new records, labels by source, rows trained on, the collection's difficulty under a
    collect.curriculum, held-out score with its 95% interval, the verdict. Older manifests (and
    rounds without live logs or labels) have no `logs` / `labels`."""
    rows = []
    metric = recipe.curve.metric
    for r in run.completed_rounds():
        m = run.manifest(r)
        logs = m.logs or {}
        new = logs.get("accepted") if logs.get("accepted") is not None else (
            sum((m.store_batches or {}).get(b, 0) for b in (m.new_batches or [])) if r > 0 else None)
        s = run.eval_summary(r)
        score, ci = None, None
        if s is not None:
            score = getattr(s, metric, None)
            ci = s.ci95 if metric == "success_rate" else s.mean_score_ci95
        v = read_verdict(run, r)
        verdict = "-" if v is None else ("promoted" if v.promoted else f"rejected: {v.reason}")
        if v is not None and v.promoted and v.incumbent is not None and v.incumbent != r and v.p_value is not None:
            verdict += f" ({_p_text(v.p_value)})"
        rows.append({"round": r, "parent": m.parent.replace("round-", "").lstrip("0") or "0" if m.parent else "-",
                     "new_records": "-" if new is None else str(new), "labels": _labels_text(m.labels),
                     "trained_on": _trained_on(m) if r > 0 else "-",
                     "score": "not evaluated" if score is None else (
                         f"{score:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")),
                     "verdict": verdict,
                     **({"curriculum": curriculum_summary(m.curriculum)} if m.curriculum else {})})
    return rows


def report_promoted_line(recipe: Recipe, run: RunDir) -> str | None:
    """The report's line on the checkpoint promoted now (None: the gate is off and nothing promoted)."""
    p = promoted_now(run)
    if p is None:
        return None if not recipe.promote.enabled else "Promoted now: nothing yet (no round has been gated)."
    what = "the base model (no adapter)" if p.adapter is None else f"`{promoted_dir(run) / p.adapter}`"
    return (f"Promoted now: **round {p.round}**, {what}, by {p.by}: {p.reason}. "
            f"How to serve it: `{promoted_dir(run) / 'SERVING.md'}`.")
