"""Stand-in programs for testing supervisord's policy (not the services: supervisord is).

python stub_program.py NAME spam LINES SEED   emit LINES JSON lines of 100 B to 20 KiB,
                                              some in several writes, then wait for SIGTERM
python stub_program.py NAME crash FILE        record a start in FILE, exit 1 at once
python stub_program.py NAME serve FILE DRAIN  record a start in FILE, on SIGTERM log
                                              "draining", take DRAIN seconds, exit 0
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from types import FrameType


def emit(record: dict[str, object]) -> None:
    os.write(1, (json.dumps(record) + "\n").encode())


def record_start(path: str, name: str) -> None:
    with open(path, "a") as starts:
        starts.write(f"{name} {os.getpid()} {time.time()}\n")


def spam(name: str, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    for seq in range(lines):
        size = rng.choice([100, 1000, 3000, 4095, 5000, 9000, 20000])
        line = (json.dumps({"program": name, "seq": seq, "pad": "x" * size}) + "\n").encode()
        if seq % 5 == 0:  # a line written in pieces, like a block-buffered stdout flushing
            cut = rng.randrange(1, len(line))
            os.write(1, line[:cut])
            time.sleep(0.001)
            os.write(1, line[cut:])
        else:
            os.write(1, line)
    emit({"program": name, "event": "done", "lines": lines})
    signal.pause()


def serve(name: str, path: str, drain: float) -> None:
    def on_term(signum: int, _: FrameType | None) -> None:
        emit({"program": name, "event": "draining", "at": time.time()})
        time.sleep(drain)
        emit({"program": name, "event": "drained", "at": time.time()})
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    record_start(path, name)
    emit({"program": name, "event": "serving", "pid": os.getpid()})
    while True:
        signal.pause()


def main() -> int:
    name, mode, *args = sys.argv[1:]
    if mode == "spam":
        spam(name, int(args[0]), int(args[1]))
    elif mode == "crash":
        record_start(args[0], name)
        emit({"program": name, "event": "crashing"})
        return 1
    elif mode == "serve":
        serve(name, args[0], float(args[1]))
    return 2


if __name__ == "__main__":
    sys.exit(main())
