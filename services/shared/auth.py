"""Bearer-token guards for the services' HTTP APIs (RFC 9457 problem details on 401)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.problem_details import ProblemDetailsException

PUBLIC = "public"  # route opt key: reachable without a token

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def bearer_guard(token: str | None, realm: str) -> Guard:
    """Require `Authorization: Bearer <token>` (compared in constant time) on every route
    not marked PUBLIC; with no token configured, let everything through."""
    expected = f"Bearer {token}".encode() if token else None

    # async: Litestar runs a synchronous guard in a thread pool, on every request.
    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        if expected is None or handler.opt.get(PUBLIC):
            return
        given = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ProblemDetailsException(
                status_code=401,
                title="Unauthorized",
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
            )

    return guard
