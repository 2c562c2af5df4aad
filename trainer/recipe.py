"""The recipe: one YAML per experiment, validated by the typed schema composed from each package's
config sections. Defaults <- base recipe chain (`base:`) <- recipe file <- `key.sub=value` overrides.

Every problem is a `RecipeError` whose message names the file (and line), the key path and what is
allowed, so the CLI prints it without a traceback. Recipes are data only: YAML is read with the safe
loader (no `!!python/...` tags), nothing from a recipe is evaluated or imported.

The run directory keeps `recipe.resolved.yaml` (see `write_resolved`): the resolved recipe plus its
hash and the code version, so a run can be rerun and compared, and a rerun with a different recipe
into the same directory is refused unless asked to fork."""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError
from pydantic_core import to_jsonable_python

from data_pipeline.config import DatasetConfig, IngestConfig, Section
from eval.config import CollectConfig, CurveConfig, EvalConfig
from eval.suites import SUITES
from trainer.config import MOVED_KEYS, ModelConfig, SlurmConfig, StudyConfig, TrackingConfig, TrainConfig

RESOLVED_NAME = "recipe.resolved.yaml"
# Keys that `write_resolved` adds next to the recipe; a resolved file loads as a recipe again.
RESOLVED_META_KEYS = ("recipe_hash", "code_version", "sources", "history")


class Recipe(Section):
    experiment: str = Field(..., description="Experiment name (W&B group, run directory name)")
    base: str | None = Field(None, description="Base recipe this one changes (path relative to this file)")
    seed: int = Field(0, description="Seed of every random choice in the run")
    run_dir: str | None = Field(None, description="Run directory (default runs/<experiment>, relative to the working directory)")
    model: ModelConfig = Field(..., description="Base model")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingest of trajectories")
    data: DatasetConfig = Field(default_factory=DatasetConfig, description="Data selection per round")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="Experience collection per round")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training rounds")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation of every checkpoint")
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
        return _locate(path, self._layers, top)


class RecipeError(Exception):
    """A recipe problem, with the file and key path; printed to the user without a traceback.
    `problems` holds one line per problem (a file with three bad keys reports all three)."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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


def dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _section_label(path: tuple) -> str:
    return f"section '{dotted(path)}'" if path else "the top level"


def _unknown_key_problem(path: tuple) -> str:
    if path in MOVED_KEYS:  # a key that moved into a method's section (train.packing -> train.sft.packing)
        return f"{dotted(path)} moved to {dotted(MOVED_KEYS[path])}"
    parent, key = path[:-1], str(path[-1])
    section = section_of(annotation_at(parent))
    allowed = list(section.model_fields) if section else []
    text = f"unknown key '{key}' in {_section_label(parent)}"
    near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if near:
        text += f"; did you mean '{near[0]}'?"
    else:
        # The right key in the wrong section: `learning_rate` at the top instead of under `train`.
        elsewhere = [p for p in all_key_paths() if p[-1] == key or difflib.get_close_matches(key, [str(p[-1])], cutoff=0.85)]
        if elsewhere:
            text += f"; did you mean '{dotted(elsewhere[0])}'?"
    return f"{text} (allowed: {', '.join(allowed)})"


# ---------------------------------------------------------------- reading files, keeping key lines

@dataclass
class _Source:
    """One layer of the recipe: a file, or one command-line override."""
    label: str
    lines: dict[tuple, int | None] = field(default_factory=dict)  # key path -> line (1-based)
    leaves: set[tuple] = field(default_factory=set)  # paths whose whole value this layer sets

    def place(self, path: tuple) -> str:
        line = self.lines.get(path)
        return f"{self.label}:{line}" if line else self.label


class _RecipeLoader(yaml.SafeLoader):
    """The safe loader, less YAML 1.1's base-60 numbers: `time_train: 12:00:00` stays the text a
    Slurm time limit is, instead of turning into the integer 43200."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and ":" in value and tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            return "tag:yaml.org,2002:str"
        return tag


def parse_yaml_value(text: str) -> Any:
    """One YAML value (an override's right-hand side) with the recipe loader."""
    loader = _RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(path: Path, text: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark else None
    where = f"{path}:{line}" if line else str(path)
    if isinstance(err, yaml.constructor.ConstructorError) and "tag" in str(getattr(err, "problem", "")):
        problem = str(err.problem).replace("tag:yaml.org,2002:", "!!")
        return (f"{where}: YAML tag refused: {problem}; a recipe holds plain data only "
                "(mappings, lists, strings, numbers, booleans, null), never Python objects")
    tabbed = [i + 1 for i, ln in enumerate(text.splitlines()) if "\t" in ln[: len(ln) - len(ln.lstrip())]]
    if tabbed:
        return (f"{path}:{tabbed[0]}: line is indented with a tab; YAML allows only spaces for indentation "
                f"(tab-indented lines: {', '.join(map(str, tabbed[:10]))})")
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark:
        context += f" that starts at line {context_mark.line + 1}"
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")


def _walk_nodes(node: yaml.Node, path: tuple, src: _Source, file: Path) -> None:
    """Record the line of every key path, and refuse duplicate keys (YAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag != "tag:yaml.org,2002:str" and key != "<<":
                # `on:`/`yes:`/`1:` become bool/int keys in YAML 1.1: say so instead of a puzzling error.
                raise RecipeError(f"{file}:{key_node.start_mark.line + 1}: key '{key}' under {_section_label(path)} "
                                  f"reads as a {key_node.tag.rsplit(':', 1)[-1]}, not a name; quote it ('{key}':)")
            if key == "<<":  # merge key: its keys land in this mapping
                _walk_nodes(value_node, path, src, file)
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(f"{file}:{line}: key '{dotted((*path, key))}' appears twice "
                                  f"(lines {seen[key]} and {line}); keep one")
            seen[key] = line
            src.lines[(*path, key)] = line
            if not isinstance(value_node, yaml.MappingNode):
                src.leaves.add((*path, key))
            _walk_nodes(value_node, (*path, key), src, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            src.lines[(*path, i)] = item.start_mark.line + 1
            _walk_nodes(item, (*path, i), src, file)


def read_recipe_file(path: Path) -> tuple[dict, _Source]:
    """Parse one recipe file with the safe loader; return its mapping and the line of each key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe file: {e}") from None
    src = _Source(label=str(path))
    try:
        loader = _RecipeLoader(text)
    except yaml.YAMLError as e:  # the reader refuses control characters before parsing starts
        raise RecipeError(_yaml_problem(path, text, e)) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _walk_nodes(node, (), src, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise RecipeError(_yaml_problem(path, text, e)) from None
    finally:
        loader.dispose()
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of keys (experiment:, model:, ...), "
                          f"got a {type(data).__name__}")
    return data, src


# ---------------------------------------------------------------- layering: defaults, bases, overrides

def _deep_merge(base: dict, top: dict) -> dict:
    """Mappings merge key by key; any other value (lists included) replaces the base value whole."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, list[_Source]]:
    """The file merged over its base chain, and its sources from the deepest base to this file."""
    data, src = read_recipe_file(path)
    if "recipe_hash" in data:  # a run directory's recipe.resolved.yaml loads (or serves as base) as a recipe
        for key in RESOLVED_META_KEYS:
            data.pop(key, None)
    base = data.pop("base", None)
    if base is None:
        return data, [src]
    where = src.place(("base",))
    if not isinstance(base, str) or not base.strip():
        raise RecipeError(f"{where}: key 'base': expected the path of a base recipe (relative to this file), got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        others = [p.name for p in base_path.parent.glob("*.y*ml") if p.resolve() != path.resolve()]
        near = difflib.get_close_matches(Path(base).name, others, n=1, cutoff=0.8)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise RecipeError(f"{where}: key 'base': base recipe '{base}' does not exist (looked for {base_path}){hint}")
    chain = (*seen, path.resolve())
    if base_path.resolve() in chain:
        names = " -> ".join(_shown(p) for p in (*chain, base_path.resolve()))
        raise RecipeError(f"{where}: key 'base': cycle of base recipes: {names}")
    base_data, base_sources = _load_chain(base_path, chain)
    return _deep_merge(base_data, data), [*base_sources, src]


def _parse_override(text: str) -> tuple[tuple, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"override '{text}': expected key.path=value (e.g. train.learning_rate=5e-4)")
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
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
    try:
        value = parse_yaml_value(raw) if raw.strip() else None  # `key=` sets null
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"override '{text}': value is not valid YAML: {problem}") from None
    return path, value


def apply_override(data: dict, text: str) -> tuple:
    """Apply one `key.sub=value` override to the merged recipe mapping; return its key path."""
    path, value = _parse_override(text)
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise RecipeError(f"override '{text}': '{dotted(path[:i])}' has {size} item(s); index {part} does not exist")
            node = node[part]
        else:
            if node.get(part) is None:  # a section the recipe leaves at null: fill it from here
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int) and (not isinstance(node, list) or last >= len(node)):
        size = len(node) if isinstance(node, list) else 0
        raise RecipeError(f"override '{text}': '{dotted(path[:-1])}' has {size} item(s); index {last} does not exist")
    node[last] = value
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
    names = [a.name for a in recipe.study.arms]
    for i, name in enumerate(names):
        if name in names[:i]:
            found.append((("study", "arms", i, "name"), f"arm name {name!r} is used twice; each arm needs its own name"))
    if len(set(recipe.study.seeds)) != len(recipe.study.seeds):
        found.append((("study", "seeds"), f"seeds repeat in {recipe.study.seeds}; each seed once"))
    return found


def _locate(path: tuple, sources: list[_Source], top: str) -> str:
    """`file:line` of the layer that set the value at `path` (most derived first); else the top file."""
    for src in reversed(sources):
        for k in range(len(path), 0, -1):
            prefix = path[:k]
            if prefix in src.lines and (k == len(path) or prefix in src.leaves):
                deepest = next(path[:j] for j in range(len(path), 0, -1) if path[:j] in src.lines)
                where = src.place(deepest)
                return where if src.label == top or src.label.startswith("override") else f"{where} (base of {top})"
    # A missing key: point at the section that lacks it, in the recipe file itself.
    own = next((s for s in sources if s.label == top), None)
    for k in range(len(path) - 1, 0, -1):
        if own and path[:k] in own.lines:
            return own.place(path[:k])
    return top


def _message(path: tuple, problem: str, sources: list[_Source], top: str) -> str:
    return f"{_locate(path, sources, top)}: key '{dotted(path)}': {problem}"


def _validate(data: dict, sources: list[_Source], top: str) -> Recipe:
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
    data, sources = _load_chain(path)
    data = _deep_merge(schema_defaults(), data)
    for text in overrides:
        key_path = apply_override(data, text)
        sources.append(_Source(label=f"override '{text}'", lines={key_path: None}, leaves={key_path}))
    recipe = _validate(data, sources, str(path))
    template = recipe.model.chat_template
    if template and not Path(template).expanduser().is_absolute():  # relative to the recipe file
        recipe.model.chat_template = str((path.parent / template).resolve())
    recipe._sources = [s.label for s in sources]
    recipe._layers = sources
    return recipe


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


class _Absent:
    """A key one side of a comparison lacks (a schema that gained or lost a key since the run began)."""

    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Absent()


def _differences(old: Any, new: Any, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k, _MISSING), new.get(k, _MISSING), (*path, k))
        return out
    return [] if old == new else [(path, old, new)]


# Resumption may change these without a fork: they decide where and how the run is scheduled or
# logged, not what it trains. Anything else (model, data, method, learning rate, nodes x GPUs, eval
# suites, curve form, seeds, ...) would make the run's rounds disagree with its recipe.
_SCHEDULING_KEYS = {"partition", "account", "qos", "time_train", "time_eval", "mem", "cpus_per_task",
                    "signal_seconds", "setup", "venv", "extra_sbatch", "eval_shards"}


def resume_neutral(path: tuple, old: Any, new: Any) -> bool:
    """True when a rerun may change the key at `path` from `old` to `new` in the same run directory."""
    if path == ("train", "rounds"):
        return isinstance(old, int) and isinstance(new, int) and new >= old  # extending a run
    if path[:1] in {("tracking",), ("run_dir",), ("study",)}:
        return True
    if path[:1] == ("slurm",) and len(path) > 1 and path[1] in _SCHEDULING_KEYS:
        return True
    if old is _MISSING:  # a key added to the schema since the run began, at its default value
        return _lookup(schema_defaults(), path) == new
    return new is _MISSING  # a key since removed from the schema: nothing reads it any more


def _lookup(data: Any, path: tuple) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _change_text(path: tuple, old: Any, new: Any) -> str:
    def short(value: Any) -> str:
        text = value if isinstance(value, str) else repr(value) if value is _MISSING else json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{dotted(path)}: {short(old)} -> {short(new)}"


def read_resolved(run_dir: str | Path) -> dict | None:
    """The parsed `recipe.resolved.yaml` of a run directory (recipe keys plus meta keys), or None."""
    target = Path(run_dir) / RESOLVED_NAME
    if not target.exists():
        return None
    data, _ = read_recipe_file(target)
    return data


def _moved_to_new_keys(doc: dict) -> dict:
    """A resolved recipe written before keys moved (MOVED_KEYS), with their values in the new
    place, so that a run resumes when only the layout changed."""
    doc = copy.deepcopy(doc)
    for old, new in MOVED_KEYS.items():
        node = _lookup(doc, old[:-1])
        if isinstance(node, dict) and old[-1] in node:
            value, target = node.pop(old[-1]), doc
            for part in new[:-1]:
                target = target.setdefault(part, {})
            target.setdefault(new[-1], value)
    return doc


def _compare_with_run(old_doc: dict, new: dict, meta: dict, target: Path, fork: bool,
                      unproduced: bool = False) -> dict | None:
    """The history event of rerunning into a run directory (None: nothing changed); refuses a
    different recipe unless `fork`, or `unproduced` (the run holds nothing made under the old
    recipe, so the new one replaces it)."""
    old = _moved_to_new_keys({k: v for k, v in old_doc.items() if k not in RESOLVED_META_KEYS})
    changes = _differences(old, new)
    blocking = [c for c in changes if not resume_neutral(*c)]
    if blocking and not fork and not unproduced:
        listed = "; ".join(_change_text(*c) for c in blocking[:8])
        raise RecipeError(
            f"{target}: this run directory already holds a different recipe (hash {old_doc.get('recipe_hash')}, "
            f"now {meta['recipe_hash']}); changed: {listed}. Use another run directory (run_dir=... or a new "
            f"experiment name), or fork this run (--fork) to keep its rounds and continue under the new recipe")
    if not changes and old_doc.get("code_version") == meta["code_version"]:
        return None
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "event": ("fork" if fork else "replace") if blocking else "resume",
        "from_hash": old_doc.get("recipe_hash"), "to_hash": meta["recipe_hash"],
        "from_code_version": old_doc.get("code_version"), "to_code_version": meta["code_version"],
        "changed": [_change_text(*c) for c in changes],
    }


def write_resolved(recipe: Recipe, run_dir: str | Path | None = None, fork: bool = False) -> Path:
    """Write `recipe.resolved.yaml` into the run directory, or check the one already there.

    A run directory holding a different resolved recipe is refused (RecipeError) unless `fork`:
    then the old file is kept as `recipe.resolved.<old hash>.yaml` and the fork is recorded under
    `history`. Changes that `resume_neutral` allows (more `train.rounds`, tracking, scheduling) and
    a new code version are recorded under `history` without a fork. A run that failed before
    producing anything (`RunDir.produced` is empty: no round beyond a bare round 0, no experience,
    no store batch, no submitted job) does not lock its recipe: a changed one replaces it (event
    `replace`, with a note on stderr), and what the old recipe alone built is removed."""
    from trainer.rundir import RunDir  # the run layout; imported here to keep recipe loading light

    run_dir = Path(run_dir) if run_dir is not None else recipe.run_path()
    target = run_dir / RESOLVED_NAME
    new = recipe.resolved_dict()
    meta = {"recipe_hash": recipe.hash(), "code_version": code_version(), "sources": recipe.sources}
    history: list = []
    old_doc = read_resolved(run_dir)
    if old_doc is not None:
        run = RunDir(run_dir)
        unproduced = not run.produced()
        event = _compare_with_run(old_doc, new, meta, target, fork, unproduced)
        if event is None:
            return target
        if event["event"] == "fork":
            (run_dir / f"recipe.resolved.{old_doc.get('recipe_hash', 'old')}.yaml").write_text(target.read_text())
        if event["event"] in ("fork", "replace") and unproduced:
            run.clear_unproduced()  # a bare round 0 names the old base model; the new recipe writes its own
        if event["event"] == "replace":
            print(f"note: {target}: the recipe changed ({'; '.join(event['changed'][:8])}); the run directory holds "
                  "no results yet (no round, experience or store batch), so the new recipe replaces the recorded "
                  "one (no --fork needed)", file=sys.stderr)
        history = [*(old_doc.get("history") or []), event]
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {**meta, **new, "history": history}
    tmp = target.with_name(f".{RESOLVED_NAME}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    os.replace(tmp, target)  # atomic: a killed job never leaves half a resolved recipe
    return target
