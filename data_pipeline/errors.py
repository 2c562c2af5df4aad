"""The root of flywheel's user-facing errors, and the data side's own. The `flywheel` dispatcher
(trainer/cli/) catches `FlywheelError` and prints it as one message without a traceback; every
package's user-facing error type derives from it. This module is on the ground floor so that
data_pipeline/, eval/ and trainer/ can all use it."""
from __future__ import annotations


class FlywheelError(Exception):
    """An error the user can fix; the CLI prints it as one line without a traceback."""


class IngestError(FlywheelError):
    """Bad input to ingest / store / dataset commands: unreadable path, unknown format, bad store."""


class HeldoutLeakError(IngestError):
    """A held-out task reached a training dataset; names the task so the leak can be traced."""

    def __init__(self, task_id: str, suite: str = "", where: str = ""):
        suite_part = f" (suite {suite!r})" if suite else ""
        super().__init__(f"held-out task {task_id!r}{suite_part} refused{': ' + where if where else ''}")
        self.task_id = task_id
        self.suite = suite
