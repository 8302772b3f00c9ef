"""The DBOS internals the client reads (dbos is pinned ~=3.4.0): if an upgrade moves one,
this fails before anything else does."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from dbos._core import ActiveWorkflowById
from dbos._dbos import DBOSRegistry
from dbos._registrations import DBOSFuncInfo, get_func_info
from dbos._sys_db import SystemDatabase
from dbos._utils import GlobalParams


def test_dbos_is_the_pinned_release() -> None:
    assert version("dbos").startswith("3.4.")


def test_the_internals_limbo_reads_are_where_it_expects_them() -> None:
    assert callable(ActiveWorkflowById.activeList)
    assert "workflow_info_map" in inspect.getsource(DBOSRegistry.__init__)
    assert callable(DBOSRegistry.compute_app_version)
    assert "max_recovery_attempts" in DBOSFuncInfo.__dataclass_fields__ or hasattr(
        DBOSFuncInfo, "max_recovery_attempts"
    )
    assert callable(get_func_info)
    assert hasattr(GlobalParams, "app_version")
    assert hasattr(GlobalParams, "executor_id")
    claims = inspect.signature(SystemDatabase.start_queued_workflows)
    assert "owner_xid" in claims.parameters
    assert "Tuple[List[str]" in str(claims.return_annotation).replace("typing.", "")
    assert callable(SystemDatabase.start_queued_partitioned_workflows)
