"""The `flywheel` command: the whole command line of flywheel, apart from the library.

Each subcommand is one module of this package (trainer/cli/run.py for `flywheel run`, ...) with a
`parser()` that builds its argparse parser and a short `main(argv) -> int` that parses, calls one
library function and prints its result; this table only dispatches. No library module imports this
package (tests/test_import_graph.py checks it).

Errors meant for the user (bad recipe, unreadable path, ...) derive from one root,
`data_pipeline.errors.FlywheelError`, and are printed as one clear message without a traceback."""
from __future__ import annotations

import errno
import importlib
import sys

from data_pipeline.errors import FlywheelError

# name -> one-line description. Keep the list in the order a user meets the commands; the module
# trainer/cli/<name>.py implements the command.
COMMANDS: dict[str, str] = {
    "run": "Run an experiment locally: round 0 eval, then collect -> ingest -> train -> eval -> curve per round",
    "ingest": "Ingest trajectory logs into an experience store",
    "store": "Inspect an experience store (store stats DIR)",
    "dataset": "Build an SFT / KTO / DPO / RL dataset from a store",
    "train": "Run the next training round of an experiment",
    "eval": "Evaluate a checkpoint on held-out suites",
    "serve": "Serve a checkpoint as an OpenAI-compatible chat-completions endpoint",
    "curve": "Fit the improvement curve of one or more runs",
    "compare": "Compare runs: table and overlay plot, no server needed",
    "track": "Log a run's finished stages not logged yet (e.g. separate eval jobs) to W&B and tracking/",
    "recipe": "Show a resolved recipe, check recipe files, or regenerate the README's recipe key table",
    "promote": "Make round N of a run the promoted checkpoint by hand (rollback / roll forward), with a reason",
    "submit": "Render and submit the Slurm job chain of an experiment (--every: one round per period; --stop)",
    "status": "Where a run stands: Slurm jobs, schedule, last round and score, promotion, logs waiting",
    "study": "Run the experience study (accumulate / latest / retry / reset arms)",
    "verify": "Verify checksums of a run directory's store and checkpoints",
    "model": "Local model folders: import a GGUF model (model import FILE.gguf --out DIR)",
}


# errno -> what the user is told when a write fails for lack of room or rights
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


def version() -> str:
    """The installed flywheel package's version."""
    from importlib.metadata import PackageNotFoundError, version as package_version

    try:
        return package_version("flywheel")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def command_module(name: str):
    """The module of command `name` (trainer/cli/<name>.py)."""
    return importlib.import_module(f"{__name__}.{name}")


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: flywheel [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {n:<{width}}  {help_}" for n, help_ in COMMANDS.items()]
    lines += ["", "flywheel COMMAND --help for the arguments of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"flywheel {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"flywheel: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(name, command_module(name).main, rest)


def run_command(name: str, func, argv: list[str]) -> int:
    """func(argv) with the user's errors printed as one line (exit 2) instead of a traceback."""
    try:
        return int(func(argv) or 0)
    except FlywheelError as e:
        print(f"flywheel {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flywheel {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full / read-only / no permission: name the path, no traceback
        if e.errno not in _STORAGE_ERRNOS:
            raise
        print(f"flywheel {name}: error: cannot write {e.filename or '(unknown path)'}: {_STORAGE_ERRNOS[e.errno]} "
              f"({e.strerror}); completed rounds and committed batches are intact, rerun to resume", file=sys.stderr)
        return 2
