"""`python -m services.migrate DATABASE_URL [--demo]`: create or upgrade our tables out of
band (a deployment's migration job): the liveness contract and the supervisor's audit
trail; with --demo, the demo job's own tables too. Every service also migrates at start."""

from __future__ import annotations

import argparse
import asyncio
import sys

from limbo import migrate_contract
from services.demo.schema import migrate_demo
from services.shared.db import connect
from services.supervisor.store.audit import migrate_audit


async def _main(url: str, demo: bool) -> int:
    conn = await connect(url, application_name="limbo-migrate")
    try:
        done = {
            "contract": await migrate_contract(conn),
            "supervisor": await migrate_audit(conn),
        }
        if demo:
            done["demo"] = await migrate_demo(conn)
    finally:
        await conn.close()
    print("limbo schema: " + ", ".join(f"{k} at version {v}" for k, v in done.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.migrate")
    parser.add_argument("database_url")
    parser.add_argument("--demo", action="store_true", help="also the demo job's tables")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.database_url, args.demo))


if __name__ == "__main__":
    sys.exit(main())
