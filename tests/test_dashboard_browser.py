"""The dashboard in a real browser (issue 13): Debian's Chromium, headless, driven by Playwright for Python,
against agfast and the Google simulator on loopback. Every page must run without a console error."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openai
import orjson
import pytest
from helpers import ServerThread, in_ci, request
from stack import Fault, generations

from agfast.monitor import LogReader, Monitor
from agfast.record import RequestRecord
from agfast.sim import GoogleSimulator

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = "dashboard-browser-admin"
SHARED_STACK = True
STACK_CONFIG = {"admin_password": ADMIN}
MODEL = "gemini-3-flash"
PAGES = ("overview", "accounts", "requests", "tokens", "settings")
WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}
# The monitor's routes, answered from a database of known rows where a test needs exact figures.
MONITOR_ROUTES = ("/api/logs", "/api/stats/")
# Where the test run also saves its screenshots when asked (the README's come from here).
SCREENSHOTS_ENV = "AGFAST_SCREENSHOTS_DIR"
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def chromium(shared_stack: ServerThread) -> Iterator[Any]:
    """Started after agfast: Playwright's sync API keeps an event loop on this thread, so no asyncio.run after."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """Console errors and uncaught exceptions of the page."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"pageerror: {error}")


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture(scope="module")
def page(chromium: Any, shared_stack: ServerThread, console: Console) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


@pytest.fixture(autouse=True)
def no_console_errors(console: Console) -> Iterator[None]:
    yield
    errors, console.errors[:] = list(console.errors), []
    assert errors == []


def chat(st: ServerThread, model: str = MODEL, text: str = "hello from the dashboard test") -> Any:
    with openai.OpenAI(base_url=st.url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )


def open_page(page: Any, st: ServerThread, name: str) -> None:
    page.goto(f"{st.url}/#{name}")
    expect(page.locator(f"#page-{name}")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-page", name)


def admin(st: ServerThread, method: str, path: str) -> Any:
    reply = request(st.port, method, path, headers={"Authorization": f"Bearer {ADMIN}"})
    assert reply.status == 200, reply.body
    return reply.json()


def test_sign_in_shows_the_demo_accounts_with_quota_bars(page: Any, stack: ServerThread, sim: GoogleSimulator):
    page.goto(stack.url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#password", ADMIN)
    page.press("#password", "Enter")
    expect(page.locator("#shell")).to_be_visible()
    open_page(page, stack, "accounts")
    cards = page.locator("#account-list article.account")
    expect(cards).to_have_count(len(sim.accounts))
    shown = sorted(cards.nth(i).get_attribute("data-email") for i in range(cards.count()))
    assert shown == sorted(a.email for a in sim.accounts.values())
    for i in range(cards.count()):
        bars = cards.nth(i).locator("meter")
        assert bars.count() >= 1
        assert 0 <= float(bars.first.get_attribute("value")) <= 100
    expect(cards.first.locator(".reset").first).to_contain_text("resets")


def test_cookie_is_httponly_strict_and_a_change_without_csrf_is_refused(page: Any, stack: ServerThread):
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["agfast_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # page scripts cannot read it
    refused = page.request.post(stack.url + "/api/proxy/stop")  # the cookie goes along, the CSRF token does not
    assert refused.status == 403
    assert "X-CSRF-Token" in refused.json()["error"]
    assert admin(stack, "GET", "/api/proxy/status")["running"] is True


def test_a_request_through_the_proxy_appears_in_the_live_table_with_its_tokens(page: Any, stack: ServerThread):
    answer = chat(stack, text="a request the live table must show").parse()
    open_page(page, stack, "requests")
    row = page.locator("#log-table tbody tr").first
    expect(row.locator(".model")).to_contain_text(MODEL, timeout=5000)
    expect(row.locator(".in")).to_have_text(str(answer.usage.prompt_tokens))
    # The monitor counts Google's output: the answer and its thinking (OpenAI's usage reports them apart).
    reasoning = answer.usage.completion_tokens_details.reasoning_tokens or 0
    expect(row.locator(".out")).to_have_text(str(answer.usage.completion_tokens + reasoning))
    row.click()
    expect(page.locator("#detail-request")).to_contain_text("a request the live table must show")


def test_a_lockout_shows_with_its_countdown_and_clears(page: Any, stack: ServerThread, sim: GoogleSimulator):
    sim.script(Fault("status", status=429, action="streamGenerateContent", times=None))
    try:
        with pytest.raises(openai.RateLimitError):
            chat(stack)
    finally:
        sim.clear_faults()
    try:
        open_page(page, stack, "accounts")
        card = page.locator("#account-list article.account").filter(has=page.locator(".lockout")).first
        countdown = card.locator(".countdown")
        expect(countdown).to_have_text(re.compile(r"^\d+ s$"))
        expect(countdown).not_to_have_text(countdown.inner_text())  # it counts down as the page stays open
        email = card.get_attribute("data-email")
        card.locator("button.clear-lockouts").click()
        expect(page.locator("#notice")).to_contain_text(f"of {email}")
        cleared = page.locator(f'#account-list article[data-email="{email}"]')
        expect(cleared).to_be_visible()
        expect(cleared.locator(".lockout")).to_have_count(0)
        accounts = admin(stack, "GET", "/api/accounts")["accounts"]
        assert next(a for a in accounts if a["email"] == email)["lockouts"] == []
        # It serves at once, while the others are still locked out.
        assert chat(stack).headers["x-account-email"] == email
    finally:
        admin(stack, "DELETE", "/api/proxy/rate-limits")


def test_a_mapping_added_in_settings_routes_the_next_request(page: Any, stack: ServerThread, sim: GoogleSimulator):
    target = "gemini-3-pro-high"
    open_page(page, stack, "settings")
    page.click("#mapping-add")
    row = page.locator("#mapping-rows .mapping").last
    row.locator(".map-from").fill("dashboard-team-model")
    row.locator(".map-to").fill(target)
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#notice")).to_have_text("Saved: custom_mapping.")
    sim.clear_requests()
    assert chat(stack, model="dashboard-team-model").headers["x-mapped-model"] == target
    assert [r.model for r in generations(sim)] == [target]


def monitor_rows(data_dir: Path) -> Monitor:
    """A real request monitor holding three requests: two models, two accounts, one failed."""
    monitor = Monitor(data_dir)
    rows = [
        ("gemini-3-flash", "a@sim.local", 200, "", (1200, 340)),
        ("claude-sonnet-4-6", "b@sim.local", 200, "", (800, 90)),
        ("gemini-3-flash", "b@sim.local", 429, "All accounts limited", (0, 0)),
    ]
    this_hour = time.time() // 3600 * 3600  # all in the current hour: one column in the hourly chart
    for n, (model, account, status, error, (tokens_in, tokens_out)) in enumerate(rows):
        rec = RequestRecord(f"req-{n}", "POST", "/v1/chat/completions", "openai", "127.0.0.1", this_hour + n)
        rec.status, rec.error, rec.model, rec.mapped_model, rec.account_email = status, error, model, model, account
        rec.input_tokens, rec.output_tokens, rec.duration, rec.attempts = tokens_in, tokens_out, 0.5, 1
        rec.request_body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": f"question {n}"}]})
        rec.response_body = b'{"id": "x"}'
        monitor.observe(rec)
    assert monitor.flush()
    return monitor


def monitor_answer(reader: LogReader, url: str) -> Any:
    """What the monitor routes answer: the query functions' results as JSON, as they are."""
    parts = urlsplit(url)
    args = {k: v[0] for k, v in parse_qs(parts.query).items()}
    errors_only = args.get("errorsOnly") in ("1", "true")
    path = parts.path
    if path == "/api/logs":
        return reader.logs(args.get("filter", ""), errors_only, int(args.get("limit", 100)))
    if path == "/api/logs/count":
        return reader.count(args.get("filter", ""), errors_only)
    if path.startswith("/api/logs/"):
        return reader.log(int(path.rsplit("/", 1)[1]))
    table = {
        "/api/stats/summary": reader.stats_summary,
        "/api/stats/hourly": lambda: reader.stats_hourly(int(args.get("hours", 24))),
        "/api/stats/daily": lambda: reader.stats_daily(int(args.get("days", 7))),
        "/api/stats/models": reader.stats_models,
        "/api/stats/accounts": reader.stats_accounts,
    }
    return table[path]()


def keep_screenshot(page: Any, directory: Path, name: str) -> None:
    """Save the page under the test's output, and also where SCREENSHOTS_ENV points (the README's pictures)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(directory / name), full_page=True)
    if target := os.environ.get(SCREENSHOTS_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(directory / name, Path(target) / name)


def test_live_table_detail_and_charts_draw_the_monitors_shapes(page: Any, stack: ServerThread, tmp_path: Path) -> None:
    """Exact figures: the monitor's routes answer from a real database of known rows (the monitor's own query
    functions), so filtering, the detail view and the charts are checked against numbers fixed in advance."""
    monitor = monitor_rows(tmp_path)

    def answer(route: Any) -> None:
        route.fulfill(
            status=200, content_type="application/json", body=orjson.dumps(monitor_answer(monitor, route.request.url))
        )

    page.route(lambda url: urlsplit(url).path.startswith(MONITOR_ROUTES), answer)
    try:
        open_page(page, stack, "requests")
        rows = page.locator("#log-table tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.first.locator(".status")).to_have_text("429")
        expect(rows.nth(1).locator(".in")).to_have_text("800")
        expect(page.locator("#log-count")).to_have_text("3 shown of 3")
        page.check("#log-errors")
        expect(rows).to_have_count(1)
        expect(page.locator("#log-table tbody tr.failed")).to_have_count(1)
        page.uncheck("#log-errors")
        page.fill("#log-filter", "claude")
        expect(rows).to_have_count(1)
        rows.first.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#log-detail")).to_be_visible()
        expect(page.locator("#detail-request")).to_contain_text('"content": "question 1"')
        expect(page.locator("#detail-fields")).to_contain_text("b@sim.local")
        page.fill("#log-filter", "")
        expect(rows).to_have_count(3)
        keep_screenshot(page, tmp_path, "requests-with-monitor-rows.png")

        open_page(page, stack, "tokens")
        expect(page.locator("#chart-time svg rect.in")).to_have_count(1)  # one hour: one column
        expect(page.locator("#chart-models svg g")).to_have_count(2)
        expect(page.locator("#chart-models svg")).to_contain_text("gemini-3-flash")
        expect(page.locator("#chart-accounts svg")).to_contain_text("b@sim.local")
        page.click("#period-days")
        expect(page.locator("#period-days")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#chart-time svg rect.out")).to_have_count(1)
        keep_screenshot(page, tmp_path, "tokens-with-monitor-rows.png")

        open_page(page, stack, "overview")
        expect(page.locator("#counters")).to_contain_text("2430total tokens")  # 1200 + 340 + 800 + 90
    finally:
        page.unroute_all()
        monitor.close()


def test_stop_and_start_the_proxy(page: Any, stack: ServerThread):
    open_page(page, stack, "overview")
    expect(page.locator("#proxy-state")).to_have_text("running")
    page.click("#proxy-stop")
    expect(page.locator("#proxy-state")).to_have_text("stopped")
    with pytest.raises(openai.APIStatusError) as stopped:
        chat(stack)
    assert stopped.value.status_code == 503
    page.click("#proxy-start")
    expect(page.locator("#proxy-state")).to_have_text("running")
    assert chat(stack).http_response.status_code == 200


def test_pages_are_keyboard_reachable(page: Any, stack: ServerThread):
    open_page(page, stack, "overview")
    page.reload()  # focus starts at the top of the document
    expect(page.locator("#proxy-state")).to_have_text("running")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.page") == "tokens":
            break
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-page", "tokens")


def test_screenshots_of_every_page_at_desktop_and_phone_width(
    page: Any, stack: ServerThread, tmp_path_factory: pytest.TempPathFactory
):
    chat(stack, text="one more request for the counters")
    out = tmp_path_factory.mktemp("screenshots")
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for name in PAGES:
            open_page(page, stack, name)
            page.wait_for_load_state("networkidle")
            # Nothing wider than the screen but what scrolls in its own box (the requests table).
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (label, name)
            keep_screenshot(page, out, f"{name}-{label}.png")
    page.set_viewport_size({"width": 1280, "height": 860})
    saved = sorted(p.name for p in out.iterdir())
    assert saved == sorted(f"{n}-{w}.png" for n in PAGES for w in WIDTHS)


def test_regenerated_key_is_shown_once_and_in_force(page: Any, stack: ServerThread):
    old = stack.config.api_key
    open_page(page, stack, "settings")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#regenerate-key")
    expect(page.locator("#new-key")).to_contain_text("sk-")
    key = page.locator("#new-key").inner_text().rsplit(" ", 1)[-1]
    assert stack.config.api_key == key != old and len(key) == 51
    expect(page.locator("#api-key-masked")).to_have_text(f"sk-…{key[-4:]}")


def test_sign_out_returns_to_the_sign_in_page(page: Any, stack: ServerThread):
    open_page(page, stack, "overview")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert "agfast_session" not in {c["name"] for c in page.context.cookies()}
    page.reload()
    expect(page.locator("#login")).to_be_visible()
