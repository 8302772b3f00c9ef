"""The worker API of a running stack (under supervisord) fuzzed from its own OpenAPI
schema with schemathesis: valid and invalid inputs for every operation, never a 5xx."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.resilience.conftest import StackFactory, record


def test_no_server_errors_for_any_generated_request(
    stacks: StackFactory, database_url: str
) -> None:
    stack = stacks(database_url, DEMO_CHAOS="0").wait_ready()
    base = stack.worker.base
    schema = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 6  # the routes the worker documents
    strategy = st.one_of(
        *(
            op.as_strategy(generation_mode=mode)
            for op in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        )
    )
    seen: list[tuple[str, int]] = []

    @given(case=strategy)
    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def no_server_error(case: Case[Any]) -> None:
        response = case.call(base_url=base, timeout=30)
        seen.append((f"{case.method} {case.operation.path}", response.status_code))
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )

    no_server_error()
    statuses = {status for _, status in seen}
    assert any(400 <= s < 500 for s in statuses), "the fuzzer never sent an invalid request"
    assert any(s < 300 for s in statuses), "the fuzzer never sent a valid request"
    assert stack.worker.http.get("/readyz").status_code == 200
    record(
        "worker_api_fuzz",
        "pass",
        requests=len(seen),
        operations=len(operations),
        server_errors=0,
        statuses=",".join(str(s) for s in sorted(statuses)),
    )
