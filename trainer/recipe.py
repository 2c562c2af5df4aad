"""The recipe: one YAML per experiment, validated by the typed schema composed from each package's
config sections. Defaults <- base recipe chain (`base:`) <- recipe file <- `key.sub=value` overrides.

Every problem is a `RecipeError` whose message names the file (and line), the key path and what is
allowed, so the CLI prints it without a traceback. Recipes are data only: YAML is read with the safe
loader (no `!!python/...` tags), nothing from a recipe is evaluated or imported.

The run directory keeps `recipe.resolved.yaml` (see `write_resolved`): the resolved recipe plus its
hash and the code version, so a run can be rerun and compared, and a rerun with a different recipe
into the same directory is refused unless asked to fork.

Reading the files (line numbers, `base:` chains, overrides) is the generic layered-YAML reader of
data_pipeline/yamlfile.py; what a changed recipe may change in an existing run is
trainer/recipe_fork.py."""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError
from pydantic_core import to_jsonable_python

from data_pipeline.config import DatasetConfig, IngestConfig, LabelConfig, Section
from data_pipeline.yamlfile import (Layer, YamlFileError, deep_merge, dotted, load_chain, locate, override_value,
                                    read_mapping_file, section_label, set_at, split_override)
from eval.config import CollectConfig, CurveConfig, EvalConfig, MemoryConfig
from eval.suites import SUITES
from trainer.config import (MOVED_KEYS, ModelConfig, PromoteConfig, SlurmConfig, StudyConfig, TrackingConfig,
                            TrainConfig)

RESOLVED_NAME = "recipe.resolved.yaml"
# Keys that `write_resolved` adds next to the recipe; a resolved file loads as a recipe again.
RESOLVED_META_KEYS = ("recipe_hash", "code_version", "sources", "history")


class Recipe(Section):
    experiment: str = Field(..., description="Experiment name (W&B group, run directory name)")
    base: str | None = Field(None, description="Base recipe this one changes (path relative to this file)")
    seed: int = Field(0, description="Seed of every random choice in the run")
    run_dir: str | None = Field(None, description="Run directory (default runs/<experiment>); unlike the other paths of a recipe, relative to the working directory")
    model: ModelConfig = Field(..., description="Base model")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingest of trajectories")
    data: DatasetConfig = Field(default_factory=DatasetConfig, description="Data selection per round")
    label: LabelConfig = Field(default_factory=LabelConfig, description="Outcome labels for logs without one")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="Experience collection per round")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training rounds")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation of every checkpoint")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="Retrieved past episodes in the acting policy's prompt")
    promote: PromoteConfig = Field(default_factory=PromoteConfig, description="Promotion gate after each round's evaluation")
    curve: CurveConfig = Field(default_factory=CurveConfig, description="Improvement-curve fit")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig, description="Cluster resources for flywheel submit")
    study: StudyConfig = Field(default_factory=StudyConfig, description="Arms of the experience study")

    # Where the recipe came from (files from base to top, then overrides); not part of the hash.
    _sources: list[str] = PrivateAttr(default_factory=list)
    _layers: list = PrivateAttr(default_factory=list)  # the same layers with their key lines, for `where`

    def resolved_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        blob = json.dumps(self.resolved_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.experiment}")

    @property
    def sources(self) -> list[str]:
        return list(self._sources)

    def where(self, path: tuple) -> str:
        """`file:line` of the layer that set the key at `path` (as RecipeError messages name it)."""
        top = next((s.label for s in reversed(self._layers) if not s.label.startswith("override")), "recipe")
        return locate(path, self._layers, top)


class RecipeError(YamlFileError):
    """A recipe problem, with the file and key path; printed to the user without a traceback.
    `problems` holds one line per problem (a file with three bad keys reports all three)."""


# ---------------------------------------------------------------- the schema, walked by key path

def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section class an annotation holds (`X`, `X | None`), else None."""
    for a in _union_args(annotation):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def list_item_of(annotation: Any) -> Any | None:
    """The item annotation of a list field (`list[X]`, `list[X] | None`), else None."""
    for a in _union_args(annotation):
        if typing.get_origin(a) is list:
            return typing.get_args(a)[0] if typing.get_args(a) else Any
    return None


def type_text(annotation: Any) -> str:
    """A reader's name of a field type: `int`, `str | null`, `'sft' | 'kto'`, `list[str]`."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(annotation))
    if origin is list:
        item = typing.get_args(annotation)[0]
        return f"list of {section_of(item).__name__} sections" if section_of(item) else f"list[{type_text(item)}]"
    if section_of(annotation):
        return f"section ({section_of(annotation).__name__})"
    return getattr(annotation, "__name__", str(annotation))


def _step(annotation: Any, part: str | int) -> Any | None:
    """The annotation one key (or list index) below `annotation`; None when there is no such key."""
    if isinstance(part, int):
        return list_item_of(annotation)
    section = section_of(annotation)
    if section is None or part not in section.model_fields:
        return None
    return section.model_fields[part].annotation


def annotation_at(path: tuple) -> Any | None:
    annotation: Any = Recipe
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return annotation


def field_at(path: tuple):
    """The pydantic FieldInfo of a key path (last part a field name), else None."""
    if not path or not isinstance(path[-1], str):
        return None
    section = section_of(annotation_at(path[:-1]))
    return section.model_fields.get(path[-1]) if section else None


def all_key_paths(annotation: Any = Recipe, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the schema; list items appear as index 0."""
    out = []
    section = section_of(annotation)
    if section is None:
        item = list_item_of(annotation)
        return all_key_paths(item, (*prefix, 0)) if item is not None and section_of(item) else []
    for name, info in section.model_fields.items():
        out.append((*prefix, name))
        out += all_key_paths(info.annotation, (*prefix, name))
    return out



def _unknown_key_problem(path: tuple) -> str:
    if path in MOVED_KEYS:  # a key that moved into a method's section (train.packing -> train.sft.packing)
        return f"{dotted(path)} moved to {dotted(MOVED_KEYS[path])}"
    parent, key = path[:-1], str(path[-1])
    section = section_of(annotation_at(parent))
    allowed = list(section.model_fields) if section else []
    text = f"unknown key '{key}' in {section_label(parent)}"
    near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if near:
        text += f"; did you mean '{near[0]}'?"
    else:
        # The right key in the wrong section: `learning_rate` at the top instead of under `train`.
        elsewhere = [p for p in all_key_paths() if p[-1] == key or difflib.get_close_matches(key, [str(p[-1])], cutoff=0.85)]
        if elsewhere:
            text += f"; did you mean '{dotted(elsewhere[0])}'?"
    return f"{text} (allowed: {', '.join(allowed)})"


# ---------------------------------------------------------------- reading files, layering: defaults, bases, overrides

def read_recipe_file(path: Path) -> tuple[dict, Layer]:
    """Parse one recipe file with the safe loader; return its mapping and the line of each key."""
    return read_mapping_file(path, RecipeError)


def _drop_resolved_meta(data: dict) -> None:
    if "recipe_hash" in data:  # a run directory's recipe.resolved.yaml loads (or serves as base) as a recipe
        for key in RESOLVED_META_KEYS:
            data.pop(key, None)


def read_chain(path: Path) -> tuple[dict, list[Layer]]:
    """The recipe file merged over its base chain, and its layers from the deepest base to this file."""
    return load_chain(path, RecipeError, prepare=_drop_resolved_meta)


def schema_defaults(section: type[BaseModel] = Recipe) -> dict:
    """The default value of every key that has one (JSON-like); required sections recurse."""
    out = {}
    for name, info in section.model_fields.items():
        if name == "base":
            continue
        if info.is_required():
            if section_of(info.annotation):
                out[name] = schema_defaults(section_of(info.annotation))
            continue
        out[name] = to_jsonable_python(info.get_default(call_default_factory=True))
    return out


def _check_override_path(text: str, path: tuple) -> None:
    """Refuse an override of `base` or of a key the schema lacks, before anything is set."""
    if path[0] == "base":
        raise RecipeError(f"override '{text}': 'base' can only be set inside a recipe file")
    annotation: Any = Recipe
    for i, part in enumerate(path):
        below = _step(annotation, part)
        if below is None:
            if isinstance(part, int) or section_of(annotation) is None:
                raise RecipeError(f"override '{text}': '{dotted(path[:i])}' is not a section (it holds {type_text(annotation)}), "
                                  f"it has no key '{part}'")
            raise RecipeError(f"override '{text}': {_unknown_key_problem(path[: i + 1])}")
        annotation = below


def apply_override(data: dict, text: str) -> tuple:
    """Apply one `key.sub=value` override to the merged recipe mapping; return its key path."""
    path, raw = split_override(text, RecipeError)
    _check_override_path(text, path)
    set_at(data, path, override_value(text, raw, RecipeError), text, RecipeError)
    return path


# ---------------------------------------------------------------- validation errors, in the reader's terms

_BOUND_WORDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}


def _real_path(loc: tuple) -> tuple:
    """Cut pydantic's union-branch tags (`'list[str]'`, `"literal['all-linear']"`) off a location;
    an unknown key of a section stays (it is the key the user wrote)."""
    path: tuple = ()
    annotation: Any = Recipe
    for part in loc:
        below = _step(annotation, part)
        if below is None:
            return (*path, part) if isinstance(part, str) and section_of(annotation) else path
        path, annotation = (*path, part), below
    return path


def _problem_text(err: dict, path: tuple) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    info = field_at(path)
    annotation = annotation_at(path)
    got = f"got {value!r}" + (f" ({type(value).__name__})" if not isinstance(value, str) else "")
    if kind == "extra_forbidden":
        return _unknown_key_problem(path)
    if kind == "missing":
        doc = f" ({info.description})" if info and info.description else ""
        return f"required key is missing{doc}"
    if kind == "model_type" or (kind == "dict_type" and section_of(annotation)):
        section = section_of(annotation)
        keys = ", ".join(section.model_fields) if section else ""
        return f"this is a section of keys ({keys}), {got}"
    if kind == "literal_error":
        allowed = [a for a in _union_args(annotation) if typing.get_origin(a) is Literal]
        options = [str(o) for a in allowed for o in typing.get_args(a)]
        near = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        return f"{got}; allowed: {type_text(annotation)}{hint}"
    if kind == "value_error":  # a field validator's own message
        return str(ctx.get("error") or err["msg"])
    bound = next((k for k in _BOUND_WORDS if k in ctx), None)
    if bound:
        return f"must be {_BOUND_WORDS[bound]} {ctx[bound]}, {got}"
    if annotation is not None:
        return f"expected {type_text(annotation)}, {got}"
    return f"{err['msg']}, {got}"


# Checks the section types cannot express alone; each returns (key path, problem) pairs.
_SLURM_TIME = re.compile(r"^(UNLIMITED|INFINITE|\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$")
_SLURM_MEM = re.compile(r"^\d+[KMGT]?$")
_EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _semantic_problems(recipe: Recipe) -> list[tuple[tuple, str]]:
    found: list[tuple[tuple, str]] = []
    if not _EXPERIMENT_NAME.match(recipe.experiment):
        found.append((("experiment",), f"{recipe.experiment!r} cannot name a run directory; "
                      "allowed: letters, digits, '.', '_', '-' (not starting with '.', '_' or '-')"))
    if recipe.train.max_steps == 0 or recipe.train.max_steps < -1:
        found.append((("train", "max_steps"), f"must be -1 (epochs decide) or at least 1, got {recipe.train.max_steps}"))
    for key in ("time_train", "time_eval"):
        if not _SLURM_TIME.match(getattr(recipe.slurm, key)):
            found.append((("slurm", key), f"{getattr(recipe.slurm, key)!r} is not a Slurm time; "
                          "allowed: MM, HH:MM:SS, D-HH, D-HH:MM:SS"))
    if recipe.slurm.mem is not None and not _SLURM_MEM.match(recipe.slurm.mem):
        found.append((("slurm", "mem"), f"{recipe.slurm.mem!r} is not a Slurm memory size; allowed: a number with K/M/G/T, e.g. 200G"))
    for section in ("collect", "eval"):
        for i, suite in enumerate(getattr(recipe, section).suites):
            if suite.name not in SUITES and not suite.name.endswith((".yaml", ".yml")):
                near = difflib.get_close_matches(suite.name, list(SUITES), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                found.append(((section, "suites", i, "name"), f"unknown suite {suite.name!r}; allowed: "
                              f"{', '.join(sorted(SUITES))} or an external suite .yaml path{hint}"))
    if recipe.collect.curriculum != "fixed":  # the curriculum keeps one difficulty per suite name
        collected = [s.name for s in recipe.collect.suites]
        for i, name in enumerate(collected):
            if name in collected[:i]:
                found.append((("collect", "suites", i, "name"), f"suite {name!r} is listed twice; under "
                              f"collect.curriculum={recipe.collect.curriculum} each collect suite needs its own "
                              "name (the curriculum sets one difficulty per suite)"))
    names = [a.name for a in recipe.study.arms]
    for i, name in enumerate(names):
        if name in names[:i]:
            found.append((("study", "arms", i, "name"), f"arm name {name!r} is used twice; each arm needs its own name"))
        if not _EXPERIMENT_NAME.match(name):
            found.append((("study", "arms", i, "name"), f"arm name {name!r} cannot name a run directory "
                          "(RUN_DIR/arms/NAME-seedK); allowed: letters, digits, '.', '_', '-' "
                          f"(e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-._') or 'arm'!r})"))
    if len(set(recipe.study.seeds)) != len(recipe.study.seeds):
        found.append((("study", "seeds"), f"seeds repeat in {recipe.study.seeds}; each seed once"))
    return found


def _message(path: tuple, problem: str, sources: list[Layer], top: str) -> str:
    return f"{locate(path, sources, top)}: key '{dotted(path)}': {problem}"


def _validate(data: dict, sources: list[Layer], top: str) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems: dict[tuple, str] = {}
        for err in e.errors():
            path = _real_path(tuple(err["loc"]))
            if path not in problems or err["type"] == "extra_forbidden":
                problems[path] = _problem_text(err, path)
        raise RecipeError([_message(p, text, sources, top) for p, text in problems.items()]) from None
    found = _semantic_problems(recipe)
    if found:
        raise RecipeError([_message(p, text, sources, top) for p, text in found])
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Resolve a recipe: defaults <- base chain <- file <- overrides, validated against the schema."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; give a recipe .yaml file")
    data, sources = read_chain(path)
    data = deep_merge(schema_defaults(), data)
    for text in overrides:
        key_path = apply_override(data, text)
        sources.append(Layer(label=f"override '{text}'", lines={key_path: None}, leaves={key_path}))
    recipe = _validate(data, sources, str(path))
    _resolve_paths(recipe, path.parent)
    _resolve_label_paths(recipe, path.parent)
    recipe._sources = [s.label for s in sources]
    recipe._layers = sources
    return recipe


def _resolve_paths(recipe: Recipe, folder: Path) -> None:
    """Paths in a recipe (and its overrides) are relative to the recipe file's folder: the chat
    template, the held-out task file, external suite .yaml files and the live logs. run_dir stays
    relative to the working directory."""
    def resolved(p: str) -> str:
        q = Path(p).expanduser()
        return p if q.is_absolute() else os.path.normpath(Path(folder).resolve() / q)

    if recipe.model.chat_template:
        recipe.model.chat_template = resolved(recipe.model.chat_template)
    if recipe.ingest.heldout_tasks_file:
        recipe.ingest.heldout_tasks_file = resolved(recipe.ingest.heldout_tasks_file)
    for suite in [*recipe.eval.suites, *recipe.collect.suites]:
        if suite.name.endswith((".yaml", ".yml")):
            suite.name = resolved(suite.name)
    if recipe.collect.logs:
        recipe.collect.logs = [resolved(p) for p in recipe.collect.logs]


def _resolve_label_paths(recipe: Recipe, folder: Path) -> None:
    """label.file relative to the recipe file; label.command runs in label.workdir, by default the
    recipe file's folder (kept absolute, so the run directory's resolved recipe runs it there too)."""
    label = recipe.label
    if label.file and not Path(label.file).expanduser().is_absolute():
        label.file = str((folder / label.file).resolve())
    if label.command:
        workdir = Path(label.workdir or ".").expanduser()
        label.workdir = str(workdir if workdir.is_absolute() else (folder / workdir).resolve())


# ---------------------------------------------------------------- the run directory's resolved recipe

@lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the flywheel checkout when it is one, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():  # never describe some unrelated repository that encloses site-packages
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return f"git:{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from importlib.metadata import version
        return f"flywheel {version('flywheel')}"
    except Exception:  # noqa: BLE001 - not installed as a package: still write a value
        return "unknown"

def read_resolved(run_dir: str | Path) -> dict | None:
    """The parsed `recipe.resolved.yaml` of a run directory (recipe keys plus meta keys), or None."""
    target = Path(run_dir) / RESOLVED_NAME
    if not target.exists():
        return None
    data, _ = read_recipe_file(target)
    return data


def run_curve_section(run_dir: str | Path) -> dict:
    """The curve section of a run's recipe.resolved.yaml, read with the recipe loader ({} without one):
    what `flywheel curve` and `flywheel compare` fit a run with unless told otherwise."""
    path = Path(run_dir) / RESOLVED_NAME
    return load_recipe(path).curve.model_dump() if path.is_file() else {}
