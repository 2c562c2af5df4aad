"""Can `model.name_or_path` be loaded here, without network? Asked before any work starts, so a wrong
model name costs one line instead of an ingest, a dataset build and a transformers traceback.

Every load in flywheel is `local_files_only`, so a model loads when it is 'tiny' (built locally), a
local folder holding config.json, a tokenizer and weights, or a hub id ('org/name') whose files are
in this machine's Hugging Face cache. Nothing here touches the network or imports transformers."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from trainer.errors import UserError

KEY = ("model", "name_or_path")
# What a model folder needs: description -> file patterns, any of which will do.
PIECES = {
    "config.json": ("config.json",),
    "a tokenizer (tokenizer.json or tokenizer_config.json)": ("tokenizer.json", "tokenizer_config.json"),
    "weights (*.safetensors, *.bin or their index .json)": ("*.safetensors", "*.bin", "*.index.json"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_IMPORT = "convert it once with `flywheel model import {file} --out DIR` and set model.name_or_path to DIR"


def is_local_path(name: str) -> bool:
    """True when `name` is meant as a local path, not a hub id: it starts with '/', './', '../' or
    '~', names a .gguf file, cannot be a hub id, or exists here (whole or its first folder)."""
    if name.startswith(("/", "./", "../", "~")) or name in (".", "..") or name.endswith(".gguf"):
        return True
    if not _HUB_ID.match(name) or "--" in name or ".." in name:
        return True
    return Path(name).exists() or ("/" in name and Path(name.split("/")[0]).is_dir())


def missing_pieces(folder: Path) -> list[str]:
    """The pieces of a loadable model (config, tokenizer, weights) that `folder` lacks."""
    return [what for what, patterns in PIECES.items() if not any(any(folder.glob(p)) for p in patterns)]


def _hub_cache() -> str:
    from huggingface_hub import constants

    cache, home = str(constants.HF_HUB_CACHE), str(Path.home())
    return "~" + cache[len(home):] if cache.startswith(home + os.sep) else cache


def _folder_problem(folder: Path) -> str | None:
    """What keeps a local folder from loading as a model, or None."""
    missing = missing_pieces(folder)
    if not missing:
        return None
    gguf = sorted(folder.glob("*.gguf"))
    if gguf and "config.json" in missing:
        return f"the folder holds a GGUF file, not a transformers model; {_IMPORT.format(file=gguf[0])}"
    if (folder / "adapter_config.json").exists() and "config.json" in missing:
        return "the folder holds a LoRA adapter, not a base model; point model.name_or_path at its base model"
    return (f"the folder lacks {' and '.join(missing)}; point it at a complete model folder "
            "(as `hf download ORG/NAME --local-dir DIR` writes it)")


def _local_problem(name: str) -> str | None:
    path = Path(name)
    if name.startswith("~"):
        return f"model loaders do not expand '~'; write the full path ({os.path.expanduser(name)})"
    if name.endswith(".gguf"):
        if path.is_file():
            return f"a GGUF file, which transformers does not load directly; {_IMPORT.format(file=name)}"
        return f"no such GGUF file ({path.absolute()})"
    if not path.exists():
        return (f"no such local folder ({path.absolute()}); point it at a local model folder (config.json, "
                "tokenizer, weights), a hub id in the Hugging Face cache, or 'tiny'")
    if not path.is_dir():
        return "is a file, not a model folder; point it at the folder that holds config.json"
    return _folder_problem(path)


def _hub_problem(name: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")  # a file lookup, never a request
    except ValueError:  # not a valid repo id after all
        config = None
    if not isinstance(config, str):
        return (f"no such local folder, and not in the Hugging Face cache ({_hub_cache()}); download it once "
                f"on a login node (hf download {name}) or point it at a local model folder")
    missing = missing_pieces(Path(config).parent)
    if missing:
        return (f"in the Hugging Face cache ({_hub_cache()}) without {' and '.join(missing)}; "
                f"finish the download on a login node (hf download {name})")
    return None


def model_problem(name_or_path: str) -> str | None:
    """None when the model loads without network; else one line naming what is missing and what to do."""
    if name_or_path == "tiny":
        return None
    local = is_local_path(name_or_path)
    problem = _local_problem(name_or_path) if local else _hub_problem(name_or_path)
    return f"model.name_or_path {name_or_path!r}: {problem}" if problem else None


def recipe_model_problem(recipe) -> str | None:
    """`model_problem` of a recipe's model, prefixed with the file:line that set it."""
    problem = model_problem(recipe.model.name_or_path)
    return f"{recipe.where(KEY)}: {problem}" if problem else None


def require_loadable(recipe) -> None:
    """Raise UserError when the recipe's model cannot load here; call it before any work starts."""
    problem = recipe_model_problem(recipe)
    if problem:
        raise UserError(problem)


def warn_unloadable(recipe, consequence: str) -> bool:
    """Print the recipe's model problem as a warning (stderr); True when there was one."""
    problem = recipe_model_problem(recipe)
    if problem:
        print(f"warning: {problem}; {consequence}", file=sys.stderr)
    return problem is not None
