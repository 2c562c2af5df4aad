"""Layered YAML files: line-numbered reading, `base:` chains and `a.b=value` overrides.

The recipe (trainer/recipe.py) and eval's YAML readers (external suites, held-out task files) stand on this; it lives
in data_pipeline, the lowest package that reads YAML, and knows no schema. Every problem is raised
as the caller's error class (`error`), with a message that names the file and line.

A file is read with the safe loader (no `!!python/...` tags), less YAML 1.1's base-60 numbers; each
key path keeps the line it was written on (a `Layer`), so a later check can say `file:line`."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from data_pipeline.errors import FlywheelError


class YamlFileError(FlywheelError):
    """A problem with a YAML file or an override; `problems` holds one line per problem."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Layer:
    """One layer of a layered document: a file, or one command-line override."""
    label: str
    lines: dict[tuple, int | None] = field(default_factory=dict)  # key path -> line (1-based)
    leaves: set[tuple] = field(default_factory=set)  # paths whose whole value this layer sets

    def place(self, path: tuple) -> str:
        line = self.lines.get(path)
        return f"{self.label}:{line}" if line else self.label


class Loader(yaml.SafeLoader):
    """The safe loader, less YAML 1.1's base-60 numbers: `time_train: 12:00:00` stays the text a
    Slurm time limit is, instead of turning into the integer 43200."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and ":" in value and tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            return "tag:yaml.org,2002:str"
        return tag


def parse_value(text: str) -> Any:
    """One YAML value (an override's right-hand side) with the same loader as the files."""
    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def dotted(path: tuple) -> str:
    """A key path as the reader writes it: `collect.suites[0].name`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def section_label(path: tuple) -> str:
    return f"section '{dotted(path)}'" if path else "the top level"


def yaml_problem(path: Path, text: str, err: yaml.YAMLError, what: str = "recipe") -> str:
    """One line on why `text` (the contents of `path`) is not YAML the loader takes."""
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark else None
    where = f"{path}:{line}" if line else str(path)
    if isinstance(err, yaml.constructor.ConstructorError) and "tag" in str(getattr(err, "problem", "")):
        problem = str(err.problem).replace("tag:yaml.org,2002:", "!!")
        return (f"{where}: YAML tag refused: {problem}; a {what} holds plain data only "
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


def _walk_nodes(node: yaml.Node, path: tuple, layer: Layer, file: Path, error: type[Exception]) -> None:
    """Record the line of every key path, and refuse duplicate keys (YAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag != "tag:yaml.org,2002:str" and key != "<<":
                # `on:`/`yes:`/`1:` become bool/int keys in YAML 1.1: say so instead of a puzzling error.
                raise error(f"{file}:{key_node.start_mark.line + 1}: key '{key}' under {section_label(path)} "
                            f"reads as a {key_node.tag.rsplit(':', 1)[-1]}, not a name; quote it ('{key}':)")
            if key == "<<":  # merge key: its keys land in this mapping
                _walk_nodes(value_node, path, layer, file, error)
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise error(f"{file}:{line}: key '{dotted((*path, key))}' appears twice "
                            f"(lines {seen[key]} and {line}); keep one")
            seen[key] = line
            layer.lines[(*path, key)] = line
            if not isinstance(value_node, yaml.MappingNode):
                layer.leaves.add((*path, key))
            _walk_nodes(value_node, (*path, key), layer, file, error)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            layer.lines[(*path, i)] = item.start_mark.line + 1
            _walk_nodes(item, (*path, i), layer, file, error)


def read_mapping_file(path: Path, error: type[Exception] = YamlFileError, what: str = "recipe",
                      keys: str = "experiment:, model:, ...") -> tuple[dict, Layer]:
    """Parse one YAML file that must hold a mapping; return it and the line of each key. `what`
    names the document in messages, `keys` hints at the keys it should hold."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what} file: {e}") from None
    layer = Layer(label=str(path))
    try:
        loader = Loader(text)
    except yaml.YAMLError as e:  # the reader refuses control characters before parsing starts
        raise error(yaml_problem(path, text, e, what)) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _walk_nodes(node, (), layer, path, error)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise error(yaml_problem(path, text, e, what)) from None
    finally:
        loader.dispose()
    if data is None:
        raise error(f"{path}: the {what} is empty")
    if not isinstance(data, dict):
        raise error(f"{path}:1: a {what} must be a mapping of keys ({keys}), got a {type(data).__name__}")
    return data, layer


def deep_merge(base: dict, top: dict) -> dict:
    """Mappings merge key by key; any other value (lists included) replaces the base value whole."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_chain(path: Path, error: type[Exception] = YamlFileError, what: str = "recipe",
               keys: str = "experiment:, model:, ...", prepare: Callable[[dict], None] | None = None,
               seen: tuple[Path, ...] = ()) -> tuple[dict, list[Layer]]:
    """The file merged over its chain of `base:` files (each path relative to the file naming it),
    and its layers from the deepest base to this file. `prepare` edits each file's mapping in place
    before its `base:` key is read."""
    data, layer = read_mapping_file(path, error, what, keys)
    if prepare is not None:
        prepare(data)
    base = data.pop("base", None)
    if base is None:
        return data, [layer]
    where = layer.place(("base",))
    if not isinstance(base, str) or not base.strip():
        raise error(f"{where}: key 'base': expected the path of a base {what} (relative to this file), got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        others = [p.name for p in base_path.parent.glob("*.y*ml") if p.resolve() != path.resolve()]
        near = difflib.get_close_matches(Path(base).name, others, n=1, cutoff=0.8)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise error(f"{where}: key 'base': base {what} '{base}' does not exist (looked for {base_path}){hint}")
    chain = (*seen, path.resolve())
    if base_path.resolve() in chain:
        names = " -> ".join(_shown(p) for p in (*chain, base_path.resolve()))
        raise error(f"{where}: key 'base': cycle of base {what}s: {names}")
    base_data, base_layers = load_chain(base_path, error, what, keys, prepare, chain)
    return deep_merge(base_data, data), [*base_layers, layer]


def split_override(text: str, error: type[Exception] = YamlFileError,
                   example: str = "train.learning_rate=5e-4") -> tuple[tuple, str]:
    """`a.b.0.c=value` -> (('a', 'b', 0, 'c'), 'value'); the value is not parsed yet."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise error(f"override '{text}': expected key.path=value (e.g. {example})")
    return tuple(int(p) if p.isdigit() else p for p in key.split(".")), raw


def override_value(text: str, raw: str, error: type[Exception] = YamlFileError) -> Any:
    """The parsed right-hand side of override `text`; `key=` sets null."""
    try:
        return parse_value(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"override '{text}': value is not valid YAML: {problem}") from None


def set_at(data: dict, path: tuple, value: Any, text: str, error: type[Exception] = YamlFileError) -> None:
    """Set `value` at key path `path` of `data` (override `text`, named in errors). A mapping the
    document leaves at null is filled in; a list index must exist."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise error(f"override '{text}': '{dotted(path[:i])}' has {size} item(s); index {part} does not exist")
            node = node[part]
        else:
            if node.get(part) is None:  # a section the document leaves at null: fill it from here
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int) and (not isinstance(node, list) or last >= len(node)):
        size = len(node) if isinstance(node, list) else 0
        raise error(f"override '{text}': '{dotted(path[:-1])}' has {size} item(s); index {last} does not exist")
    node[last] = value


def locate(path: tuple, layers: list[Layer], top: str) -> str:
    """`file:line` of the layer that set the value at `path` (most derived first); else the top file."""
    for layer in reversed(layers):
        for k in range(len(path), 0, -1):
            prefix = path[:k]
            if prefix in layer.lines and (k == len(path) or prefix in layer.leaves):
                deepest = next(path[:j] for j in range(len(path), 0, -1) if path[:j] in layer.lines)
                where = layer.place(deepest)
                return where if layer.label == top or layer.label.startswith("override") else f"{where} (base of {top})"
    # A missing key: point at the mapping that lacks it, in the top file itself.
    own = next((s for s in layers if s.label == top), None)
    for k in range(len(path) - 1, 0, -1):
        if own and path[:k] in own.lines:
            return own.place(path[:k])
    return top
