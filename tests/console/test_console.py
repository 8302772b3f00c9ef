"""The operator console in a real browser (Debian's Chromium under Playwright), against real
supervisor processes and a PostgreSQL holding real limbo, built by SQL as the supervisor's
own tests build it: each page shows the database's data, a dry run changes nothing, a
release with a reason changes the row and is audited, no token means no console, a
cross-site POST is refused, user data holding HTML and script is shown as text, and the
browser reports no problem. Screenshots go to .data/artifacts/console/."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from testkit.dbos_rows import (
    audit_rows,
    db,
    dump_dbos,
    insert_executor,
    insert_step,
    insert_workflow,
    row,
    spawn_supervisor,
)
from testkit.executors import HeldExecutor
from testkit.localpg import free_port
from testkit.postgres import TestPostgres
from testkit.processes import ServiceProcess, wait_until
from tests.console.conftest import ModuleSpawn, Watched, screenshot

TOKEN = f"console-{secrets.token_hex(16)}"
EVIL_NAME = '<script>window.__pwned = 1</script><b class="injected">bold</b>'
EVIL_ERROR = '<img src=x onerror="window.__pwned = 2"> "quoted" & <i>done</i>'
EVIL_STEP_ERROR = "</pre><script>window.__pwned = 3</script>"
EVIL_ID = "evil/<i>&id=1?#x"
EVIL_DEDUP = "<b>dedup</b>&amp;1"
CONTROLS_WITHOUT_LABEL = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')].filter(e =>
    e.tagName === 'BUTTON' ? !e.textContent.trim()
      : (e.labels.length === 0 && !e.getAttribute('aria-label'))).map(e => e.outerHTML)"""


@dataclass
class Stack:
    url: str
    base: str  # the leading supervisor (sup-a), with the token
    standby: str  # sup-b, with the token
    plain: str  # a supervisor without the token
    lead: ServiceProcess

    def console(self, path: str = "/", **params: str) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base}/console{path}{query}"


async def build_limbo(conn: asyncpg.Connection) -> None:
    await insert_executor(conn, "exec-dead", seen_ago_s=60)  # its lease ran out: fenced
    await insert_executor(conn, "exec-gone", lost=True, seen_ago_s=30)  # session gone: dead
    await insert_executor(conn, "exec-old", version="0.0.9", stopped=True, seen_ago_s=120)
    # Orphaned: PENDING on an executor dead since after the claim, with children and steps.
    await insert_workflow(
        conn, "orph-1", executor_id="exec-dead", dedup="job/1", updated_ago_ms=90_000,
        name=EVIL_NAME,
    )  # fmt: skip
    await conn.execute(
        "UPDATE dbos.workflow_status SET error = $1 WHERE workflow_uuid = 'orph-1'", EVIL_ERROR
    )
    await insert_workflow(
        conn, "orph-1-c1", status="SUCCESS", parent="orph-1", queue=None, updated_ago_ms=95_000
    )
    await insert_workflow(
        conn, "orph-1-c2", status="ERROR", parent="orph-1", queue=None, updated_ago_ms=92_000
    )
    await insert_step(conn, "orph-1", 1, child="orph-1-c1", ago_ms=95_000)
    await insert_step(conn, "orph-1", 2, child="orph-1-c2", ago_ms=92_000)
    await conn.execute(
        "UPDATE dbos.operation_outputs SET error = $1 "
        "WHERE workflow_uuid = 'orph-1' AND function_id = 2",
        EVIL_STEP_ERROR,
    )
    await insert_workflow(
        conn, EVIL_ID, executor_id="exec-dead", dedup=EVIL_DEDUP, updated_ago_ms=80_000
    )
    # Exhausted: past DBOS's default 100 attempts.
    await insert_workflow(
        conn, "exh-1", executor_id="exec-gone", attempts=150, dedup="job/2", updated_ago_ms=30_000
    )
    # Version-orphaned: ENQUEUED for a version nobody runs (policy alert).
    await insert_workflow(
        conn, "old-1", status="ENQUEUED", version="0.0.9", executor_id=None, dedup="job/3",
        updated_ago_ms=60_000,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(pg: TestPostgres, module_spawn: ModuleSpawn) -> Iterator[Stack]:
    url = pg.fresh_database("console")
    live = HeldExecutor(url, "exec-live")
    try:
        db(url, build_limbo)
        live.__enter__()
        db(url, lambda c: insert_workflow(c, "live-1", executor_id="exec-live", dedup="job/live"))
        env = {
            "SUPERVISOR_DRY_RUN": "1",  # the limbo stays for the pages; operators still act
            "SUPERVISOR_POLL_INTERVAL": "0.3",
            "SUPERVISOR_VERSION_ORPHAN_AFTER": "5",
        }
        lead, base = spawn_supervisor(
            module_spawn, url, "sup-a", SUPERVISOR_ADMIN_TOKEN=TOKEN, **env
        )
        lead.wait_http(f"{base}/readyz")
        wait_until(lambda: httpx.get(f"{base}/readyz").json()["role"] == "leader", 10)
        standby, standby_base = spawn_supervisor(
            module_spawn, url, "sup-b", SUPERVISOR_ADMIN_TOKEN=TOKEN, **env
        )
        plain, plain_base = spawn_supervisor(module_spawn, url, "sup-plain", **env)
        standby.wait_http(f"{standby_base}/readyz")
        plain.wait_http(f"{plain_base}/readyz")
        # The leader's first sweep has dry-run the three candidates it could act on.
        wait_until(lambda: len(db(url, audit_rows)) >= 3, 15, what="dry-run audit rows")
        yield Stack(url, base, standby_base, plain_base, lead)
    finally:
        live.__exit__(None, None, None)
        pg.drop_database(url)


def sign_in(page: Page, stack: Stack) -> None:
    page.goto(stack.console("/login"))
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def no_unlabelled_controls(page: Page) -> None:
    assert page.evaluate(CONTROLS_WITHOUT_LABEL) == []


def test_no_token_means_no_console(stack: Stack, watched: Watched, artifacts: Path) -> None:
    for path in ("/console", "/console/", "/console/workflow?id=orph-1", "/console/audit"):
        response = httpx.get(f"{stack.plain}{path}")
        assert response.status_code == 404, path
        assert "SUPERVISOR_ADMIN_TOKEN" in response.text
        assert "orph-1" not in response.text
        assert "job/1" not in response.text
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert httpx.get(f"{stack.plain}/console/static/htmx.min.js").status_code == 404
    assert httpx.post(f"{stack.plain}/console/login", data={"token": TOKEN}).status_code in (
        404,
        405,
    )
    page = watched.page
    watched.allow(r"status of 404")
    page.goto(f"{stack.plain}/console")
    expect(page.get_by_role("heading", name="The console is disabled")).to_be_visible()
    screenshot(page, artifacts, "console-disabled")


def test_sign_in_sets_a_strict_session_cookie_and_never_shows_the_token(
    stack: Stack, watched: Watched, browser: BrowserContext, artifacts: Path
) -> None:
    page = watched.page
    browser.clear_cookies()
    page.goto(stack.console("/"))
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    no_unlabelled_controls(page)
    screenshot(page, artifacts, "login")
    assert page.locator("form.login").get_attribute("method") == "post"

    watched.allow(r"status of 401")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not right.")
    assert not [c for c in browser.cookies() if c["name"] == "limbo_console_session"]

    sign_in(page, stack)
    cookies = {c["name"]: c for c in browser.cookies()}
    session = cookies["limbo_console_session"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert not session["secure"]
    assert cookies["limbo_console_csrf"]["sameSite"] == "Strict"
    assert TOKEN not in session["value"]
    assert TOKEN not in page.url
    assert all(TOKEN not in line for line in stack.lead.log_lines())


def test_overview_shows_the_database(stack: Stack, watched: Watched, artifacts: Path) -> None:
    page = watched.page
    sign_in(page, stack)
    expect(page.locator("#limbo-count")).to_have_text("4")
    main = page.locator("main")
    for caption in ("orphaned: 2", "exhausted: 1", "version_orphaned: 1"):
        expect(page.locator("caption", has_text=caption)).to_be_visible()
    for dedup in ("job/1", "job/2", "job/3", EVIL_DEDUP):
        expect(main.get_by_text(dedup, exact=True).first).to_be_visible()
    executors = {
        row.locator("th").inner_text(): row.inner_text()
        for row in page.locator("section[aria-labelledby=executors-h] tbody tr").all()
    }
    assert set(executors) == {"exec-dead", "exec-gone", "exec-live", "exec-old"}
    assert "dead (stopped" in executors["exec-old"]
    assert "fenced (expired" in executors["exec-dead"]
    assert "dead (lost" in executors["exec-gone"]
    assert "alive (alive" in executors["exec-live"]
    assert "live-1" in executors["exec-live"]
    assert "orph-1" in executors["exec-dead"]
    assert EVIL_ID in executors["exec-dead"]
    supervisors = {
        row.locator("th").inner_text(): row.inner_text()
        for row in page.locator("section[aria-labelledby=supervisors-h] tbody tr").all()
    }
    assert set(supervisors) == {"sup-a (this one)", "sup-b", "sup-plain"}
    assert "leader" in supervisors["sup-a (this one)"]
    assert "standby" in supervisors["sup-b"]
    assert "standby" in supervisors["sup-plain"]
    recent = page.locator("section[aria-labelledby=recent-h] tbody tr")
    assert recent.count() >= 3
    assert "dry_run" in recent.first.inner_text()
    # The oldest candidate is the one with the oldest progress.
    expect(page.locator(".cards").get_by_role("link", name="orph-1")).to_be_visible()
    # The chart: a line of candidates and bars of (dry-run) actions, drawn by the server.
    expect(page.locator("svg.chart-svg polyline.line")).to_have_count(1)
    assert page.locator("svg.chart-svg rect.bar-dry_run").count() >= 1
    # Times are ISO 8601 with a relative age.
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \(.+ ago\)", main.inner_text())
    # Every value from the database is text: the evil name renders literally, nothing runs.
    expect(main.get_by_text(EVIL_NAME, exact=True)).to_be_visible()
    assert page.locator("b.injected").count() == 0
    assert page.evaluate("window.__pwned") is None
    # htmx keeps it fresh: the live fragment is served and swapped in.
    with page.expect_response(re.compile(r"/console/overview/live$"), timeout=15_000) as live:
        pass
    assert live.value.status == 200
    expect(page.locator("#limbo-count")).to_have_text("4")
    screenshot(page, artifacts, "overview")


def test_workflow_page_shows_everything_as_text(
    stack: Stack, watched: Watched, artifacts: Path
) -> None:
    page = watched.page
    sign_in(page, stack)
    page.locator("section[aria-labelledby=candidates-h]").get_by_role("link", name=EVIL_ID).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Workflow {EVIL_ID}")
    expect(page.locator("#wf-dedup")).to_have_text(EVIL_DEDUP)

    page.goto(stack.console("/workflow", id="orph-1"))
    expect(page.locator("#wf-status")).to_have_text("PENDING")
    expect(page.locator("#wf-name")).to_have_text(EVIL_NAME)
    expect(page.locator("#wf-error")).to_have_text(EVIL_ERROR)
    expect(page.locator("#wf-dedup")).to_have_text("job/1")
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    facts = page.locator("section[aria-labelledby=facts-h]").inner_text()
    assert "exec-dead" in facts
    assert "expired" in facts
    assert "dead:" in facts
    assert "In limbo: rule orphaned would reenqueue it" in facts
    rules = page.locator("section[aria-labelledby=rules-h] tbody tr")
    assert [r.locator("th").inner_text() for r in rules.all()] == [
        "exhausted",
        "dead_child",
        "orphaned",
        "stalled",
        "version_orphaned",
    ]
    assert "match" in rules.nth(2).inner_text()
    rules.nth(2).get_by_text("evidence").click()
    expect(rules.nth(2).locator("pre")).to_contain_text('"executor_state": "expired"')
    children = page.locator("section[aria-labelledby=children-h] tbody tr")
    assert [c.locator("td").first.inner_text() for c in children.all()] == [
        "orph-1-c1",
        "orph-1-c2",
    ]
    steps = page.locator("section[aria-labelledby=steps-h] tbody tr")
    assert steps.count() == 2
    expect(steps.nth(1).locator("pre.error")).to_have_text(EVIL_STEP_ERROR)
    history = page.locator("section[aria-labelledby=history-h] tbody tr")
    assert "dry_run" in history.first.inner_text()
    no_unlabelled_controls(page)
    screenshot(page, artifacts, "workflow")


def test_dry_run_changes_nothing_then_release_is_applied_and_audited(
    stack: Stack, watched: Watched, artifacts: Path
) -> None:
    page = watched.page
    sign_in(page, stack)
    page.goto(stack.console("/workflow", id="orph-1"))
    before = db(stack.url, dump_dbos)
    audits_before = len(db(stack.url, lambda c: audit_rows(c, "orph-1")))

    page.get_by_label("Dead-letter").check()
    page.get_by_label("Reason (required").fill("ticket OPS-7: <b>stuck</b> since the outage")
    with page.expect_response(re.compile(r"/console/workflow/preview$")) as previewed:
        page.get_by_role("button", name="Dry run").click()
    assert previewed.value.request.headers.get("hx-request") == "true"  # swapped in place
    preview = page.locator("#release-preview")
    expect(preview).to_contain_text("yes: the release would apply")
    expect(preview).to_contain_text("job/1")
    expect(preview).to_contain_text("ticket OPS-7: <b>stuck</b> since the outage")
    screenshot(page, artifacts, "release-preview")
    # The dry run changed nothing in DBOS's tables; it is audited as a dry run, with the reason.
    assert db(stack.url, dump_dbos) == before
    audits = db(stack.url, lambda c: audit_rows(c, "orph-1"))
    assert len(audits) == audits_before + 1
    assert (audits[-1]["rule"], audits[-1]["outcome"], audits[-1]["reason"]) == (
        "manual",
        "dry_run",
        "ticket OPS-7: <b>stuck</b> since the outage",
    )

    page.get_by_role("button", name="Confirm: dead_letter this workflow").click()
    expect(page.locator("#released")).to_contain_text("applied")
    expect(page.locator("#released")).to_contain_text("job/1")
    expect(page.locator("#wf-status")).to_have_text("MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    released = db(stack.url, lambda c: row(c, "orph-1"))
    assert (released["status"], released["deduplication_id"]) == (
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        None,
    )
    last = db(stack.url, lambda c: audit_rows(c, "orph-1"))[-1]
    assert (last["actor"], last["rule"], last["action"], last["outcome"]) == (
        "sup-a",
        "manual",
        "dead_letter",
        "applied",
    )
    assert last["reason"] == "ticket OPS-7: <b>stuck</b> since the outage"
    assert last["dedup_id_released"] == "job/1"
    expect(page.get_by_text("Nothing to release: the workflow is MAX_RECOVERY")).to_be_visible()


def test_keyboard_only_dry_run_of_a_live_workflow(stack: Stack, watched: Watched) -> None:
    page = watched.page
    sign_in(page, stack)
    page.goto(stack.console("/workflow", id="live-1"))
    before = db(stack.url, dump_dbos)
    order = []
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return e.id || e.getAttribute('name') || e.textContent.trim(); }"
            )
        )
        if order[-1] == "reason":
            break
    assert order[:4] == ["Skip to content", "Limbo supervisor", "Overview", "Audit"], order
    assert order[-2:] == ["action-dead_letter", "reason"], order  # the radio group: one stop
    page.keyboard.type("keyboard only")
    page.keyboard.press("Tab")  # force
    page.keyboard.press("Tab")  # Dry run
    page.keyboard.press("Enter")
    expect(page.locator("#release-problem")).to_contain_text("use force to release anyway")
    page.keyboard.press("Shift+Tab")  # back to force
    page.keyboard.press("Space")
    assert page.locator("#force").is_checked()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#release-preview")).to_contain_text("keyboard only")
    assert db(stack.url, dump_dbos) == before
    assert db(stack.url, lambda c: row(c, "live-1"))["status"] == "PENDING"


class _Attacker(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_state_changes_need_the_csrf_token(
    stack: Stack, watched: Watched, browser: BrowserContext
) -> None:
    page = watched.page
    sign_in(page, stack)
    before = db(stack.url, dump_dbos)
    audits = len(db(stack.url, audit_rows))
    form: dict[str, str | float | bool] = {"id": "exh-1", "action": "cancel", "reason": "forged"}
    # Same site, signed in, but without the form's token: refused by the CSRF check.
    response = page.request.post(stack.console("/workflow/release"), form=form, max_redirects=0)
    assert response.status == 403
    assert "CSRF" in response.text()
    # A forged token fails too.
    forged: dict[str, str | float | bool] = {**form, "_csrf_token": "0" * 128}
    response = page.request.post(stack.console("/workflow/release"), form=forged, max_redirects=0)
    assert response.status == 403

    # Cross-site: a page on another site posts the release form to the console.
    fields = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in forged.items())
    _Attacker.page = (
        f'<html><body><form method="post" action="{stack.console("/workflow/release")}">'
        f"{fields}</form><script>document.forms[0].submit()</script></body></html>"
    ).encode()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    attacker = browser.new_page()
    try:
        with attacker.expect_navigation(url=re.compile(r"127\.0\.0\.1.*/console/")) as nav:
            attacker.goto(f"http://localhost:{server.server_address[1]}/")
        landed = nav.value
        assert landed is not None
        assert landed.status in (303, 403), landed.status
    finally:
        attacker.close()
        server.shutdown()
        server.server_close()
    assert db(stack.url, dump_dbos) == before
    assert len(db(stack.url, audit_rows)) == audits
    assert db(stack.url, lambda c: row(c, "exh-1"))["status"] == "PENDING"
    # The JSON admin API (bearer token) needs no CSRF token.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    swept = httpx.post(f"{stack.base}/admin/sweeps", json={"dry_run": True}, headers=auth)
    assert swept.status_code == 200
    unknown = httpx.post(
        f"{stack.base}/admin/workflows/nope/release", json={"reason": "r"}, headers=auth
    )
    assert unknown.status_code == 404


def test_audit_page_filters_and_pages(stack: Stack, watched: Watched, artifacts: Path) -> None:
    page = watched.page
    sign_in(page, stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    no_unlabelled_controls(page)
    total = len(db(stack.url, audit_rows))
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == total

    page.get_by_label("Rule").select_option("manual")
    page.get_by_label("Outcome").select_option("applied")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    assert "orph-1" in rows.first.inner_text()
    assert "dead_letter" in rows.first.inner_text()
    screenshot(page, artifacts, "audit")

    page.goto(stack.console("/audit", workflow_id=EVIL_ID))
    expect(rows).to_have_count(len(db(stack.url, lambda c: audit_rows(c, EVIL_ID))))
    expect(rows.first.get_by_role("link", name=EVIL_ID)).to_be_visible()
    page.goto(stack.console("/audit", action="reenqueue", outcome="dry_run"))
    assert rows.count() >= 2  # the dry-run handovers of the two orphaned rows
    page.goto(stack.console("/audit", since="2999-01-01T00:00:00Z"))
    expect(page.get_by_text("No audit entry matches.")).to_be_visible()
    watched.allow(r"status of 400")
    page.goto(stack.console("/audit", since="yesterday"))
    expect(page.get_by_role("alert")).to_contain_text("not an ISO 8601 time")

    # Pages of two, newest first, until the oldest.
    page.goto(stack.console("/audit", limit="2"))
    seen: list[int] = []
    for _ in range(total):
        ids = [int(r.locator("td").first.inner_text()) for r in rows.all()]
        assert ids == sorted(ids, reverse=True)
        assert len(ids) <= 2
        seen += ids
        older = page.get_by_role("link", name="Older entries")
        if older.count() == 0:
            break
        older.click()
    assert seen == sorted({a["id"] for a in db(stack.url, audit_rows)}, reverse=True)
    page.get_by_role("link", name="Newest").click()
    assert int(rows.first.locator("td").first.inner_text()) == seen[0]


class Client:
    """An HTTP client with a cookie jar of its own, that sends Secure cookies over plain HTTP
    too (as the TLS-terminating proxy in front of the supervisor would)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=base, headers=headers)
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, **options: object) -> httpx.Response:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(
            method,
            path,
            headers={"Cookie": cookie} if cookie else {},
            **options,  # type: ignore[arg-type]
        )
        self.set_cookies = response.headers.get_list("set-cookie")
        for header in self.set_cookies:
            name, _, value = header.split(";")[0].partition("=")
            self.cookies[name.strip()] = value.strip().strip('"')
        return response

    def sign_in(self) -> Client:
        form = self.request("GET", "/console/login")
        match = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert match is not None
        signed = self.request(
            "POST", "/console/login", data={"token": TOKEN, "_csrf_token": match[1]}
        )
        assert signed.status_code == 303, signed.text
        return self


def test_behind_a_proxy_under_a_prefix_and_over_tls(stack: Stack) -> None:
    forwarded = {"X-Forwarded-Prefix": "/ops/limbo", "X-Forwarded-Proto": "https"}
    client = Client(stack.base, forwarded).sign_in()
    login = client.request("GET", "/console/login")
    assert 'action="/ops/limbo/console/login"' in login.text
    assert "/ops/limbo/console/static/console.css" in login.text
    overview = client.request("GET", "/console/")
    assert overview.status_code == 200
    links = re.findall(r'(?:href|action|hx-get|hx-post|src)="([^"#][^"]*)"', overview.text)
    assert links
    assert all(link.startswith("/ops/limbo/console") for link in links), links
    assert client.set_cookies
    assert all("Secure" in c for c in client.set_cookies)
    anonymous = httpx.get(f"{stack.base}/console/audit", headers=forwarded)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/ops/limbo/console/login?next=")

    # A forwarded prefix that is not a plain path is ignored; plain HTTP: no Secure.
    plain = Client(stack.base, {"X-Forwarded-Prefix": "javascript:alert(1)//"}).sign_in()
    page = plain.request("GET", "/console/")
    assert 'href="/console/audit"' in page.text
    assert "javascript:" not in page.text
    assert plain.set_cookies
    assert all("Secure" not in c for c in plain.set_cookies)

    # The standby serves the same console and accepts the same session (keys from the token).
    cookie = plain.cookies["limbo_console_session"]
    other = httpx.get(f"{stack.standby}/console/", cookies={"limbo_console_session": cookie})
    assert other.status_code == 200
    assert "Overview" in other.text
