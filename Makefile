# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint venv bench clean wheel-smoke docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision pinned as a pair that works together (the 2.13.0+cpu wheel on this disk breaks torchvision)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlab demo

# one test process per core (tests use one torch thread each); a file's tests stay in one process, in order
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: lint
	$(PYTEST)

# the inner loop: lint, then every test not marked slow (make test runs them all)
quick: lint
	$(PYTEST) -m "not slow"

# style and the one direction of dependence between cnnlab's parts (pyproject.toml: tool.ruff, tool.importlinter)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache

# the wheel (not the editable install) in a fresh venv: --version, packaged recipes, a tiny training, predict
# (about 15 s of CPU; CI runs it after the tests)
wheel-smoke: $(STAMP)
	scripts/wheel_smoke.sh

# the documentation site (mkdocs.yml: README, docs/, the API reference from the docstrings) into site/; --strict:
# a broken link or anchor fails (tests/architecture/test_docs_site.py builds it in make test too)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs build site *.egg-info
