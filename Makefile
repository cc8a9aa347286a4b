# Two set-up commands on a fresh machine: `make demo` and `make test` (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's local disk; GPU users: make TORCH_SPEC="torch" (or preinstall).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mi_align-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-all test-latest lock lint bench browser

# Installs use the exact versions the suite passed with (requirements/constraints.txt).
CONSTRAINTS := requirements/constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mi-align models fetch smollm2-135m-instruct
	$(BIN)/mi-align demo --out figures

# tests/test_report.py opens the report page in headless Chromium: installed here if missing
# where apt-get may run (root, e.g. CI); elsewhere that test skips and says why.
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
browser:
	@command -v chromium || command -v chromium-browser || command -v google-chrome \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	     && { $(APT_CHROMIUM) 2>/dev/null || { apt-get update -q >/dev/null && $(APT_CHROMIUM); }; }; } \
	|| echo "note: chromium is not installed and could not be (needs root + apt-get): install it to run the report's browser test"

# Unit tests on tiny random models + the real-model tests marked `ci` (fetches the default model).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow or ci"

# Not in CI: a fresh venv with the newest releases pyproject allows (no constraints), then the
# same tests, so a breaking release is found by us first. PROBE="transformers==5.24.0" also
# installs something outside the ranges (e.g. a capped release, to see whether it still breaks).
# `make lock` rewrites the constraints from the venv that just passed.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST) && $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(LATEST)/bin/pip install --disable-pip-version-check -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(if $(PROBE),$(LATEST)/bin/pip install --disable-pip-version-check -q --no-deps $(PROBE))
	$(LATEST)/bin/pip freeze --exclude-editable | grep -Ei '^(transformers|transformer-lens|peft|torch|safetensors|tokenizers)=='
	$(LATEST)/bin/python -m pytest -q -m "not slow or ci"

lock:
	$(if $(wildcard $(LATEST)/bin/pip),,$(error run make test-latest first))
	{ sed -n '1,3p' $(CONSTRAINTS); $(LATEST)/bin/pip freeze --exclude-editable | grep -Eiv '^(torch|nvidia-|triton)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Everything, including all real-model (`slow`) tests.
test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check mi_align analyses benchmarks tests
