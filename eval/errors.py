"""User-facing evaluation errors (printed by the CLI without a traceback)."""
from data_pipeline.errors import FlywheelError


class EvalError(FlywheelError):
    """A checkpoint, suite or option the user must fix; the message says what and where."""


def read_yaml_mapping(path, error: type[Exception] = EvalError, what: str = "", keys: str = "") -> dict:
    """Safe-load a YAML file that must hold a mapping; any problem is `error` naming the file.
    `what` names the document in messages ("recipe"), `keys` hints at the expected keys."""
    import yaml
    from pathlib import Path

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read{' ' + what if what else ''}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        subject = f"a {what} must be" if what else "expected"
        raise error(f"{path}: {subject} a mapping of keys ({keys})")
    return data
