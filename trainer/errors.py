"""The trainer's general user-facing error. Its more specific kinds live next to the code that
raises them (TrainingDiverged in trainer/common.py, CheckpointCorrupted in trainer/verify.py,
RoundFailed in trainer/round.py); all derive from data_pipeline.errors.FlywheelError, the one root
that the `flywheel` dispatcher prints as one line without a traceback."""
from __future__ import annotations

from data_pipeline.errors import FlywheelError


class UserError(FlywheelError):
    """An error caused by input or environment that the user can fix (bad path, missing round, a
    run directory in use, ...)."""
