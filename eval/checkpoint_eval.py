"""One checkpoint on the held-out suites, whole or as shards (`flywheel eval`, trainer/cli/eval.py).
The command reads the recipe; this module takes its `EvalConfig` and `LoadOptions` as values."""
from __future__ import annotations

from pathlib import Path

from eval.checkpoints import resolve_checkpoint
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.models import LoadOptions


def select_suites(cfg: EvalConfig, names: list[str]) -> EvalConfig:
    """Only the named suites: the recipe's settings when it lists them, else the suite's defaults."""
    from eval.config import SuiteConfig
    from eval.external import is_external_suite
    from eval.suites import SUITES

    picked = []
    for name in names:
        mine = [s for s in cfg.suites if s.name == name]
        if not mine and name not in SUITES and not is_external_suite(name):
            raise EvalError(f"--suite {name}: not in the recipe and not a built-in suite "
                            f"({', '.join(sorted(SUITES))}) or an external suite .yaml")
        picked += mine or [SuiteConfig(name=name, difficulty=SUITES[name].default_difficulty if name in SUITES else 1)]
    return cfg.model_copy(update={"suites": picked})


def results_dir(checkpoint: str | Path, suites: list[str] = ()) -> Path:
    """Where a checkpoint's evaluation goes by default: DIR/eval, or DIR/eval-NAME+NAME for some suites
    (so the full evaluation stays)."""
    return Path(checkpoint) / ("eval" if not suites else "eval-" + "+".join(Path(s).stem for s in suites))


def evaluate_checkpoint(cfg: EvalConfig, load: LoadOptions, checkpoint: str | Path, *, experiment: str,
                        out: Path | None = None, suites: list[str] = (), shard: tuple[int, int] | None = None,
                        merge_only: int | None = None, endpoint: str | None = None,
                        progress: bool = True, wrap=None) -> tuple[dict | None, Path, Path | None]:
    """Evaluate `checkpoint` (a round dir, a model folder or an adapter folder) on `cfg`'s suites, or
    only on `suites`. Returns (summary, results folder, shard file): the summary is None when
    `shard` (I, N) was evaluated and other shards are still missing; `merge_only` N only merges N
    finished shards. `wrap` (policy -> policy), when given, wraps the loaded policy (eval.memory's
    MemoryPolicy); a wrapped policy's `stats()` go to memory.json (a shard's: memory-shards/I-of-N.json)."""
    from eval.evaluator import evaluate, evaluate_shard, merge_shards, missing_shards
    from eval.policy import policy_for

    if suites:
        cfg = select_suites(cfg, list(suites))
    ckpt = Path(checkpoint)
    out = out or results_dir(ckpt, list(suites))
    if merge_only is not None:
        return merge_shards(out, merge_only), out, None
    base, adapter = resolve_checkpoint(ckpt)
    try:
        policy = policy_for((base, adapter), cfg.policy, load, f"{experiment}/{ckpt.resolve().name}")
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot load checkpoint {adapter or base}: {e}") from None
    if wrap is not None:
        policy = wrap(policy)
    label = str(adapter or base)
    if shard is None:
        summary = evaluate(policy, cfg, out, checkpoint=label, progress=progress, endpoint=endpoint)
        _memory_stats(policy, out / "memory.json")
        return summary, out, None
    path = evaluate_shard(policy, cfg, out, shard, checkpoint=label, progress=progress, endpoint=endpoint)
    _memory_stats(policy, out / "memory-shards" / f"{shard[0]}-of-{shard[1]}.json")
    if missing_shards(out, shard[1]):
        return None, out, path
    return merge_shards(out, shard[1]), out, path


def _memory_stats(policy, path: Path) -> None:
    stats = getattr(policy, "stats", None)
    if stats is not None:
        from data_pipeline.atomic import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, stats())
