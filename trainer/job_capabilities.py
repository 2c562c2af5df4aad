"""What the job-side commands of this build (`flywheel train`, `flywheel eval`) support, read from
the library functions they call, so `flywheel submit` renders Slurm job scripts that the build can run
(trainer/sbatch.py reads it)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Capabilities:
    """Which job-side commands this build has. The scripts use the staged / sharded forms; the other
    forms keep a chain working on a build that lacks them."""
    train_stages: bool = True   # flywheel train --stage prepare|fit|finalize
    eval_cli: bool = True       # flywheel eval RECIPE --checkpoint DIR
    eval_shards: bool = True    # flywheel eval ... --shard I/N


@lru_cache(maxsize=1)
def detect_capabilities() -> Capabilities:
    """What the library behind `flywheel train` / `flywheel eval` (trainer/cli/) can do in this build."""
    import inspect

    from eval.checkpoint_eval import evaluate_checkpoint
    from trainer import round as round_module

    return Capabilities(train_stages="fit" in getattr(round_module, "STAGES", ()), eval_cli=True,
                        eval_shards="shard" in inspect.signature(evaluate_checkpoint).parameters)
