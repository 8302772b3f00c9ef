"""Run one program under supervisord and copy its output, whole lines only, to supervisord's stdout.

Usage (from supervisord.conf):

    command=python deploy/stdout_relay.py --lock %(ENV_LIMBO_RUN_DIR)s/stdout.lock -- CMD ARGS...

Why not supervisord's own `stdout_logfile=/dev/fd/1`: supervisord reads each child's pipe in
chunks of whatever is available (`os.read(fd, 128 KiB)`) and writes every chunk to its stdout as
it comes, with no regard for line ends. A chunk ends mid-line whenever the child's write was
larger than what the pipe held at that moment, so a line of one program gets cut and the other
program's output lands inside it (tests/deploy/test_supervisord.py shows it happening).

Why not let both programs write to one inherited descriptor directly: on a pipe (the container's
stdout) the kernel keeps a write whole only up to PIPE_BUF (4096 bytes); a longer JSON line (a
traceback) written while the pipe is full is split and can be interleaved with the other writer.

What this does instead: the program writes into a private pipe that only this relay reads; the
relay cuts complete lines out of it and writes them to the shared output while holding an
exclusive `flock` on a lock file that every relay (and the event listener) takes. Two relays
never write at the same time, so a line, however long, is never interleaved with another
program's output, and never split: a partial line stays buffered until its newline arrives.

The shared output is supervisord's own stdout, reopened through /proc/<supervisord>/fd/1 in
append mode (supervisord replaces a child's fds 0-2 with pipes and closes the others, so there
is no inherited descriptor to use). Where that cannot be opened (a socket), the relay writes to
its own stdout, which supervisord forwards as before (stdout_logfile=/dev/fd/1 stays configured
for that fallback).

Signals: supervisord signals the whole process group (stopasgroup/killasgroup), so the program
gets SIGTERM itself; the relay ignores SIGTERM/SIGINT/SIGHUP, keeps copying the program's drain
logs, and exits with the program's status (or by the same signal). If the relay dies anyway,
the kernel sends the program SIGTERM (PR_SET_PDEATHSIG), so no orphan outlives its supervisor;
if supervisord dies (SIGKILL), the relay passes SIGTERM on and keeps copying the drain logs.
Standard library only: it runs before anything else is importable.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import BinaryIO

READ_SIZE = 1 << 16
# A "line" longer than this is written out without waiting for its end (memory bound).
MAX_PENDING = 8 << 20
PR_SET_PDEATHSIG = 1
# After the program exits, how long output from processes it left behind is still copied.
ORPHAN_GRACE = 2.0


class LockedWriter:
    """Writes byte blocks made of whole lines to the shared output, one holder at a time."""

    def __init__(self, lock_path: str, output: BinaryIO | None = None) -> None:
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._out_fd = output.fileno() if output is not None else open_shared_output()
        self._broken = False

    def write(self, data: bytes) -> None:
        if not data or self._broken:
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._out_fd, view)
                except InterruptedError:
                    continue
                except BrokenPipeError:
                    # Nobody reads our output any more: drop it, keep the program running.
                    self._broken = True
                    return
                view = view[written:]
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def open_shared_output() -> int:
    """supervisord's stdout (our parent's fd 1), else our own stdout."""
    try:
        return os.open(f"/proc/{os.getppid()}/fd/1", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as exc:
        sys.stderr.write(f"stdout_relay: cannot reopen supervisord's stdout ({exc}); using ours\n")
        return sys.stdout.fileno()


def _parent_death_signal(sig: int) -> None:
    """Have the kernel send us `sig` when our parent process dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the relay (its parent) dies."""
    _parent_death_signal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def relay(lock_path: str, command: Sequence[str]) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    writer = LockedWriter(lock_path)
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        writer.write(f"stdout_relay: cannot start {command[0]!r}: {exc}\n".encode())
        return 127
    os.close(write_end)

    # supervisord gone (SIGKILLed outside a container): stop the program gracefully; its drain
    # logs still reach the output, which does not depend on supervisord being alive.
    def parent_died(_signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGUSR1, parent_died)
    _parent_death_signal(signal.SIGUSR1)
    if os.getppid() != parent:
        parent_died(signal.SIGUSR1, None)  # it died before the prctl
    pending = b""
    exited_at: float | None = None
    while True:
        if exited_at is None and child.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > ORPHAN_GRACE:
            break  # the program is gone but something it started still holds the pipe
        ready, _, _ = select.select([read_end], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(read_end, READ_SIZE)
        if not chunk:  # every writer closed the pipe: the program (and its children) ended
            break
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut:
            writer.write(pending[:cut])
            pending = pending[cut:]
        elif len(pending) > MAX_PENDING:
            writer.write(pending)
            pending = b""
    if pending:
        writer.write(pending + b"\n")
    os.close(read_end)
    code = child.wait()
    if code < 0:  # killed by a signal: end the same way, so supervisord reports it faithfully
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lock", required=True, help="lock file shared by every writer")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("no command given")
    return relay(args.lock, command)


if __name__ == "__main__":
    sys.exit(main())
