"""The records a training round writes for the stages after it: the round manifest (per checkpoint)
and the data selection (the round's chosen data, handed from `prepare` to `fit` and `finalize`).

The manifest extends eval's view of it (eval/records.py `CheckpointManifest`: the fields the
evaluator and the curve read) with the trainer's own. Field names are the files' JSON keys: old run
directories read as they are, and the files are written byte for byte as before the records.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from data_pipeline.atomic import atomic_write_json
from eval.records import CheckpointManifest, Record, optional_key


@dataclasses.dataclass(kw_only=True)
class RoundManifest(CheckpointManifest):
    """rounds/round-XXXX/manifest.json: what a checkpoint was trained from and on (trainer/round.py)."""

    parent: str | None = None  # parent round, "round-XXXX"; None for round 0
    method: str | None = None  # training method (sft, kto, dpo, grpo); None for round 0
    store_batches: dict[str, int] = dataclasses.field(default_factory=dict)  # batch id -> trajectories used from it
    batches_seen: list[str] = dataclasses.field(default_factory=list)  # every store batch when the data was selected
    new_batches: list[str] = dataclasses.field(default_factory=list)  # the batches new since the parent
    interaction_hours_new: float = 0.0  # hours of interaction in the new batches
    # collect.logs of this round: {"files", "read", "accepted", "duplicates", "quarantined", "waiting_bytes",
    # "batch_id"}; no key when the recipe has no collect.logs
    logs: dict | None = optional_key()
    learning_rate: float | None = optional_key()  # this round's learning rate (no key in round 0)
    gpu_hours: float | None = 0.0  # GPU-hours of training up to this checkpoint
    tokens_trained: int | None = 0  # tokens, summed over all rounds so far
    recipe_hash: str | None = None
    code_version: str | None = None
    seed: int | None = None  # the round's seed (round 0: the recipe's)
    wall_time_s: float | None = None  # seconds from prepare to the manifest
    created_at: float | None = None  # unix time, s
    checksums: dict[str, str] | None = None  # sha256 of every file of the round directory, by relative path
    # outcome labels of the selected trajectories (data_pipeline/labels.py LabelCounts): {own, file, command,
    # quarantined, unlabeled_kept, unlabeled_dropped}; no key in round 0 and in runs from before labels
    labels: dict[str, int] | None = optional_key()
    # collect.curriculum (trainer/curriculum.py): per collect suite {difficulty, rule, range,
    # previous_difficulty, previous_success} of this round's collection; no key under `fixed`
    curriculum: dict[str, dict] | None = optional_key()

    def write(self, round_dir: str | Path) -> Path:
        path = Path(round_dir) / self.FILE
        atomic_write_json(path, self.to_dict())
        return path


@dataclasses.dataclass(kw_only=True)
class DataSelection(Record):
    """rounds/.work-XXXX/selection.json: round r's chosen data and where it trains from, written by
    `prepare` (last: its presence means "prepared") and read by `fit` and `finalize`."""

    FILE: ClassVar[str] = "selection.json"

    round: int
    parent: str  # "round-XXXX"
    base_model: str  # base model folder (the merged base under train.adapter=merge)
    parent_adapter: str | None = None  # adapter training continues from; None: a fresh LoRA
    method: str
    reference_adapter: str | None = None  # KTO/DPO/GRPO reference; None: the base weights
    seed: int  # the round's seed
    rows: int  # rows of the built dataset
    store_batches: dict[str, int]  # batch id -> trajectories used from it
    batches_seen: list[str]  # every store batch at selection time
    new_batches: list[str]  # the batches new since the parent
    trajectories_used: int
    cumulative_interaction_hours: float  # hours of interaction in the whole store
    interaction_hours_new: float  # hours in the new batches
    started_at: float  # unix time the round's prepare started, s
    prepare_s: float  # seconds prepare took
    cumulative_episodes: int | None = optional_key()  # trajectories in the whole store (the curve's episodes axis)
    logs: dict | None = optional_key()  # what collect.logs read this round (RoundManifest.logs); None without it
    # outcome labels of the selected trajectories (see RoundManifest.labels); None: selected before labels
    labels: dict[str, int] | None = optional_key()
    curriculum: dict[str, dict] | None = optional_key()  # collect.curriculum's steps (see RoundManifest.curriculum)

    def write(self, work_dir: str | Path) -> Path:
        path = Path(work_dir) / self.FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, work_dir: str | Path) -> DataSelection | None:
        p = Path(work_dir) / cls.FILE
        return cls.load(p) if p.exists() else None
