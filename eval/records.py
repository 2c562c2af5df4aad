"""What eval reads from a round checkpoint and what it hands on: typed records of the JSON files that
cross a stage boundary, each with its file name and its read/write beside it.

- `CheckpointManifest` (rounds/round-XXXX/manifest.json): eval's view of the manifest the trainer
  writes per checkpoint (trainer/records.py `RoundManifest` extends it with the trainer's own fields).
- `SuiteSummary`, `EvalSummary` (rounds/round-XXXX/eval/summary.json): what the evaluator writes.

A record's field names are the file's JSON keys, so files written before the records existed read
as they are, and a record writes the bytes the dict it replaces wrote. Reading is lenient: a key
absent from the file reads as its field's default (None where readers need to tell "absent"), so a
hand-made or older run directory still reads; whoever needs a field checks it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from data_pipeline.atomic import atomic_write_text

R = TypeVar("R", bound="Record")
OMIT_NONE = {"omit_none": True}  # field metadata: the key is left out of the file while the value is None


def optional_key(default: Any = None) -> Any:
    """A field whose key is written only when it has a value (None: no key, as before the records)."""
    return dataclasses.field(default=default, metadata=OMIT_NONE)


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Record:
    """Base of the file records (each a dataclass). `SPARSE` records write no key for a None value."""

    FILE: ClassVar[str] = ""
    SPARSE: ClassVar[bool] = False

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a file's JSON object; unknown keys are left out, absent ones take defaults."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def of(cls: type[R], value: R | Mapping[str, Any]) -> R:
        """The record itself, or the record of a JSON-like dict (what callers handed over before)."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """The record in the JSON file at `path` (errors of reading and parsing propagate)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def _absent(self, f: dataclasses.Field) -> bool:
        return getattr(self, f.name) is None and (self.SPARSE or bool(f.metadata.get("omit_none")))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file, key for key as written before the records."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not self._absent(f)}

    def __getitem__(self, key: str) -> Any:
        """The value under a file key: for scripts and tests written against the JSON dict. Stage code
        reads the attributes."""
        f = next((f for f in dataclasses.fields(self) if f.name == key), None)
        if f is None or self._absent(f):
            raise KeyError(key)
        return getattr(self, key)


# ---- the round checkpoint, as eval reads it ----------------------------------------------------
HOURS = "cumulative_interaction_hours"  # the manifest key of the interaction hours, also their name in W&B


@dataclasses.dataclass(kw_only=True)
class CheckpointManifest(Record):
    """rounds/round-XXXX/manifest.json, the fields eval and the curve read. The trainer writes the
    whole manifest (trainer/records.py `RoundManifest`, a subclass)."""

    FILE: ClassVar[str] = "manifest.json"

    round: int | None = None  # round number; 0 is the base policy
    base_model: str | None = None  # base model folder (as written when the run started)
    adapter: str | None = None  # adapter folder relative to the round directory; None: the base alone
    cumulative_interaction_hours: float | None = None  # hours of interaction consumed up to this checkpoint
    gpu_hours: float | None = None  # GPU-hours of training up to this checkpoint
    tokens_trained: int | None = None  # tokens, summed over all rounds so far
    trajectories_used: int = 0  # trajectories in this round's training data
    # trajectories ingested up to this checkpoint (the x-axis where logs carry no interaction time);
    # no key in manifests written before it existed (round 0 reads as 0)
    cumulative_episodes: int | None = optional_key()
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # the fit's numbers (train_loss, steps, ...)
    date: float | str | None = optional_key()  # optional, added by hand: days, or an ISO date

    @classmethod
    def read(cls: type[R], round_dir: str | Path) -> R | None:
        """The manifest of `round_dir`; None when it has none (JSON errors propagate)."""
        p = Path(round_dir) / cls.FILE
        return cls.load(p) if p.exists() else None


# the curve's x-axes, by the manifest field that gives them
X_FIELDS = {"hours": HOURS, "gpu_hours": "gpu_hours", "tokens": "tokens_trained", "round": "round",
            "episodes": "cumulative_episodes"}


# ---- the evaluation summary ---------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class SuiteSummary(Record):
    """The numbers of one suite (or of all suites together): eval/evaluator.py `summarize`. All
    intervals 95%. Keys absent in a file (hand-made summaries) read as None and are not written."""

    SPARSE: ClassVar[bool] = True

    episodes: int | None = None  # episodes (tasks x samples)
    tasks: int | None = None  # distinct tasks
    samples_per_task: int | None = None  # k of pass@k
    success_rate: float | None = None  # fraction of episodes that succeeded
    ci95: list[float] | None = None  # Wilson interval of success_rate
    mean_score: float | None = None  # mean episode score in [0, 1]
    mean_score_ci95: list[float] | None = None  # normal interval of mean_score
    per_task: dict[str, float] | None = None  # task id -> mean score
    per_task_success: dict[str, float] | None = None  # task id -> success fraction
    pass_at_k: dict[str, float] | None = None  # "j" -> unbiased pass@j
    pass_at_k_ci95: dict[str, list[float]] | None = None  # "j" -> bootstrap interval over tasks
    status_counts: dict[str, int] | None = None  # external suites: ok / timeout / error counts


@dataclasses.dataclass(kw_only=True)
class EvalSummary(SuiteSummary):
    """rounds/round-XXXX/eval/summary.json: the numbers over every task of every suite, and per suite."""

    FILE: ClassVar[str] = "summary.json"

    suites: dict[str, SuiteSummary] | None = None  # suite name -> its numbers
    checkpoint: str | None = None  # the checkpoint evaluated (adapter or model folder)
    seed: int | None = None  # eval seed

    def __post_init__(self) -> None:
        if self.suites is not None:
            self.suites = {name: SuiteSummary.of(s) for name, s in self.suites.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)  # no final newline, as ever

    def write(self, folder: str | Path) -> Path:
        """folder/summary.json, replaced atomically."""
        path = Path(folder) / self.FILE
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def read(cls, folder: str | Path) -> EvalSummary | None:
        """The summary in an eval folder (rounds/round-XXXX/eval); None when it has none."""
        p = Path(folder) / cls.FILE
        return cls.load(p) if p.exists() else None
