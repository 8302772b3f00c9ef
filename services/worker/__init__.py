"""The worker: DBOS durable workflows behind an async Litestar API."""
