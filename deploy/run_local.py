"""`make run`: the stack under supervisord, with a local PostgreSQL when DATABASE_URL is unset.

The local server keeps its data in .data/postgres (it survives restarts) and is stopped
when supervisord exits, whether by Ctrl-C, SIGTERM or a crash. When the `postgres` user
cannot reach the project folder (a clone in root's home, mode 0700), the cluster lives in a
directory it can reach instead (/var/lib/limbo/<project>-<digest>/postgres by default) and
.data/postgres links there; both are said at start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from services.shared.config import ConfigError, Env
from services.shared.dsn import redact
from testkit.localpg import LocalPostgres, LocalPostgresError, locate_project_cluster

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "supervisord.conf"


def main() -> int:
    env = Env()
    server = None
    try:
        database_url = env.optional_str("DATABASE_URL")
        if database_url is None:
            port = env.integer("LIMBO_PG_PORT", 54329, minimum=1, maximum=65535)
            cluster = locate_project_cluster(ROOT, prepare=True)
            for note in cluster.notes:
                print(f"run: {note}", flush=True)
            server = LocalPostgres(cluster.data_dir, port=port)
            where = " (.data/postgres links there)" if cluster.relocated else ""
            print(
                f"run: starting local PostgreSQL in {server.data_dir}{where} on 127.0.0.1:{port}",
                flush=True,
            )
            database_url = server.start()
        print(f"run: database {redact(database_url)}", flush=True)
    except (ConfigError, LocalPostgresError, OSError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2

    child_env = {**os.environ, "DATABASE_URL": database_url}
    # supervisord's own files (pid, socket) live beside the data, not in the source tree.
    run_dir = ROOT / ".data" / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    child_env.setdefault("LIMBO_RUN_DIR", str(run_dir))
    print(f"run: supervisord's own log is {child_env['LIMBO_RUN_DIR']}/supervisord.log", flush=True)
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(CONFIG)],
        env=child_env,
        cwd=ROOT,
    )

    def forward(signum: int, _: FrameType | None) -> None:
        supervisord.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        code = supervisord.wait()
        print(f"run: supervisord exited with status {code}", flush=True)
    finally:
        if server is not None:
            print("run: stopping local PostgreSQL", flush=True)
            server.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
