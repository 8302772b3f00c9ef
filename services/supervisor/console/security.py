"""What makes the console safe in a browser: sessions, CSRF, security headers, the path prefix.

- **Login.** The login form takes the admin token (POST body only, compared in constant
  time); the session cookie then holds an AES-GCM encrypted `{"auth": 1, "exp": ...}`
  (Litestar's client-side sessions), never the token. HttpOnly, SameSite=Strict, path `/`,
  and Secure when the request came over TLS (directly, or `X-Forwarded-Proto: https`).
- **Keys.** The session key and the CSRF secret are derived from the admin token (HKDF-SHA256,
  one label each), so every replica accepts the same session, sessions survive restarts,
  and changing the token ends every session.
- **CSRF.** Litestar's CSRFMiddleware on the console's routes only (the JSON admin API,
  with its bearer token, needs none): every POST needs the token of the CSRF cookie in its
  `_csrf_token` field (or `X-CSRFToken` header).
- **Headers.** Every response under `/console` carries a strict Content-Security-Policy
  (no inline script or style), `nosniff`, no framing, no referrer, and `no-store` for
  pages. The templates escape every value (Jinja autoescape).
- **Prefix.** Behind a reverse proxy that strips a path prefix, links carry
  `SUPERVISOR_CONSOLE_PREFIX`, or else the request's `X-Forwarded-Prefix` when it is a
  plain path.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_PATH = "/console"
STATIC_PATH = f"{CONSOLE_PATH}/static"
SESSION_COOKIE = "limbo_console_session"
CSRF_COOKIE = "limbo_console_csrf"
SESSION_HOURS = 12
PUBLIC = "console_public"  # route opt: reachable without a session (login, static files)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


def derive_key(token: str, label: str, length: int = 32) -> bytes:
    """A key for one purpose (`label`), derived from the admin token."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=b"limbo-supervisor-console",
        info=label.encode(),
    ).derive(token.encode())


def session_config(token: str) -> CookieBackendConfig:
    return CookieBackendConfig(
        secret=derive_key(token, "session"),
        key=SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=False,  # made Secure per response when served over TLS (SecurityHeaders)
        max_age=SESSION_HOURS * 3600,
    )


class ConsoleSessions(SessionMiddleware[ClientSideSessionBackend]):
    """Litestar's client-side session middleware, its backend built here: Litestar copies
    route middleware definitions, and the backend's cipher cannot be copied."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        super().__init__(app, ClientSideSessionBackend(session_config(token)))


def session_middleware(token: str) -> DefineMiddleware:
    return DefineMiddleware(ConsoleSessions, token=token)


def csrf_config(token: str) -> CSRFConfig:
    return CSRFConfig(
        secret=derive_key(token, "csrf").hex(),
        cookie_name=CSRF_COOKIE,
        cookie_path="/",
        cookie_httponly=True,
        cookie_samesite="strict",
    )


def csrf_middleware(token: str) -> DefineMiddleware:
    return DefineMiddleware(CSRFMiddleware, config=csrf_config(token))


def valid_prefix(value: str | None) -> str | None:
    """A path prefix as configured or forwarded (`/ops`, `/a/b`), or None if not one."""
    if not value:
        return None
    value = value.rstrip("/")
    return value if _PREFIX.match(value) else None


def console_base(connection: ASGIConnection[Any, Any, Any, Any], configured: str | None) -> str:
    """The console's root as the browser sees it: `<prefix>/console`."""
    prefix = configured or valid_prefix(connection.headers.get("x-forwarded-prefix")) or ""
    return f"{prefix}{CONSOLE_PATH}"


def safe_next(value: str | None, base: str) -> str:
    """Where to go after login: a path inside the console, else the overview (never an
    absolute URL, a scheme-relative one, or one outside the console)."""
    if value:
        parts = urlsplit(value)
        if (
            not parts.scheme
            and not parts.netloc
            and value.startswith(base + "/")
            and "\\" not in value
            and not value.startswith("//")
        ):
            return value
    return f"{base}/"


def tokens_match(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def new_session() -> dict[str, Any]:
    return {"auth": 1, "exp": int(time.time()) + SESSION_HOURS * 3600}


def signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    session = connection.scope.get("session")
    if not isinstance(session, dict):
        return False
    exp = session.get("exp")
    return session.get("auth") == 1 and isinstance(exp, int) and exp > time.time()


class LoginRequired(NotAuthorizedException):
    """No valid session: the console answers with its login page (a redirect)."""


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


async def session_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    if handler.opt.get(PUBLIC) or signed_in(connection):
        return
    raise LoginRequired("sign in with the admin token")


def over_tls(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower() == b"https"
    return False


class SecurityHeaders:
    """ASGI middleware (whole app): the console's headers on every response under
    `/console` (pages, static files, errors, the disabled page), and Secure cookies when
    served over TLS. Other paths pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == ScopeType.HTTP else ""
        if not (path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC_PATH + "/")
        secure = over_tls(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in SECURITY_HEADERS:
                    headers[name.decode()] = value.decode()
                if not static:
                    headers["cache-control"] = "no-store"
                if secure:
                    cookies = headers.getall("set-cookie", [])
                    if cookies:
                        del headers["set-cookie"]
                        for cookie in cookies:
                            marked = "secure" in cookie.lower().replace(" ", "").split(";")
                            headers.add("set-cookie", cookie if marked else f"{cookie}; Secure")
            await send(message)

        await self.app(scope, receive, send_with_headers)
