"""Optional bearer-token protection (WORKER_API_TOKEN) for every route but health and metrics."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.problem_details import ProblemDetailsException

PUBLIC = "public"  # route opt key: reachable without a token


def bearer_guard(token: str | None):  # type: ignore[no-untyped-def]
    """A Litestar guard requiring `Authorization: Bearer <token>` when a token is configured."""
    expected = f"Bearer {token}".encode() if token else None

    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if expected is None or handler.opt.get(PUBLIC):
            return
        given = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ProblemDetailsException(
                status_code=401,
                title="Unauthorized",
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="limbo-worker"'},
            )

    return guard
