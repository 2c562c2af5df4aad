"""The recipe: one YAML per experiment, validated by the typed schema composed from each package's
config sections. Defaults <- base recipe(s) <- recipe file <- `key.sub=value` overrides."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from data_pipeline.config import DatasetConfig, IngestConfig, Section
from eval.config import CollectConfig, CurveConfig, EvalConfig
from trainer.config import ModelConfig, SlurmConfig, StudyConfig, TrackingConfig, TrainConfig


class Recipe(Section):
    experiment: str = Field(..., description="Experiment name (W&B group, run directory name)")
    base: str | None = Field(None, description="Base recipe this one changes (path relative to this file)")
    seed: int = Field(0, description="Seed of every random choice in the run")
    run_dir: str | None = Field(None, description="Run directory (default runs/<experiment>)")
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

    def resolved_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        blob = json.dumps(self.resolved_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.experiment}")


class RecipeError(Exception):
    """A recipe problem, with the file and key path; printed to the user without a traceback."""


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: YAML syntax error: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: cycle of base recipes: {chain}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base))
    if not base_path.exists():
        raise RecipeError(f"{path}: key 'base': base recipe {base!r} does not exist (looked at {base_path})")
    return _deep_merge(_load_raw(base_path, (*seen, path)), data)


def apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key.path=value")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {override!r}: {p!r} is not a section")
    node[parts[-1]] = value


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    data = _load_raw(path)
    for o in overrides:
        apply_override(data, o)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            lines.append(f"{path}: key '{loc}': {err['msg']}")
        raise RecipeError("\n".join(lines)) from None
