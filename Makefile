# The two commands: `make up` runs the suite locally, `make test` runs every test suite.
# Both set the machine up first (scripts/setup.sh; a no-op when nothing changed).
#   make up ARGS="--clock system --base-port 60051"    extra arguments for `python -m evolutivo_stack up`
#   make test ARGS="tests/integration -x"               extra arguments for pytest
#   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres NATS_URL=nats://127.0.0.1:4222 make up

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# protoc-gen-mypy (mypy-protobuf) and buf must be found by the tools these targets run.
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)

SERVICE_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml))
SERVICE_PKGS := $(foreach dir,$(SERVICE_DIRS),$(dir)/evolutivo_$(notdir $(dir)))
empty :=
space := $(empty) $(empty)

.PHONY: help setup up test protos lint check-generated breaking check-k8s bench

help:
	@echo "make setup            create .venv, install every package, the dev tools and buf"
	@echo "make up               run PostgreSQL, NATS and the five services locally (Ctrl-C stops)"
	@echo "make test             run all the tests (unit, integration, contract, end-to-end)"
	@echo "make protos           regenerate gen/python from protos/"
	@echo "make lint             ruff, ruff format --check, mypy, buf lint"
	@echo "make check-generated  fail if gen/ differs from what protos/ generates"
	@echo "make check-k8s        render deploy/k8s overlays, validate against the Kubernetes schemas, policy"
	@echo "make breaking         buf breaking against the main branch"
	@echo "make bench            the benchmark harness, quick run (ARGS=--full for the targets' run; docs/performance.md)"

setup:
	@scripts/setup.sh

up: setup
	$(PY) -m evolutivo_stack up $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

protos: setup
	scripts/gen_protos.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	MYPYPATH=$(subst $(space),:,$(SERVICE_DIRS)):cli $(PY) -m mypy \
		libs/runtime/evolutivo_runtime deploy/local/evolutivo_stack $(SERVICE_PKGS) cli/evolutivo_cli
	$(PY) -m mypy --strict deploy/k8s/check.py tests/unit/deploy
	MYPYPATH=tools/reconcile $(PY) -m mypy --strict tools/reconcile/evolutivo_reconcile
	$(BUF) lint

check-generated: protos
	git diff --exit-code --stat -- gen/ || { echo "gen/ is out of date with protos/: run 'make protos' and commit" >&2; exit 1; }
	untracked="$$(git ls-files --others --exclude-standard -- gen/)"; \
	if [ -n "$$untracked" ]; then \
		echo "untracked generated files (run 'make protos' and commit them):" >&2; echo "$$untracked" >&2; exit 1; \
	fi

# kubectl kustomize (pinned kubectl in .venv), kubernetes-validate schemas and the policy: deploy/k8s/check.py.
check-k8s: setup
	$(PY) deploy/k8s/check.py

breaking: setup
	$(BUF) breaking --against '.git#branch=main'

# The benchmark harness (docs/performance.md): quick by default, ARGS=--full for the targets' run.
bench: setup
	$(PY) -m bench $(ARGS)
