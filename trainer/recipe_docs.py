"""Generate the README's table of recipe keys from the schema (the section classes' fields and their
one-line docs), between the markers below. `flywheel recipe docs` rewrites README.md;
`--check` exits 1 when the table is out of date (tests/trainer/test_recipe_docs.py does the same check)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic_core import to_jsonable_python

from trainer.recipe import Recipe, list_item_of, section_of, type_text

START = "<!-- recipe-keys:start -->"
END = "<!-- recipe-keys:end -->"
HEADING = "## Recipe keys"
README = Path(__file__).resolve().parent.parent / "README.md"

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _constraints(info) -> str:
    parts = [f"{sign} {getattr(m, name)}" for m in info.metadata for name, sign in _BOUNDS if hasattr(m, name)]
    return ", ".join(parts)


def _default(info) -> str:
    if info.is_required():
        return "**required**"
    value = to_jsonable_python(info.get_default(call_default_factory=True))
    return f"`{json.dumps(value)}`"


def key_rows(section: type = Recipe, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) of every key, sections before their keys."""
    rows = []
    for name, info in section.model_fields.items():
        key = f"{prefix}{name}"
        sub = section_of(info.annotation)
        item = list_item_of(info.annotation)
        kind = type_text(info.annotation) + (f" ({_constraints(info)})" if _constraints(info) else "")
        if sub is not None:
            rows.append((key, "section", "", info.description or ""))
            rows += key_rows(sub, f"{key}.")
            continue
        rows.append((key, kind, _default(info), info.description or ""))
        if item is not None and section_of(item):
            rows += key_rows(section_of(item), f"{key}[].")
    return rows


def keys_block() -> str:
    lines = [START,
             "<!-- generated from the recipe schema by `flywheel recipe docs`; do not edit by hand -->",
             "",
             "Every key a recipe may set; anything else is an error. Set a key in the recipe file or on the "
             "command line as `key.sub=value` (list items by index: `eval.suites.0.episodes=32`).",
             "",
             "| Key | Type | Default | Description |",
             "|---|---|---|---|"]
    lines += [f"| `{k}` | {_cell(t)} | {_cell(d)} | {_cell(doc)} |" for k, t, d, doc in key_rows()]
    lines.append(END)
    return "\n".join(lines)


def readme_block(text: str) -> str | None:
    """The marked block of a README text, markers included; None when the markers are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(END)]


def update_readme(path: Path = README) -> bool:
    """Rewrite the marked block (appending heading and block when absent); True when the file changed."""
    text = path.read_text(encoding="utf-8")
    old = readme_block(text)
    new_block = keys_block()
    if old is None:
        new_text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{new_block}\n"
    else:
        new_text = text.replace(old, new_block)
    if new_text == text:
        return False
    path.write_text(new_text, encoding="utf-8")
    return True

