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

.PHONY: install demo test test-slow test-slurm test-reliability bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/flywheel run recipes/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --timeout 900

# slow tests outside the crash suite (DeepSpeed 2-process, W&B loop, study arms, resume after SIGKILL)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --ignore=tests/reliability --timeout 1800

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm --timeout 3000 -s

test-reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/reliability --timeout 1800 -s

clean:
	rm -rf runs/ .pytest_cache
