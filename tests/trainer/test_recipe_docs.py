"""The README's table of recipe keys is generated from the schema and must match it."""
from __future__ import annotations

from pathlib import Path

from trainer.recipe import all_key_paths, dotted, field_at
from trainer.recipe_docs import END, START, key_rows, keys_block, readme_block, update_readme
from tests.paths import REPO

README = REPO / "README.md"


def test_readme_table_matches_the_schema():
    block = readme_block(README.read_text(encoding="utf-8"))
    assert block is not None, f"README.md lacks the {START} ... {END} block: run flywheel recipe docs"
    assert block == keys_block(), "README.md's recipe key table is out of date: run flywheel recipe docs"
    assert "## Recipe keys" in README.read_text(encoding="utf-8")


def test_table_lists_every_key_once():
    keys = [k for k, *_ in key_rows()]
    schema = [dotted(p).replace("[0]", "[]") for p in all_key_paths()]
    assert keys == schema and len(set(keys)) == len(keys)
    assert "train.lora.r" in keys and "eval.suites[].episodes" in keys


def test_every_key_has_a_one_line_doc():
    undocumented = [dotted(p) for p in all_key_paths() if not (field_at(p).description or "").strip()]
    assert not undocumented, f"recipe keys without a description=...: {undocumented}"
    multi_line = [dotted(p) for p in all_key_paths() if "\n" in field_at(p).description]
    assert not multi_line


def test_update_rewrites_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nintro\n")
    assert update_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nintro\n\n## Recipe keys\n\n" + START)
    readme.write_text(text.replace("| `seed` |", "| `sed` |") + "\n## After\nkept\n")
    assert update_readme(readme) is True
    assert readme_block(readme.read_text()) == keys_block() and readme.read_text().endswith("## After\nkept\n")
    assert update_readme(readme) is False
