"""DBOS 3.4's fencing token under a Limbo handover, in one process (run by
tests/client/test_fencing_token.py): a workflow's first execution is parked inside a step;
the supervisor's operating layer hands the row over (the guarded re-enqueue, which clears
owner_xid as DBOS's own recovery does); DBOS re-dispatches it and the new execution
reaches the same step; then the parked (zombie) execution wakes up and tries to
checkpoint. Prints one JSON line with what happened."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from dbos import DBOS
from dbos._error import DBOSWorkflowConflictIDError

URL = os.environ["DATABASE_URL"]
calls: list[str] = []
conflicts: list[str] = []
zombie_go, new_go = threading.Event(), threading.Event()

DBOS(config={"name": "probe", "system_database_url": URL, "executor_id": "probe-a"})


@DBOS.step()
def first() -> str:
    return "first"


@DBOS.step()
def parked() -> str:
    execution = "zombie" if not calls else "new"
    calls.append(execution)
    (zombie_go if execution == "zombie" else new_go).wait(60)
    return execution


@DBOS.workflow()
def guarded() -> str:
    first()
    try:
        return parked()
    except DBOSWorkflowConflictIDError:
        conflicts.append("zombie" if len(conflicts) == 0 else "again")
        raise


async def hand_over(workflow_id: str) -> Any:
    from services.shared.db import create_pool
    from services.supervisor.model import Action
    from services.supervisor.operating import Operator
    from services.supervisor.service import prepare
    from services.supervisor.settings import Settings

    settings = Settings(database_url=URL, actor="probe")
    schema = await prepare(settings, "probe")
    pool = await create_pool(URL, application_name="probe")
    try:
        operator = Operator(pool, schema, settings)
        outcome = await operator.release(
            workflow_id, reason="fencing probe", action=Action.REENQUEUE, force=True
        )
        return outcome.outcome.value
    finally:
        await pool.close()


def wait(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("probe step did not happen")
        time.sleep(0.05)


def main() -> int:
    DBOS.launch()
    handle = DBOS.start_workflow(guarded)
    wait(lambda: calls == ["zombie"])
    handover = asyncio.run(hand_over(handle.workflow_id))
    wait(lambda: calls == ["zombie", "new"])  # DBOS re-dispatched it: a second execution
    zombie_go.set()
    wait(lambda: bool(conflicts))  # the zombie's checkpoint was refused
    new_go.set()
    result: Any = DBOS.retrieve_workflow(handle.workflow_id).get_result()
    steps = DBOS.list_workflow_steps(handle.workflow_id)
    print(
        json.dumps(
            {
                "handover": handover,
                "calls": calls,
                "conflicts": conflicts,
                "result": result,
                "parked_output": [
                    s["output"] for s in steps if s["function_name"].endswith("parked")
                ],
            }
        ),
        flush=True,
    )
    DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
