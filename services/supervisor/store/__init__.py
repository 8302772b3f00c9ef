"""The only place with SQL statements: DBOS's tables (reads, guarded writes) and our own
(`limbo.executors` through the contract's view, the registry, the audit trail)."""
