"""Errors of the data side that a user can fix. The `flywheel` dispatcher prints `IngestError`
(and its subclasses) as one message without a traceback."""
from __future__ import annotations


class IngestError(Exception):
    """Bad input to ingest / store / dataset commands: unreadable path, unknown format, bad store."""


class HeldoutLeakError(IngestError):
    """A held-out task reached a training dataset; names the task so the leak can be traced."""

    def __init__(self, task_id: str, suite: str = "", where: str = ""):
        suite_part = f" (suite {suite!r})" if suite else ""
        super().__init__(f"held-out task {task_id!r}{suite_part} refused{': ' + where if where else ''}")
        self.task_id = task_id
        self.suite = suite
