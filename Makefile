# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install the project with the pinned development set.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE_PLUGIN := tests/fixtures/cinesync-example-plugin

.PHONY: demo test lint typecheck schema clean

$(STAMP): pyproject.toml constraints.txt $(EXAMPLE_PLUGIN)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e $(EXAMPLE_PLUGIN)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cinesync run registry/suites/quickstart.toml --output runs/quickstart --json runs/quickstart/results.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

schema: $(STAMP)
	$(BIN)/cinesync schema --output registry/schema

clean:
	rm -rf $(VENV) runs
