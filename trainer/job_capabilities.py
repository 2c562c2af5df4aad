"""What the job-side commands of this build (`flywheel train`, `flywheel eval`) support, sniffed from
their `--help`, so `flywheel submit` renders Slurm job scripts that the build can run
(trainer/sbatch.py reads it)."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Capabilities:
    """Which job-side commands this build has. The scripts use the staged / sharded forms; the other
    forms keep a chain working on a build that lacks them."""
    train_stages: bool = True   # flywheel train --stage prepare|fit|finalize
    eval_cli: bool = True       # flywheel eval RECIPE --checkpoint DIR
    eval_shards: bool = True    # flywheel eval ... --shard I/N


def _help_text(func) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            func(["--help"])
        except SystemExit:
            pass
    return out.getvalue()


@lru_cache(maxsize=1)
def detect_capabilities() -> Capabilities:
    from eval.cli import eval_main
    from trainer.round import main as train_main

    return Capabilities(train_stages="--stage" in _help_text(train_main), eval_cli=True,
                        eval_shards="--shard" in _help_text(eval_main))
