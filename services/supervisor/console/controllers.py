"""The console's pages: login, overview, one workflow (with its release), the audit trail.

Every payload comes from the operating layer (services/supervisor/operating.py), the same
the CLI and the admin API show; this module only picks templates and reads forms.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from services.supervisor import metrics
from services.supervisor.api.admin import operator_of
from services.supervisor.console import security
from services.supervisor.console.views import Links
from services.supervisor.model import Action, Outcome
from services.supervisor.operating import (
    AUDIT_ACTIONS,
    AUDIT_OUTCOMES,
    AUDIT_RULES,
    MANUAL_ACTIONS,
    MANUAL_EFFECTS,
    NotReleasable,
    WorkflowNotFound,
)
from services.supervisor.service import Service
from services.supervisor.store.audit import AuditFilter

AnyRequest = Request[Any, Any, Any]
AUDIT_PAGE = 50
REASON_MAX = 2000
FAILED_LOGIN_DELAY_S = 0.5


def console_prefix(request: AnyRequest) -> str | None:
    service: Service = request.app.state.service
    return service.settings.console_prefix


def base_of(request: AnyRequest) -> str:
    return security.console_base(request, console_prefix(request))


def is_htmx(request: AnyRequest) -> bool:
    return request.headers.get("hx-request") == "true"


def page(request: AnyRequest, template: str, status_code: int = 200, **context: Any) -> Template:
    service: Service = request.app.state.service
    base = base_of(request)
    return Template(
        template_name=template,
        status_code=status_code,
        context={
            "base": base,
            "link": Links(base),
            "version": metrics.package_version(),
            "signed_in": security.signed_in(request),
            "role": service.role,
            "dry_run_mode": service.settings.dry_run,
            "actor": service.settings.actor,
            **context,
        },
    )


class LoginController(Controller):
    path = "/console"
    opt = {security.PUBLIC: True}

    @get("/login", name="console-login")
    async def login_form(self, request: AnyRequest, next: str | None = None) -> Template:
        base = base_of(request)
        return page(request, "login.html", next=security.safe_next(next, base), error=None)

    @post("/login", status_code=HTTP_303_SEE_OTHER)
    async def login(self, request: AnyRequest) -> Response[Any]:
        form = await request.form()
        base = base_of(request)
        target = security.safe_next(_text(form, "next"), base)
        service: Service = request.app.state.service
        expected = service.settings.admin_token or ""
        given = _text(form, "token")
        if expected and given and security.tokens_match(given, expected):
            request.set_session(security.new_session())
            return Redirect(target, status_code=HTTP_303_SEE_OTHER)
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing down a little
        return page(
            request, "login.html", status_code=401, next=target, error="That token is not right."
        )

    @post("/logout", status_code=HTTP_303_SEE_OTHER)
    async def logout(self, request: AnyRequest) -> Redirect:
        request.clear_session()
        return Redirect(f"{base_of(request)}/login", status_code=HTTP_303_SEE_OTHER)


class ConsoleController(Controller):
    path = "/console"

    @get("/", name="console-overview")
    async def overview(self, request: AnyRequest) -> Template:
        return page(request, "overview.html", ov=await _overview(request))

    @get("/overview/live")
    async def overview_live(self, request: AnyRequest) -> Template:
        """The overview's body alone: htmx swaps it in every few seconds."""
        return page(request, "_overview.html", ov=await _overview(request))

    @get("/workflow", name="console-workflow")
    async def workflow(self, request: AnyRequest, id: str, released: int | None = None) -> Template:
        detail = await _detail(request, id)
        done = None
        if released is not None:
            done = next((e for e in detail["audit"] if e["id"] == released), None)
        return page(request, "workflow.html", d=detail, form=_blank_form(), released=done)

    @post("/workflow/preview", status_code=200)
    async def preview(self, request: AnyRequest) -> Template:
        """The dry run of a release: what would happen, and the form that confirms it."""
        form = await request.form()
        workflow_id = _text(form, "id")
        choice = _release_form(form)
        outcome, problem = await _release(request, workflow_id, choice, dry_run=True)
        context: dict[str, Any] = {
            "workflow_id": workflow_id,
            "form": choice,
            "preview": None if outcome is None else outcome.describe(),
            "problem": problem,
            "effects": MANUAL_EFFECTS,
        }
        if is_htmx(request):
            return page(request, "_release_preview.html", **context)
        detail = await _detail(request, workflow_id)
        return page(
            request,
            "workflow.html",
            status_code=200 if problem is None else 409,
            d=detail,
            released=None,
            **context,
        )

    @post("/workflow/release", status_code=HTTP_303_SEE_OTHER)
    async def release(self, request: AnyRequest) -> Response[Any]:
        """The confirmed release: guarded, audited with the operator's reason."""
        form = await request.form()
        workflow_id = _text(form, "id")
        choice = _release_form(form)
        outcome, problem = await _release(request, workflow_id, choice, dry_run=False)
        if outcome is not None:
            link = Links(base_of(request))
            return Redirect(
                link.workflow(workflow_id, released=outcome.audit_id),
                status_code=HTTP_303_SEE_OTHER,
            )
        detail = await _detail(request, workflow_id)
        return page(
            request,
            "workflow.html",
            status_code=409,
            d=detail,
            released=None,
            workflow_id=workflow_id,
            form=choice,
            preview=None,
            problem=problem,
            effects=MANUAL_EFFECTS,
        )

    @get("/audit", name="console-audit")
    async def audit(
        self,
        request: AnyRequest,
        workflow_id: str | None = None,
        rule: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_id: int | None = None,
        limit: int = Parameter(default=AUDIT_PAGE, ge=1, le=500),
    ) -> Template:
        filters: dict[str, Any] = {
            "workflow_id": (workflow_id or "").strip() or None,
            "rule": rule or None,
            "action": action or None,
            "outcome": outcome or None,
            "since": (since or "").strip() or None,
            "until": (until or "").strip() or None,
        }
        problems = [
            f"{name}: choose one of the listed values"
            for name, allowed in (
                ("rule", AUDIT_RULES),
                ("action", AUDIT_ACTIONS),
                ("outcome", AUDIT_OUTCOMES),
            )
            if filters[name] is not None and filters[name] not in allowed
        ]
        times: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            try:
                times[name] = _instant(filters[name])
            except ValueError:
                problems.append(f"{name}: not an ISO 8601 time (e.g. 2025-01-31T09:30:00Z)")
                times[name] = None
        entries: list[dict[str, Any]] = []
        if not problems:
            where = AuditFilter(
                workflow_id=filters["workflow_id"],
                rule=filters["rule"],
                action=filters["action"],
                outcome=filters["outcome"],
                since=times["since"],
                until=times["until"],
                before_id=before_id,
            )
            entries = await operator_of(request).audit(where, limit=limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        if limit != AUDIT_PAGE:
            filters["limit"] = limit
        return page(
            request,
            "audit.html",
            status_code=400 if problems else 200,
            entries=entries,
            filters=filters,
            problems=problems,
            before_id=before_id,
            older=entries[-1]["id"] if more and entries else None,
            rules=AUDIT_RULES,
            actions=AUDIT_ACTIONS,
            outcomes=AUDIT_OUTCOMES,
            now_ms=int(datetime.now(UTC).timestamp() * 1000),
        )


async def _overview(request: AnyRequest) -> dict[str, Any]:
    service: Service = request.app.state.service
    return (await operator_of(request).overview(instance=service.instance)).describe()


async def _detail(request: AnyRequest, workflow_id: str) -> dict[str, Any]:
    try:
        detail = await operator_of(request).detail(workflow_id)
    except WorkflowNotFound:
        raise NotFoundException(f"workflow {workflow_id} not found") from None
    return detail.describe()


async def _release(
    request: AnyRequest, workflow_id: str, choice: dict[str, Any], *, dry_run: bool
) -> tuple[Outcome | None, str | None]:
    """The release the form asks for (a dry run, or the real one): its outcome, or why
    there is none (the form's problem, or the operator layer's refusal)."""
    problem: str | None = choice.get("problem")
    if problem is not None:
        return None, problem
    try:
        outcome = await operator_of(request).release(
            workflow_id,
            reason=choice["reason"],
            action=choice["action"],
            dry_run=dry_run,
            force=choice["force"],
        )
    except WorkflowNotFound:
        raise NotFoundException(f"workflow {workflow_id} not found") from None
    except (NotReleasable, ValueError) as exc:
        return None, str(exc)
    return outcome, None


def _text(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _blank_form() -> dict[str, Any]:
    return {"action": Action.DEAD_LETTER, "reason": "", "force": False}


def _release_form(form: FormMultiDict) -> dict[str, Any]:
    """The release form's fields, checked; `problem` says what is wrong, if anything."""
    reason = _text(form, "reason").strip()
    choice: dict[str, Any] = {
        "action": Action.DEAD_LETTER,
        "reason": reason[:REASON_MAX],
        "force": _text(form, "force") == "1",
    }
    try:
        action = Action(_text(form, "action"))
    except ValueError:
        action = None
    if action is None or action not in MANUAL_ACTIONS:
        choice["problem"] = "choose an action: " + ", ".join(a.value for a in MANUAL_ACTIONS)
    else:
        choice["action"] = action
    if not reason:
        choice["problem"] = "a reason is required"
    elif len(reason) > REASON_MAX:
        choice["problem"] = f"the reason is longer than {REASON_MAX} characters"
    return choice


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


__all__ = ["ConsoleController", "LoginController"]
