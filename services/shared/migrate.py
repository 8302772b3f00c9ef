"""`python -m services.shared.migrate URL`: create or upgrade our schema out of band."""

from __future__ import annotations

import asyncio
import sys

from services.shared.db import connect
from services.shared.schema import migrate


async def _main(url: str) -> int:
    conn = await connect(url, application_name="limbo-migrate")
    try:
        version = await migrate(conn)
    finally:
        await conn.close()
    print(f"limbo schema at version {version}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m services.shared.migrate DATABASE_URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(_main(sys.argv[1])))
