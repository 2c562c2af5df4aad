"""User-facing evaluation errors (printed by the CLI without a traceback)."""
from data_pipeline.errors import FlywheelError


class EvalError(FlywheelError):
    """A checkpoint, suite or option the user must fix; the message says what and where."""


def read_yaml_mapping(path, error: type[Exception] = EvalError, keys: str = "") -> dict:
    """Safe-load a YAML file that must hold a mapping; any problem is `error` naming the file.
    `keys` hints at the expected keys. The loader
    is the recipes' (data_pipeline/yamlfile.py): `1:30` stays text, not a base-60 number."""
    from pathlib import Path

    import yaml

    from data_pipeline.yamlfile import parse_value

    path = Path(path)
    try:
        data = parse_value(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of keys ({keys})")
    return data
