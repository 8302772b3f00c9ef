"""The operator console: limbo in a browser, served by the supervisor on its own port.

Mounted at `/console` only when `SUPERVISOR_ADMIN_TOKEN` is set; without the token every
`/console` path answers one page that says how to enable it, and nothing else. Pages are
rendered on the server (Jinja templates, package data); the only script is htmx, vendored
in `static/` (partial updates: the overview refreshes itself, the release's dry run shows
in place); every form also works without it. Security: see `security.py`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_303_SEE_OTHER
from litestar.template.config import TemplateConfig

from services.supervisor.console import security
from services.supervisor.console.controllers import (
    ConsoleController,
    LoginController,
    base_of,
    is_htmx,
    page,
)
from services.supervisor.console.views import STATIC, Links, environment

__all__ = [
    "LoginRequired",
    "SecurityHeaders",
    "console_router",
    "disabled_router",
    "template_config",
]

SecurityHeaders = security.SecurityHeaders
LoginRequired = security.LoginRequired
AnyRequest = Request[Any, Any, Any]

DISABLED_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Console disabled - Limbo supervisor</title></head>
<body>
<main>
<h1>The console is disabled</h1>
<p>This supervisor serves its operator console only when an admin token is configured.
To enable it, set the environment variable <code>SUPERVISOR_ADMIN_TOKEN</code> to a long
random secret (for example the output of <code>openssl rand -hex 32</code>) and restart the
supervisor. Then open <code>/console</code> again and sign in with that token.</p>
<p>The same token enables the JSON admin API (<code>/admin</code>, bearer token).</p>
</main>
</body>
</html>
"""


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(
        engine=JinjaTemplateEngine.from_environment(environment()),
    )


def _login_redirect(request: AnyRequest, exc: Exception) -> Response[Any]:
    base = base_of(request)
    here = request.url.path
    query = request.url.query
    # Return to the page asked for (a GET inside the console), else to the overview.
    target = f"{base}{here[len(security.CONSOLE_PATH) :]}" if request.method == "GET" else base
    if query and request.method == "GET" and not is_htmx(request):
        target = f"{target}?{query}"
    login = Links(base)("/login", next=security.safe_next(target, base))
    if is_htmx(request):
        return Response(content="", status_code=401, headers={"HX-Redirect": login})
    return Redirect(login, status_code=HTTP_303_SEE_OTHER)


def _error_page(request: AnyRequest, exc: Exception) -> Response[Any]:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if isinstance(exc, PermissionDeniedException):
        title = "Request refused"
        detail = (
            "The form's security token is missing or does not match (CSRF check). Reload the "
            "page and submit the form again."
        )
    elif isinstance(exc, HTTPException):
        title = {404: "Not found", 503: "Supervisor not ready"}.get(status, "Error")
        detail = exc.detail
    else:
        title, detail = "Internal error", "the console failed to answer; see the supervisor's log"
    if is_htmx(request):
        return page(request, "_error.html", status_code=status, title=title, detail=detail)
    return page(request, "error.html", status_code=status, title=title, detail=detail)


def console_router(token: str) -> Router:
    """Every console route, with the session, CSRF and sign-in guard they need."""
    static = create_static_files_router(
        path=security.STATIC_PATH,
        directories=[STATIC],
        opt={security.PUBLIC: True},
        include_in_schema=False,
        name="console-static",
        cache_control=None,
    )
    return Router(
        path="/",
        route_handlers=[LoginController, ConsoleController, static],
        middleware=[security.session_middleware(token), security.csrf_middleware(token)],
        guards=[security.session_guard],
        exception_handlers={
            security.LoginRequired: _login_redirect,
            HTTPException: _error_page,
            Exception: _error_page,
        },
        include_in_schema=False,
    )


@get(["/console", "/console/{path:path}"], include_in_schema=False, sync_to_thread=False)
def console_disabled() -> Response[str]:
    """Without SUPERVISOR_ADMIN_TOKEN: the page that says how to enable the console."""
    return Response(DISABLED_PAGE, status_code=404, media_type="text/html")


def disabled_router() -> Router:
    return Router(path="/", route_handlers=[console_disabled], include_in_schema=False)
