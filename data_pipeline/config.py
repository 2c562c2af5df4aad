"""Typed config of the data side (`IngestConfig`, `DatasetConfig`, `LabelConfig`) and the strict base that every
recipe section uses. The recipe schema (`trainer.recipe.Recipe`) composes these sections."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_QUIET_S = 600.0  # collect.session_quiet_s: a live session file unmodified this long is finished


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class IngestConfig(Section):
    format: str = Field("auto", description="Log format of ingested files: auto or an adapter name")
    redact: bool = Field(True, description="Redact secrets (API keys, private keys, passwords, e-mails) before storing")
    score: str | None = Field(
        None,
        description="inspect logs: the scorer whose value is the outcome, NAME or NAME:KEY of a dict-valued score "
                    "(null: the first scorer of each sample), as flywheel ingest --score")
    score_range: str | None = Field(
        None,
        description="inspect logs: numeric scores lie in LO:HI and are mapped onto [0, 1] (null: [0, 1] as is), "
                    "as flywheel ingest --score-range")

    @field_validator("score")
    @classmethod
    def _name_or_name_key(cls, v: str | None) -> str | None:
        if v is not None:
            from .adapters.inspect_ai import score_name_key

            score_name_key(v)  # the same check as flywheel ingest --score
        return v

    @field_validator("score_range")
    @classmethod
    def _lo_below_hi(cls, v: str | None) -> str | None:
        if v is not None:
            from .adapters.inspect_ai import score_range_bounds

            score_range_bounds(v)  # the same check as flywheel ingest --score-range
        return v
    heldout_suites: list[str] = Field(default_factory=list, description="Suites whose tasks never enter training data")
    heldout_tasks_file: str | None = Field(None, description="File of held-out task ids, one per line (also suite:NAME and re:PATTERN lines), or JSON/YAML {task_ids, suites, patterns} (path relative to the recipe)")


class DatasetConfig(Section):
    success_only: bool = Field(True, description="SFT: keep only successful trajectories (else all scoring at least min_score, imitated alike)")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="SFT: drop trajectories scoring below this")
    replay_ratio: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Share of older experience (from before the parent round) replayed into each round; 1 = all, 0 = newest only",
    )
    unlabeled: Literal["drop", "keep"] = Field(
        "drop",
        description="Trajectories with no outcome after labelling: drop them, or keep them (SFT imitates them with "
                    "weight 1, for logs of a stronger agent); never a KTO/DPO negative",
    )


class LabelConfig(Section):
    """Outcome labels for logged trajectories that carry none (data_pipeline/labels.py), applied when a
    round selects its data: the log's own outcome first, then `file`, then `command`."""

    file: str | None = Field(
        None, description="Side file of labels (.jsonl, .json or .csv; relative to the recipe file): rows of "
                          "episode_id or task_id with score in [0, 1] and/or success true/false")
    command: str | None = Field(
        None, description="Verifier or judge: a shell command that reads one canonical trajectory as JSON on stdin "
                          "and prints a score in [0, 1] (or true/false); cached in the store by trajectory hash")
    timeout_s: float = Field(60.0, gt=0, description="Seconds one label.command call may take before it is "
                                                     "stopped and its trajectory quarantined as unlabeled")
    workers: int = Field(4, ge=1, description="label.command calls run in parallel")
    workdir: str | None = Field(
        None, description="Working directory of label.command (default: the recipe file's folder; relative to it)")
