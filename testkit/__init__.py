"""Development and test infrastructure, never shipped: a local PostgreSQL (for `make run`,
the tests and the benchmarks), real service processes, DBOS rows built by SQL.

Used by tests/, bench/ and deploy/run_local.py; the product (limbo/, services/) never
imports it.
"""
