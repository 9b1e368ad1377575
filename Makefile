# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned here (the set-up), kept loose in pyproject.toml for users; so are the test tools
TORCH  := torch==2.14.1 torchvision==0.29.1
DEVPINS := hypothesis==6.170.17 import-linter==2.17 submitit==1.5.4 lightgbm==4.7.0

.PHONY: demo test test-all venv docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]' $(DEVPINS)
	touch $@

venv: $(VENV)/.installed

demo: venv  ## train specs/quickstart.yaml on the CPU, evaluate it, write its report under runs/
	$(PY) -m causalrep.run specs/quickstart.yaml --out runs --device cpu

test: venv  ## the fast test suite
	$(PY) -m pytest -q -m "not slow"

test-all: venv  ## every test, the @slow ones too
	$(PY) -m pytest -q

docs: venv  ## regenerate docs/spec.md from the schema
	$(PY) tools/gen_spec_docs.py --out docs/spec.md

bench: venv
	$(PY) tools/bench_train.py

clean:
	rm -rf runs .pytest_cache
