"""Where a checkpoint's model lives: the one way every stage (a training round's parent, the
local loop's evaluation, `flywheel eval`, `flywheel serve`) turns a checkpoint directory into
(base model, adapter or None) for `eval.policy.load_checkpoint`."""
from __future__ import annotations

import json
import re
from pathlib import Path

from eval.errors import EvalError
from eval.records import CheckpointManifest

# ORG/NAME as the Hugging Face hub spells a model id (loaded from this machine's cache, never downloaded)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def checkpoint_of(round_dir: str | Path, manifest: CheckpointManifest) -> tuple[Path, Path | None]:
    """(base model, adapter folder or None) of a round checkpoint from its manifest. `base_model` is
    written relative to where the run was started: when it holds no model from here, the run root's
    folder of that name is taken if it does. Paths only: a round being prepared may name a base
    that is built later; `resolve_checkpoint` checks that the base is there."""
    d = Path(round_dir)
    if manifest.base_model is None:
        raise EvalError(f"{d / manifest.FILE}: not a checkpoint manifest (no base_model): needs base_model and adapter")
    base, adapter = Path(manifest.base_model), manifest.adapter
    moved = d.parent.parent / base.name
    if not (base / "config.json").is_file() and (moved / "config.json").is_file():
        base = moved
    return base, (d / adapter) if adapter else None


def resolve_checkpoint(directory: str | Path) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) of a round checkpoint dir (manifest.json), a
    plain model folder (config.json) or a bare LoRA adapter folder (adapter_config.json)."""
    d = Path(directory)
    if (d / CheckpointManifest.FILE).is_file():
        try:
            manifest = CheckpointManifest.load(d / CheckpointManifest.FILE)
        except (ValueError, TypeError) as e:
            raise EvalError(f"{d / CheckpointManifest.FILE}: not a checkpoint manifest ({e!r}): needs base_model and adapter") from None
        base, adapter = checkpoint_of(d, manifest)
        # a hub id (ORG/NAME) that is no local folder loads from this machine's cache, never downloaded
        if not (base / "config.json").is_file() and not (_HUB_ID.match(str(base)) and not base.exists()):
            raise EvalError(f"{d / 'manifest.json'}: base_model {str(base)!r}: no model folder there")
        return base, adapter
    if (d / "adapter_config.json").is_file():
        base = json.loads((d / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or not (Path(base) / "config.json").is_file():
            raise EvalError(f"{d / 'adapter_config.json'}: base_model_name_or_path {base!r} is not a local model folder")
        return Path(base), d
    if (d / "config.json").is_file():
        return d, None
    raise EvalError(f"{d}: not a checkpoint: expected manifest.json (a round), config.json (a model) "
                    "or adapter_config.json (an adapter)")
