"""The ERROR outcome the FAIL action writes, byte for byte, in each SDK's serialization.

The js_superjson form is what @dbos-inc/dbos-sdk 5.3 writes for a thrown Error (read in its
dist/src/serialization.js and seen in its own rows): superjson of serialize-error's plain
record of the error, plus DBOS's marker, which the SDK requires before it parses a value.
tests/client/test_typescript_app.py has the SDK itself read it back.
"""

from __future__ import annotations

import base64
import json
import pickle

from services.supervisor.store.writes import error_payloads

MESSAGE = 'Awaited workflow p-1 is CANCELLED: "it will never complete"'


def test_superjson_is_what_the_typescript_sdk_writes_for_an_error() -> None:
    _, _, superjson = error_payloads(MESSAGE)
    assert superjson == (
        '{"json": {"name": "DBOSAwaitedWorkflowDeadChild", '
        '"message": "Awaited workflow p-1 is CANCELLED: \\"it will never complete\\""}, '
        '"__dbos_serializer": "superjson"}'
    )
    # The SDK's parse: JSON, the marker beside `json`, and no superjson meta (a plain record).
    parsed = json.loads(superjson)
    assert parsed["__dbos_serializer"] == "superjson"
    assert "meta" not in parsed
    assert parsed["json"] == {"name": "DBOSAwaitedWorkflowDeadChild", "message": MESSAGE}


def test_portable_json_is_the_language_neutral_error_record() -> None:
    _, portable, _ = error_payloads(MESSAGE)
    assert json.loads(portable) == {"name": "DBOSAwaitedWorkflowDeadChild", "message": MESSAGE}


def test_native_is_a_pickled_builtin_exception() -> None:
    native, _, _ = error_payloads(MESSAGE)
    error = pickle.loads(base64.b64decode(native))  # noqa: S301 - our own payload
    assert type(error) is RuntimeError
    assert error.args == (MESSAGE,)
