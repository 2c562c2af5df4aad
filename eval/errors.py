"""User-facing evaluation errors (printed by the CLI without a traceback)."""
from data_pipeline.errors import FlywheelError


class EvalError(FlywheelError):
    """A checkpoint, suite or option the user must fix; the message says what and where."""


def read_mapping(path, error: type[Exception] = EvalError, kind: str = "YAML", keys: str = "") -> dict:
    """The mapping in a YAML or JSON (`kind`) file; any problem is `error` naming the file. `keys`
    hints at a YAML file's expected keys. YAML is read with the recipes' loader
    (data_pipeline/yamlfile.py): `1:30` stays text, not a base-60 number."""
    import json
    from pathlib import Path

    import yaml

    from data_pipeline.yamlfile import parse_value

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if kind == "JSON" else parse_value(text)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object" if kind == "JSON" else f"{path}: expected a mapping of keys ({keys})")
    return data
