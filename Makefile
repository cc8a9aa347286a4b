# Two set-up commands on a fresh machine: `make demo` and `make test` (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's local disk; GPU users: make TORCH_SPEC="torch" (or preinstall).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mi_align-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-all lint bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mi-align models fetch smollm2-135m-instruct
	$(BIN)/mi-align demo --out figures

# Unit tests on tiny random models + the real-model tests marked `ci` (fetches the default model).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow or ci"

# Everything, including all real-model (`slow`) tests.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check mi_align analyses benchmarks tests
