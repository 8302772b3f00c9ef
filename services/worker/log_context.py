"""Adds the running DBOS workflow's ID to every log line written inside it."""

from __future__ import annotations

from dbos import DBOS
from structlog.typing import EventDict, WrappedLogger


def add_workflow_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if "workflow_id" not in event_dict:
        workflow_id = DBOS.workflow_id
        if workflow_id is not None:
            event_dict["workflow_id"] = workflow_id
    return event_dict
