"""Benchmarks: the supervisor's release speed and database cost, the worker's overhead over DBOS.

`python -m bench [--size smoke|full] [--only NAME]` runs them against a throwaway PostgreSQL,
prints a table and writes `bench/results/latest.json` and `bench/results/REPORT.md`.
"""
