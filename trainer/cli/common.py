"""What the command modules share: the `--quiet` option and the silencing it asks for."""
from __future__ import annotations

import argparse
import logging
import os
import warnings

QUIET_HELP = ("no progress bars, and no warnings or log chatter from transformers, datasets, accelerate, "
              "deepspeed or Python's warnings module; errors still print")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def silence_libraries() -> None:
    """Switch off the libraries' own noise for the rest of the process: transformers' and datasets'
    progress bars and warnings, every tqdm bar (TQDM_DISABLE, read by tqdm >= 4.66 at each bar, so
    it reaches child processes too), accelerate/deepspeed log warnings and Python warnings."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["DATASETS_VERBOSITY"] = "error"
    warnings.simplefilter("ignore")
    os.environ["PYTHONWARNINGS"] = "ignore"  # torchrun children of a multi-process fit
    for name in ("transformers", "datasets", "accelerate", "deepspeed", "DeepSpeed", "torch", "trl", "peft",
                 "huggingface_hub"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        # DeepSpeed sets its logger's level again when imported (to WARNING); a filter stays
        logger.addFilter(_errors_only)
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()


class IngestParser(argparse.ArgumentParser):
    """argparse that raises IngestError instead of exiting, so the dispatcher prints one clean
    message (the data-side commands: ingest, store, dataset)."""

    def error(self, message: str):
        from data_pipeline.errors import IngestError

        raise IngestError(f"{message}\n{self.format_usage().strip()}")


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed arguments; with `--quiet`, the libraries are silenced before anything loads them.
    Positionals may come after options (`flywheel submit R.yaml --every 1d --dry-run seed=1`: the
    override is still one), except in commands with sub-commands, which argparse cannot intermix."""
    subcommands = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    args = parser.parse_args(argv) if subcommands else parser.parse_intermixed_args(argv)
    if getattr(args, "quiet", False):
        silence_libraries()
    return args


def add_recipe(parser: argparse.ArgumentParser, recipe_help: str = "recipe .yaml file",
               overrides_help: str = "key.sub=value recipe overrides", fork: bool = True) -> None:
    """The arguments of a command that runs a recipe: the file, its overrides and (`fork`) --fork."""
    parser.add_argument("recipe", help=recipe_help)
    parser.add_argument("overrides", nargs="*", help=overrides_help)
    if fork:
        parser.add_argument("--fork", action="store_true", help="allow a changed recipe in an existing run directory")
