"""The audit trail stores what a batch of decisions shared once (limbo.audit_batch), and
`limbo.audit_entries` gives every decision back whole: the evidence the sweep decided on."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from services.supervisor.operating import Operator
from services.supervisor.store.audit import split_shared
from services.supervisor.store.writes import _evidence
from testkit.dbos_rows import (
    audit_rows,
    insert_executor,
    insert_many_workflows,
    insert_workflow,
    publish,
)

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5]), st.text("ab")
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("xy", max_size=2), inner),
    max_leaves=6,
)
_RECORD = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), _VALUES, max_size=5)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _obj(value: Any) -> Any:
    """A jsonb column as read (text, or decoded by a connection's codec)."""
    return json.loads(value) if isinstance(value, str) else value


@given(st.lists(_RECORD, max_size=6))
def test_split_shared_gives_every_record_back_as_json(records: list[dict[str, Any]]) -> None:
    shared, own = split_shared(records)
    assert len(own) == len(records)
    for record, mine in zip(records, own, strict=True):
        assert _json({**(shared or {}), **mine}) == _json(record)
        assert not set(mine) & set(shared or {})
    if shared is not None:
        assert len(records) >= 2
        for key, value in shared.items():  # only what every record holds, equal as JSON
            assert all(_json(r[key]) == _json(value) for r in records)


def test_split_shared_keeps_values_python_calls_equal_apart() -> None:
    """1 == True == 1.0 in Python, not in JSON: such entries stay each record's own."""
    shared, own = split_shared([{"x": 1, "y": "same"}, {"x": True, "y": "same"}, {"x": 1.0}])
    assert shared is None  # "y" is missing from the third
    shared, own = split_shared([{"x": 1, "y": [1]}, {"x": True, "y": [True]}])
    assert shared is None
    assert own == [{"x": 1, "y": [1]}, {"x": True, "y": [True]}]


async def test_a_mass_release_stores_the_shared_evidence_once(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await publish(conn, "dbos_workflow", 5)
    await insert_executor(conn, "exec-a", seen_ago_s=30)  # dead, holding them all
    ids = await insert_many_workflows(conn, "dead", 40, stride_ms=2)

    report = await operator.sweep()

    assert sorted(o.verdict.workflow_id for o in report.outcomes) == sorted(ids)
    batches = await conn.fetch(
        "SELECT id, evidence, jsonb_typeof(evidence) AS type FROM limbo.audit_batch"
    )
    assert len(batches) == 1
    assert batches[0]["type"] == "object"
    shared = _obj(batches[0]["evidence"])
    assert shared["executor_state"] == "expired"
    assert shared["executor_id"] == "exec-a"
    raw = {r["workflow_id"]: r for r in await conn.fetch("SELECT * FROM limbo.audit")}
    assert {r["batch_id"] for r in raw.values()} == {batches[0]["id"]}
    for record in raw.values():  # each row holds only what is its own
        assert not set(_obj(record["evidence"])) & set(shared)
    whole = {r["workflow_id"]: r for r in await audit_rows(conn)}
    for outcome in report.outcomes:  # the view gives back what the sweep decided on
        expected = json.loads(json.dumps(_evidence(outcome)))
        assert _obj(whole[outcome.verdict.workflow_id]["evidence"]) == expected


async def test_a_single_decision_keeps_its_evidence_in_its_row(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await publish(conn, "dbos_workflow", 5)
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "alone", dedup="d-1", updated_ago_ms=60_000)

    [outcome] = (await operator.sweep()).outcomes

    [record] = await conn.fetch("SELECT batch_id, evidence FROM limbo.audit")
    assert record["batch_id"] is None
    assert await conn.fetchval("SELECT count(*) FROM limbo.audit_batch") == 0
    expected = json.loads(json.dumps(_evidence(outcome)))
    assert _obj(record["evidence"]) == expected
    [entry] = await audit_rows(conn, "alone")
    assert _obj(entry["evidence"]) == expected
