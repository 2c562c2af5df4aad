"""The `flywheel` command. Each subcommand lives next to the code it drives as a function
`main(argv: list[str]) -> int` that parses its own arguments; this table only dispatches.

Errors meant for the user (bad recipe, unreadable path, ...) are raised as `UserError` or one of
the packages' own error types listed in `_USER_ERRORS`, and printed as one clear message without a
traceback."""
from __future__ import annotations

import errno
import importlib
import sys

# name -> "module:function". Keep the list in the order a user meets the commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("trainer.loop:main", "Run an experiment locally: round 0 eval, then collect -> ingest -> train -> eval -> curve per round"),
    "ingest": ("data_pipeline.cli:ingest_main", "Ingest trajectory logs into an experience store"),
    "store": ("data_pipeline.cli:store_main", "Inspect an experience store (store stats DIR)"),
    "dataset": ("data_pipeline.cli:dataset_main", "Build an SFT / KTO / DPO / RL dataset from a store"),
    "train": ("trainer.round:main", "Run the next training round of an experiment"),
    "eval": ("eval.cli:eval_main", "Evaluate a checkpoint on held-out suites"),
    "serve": ("eval.serve:main", "Serve a checkpoint as an OpenAI-compatible chat-completions endpoint"),
    "curve": ("eval.cli:curve_main", "Fit the improvement curve of one or more runs"),
    "compare": ("trainer.compare:main", "Compare runs: table and overlay plot, no server needed"),
    "track": ("trainer.tracking:main", "Log a run's finished stages not logged yet (e.g. separate eval jobs) to W&B and tracking/"),
    "recipe": ("trainer.recipe_cli:main", "Show a resolved recipe or check recipe files"),
    "submit": ("trainer.submit:main", "Render and submit the Slurm job chain of an experiment"),
    "study": ("trainer.study:main", "Run the experience study (accumulate / latest / retry / reset arms)"),
    "verify": ("trainer.verify:main", "Verify checksums of a run directory's store and checkpoints"),
    "model": ("trainer.model_import:main", "Local model folders: import a GGUF model (model import FILE.gguf --out DIR)"),
}


# errno -> what the user is told when a write fails for lack of room or rights
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


class UserError(Exception):
    """An error caused by input or environment that the user can fix; printed without traceback."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    for mod, name in [("trainer.recipe", "RecipeError"), ("data_pipeline.schema", "SchemaError"),
                      ("data_pipeline.errors", "IngestError"), ("eval.errors", "EvalError"),
                      ("eval.models", "ModelLoadError")]:
        try:
            types.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: flywheel COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {n:<{width}}  {help_}" for n, (_, help_) in COMMANDS.items()]
    lines += ["", "flywheel COMMAND --help for the arguments of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"flywheel: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    mod_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(mod_name), func_name)
    except (ImportError, AttributeError) as e:
        print(f"flywheel {name}: not available in this build ({e})", file=sys.stderr)
        return 2
    try:
        return int(func(rest) or 0)
    except _user_error_types() as e:
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


if __name__ == "__main__":
    # `python -m trainer.cli`: dispatch through the imported module, so that the UserError the
    # commands raise (trainer.cli.UserError) is the one caught above, not __main__.UserError
    sys.exit(importlib.import_module("trainer.cli").main())
