"""Broken recipes through the real `flywheel` entry point: each gives exit 2 and ONE message that
names the file and the key (or line), and no traceback reaches the user."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import main as flywheel
from tests.paths import REPO, TESTS

BROKEN = TESTS / "recipes_broken"
ROOT = REPO

# file -> (the file the message must name, pieces the message must hold)
CASES = {
    "misspelled_key.yaml": ("misspelled_key.yaml:5", ["'train.lerning_rate'", "did you mean 'learning_rate'"]),
    "misspelled_section.yaml": ("misspelled_section.yaml:4", ["'trian'", "did you mean 'train'"]),
    "wrong_type.yaml": ("wrong_type.yaml:5", ["'train.rounds'", "expected int", "'five'"]),
    "negative_learning_rate.yaml": ("negative_learning_rate.yaml:5", ["'train.learning_rate'", "greater than 0", "-0.001"]),
    "missing_model.yaml": ("missing_model.yaml", ["'model.name_or_path'", "required"]),
    "section_as_value.yaml": ("section_as_value.yaml:2", ["'model'", "section", "name_or_path"]),
    "wrong_choice.yaml": ("wrong_choice.yaml:5", ["'train.method'", "'sft' | 'kto' | 'dpo' | 'grpo'", "did you mean 'sft'"]),
    "impossible_max_steps.yaml": ("impossible_max_steps.yaml:5", ["'train.max_steps'", "-1", "at least 1"]),
    "bad_slurm_time.yaml": ("bad_slurm_time.yaml:5", ["'slurm.time_train'", "'4h'", "HH:MM:SS"]),
    "unknown_suite.yaml": ("unknown_suite.yaml:6", ["'eval.suites[0].name'", "did you mean 'maze'"]),
    "missing_base.yaml": ("missing_base.yaml:1", ["'base'", "no_such_base.yaml", "does not exist"]),
    "cycle_a.yaml": ("cycle_", ["'base'", "cycle of base recipes", "cycle_a.yaml", "cycle_b.yaml"]),
    "syntax_error.yaml": ("syntax_error.yaml:6", ["YAML syntax error", "line 5"]),
    "tab_indented.yaml": ("tab_indented.yaml:3", ["indented with a tab", "only spaces"]),
    "python_tag.yaml": ("python_tag.yaml:4", ["tag refused", "!!python/object/apply:os.system", "plain data"]),
    "duplicate_key.yaml": ("duplicate_key.yaml:6", ["'train.rounds'", "appears twice", "lines 5 and 6"]),
    "child_of_bad_base.yaml": ("bad_key_in_base.yaml:5", ["'train.warmup'", "base of", "child_of_bad_base.yaml", "did you mean 'warmup_ratio'"]),
    "bool_key.yaml": ("bool_key.yaml:4", ["'on'", "bool", "quote it"]),
    "empty.yaml": ("empty.yaml", ["empty"]),
}


def test_every_fixture_has_a_case():
    files = {p.name for p in BROKEN.glob("*.yaml")}
    assert files - {"cycle_b.yaml", "bad_key_in_base.yaml"} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("command", ["show", "check"])
def test_broken_recipe_gives_one_clear_message(name, command, capsys):
    where, pieces = CASES[name]
    rc = flywheel(["recipe", command, str(BROKEN / name)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err + out
    problem_lines = [ln for ln in err.splitlines() if where in ln]
    assert len(problem_lines) == 1, err
    for piece in pieces:
        assert piece in problem_lines[0], f"{piece!r} not in {problem_lines[0]!r}"
    if command == "show":
        assert len(err.strip().splitlines()) == 1, f"expected one message line:\n{err}"


def test_python_tag_runs_nothing(tmp_path, capsys):
    sentinel = tmp_path / "code-ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"experiment: x\nmodel: !!python/object/apply:os.system ['touch {sentinel}']\n")
    assert flywheel(["recipe", "show", str(recipe)]) == 2
    assert "tag refused" in capsys.readouterr().err
    assert not sentinel.exists()


def test_check_reports_every_file_of_a_folder(capsys):
    rc = flywheel(["recipe", "check", str(BROKEN)])
    out, err = capsys.readouterr()
    n = len(list(BROKEN.glob("*.yaml")))
    assert rc == 2
    assert err.count("FAIL  ") == n
    assert f"{n} of {n} recipe file(s) failed" in err
    assert "Traceback" not in err


def test_check_mixes_good_and_bad_files(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "good.yaml").write_text("experiment: good\nmodel: {name_or_path: tiny}\n")
    (tmp_path / "bad.yml").write_text("experiment: bad\nmodel: {name_or_path: tiny}\nseed: one\n")
    (tmp_path / "notes.txt").write_text("not a recipe")
    rc = flywheel(["recipe", "check", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out.count("ok    ") == 1 and "good.yaml" in out
    assert err.count("FAIL  ") == 1 and "bad.yml:3: key 'seed'" in err


def test_check_of_missing_path_is_a_user_error(tmp_path, capsys):
    assert flywheel(["recipe", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such recipe file or folder" in err and "Traceback" not in err


def test_unknown_override_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("experiment: x\nmodel: {name_or_path: tiny}\n")
    rc = flywheel(["recipe", "show", str(recipe), "train.lerning_rate=0.1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "override 'train.lerning_rate=0.1'" in err and "did you mean 'learning_rate'" in err
    assert len(err.strip().splitlines()) == 1


def test_real_process_prints_no_traceback():
    # The whole path a user takes: a fresh interpreter, the console entry, stderr as the user sees it.
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", "recipe", "show", str(BROKEN / "misspelled_key.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "misspelled_key.yaml:5: key 'train.lerning_rate'" in proc.stderr
