# Two commands: `make demo` (set up and run the main job) and `make test` (set up and run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint clean

$(BIN)/goup-probe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,fast]" "torch==2.13.0"
	touch $(BIN)/goup-probe

setup: $(BIN)/goup-probe

demo: setup
	$(BIN)/goup-probe demo

# pytest exits 5 when it collected no tests: that must fail, never pass silently.
test: setup
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff format --check goup_probe tests benchmarks
	$(BIN)/ruff check goup_probe tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
