"""`flywheel recipe show RECIPE [key.sub=value ...]` prints the resolved recipe with its hash
(stdout) and the round's memory plan per GPU (stderr, see trainer/memory_plan.py);
`flywheel recipe check PATH...` validates recipe files (folders recursively), one line per file;
`flywheel recipe docs [--check]` rewrites (or checks) README.md's recipe key table (trainer/recipe_docs.py).

All exit 2 on a bad recipe, like every user error of the `flywheel` command. `check` also asks
whether each recipe's model loads on this machine without network (trainer/model_check.py): a local
model path that is missing or incomplete fails the file, while a hub id absent from this machine's
Hugging Face cache is only a warning, since the recipe may run where the cache holds it (a cluster
whose login node downloaded it); `flywheel run/train/submit` refuse it before any work."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from trainer.memory_plan import fit_warning, memory_plan
from trainer.model_check import is_local_path, recipe_model_problem
from trainer.recipe import Recipe, RecipeError, code_version, load_recipe


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel recipe", description=(
        "Show a resolved recipe (defaults, base chain and overrides applied) with its hash and memory plan, "
        "check recipe files, or regenerate README.md's table of recipe keys."))
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", help="show, check or docs")
    show = sub.add_parser("show", help="Print the resolved recipe (defaults, bases, overrides applied) with its hash",
                          description="Print the resolved recipe (defaults, bases, overrides applied) with its hash "
                                      "on stdout, and the round's memory plan per GPU on stderr.")
    show.add_argument("recipe", help="Recipe YAML file")
    show.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.learning_rate=5e-4")
    check = sub.add_parser("check", help="Validate recipe files; folders are searched recursively for *.yaml / *.yml",
                           description="Validate recipe files, and check that each one's model loads here without "
                                       "network: a missing or incomplete local model path fails; a hub id not in "
                                       "this machine's Hugging Face cache only warns (it may be cached where it runs).")
    check.add_argument("paths", nargs="+", help="Recipe files or folders")
    docs = sub.add_parser("docs", help="Rewrite README.md's recipe key table from the schema (--check: only compare)",
                          description="Rewrite the table of recipe keys in README.md from the recipe schema (every "
                                      "key's type, default and one-line doc); --check exits 1 when it is out of date.")
    docs.add_argument("--readme", type=Path, default=None, help="the README to update (default: the checkout's README.md)")
    docs.add_argument("--check", action="store_true", help="Exit 1 when the README table is out of date; change nothing")
    return parser


def show(path: str, overrides: list[str]) -> int:
    recipe = load_recipe(path, overrides)
    # Same layout as the run directory's recipe.resolved.yaml, so the output loads as a recipe again.
    print(f"# resolved from: {' <- '.join(reversed(recipe.sources))}")
    doc = {"recipe_hash": recipe.hash(), "code_version": code_version(), **recipe.resolved_dict()}
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), end="")
    print_memory_plan(recipe)
    return 0


def print_memory_plan(recipe: Recipe) -> None:
    """The round's memory plan on stderr as comment lines (stdout stays the loadable recipe),
    and a warning when it exceeds slurm.gpu_memory_gb."""
    plan = memory_plan(recipe)
    for line in plan.lines():
        print(f"# {line}", file=sys.stderr)
    warning = fit_warning(recipe, plan)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _is_suite_file(path: Path) -> bool:
    """An external suite YAML beside the recipes (eval/external.py: `command` and tasks, no
    `experiment`), which a folder check passes over; named on its own, it is checked as a recipe."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "command" in doc and "experiment" not in doc


def recipe_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()
                           and not _is_suite_file(f))
            if not found:
                raise RecipeError(f"{p}: no .yaml recipe files in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise RecipeError(f"{p}: no such recipe file or folder")
    return files


def model_verdict(recipe: Recipe) -> tuple[str | None, bool]:
    """(the recipe's model problem or None, whether it fails the check): a local path must load
    here; a hub id missing from this machine's cache may be cached where the recipe runs."""
    problem = recipe_model_problem(recipe)
    return problem, problem is not None and is_local_path(recipe.model.name_or_path)


def check(paths: list[str]) -> int:
    files = recipe_files(paths)
    failed = warned = 0
    for f in files:
        try:
            recipe = load_recipe(f)
            problem, fatal = model_verdict(recipe)
            if fatal:
                raise RecipeError(problem)
        except RecipeError as e:
            failed += 1
            first, *more = e.problems
            print(f"FAIL  {first}", file=sys.stderr)
            for line in more:
                print(f"      {line}", file=sys.stderr)
        else:
            print(f"ok    {f}  (experiment {recipe.experiment}, hash {recipe.hash()})", flush=True)
            if problem:
                warned += 1
                print(f"warn  {problem}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} recipe file(s) failed", file=sys.stderr)
        return 2
    print(f"{len(files)} recipe file(s) ok" + (f" ({warned} with a model warning)" if warned else ""))
    return 0


def docs(readme: Path | None, check_only: bool) -> int:
    from trainer.recipe_docs import README, keys_block, readme_block, update_readme

    readme = readme or README
    if check_only:
        in_sync = readme_block(readme.read_text(encoding="utf-8")) == keys_block()
        print(f"{readme}: recipe key table {'up to date' if in_sync else 'out of date: run flywheel recipe docs'}")
        return 0 if in_sync else 1
    changed = update_readme(readme)
    print(f"{readme}: recipe key table {'updated' if changed else 'already up to date'}")
    return 0


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage line
        return int(e.code or 0)
    if args.action == "show":
        return show(args.recipe, args.overrides)
    if args.action == "docs":
        return docs(args.readme, args.check)
    return check(args.paths)
