"""The worker API fuzzed from its own OpenAPI schema (schemathesis): never a 5xx.

Valid and invalid inputs are generated for every operation. This module gets its own
worker (`api_worker` is module-scoped), so the fuzzer's jobs disturb no other test.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.support.worker import Worker


def test_no_server_errors_for_any_generated_request(api_worker: Worker) -> None:
    schema = schemathesis.openapi.from_url(f"{api_worker.base}/schema/openapi.json")
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
        response = case.call(base_url=api_worker.base, timeout=30)
        seen.append((f"{case.method} {case.operation.path}", response.status_code))
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )

    no_server_error()
    statuses = {status for _, status in seen}
    assert any(400 <= s < 500 for s in statuses), "the fuzzer never sent an invalid request"
    assert any(s < 300 for s in statuses), "the fuzzer never sent a valid request"
