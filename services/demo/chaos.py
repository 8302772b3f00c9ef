"""Crashing or freezing the process on purpose, for resilience tests (only when DEMO_CHAOS=1)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Literal

ChaosMode = Literal["segfault", "sigkill", "exit", "stall", "freeze"]
STALL_SECONDS = 8.0
FREEZE_SECONDS = 10.0


def stall_event_loop(seconds: float = STALL_SECONDS) -> None:
    """Block the calling thread (the event loop) the way CPU-bound work would."""
    time.sleep(seconds)


def freeze_interpreter(seconds: float = FREEZE_SECONDS) -> None:
    """Hold the GIL for `seconds` in a C call that never releases it: no Python thread of
    this process runs meanwhile (not the heartbeat, not the fencer), as in a long native
    call or a stop-the-world pause."""
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call
    libc.sleep(ctypes.c_uint(int(seconds)))


def crash(mode: ChaosMode) -> None:
    """End this process the way a real failure would: no cleanup, no graceful shutdown."""
    sys.stdout.flush()
    if mode == "segfault":
        # A genuine invalid memory read, as an out-of-memory kill or a native bug would.
        ctypes.string_at(0)
    elif mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(70)
