"""The command line reads as one tool: every command is a module of trainer/cli/ with a parser whose
every option says what it does, `--version`, `--quiet` on the long commands, and help text whose
descriptions end where their sentence ends."""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from contextlib import redirect_stdout
from importlib.metadata import version

import pytest

from trainer.cli import COMMANDS, command_module, main

LONG_COMMANDS = ("run", "train", "eval", "serve", "study", "ingest", "dataset", "curve")
EXTRA_PARSERS = ("trainer.cli.submit:job_parser", "trainer.cli.external:parser")


def _parsers():
    for name in COMMANDS:
        yield f"flywheel {name}", command_module(name).parser()
    for target in EXTRA_PARSERS:
        mod, func = target.split(":")
        yield target, getattr(__import__(mod, fromlist=[func]), func)()


def _walk(parser: argparse.ArgumentParser, where: str):
    """(where, parser, action) of every action of the parser and of its subcommands' parsers."""
    for action in parser._actions:
        yield where, parser, action
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{where} {sub_name}")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_is_a_module_with_a_parser_and_main(name):
    mod = command_module(name)
    assert mod.__name__ == f"trainer.cli.{name}"
    assert callable(mod.main) and isinstance(mod.parser(), argparse.ArgumentParser)
    assert mod.parser().prog == f"flywheel {name}"


def test_every_option_of_every_command_has_help():
    missing = [f"{where}: {action.option_strings or action.dest}" for label, parser in _parsers()
               for where, _, action in _walk(parser, label)
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert missing == []


def test_descriptions_end_with_their_sentence():
    cut = []
    for label, parser in _parsers():
        for where, p, _ in _walk(parser, label):
            text = (p.description or "").strip()
            if not text or not text.endswith((".", ")")) or text.endswith(("e.g.", "i.e.")):
                cut.append(f"{where}: {text!r}")
    assert sorted(set(cut)) == []


@pytest.mark.parametrize("name", LONG_COMMANDS)
def test_long_commands_take_quiet(name):
    options = {opt for _, _, a in _walk(command_module(name).parser(), name) for opt in a.option_strings}
    assert "--quiet" in options


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_prints_the_whole_description(name, capsys):
    with pytest.raises(SystemExit) as e:
        command_module(name).parser().parse_args(["--help"])
    assert e.value.code == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also after hyphens
    assert "".join(command_module(name).parser().description.split()) in out


def test_version_is_the_installed_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"flywheel {version('flywheel')}"
    out = subprocess.run([sys.executable, "-m", "trainer.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"flywheel {version('flywheel')}"


def test_usage_lists_every_command_and_unknown_is_exit_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS) and "--version" in out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err


def test_user_errors_of_every_package_share_one_root():
    from data_pipeline.errors import FlywheelError, HeldoutLeakError, IngestError
    from data_pipeline.schema import SchemaError
    from eval.curve_inputs import CurveInputError
    from eval.errors import EvalError
    from eval.external import ExternalSuiteError
    from eval.models import ModelLoadError, TemplateError
    from trainer.common import TrainingDiverged
    from trainer.errors import UserError
    from trainer.recipe import RecipeError
    from trainer.round import RoundFailed
    from trainer.verify import CheckpointCorrupted

    for err in (IngestError, HeldoutLeakError, SchemaError, EvalError, ModelLoadError, TemplateError, RecipeError,
                CurveInputError, ExternalSuiteError, UserError, TrainingDiverged, CheckpointCorrupted, RoundFailed):
        assert issubclass(err, FlywheelError), err
    for err in (SchemaError, ModelLoadError, CurveInputError, ExternalSuiteError):  # `except ValueError` still works
        assert issubclass(err, ValueError), err
    # internal control flow stays out of the family: it never reaches the user as such
    from data_pipeline.adapters.common import MappingError
    from eval.serve import RequestError
    assert not issubclass(MappingError, FlywheelError) and not issubclass(RequestError, FlywheelError)


def test_dispatcher_prints_any_flywheel_error_as_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "absent")]) == 2  # UserError
    err = capsys.readouterr().err
    assert err.startswith("flywheel verify: error: ") and "is not a directory" in err and "Traceback" not in err
    assert main(["recipe", "show", str(tmp_path / "absent.yaml")]) == 2  # RecipeError
    err = capsys.readouterr().err
    assert err.startswith("flywheel recipe: error: ") and err.count("\n") == 1


def test_quiet_silences_the_libraries():
    """In a fresh process: after `silence_libraries` transformers logs errors only, datasets and
    tqdm draw no bars, and Python warnings are not shown."""
    code = (
        "import io, logging, sys, warnings\n"
        "from trainer.cli.common import silence_libraries\n"
        "silence_libraries()\n"
        "import datasets, transformers\n"
        "from tqdm import tqdm\n"
        "from transformers.utils import logging as hf\n"
        "assert hf.get_verbosity() == logging.ERROR\n"
        "assert not hf.is_progress_bar_enabled() and not datasets.utils.logging.is_progress_bar_enabled()\n"
        "buf = io.StringIO()\n"
        "for _ in tqdm(range(3), file=buf): pass\n"
        "assert buf.getvalue() == '', buf.getvalue()\n"
        "warnings.warn('noise', UserWarning)\n"
        "assert logging.getLogger('accelerate').getEffectiveLevel() == logging.ERROR\n"
        "import deepspeed\n"  # it resets its own logger's level on import
        "from deepspeed.utils import logger as ds_logger\n"
        "ds_logger.warning('ds-noise'); ds_logger.error('ds-error')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    both = out.stdout + out.stderr  # DeepSpeed logs to stdout
    assert "noise" not in both and "ds-error" in both  # errors still print


def test_help_of_every_command_through_the_dispatcher(capsys):
    for name in COMMANDS:
        buf = io.StringIO()
        with redirect_stdout(buf):
            try:
                rc = main([name, "--help"])
            except SystemExit as e:
                rc = e.code
        assert rc == 0 and buf.getvalue().startswith(f"usage: flywheel {name}")


@pytest.mark.parametrize("name, flags", [("run", ["--quiet"]), ("train", ["--quiet"]), ("study", ["--quiet"]),
                                         ("submit", ["--every", "1d", "--dry-run"]),
                                         ("eval", ["--checkpoint", "ck", "--quiet"])])
def test_overrides_may_follow_the_options(name, flags):
    """`flywheel submit R.yaml --every 1d --dry-run run_dir=X`: the override after the options is
    still an override (it was an "unrecognized arguments" error)."""
    from trainer.cli.common import parse

    args = parse(command_module(name).parser(), ["r.yaml", "seed=1", *flags, "run_dir=/tmp/x"])
    assert (args.recipe, args.overrides) == ("r.yaml", ["seed=1", "run_dir=/tmp/x"])
