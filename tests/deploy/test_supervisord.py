"""deploy/supervisord.conf under a real supervisord, with stand-in programs.

The thing under test is supervisord's configuration (output path, restart and give-up policy,
stop order and waits), so the programs are stubs (tests/deploy/stub_program.py); the services
themselves are exercised by their own tests and by `make container-test`.
"""

from __future__ import annotations

import configparser
import itertools
import json
from collections.abc import Iterator

import pytest

from tests.deploy.supervisord_harness import (
    CONFIG,
    STARTS_FILE,
    Supervisord,
    derived_config,
    stub_command,
)

# The worker's default drain time (WORKER_SHUTDOWN_TIMEOUT), as the brief of the worker fixes it.
WORKER_DRAIN_SECONDS = 20
LINES_PER_PROGRAM = 300


@pytest.fixture
def supervisords() -> Iterator[list[Supervisord]]:
    started: list[Supervisord] = []
    yield started
    for sv in started:
        sv.close()


def launch(started: list[Supervisord], config: str, *, slow_reader: bool = False) -> Supervisord:
    sv = Supervisord(config, slow_reader=slow_reader)
    started.append(sv)
    return sv.start()


def parsed_config() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read(CONFIG)
    return parser


def both_done(sv: Supervisord) -> bool:
    return sum(b'"event": "done"' in line for line in sv.lines()) == 2


def spam_commands() -> dict[str, str]:
    return {
        "worker": stub_command("worker", "spam", str(LINES_PER_PROGRAM), "1"),
        "supervisor": stub_command("supervisor", "spam", str(LINES_PER_PROGRAM), "2"),
    }


def events(sv: Supervisord, event: str, **match: object) -> list[dict[str, object]]:
    return [
        r
        for r in sv.records()
        if r.get("event") == event and all(r.get(k) == v for k, v in match.items())
    ]


def test_stdout_carries_whole_unmixed_json_lines(supervisords: list[Supervisord]) -> None:
    # Lines of 100 B to 20 KiB from two programs at once, a fifth of them written in two
    # pieces, read by a slow consumer so that the pipe fills and writers block mid-write.
    sv = launch(supervisords, derived_config(spam_commands()), slow_reader=True)
    sv.wait_for(lambda: both_done(sv), 60, "both programs to finish writing")
    seen: dict[str, list[int]] = {"worker": [], "supervisor": []}
    for line in sv.lines():
        record = json.loads(line)  # every line is one whole JSON object
        if "seq" in record:
            seen[record["program"]].append(record["seq"])
            assert set(record["pad"]) == {"x"}
    for program, seqs in seen.items():
        assert seqs == list(range(LINES_PER_PROGRAM)), f"{program}: lines lost or reordered"
    # supervisord's own messages stay off stdout; state changes arrive as JSON from the listener
    assert {"worker", "supervisor"} <= {
        str(r["program"]) for r in events(sv, "program_state", state="STARTING")
    }


def test_supervisord_own_forwarding_cuts_lines(supervisords: list[Supervisord]) -> None:
    """Why the relay exists: stdout_logfile=/dev/fd/1 alone passes on chunks, not lines."""
    sv = launch(supervisords, derived_config(spam_commands(), relay=False))
    sv.wait_for(lambda: both_done(sv), 60, "both programs to finish writing")
    broken = 0
    for line in sv.lines():
        try:
            json.loads(line)
        except ValueError:
            broken += 1
    assert broken > 0, "supervisord forwarded whole lines: the relay may no longer be needed"


def test_crash_looping_worker_backs_off_and_leaves_the_supervisor_alone(
    supervisords: list[Supervisord],
) -> None:
    commands = {
        "worker": stub_command("worker", "crash", STARTS_FILE),
        "supervisor": stub_command("supervisor", "serve", STARTS_FILE, "0"),
    }
    sv = launch(supervisords, derived_config(commands))
    sv.wait_for(lambda: len(sv.start_times("worker")) >= 5, 30, "five worker starts")
    starts = [at for _, at in sv.start_times("worker")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # supervisord's backoff: the n-th retry comes at least n seconds after the previous start
    for retry, gap in enumerate(gaps, start=1):
        assert gap >= retry - 0.2, f"retry {retry} came too early: gaps {gaps}"
    assert len(sv.start_times("supervisor")) == 1, "the sidecar was restarted"
    assert sv.proc is not None
    assert sv.proc.poll() is None, "supervisord exited"
    assert events(sv, "program_state", program="worker", state="BACKOFF")
    assert not events(sv, "program_gave_up")


def test_fatal_worker_is_started_again(supervisords: list[Supervisord]) -> None:
    commands = {
        "worker": stub_command("worker", "crash", STARTS_FILE),
        "supervisor": stub_command("supervisor", "serve", STARTS_FILE, "0"),
    }
    config = derived_config(
        commands,
        overrides={("program:worker", "startretries"): "1"},
        replace={"--restart-delay 60": "--restart-delay 1"},
    )
    sv = launch(supervisords, config)
    sv.wait_for(
        lambda: events(sv, "program_restarted_after_fatal", program="worker"),
        30,
        "the listener to start the fatal worker again",
    )
    sv.wait_for(lambda: len(sv.start_times("worker")) >= 3, 10, "a start after the restart")
    assert events(sv, "program_gave_up", program="worker")
    assert len(sv.start_times("supervisor")) == 1, "the sidecar was restarted"
    assert sv.proc is not None
    assert sv.proc.poll() is None, "supervisord exited"


def test_fatal_supervisor_stops_supervisord_after_a_graceful_worker_stop(
    supervisords: list[Supervisord],
) -> None:
    commands = {
        "worker": stub_command("worker", "serve", STARTS_FILE, "2"),
        "supervisor": stub_command("supervisor", "crash", STARTS_FILE),
    }
    sv = launch(supervisords, derived_config(commands))
    assert sv.proc is not None
    code = sv.proc.wait(60)
    assert len(sv.start_times("supervisor")) == 1 + int(
        parsed_config()["program:supervisor"]["startretries"]
    )
    assert events(sv, "program_gave_up", program="supervisor")
    assert events(sv, "supervisord_stopping")
    assert events(sv, "drained", program="worker"), "the worker was not stopped gracefully"
    assert code == 0


def test_stop_drains_the_worker_first_then_the_supervisor(
    supervisords: list[Supervisord],
) -> None:
    commands = {
        "worker": stub_command("worker", "serve", STARTS_FILE, "3"),
        "supervisor": stub_command("supervisor", "serve", STARTS_FILE, "0.5"),
    }
    sv = launch(supervisords, derived_config(commands))
    sv.wait_for(
        lambda: len(events(sv, "serving")) == 2 and events(sv, "program_state", state="RUNNING"),
        30,
        "both programs to run",
    )
    assert sv.stop() == 0
    worker_drained = events(sv, "drained", program="worker")
    supervisor_draining = events(sv, "draining", program="supervisor")
    assert worker_drained, "the worker was killed before it drained"
    assert supervisor_draining
    assert float(str(worker_drained[0]["at"])) <= float(str(supervisor_draining[0]["at"]))
    for line in sv.lines():
        json.loads(line)


def test_stop_waits_cover_the_worker_drain() -> None:
    config = parsed_config()
    worker = config["program:worker"]
    supervisor = config["program:supervisor"]
    assert int(worker["stopwaitsecs"]) > WORKER_DRAIN_SECONDS
    assert worker["stopsignal"] == "TERM"
    assert worker["stopasgroup"] == worker["killasgroup"] == "true"
    # the worker stops first (higher priority number), the supervisor last but one
    assert int(worker["priority"]) > int(supervisor["priority"])
    assert int(supervisor["priority"]) > int(config["eventlistener:policy"]["priority"])
    assert "python -m services.supervisor" in supervisor["command"]
    assert "python -m services.worker" in worker["command"]
