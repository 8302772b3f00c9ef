"""supervisord event listener: what happens when a program gives up (FATAL), plus JSON state logs.

Policy (justified in deploy/README.md):

- `--exit-on-fatal NAME`: when NAME goes FATAL, stop supervisord (SIGTERM to our parent, so the
  other programs still get their graceful stop). In a container supervisord is PID 1: the
  container ends and its restart policy (Kubernetes, compose `restart: unless-stopped`) starts
  it afresh, visibly (restart count, CrashLoopBackOff) instead of a pod silently running
  without its limbo supervisor. Used for the supervisor sidecar.
- `--restart-on-fatal NAME`: when NAME goes FATAL, start it again after `--restart-delay`
  seconds, forever. Used for the worker: a crash-looping worker must never take the
  supervisor sidecar down, since the sidecar is what releases the workflows a dead worker
  left in limbo. supervisord's own backoff grows by one second per failed start and is never
  capped; the delay here caps the wait between rounds of retries.

Every process state change is also written as one JSON line to supervisord's stdout (through
the same lock as the programs' output, see stdout_relay.py), so `docker logs` shows restarts
and give-ups in the same stream and format as the services' own logs. Our own stdout is the
event protocol channel and carries nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from stdout_relay import LockedWriter

WARNING_STATES = {"PROCESS_STATE_BACKOFF", "PROCESS_STATE_UNKNOWN"}


def log(writer: LockedWriter, level: str, event: str, **fields: Any) -> None:
    record = {
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "level": level,
        "logger": "supervisord",
        "service": "supervisord",
        "event": event,
        **fields,
    }
    writer.write((json.dumps(record, separators=(",", ":")) + "\n").encode())


def parse_tokens(text: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in text.split())


def restart_later(writer: LockedWriter, name: str, delay: float) -> None:
    def start() -> None:
        try:
            from supervisor import childutils

            rpc = childutils.getRPCInterface(os.environ)  # type: ignore[no-untyped-call]
            rpc.supervisor.startProcess(name, False)
            log(writer, "warning", "program_restarted_after_fatal", program=name)
        except Exception as exc:  # report and carry on: the next FATAL tries again
            log(writer, "error", "restart_after_fatal_failed", program=name, error=repr(exc))

    timer = threading.Timer(delay, start)
    timer.daemon = True
    timer.start()


def handle(
    writer: LockedWriter,
    event: str,
    payload: dict[str, str],
    *,
    exit_on_fatal: set[str],
    restart_on_fatal: set[str],
    restart_delay: float,
) -> None:
    if not event.startswith("PROCESS_STATE_"):
        return
    name = payload.get("processname", "?")
    state = event.removeprefix("PROCESS_STATE_")
    fields: dict[str, Any] = {
        "program": name,
        "state": state,
        "from_state": payload.get("from_state"),
    }
    if "expected" in payload:
        fields["expected"] = payload["expected"] == "1"
    if "pid" in payload:
        fields["pid"] = int(payload["pid"])
    if event == "PROCESS_STATE_FATAL":
        log(writer, "error", "program_gave_up", **fields)
        if name in exit_on_fatal:
            log(
                writer,
                "error",
                "supervisord_stopping",
                reason="an essential program gave up",
                program=name,
            )
            os.kill(os.getppid(), signal.SIGTERM)
        elif name in restart_on_fatal:
            restart_later(writer, name, restart_delay)
        return
    unexpected = event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0"
    level = "warning" if event in WARNING_STATES or unexpected else "info"
    log(writer, level, "program_state", **fields)


def serve(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    writer = LockedWriter(args.lock)
    exit_on_fatal = set(args.exit_on_fatal)
    restart_on_fatal = set(args.restart_on_fatal)
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return  # supervisord closed our stdin: it is shutting down
        headers = parse_tokens(line)
        body = stdin.read(int(headers["len"]))
        header_part = body.partition("\n")[0]
        try:
            handle(
                writer,
                headers["eventname"],
                parse_tokens(header_part),
                exit_on_fatal=exit_on_fatal,
                restart_on_fatal=restart_on_fatal,
                restart_delay=args.restart_delay,
            )
        except Exception:
            log(writer, "error", "event_handling_failed", error=traceback.format_exc())
        stdout.write("RESULT 2\nOK")
        stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="supervisord FATAL policy and state logs")
    parser.add_argument("--lock", required=True)
    parser.add_argument("--exit-on-fatal", action="append", default=[], metavar="PROGRAM")
    parser.add_argument("--restart-on-fatal", action="append", default=[], metavar="PROGRAM")
    parser.add_argument("--restart-delay", type=float, default=60.0)
    args = parser.parse_args(argv)
    # supervisord stops us with SIGTERM at shutdown; end quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        serve(args, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
