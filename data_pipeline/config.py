"""Typed config of the data side (`IngestConfig`, `DatasetConfig`) and the strict base that every
recipe section uses. The recipe schema (`trainer.recipe.Recipe`) composes these sections."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class IngestConfig(Section):
    format: str = Field("auto", description="Log format of ingested files: auto or an adapter name")
    redact: bool = Field(True, description="Redact secrets (API keys, private keys, passwords, e-mails) before storing")
    heldout_suites: list[str] = Field(default_factory=list, description="Suites whose tasks never enter training data")
    heldout_tasks_file: str | None = Field(None, description="File of held-out task ids, one per line (also suite:NAME and re:PATTERN lines), or JSON/YAML {task_ids, suites, patterns} (path relative to the recipe)")


class DatasetConfig(Section):
    success_only: bool = Field(True, description="SFT: keep only successful trajectories (else all scoring at least min_score, imitated alike)")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="SFT: drop trajectories scoring below this")
    replay_ratio: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Share of older experience (from before the parent round) replayed into each round; 1 = all, 0 = newest only",
    )
