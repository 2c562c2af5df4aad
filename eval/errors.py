"""User-facing evaluation errors (printed by the CLI without a traceback)."""


class EvalError(Exception):
    """A checkpoint, suite or option the user must fix; the message says what and where."""
