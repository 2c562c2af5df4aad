"""`flywheel recipe show RECIPE [key.sub=value ...]` prints the resolved recipe with its hash;
`flywheel recipe check PATH...` validates recipe files (folders recursively), one line per file.

Both exit 2 on a bad recipe, like every user error of the `flywheel` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from trainer.recipe import RecipeError, code_version, load_recipe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel recipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="Print the resolved recipe (defaults, bases, overrides applied) with its hash")
    show.add_argument("recipe", help="Recipe YAML file")
    show.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.learning_rate=5e-4")
    check = sub.add_parser("check", help="Validate recipe files; folders are searched recursively for *.yaml / *.yml")
    check.add_argument("paths", nargs="+", help="Recipe files or folders")
    return parser


def show(path: str, overrides: list[str]) -> int:
    recipe = load_recipe(path, overrides)
    # Same layout as the run directory's recipe.resolved.yaml, so the output loads as a recipe again.
    print(f"# resolved from: {' <- '.join(reversed(recipe.sources))}")
    doc = {"recipe_hash": recipe.hash(), "code_version": code_version(), **recipe.resolved_dict()}
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), end="")
    return 0


def recipe_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
            if not found:
                raise RecipeError(f"{p}: no .yaml recipe files in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise RecipeError(f"{p}: no such recipe file or folder")
    return files


def check(paths: list[str]) -> int:
    files = recipe_files(paths)
    failed = 0
    for f in files:
        try:
            recipe = load_recipe(f)
        except RecipeError as e:
            failed += 1
            first, *more = e.problems
            print(f"FAIL  {first}", file=sys.stderr)
            for line in more:
                print(f"      {line}", file=sys.stderr)
        else:
            print(f"ok    {f}  (experiment {recipe.experiment}, hash {recipe.hash()})")
    if failed:
        print(f"{failed} of {len(files)} recipe file(s) failed", file=sys.stderr)
        return 2
    print(f"{len(files)} recipe file(s) ok")
    return 0


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage line
        return int(e.code or 0)
    if args.action == "show":
        return show(args.recipe, args.overrides)
    return check(args.paths)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RecipeError as e:
        print(f"flywheel recipe: error: {e}", file=sys.stderr)
        sys.exit(2)
