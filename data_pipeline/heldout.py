"""The held-out guard: which tasks never enter training data.

A task is held out when its id is listed, its suite is listed, or a pattern matches its id
(`re.search`, so anchor with ^...$ for an exact shape). The spec is recorded in the experience
store and checked again by every dataset builder and by the trainer."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IngestError


@dataclass
class HeldoutSpec:
    task_ids: set[str] = field(default_factory=set)
    suites: set[str] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)  # regexes searched in task_id

    def __post_init__(self):
        self.task_ids = set(self.task_ids)
        self.suites = set(self.suites)
        self.patterns = list(self.patterns)
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise IngestError(f"held-out pattern {p!r} is not a valid regex: {e}") from None

    def _regex(self) -> re.Pattern | None:
        # compiled once per distinct pattern list; the list may be edited after construction
        key = tuple(self.patterns)
        if getattr(self, "_compiled", (None,))[0] != key:
            self._compiled = (key, re.compile("|".join(f"(?:{p})" for p in key)) if key else None)
        return self._compiled[1]

    def matches(self, traj_or_task_id: Any, suite: str = "") -> bool:
        """True when the trajectory (or the task id, with its suite) is held out."""
        if isinstance(traj_or_task_id, str):
            task_id = traj_or_task_id
        else:
            task_id, suite = traj_or_task_id.task_id, suite or traj_or_task_id.suite
        if task_id in self.task_ids or (suite and suite in self.suites):
            return True
        regex = self._regex()
        return bool(regex and regex.search(task_id))

    def __bool__(self) -> bool:
        return bool(self.task_ids or self.suites or self.patterns)

    def merged(self, other: "HeldoutSpec | None") -> "HeldoutSpec":
        if other is None:
            return HeldoutSpec(self.task_ids, self.suites, self.patterns)
        patterns = self.patterns + [p for p in other.patterns if p not in self.patterns]
        return HeldoutSpec(self.task_ids | other.task_ids, self.suites | other.suites, patterns)

    def to_dict(self) -> dict[str, Any]:
        return {"task_ids": sorted(self.task_ids), "suites": sorted(self.suites), "patterns": list(self.patterns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeldoutSpec":
        if not isinstance(d, dict):
            raise IngestError(f"held-out spec must be an object, got {type(d).__name__}")
        for key in ("task_ids", "suites", "patterns"):
            v = d.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise IngestError(f"held-out spec field {key!r} must be a list of strings")
        unknown = set(d) - {"task_ids", "suites", "patterns"}
        if unknown:
            raise IngestError(f"held-out spec has unknown keys: {', '.join(sorted(unknown))}")
        return cls(set(d.get("task_ids", [])), set(d.get("suites", [])), list(d.get("patterns", [])))

    @classmethod
    def load(cls, path: str | Path) -> "HeldoutSpec":
        """Read a held-out file: JSON/YAML {task_ids, suites, patterns}, or plain text with one task id
        per line (`suite:NAME` and `re:PATTERN` lines for the other two kinds; `#` comments)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise IngestError(f"cannot read held-out file {p}: {e}") from None
        if p.suffix in (".json", ".yaml", ".yml"):
            import yaml  # JSON is YAML, so one parser reads both

            from data_pipeline.yamlfile import parse_value

            try:
                return cls.from_dict(parse_value(text) or {})
            except yaml.YAMLError as e:
                raise IngestError(f"held-out file {p} is not valid {p.suffix[1:].upper()}: {e}") from None
        spec = cls()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("suite:"):
                spec.suites.add(line[6:].strip())
            elif line.startswith("re:"):
                spec = spec.merged(cls(patterns=[line[3:].strip()]))
            elif line:
                spec.task_ids.add(line)
        return spec

    def __repr__(self) -> str:
        return f"HeldoutSpec({json.dumps(self.to_dict())})"
