"""Operating agfast while it runs (issue 11): the Proxy Monitor's routes, token statistics, `/metrics`, the
security events and the dashboard's sign-in, over real sockets against the simulator.

Until the request driver hands every proxied request's RequestRecord to `app.observers` (issue 10), the route
side is proven with hand-made records fed to those observers exactly as the driver will; the tests that drive
real SDK traffic are written now and marked strict-xfail, so they fail loudly (remove the mark) once it lands.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import types
from helpers import ServerThread, request
from stack import CLIENT_SECRET, KEY, agfast_on
from test_admin import ADMIN_PASSWORD, WRONG, account_ids, call, chat, ok, secrets_of
from test_monitor_live import upstream_usage
from test_signin import follow

from agfast.monitor import DB_NAME
from agfast.record import RequestRecord
from agfast.sim import GoogleSimulator, SimAccount

MODEL = "gemini-3-flash"
NEWCOMER = "dashboard-newcomer@sim.local"
DENIED_CLIENT = "203.0.113.9"

# Every route this module adds, with a body it accepts; `{log}` becomes a real log id.
ROUTES: list[tuple[str, str, set[str]]] = [
    ("GET", "/api/logs", {"logs", "limit", "offset", "enabled"}),
    ("GET", "/api/logs?filter=chat&errorsOnly=true&limit=5&offset=0", {"logs", "limit", "offset", "enabled"}),
    ("GET", "/api/logs/count", {"count"}),
    ("GET", "/api/logs/{log}", {"id", "url", "request_body", "response_body", "input_tokens"}),
    ("GET", "/api/stats/summary", {"requests", "success", "errors", "input_tokens", "output_tokens"}),
    ("GET", "/api/stats/hourly", {"hours"}),
    ("GET", "/api/stats/daily", {"days"}),
    ("GET", "/api/stats/accounts", {"accounts"}),
    ("GET", "/api/stats/models", {"models"}),
    ("GET", "/api/proxy/stats", {"total_requests", "success_count", "error_count", "input_tokens"}),
    ("GET", "/api/security/events", {"events"}),
    ("GET", "/api/security/stats", {"total_blocked", "unique_ips", "top_ips"}),
    ("GET", "/api/security/lists", {"allow", "deny", "trusted_proxies"}),
    ("POST", "/api/accounts/oauth/start", {"url"}),
    ("POST", "/api/logs/clear", {"cleared"}),  # last: it empties the log the others read
]


def record(
    path: str,
    protocol: str,
    status: int = 200,
    tokens: tuple[int, int, int] = (0, 0, 0),
    account: str = "demo1@sim.local",
    stream: bool = False,
    request_body: bytes = b'{"model": "gemini-3-flash"}',
    response_body: bytes = b'{"ok": true}',
    error: str = "",
) -> RequestRecord:
    """A finished request as the driver hands it to observers."""
    rec = RequestRecord(f"req_{path[-12:]}_{status}", "POST", path, protocol, "127.0.0.1", time.time())
    rec.status, rec.stream, rec.error = status, stream, error
    rec.duration, rec.first_byte, rec.upstream_seconds, rec.attempts = 0.4, 0.1, 0.35, 1
    rec.model = rec.mapped_model = MODEL
    rec.account_email = account
    rec.input_tokens, rec.output_tokens, rec.cached_tokens = tokens
    rec.request_body, rec.response_body = request_body, response_body
    return rec


def feed(st: ServerThread, *records: RequestRecord) -> None:
    """Hand records to every observer on the server's loop (as the driver does), then wait for the writer."""
    st.call(lambda: [observe(rec) for rec in records for observe in st.app.observers])
    monitor = st.app.monitor
    assert monitor is not None and monitor.flush()


def flush(st: ServerThread) -> None:
    monitor = st.app.monitor
    assert monitor is not None and monitor.flush()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when the series does not exist yet)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def scrape(st: ServerThread, key: str | None = KEY) -> str:
    reply = call(st, "GET", "/metrics", key=key)
    assert reply.status == 200, reply.body
    return reply.body.decode()


SSE_ANSWER = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gemini-3-flash","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":"hi there"}}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gemini-3-flash","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}'
    b"\n\ndata: [DONE]\n\n"
)


def three_records() -> list[RequestRecord]:
    """A streamed OpenAI chat, a collected Anthropic message, a failed Gemini call; in that order."""
    return [
        record("/v1/chat/completions", "openai", tokens=(11, 7, 0), stream=True, response_body=SSE_ANSWER),
        record("/v1/messages", "anthropic", tokens=(20, 5, 4), account="demo2@sim.local"),
        record(
            f"/v1beta/models/{MODEL}:generateContent?key={KEY}",
            "gemini",
            status=429,
            error="All accounts limited.",
            account="demo2@sim.local",
        ),
    ]


# -- the route side, with hand-made records ------------------------------------------------------------


def test_every_route_needs_the_admin_secret_and_answers_in_shape(fresh: ServerThread) -> None:
    feed(fresh, *three_records())
    log_id = str(ok(fresh, "GET", "/api/logs")["logs"][0]["id"])
    for method, path, keys in ROUTES:
        target = path.replace("{log}", log_id)
        for key in (None, WRONG):
            reply = call(fresh, method, target, key=key)
            assert reply.status == 401, (method, path, key, reply.body)
            assert set(reply.json()) == {"error"} and reply.json()["error"], reply.body
        body = ok(fresh, method, target)
        assert keys <= set(body), (path, body)
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 0}  # the clear went through


def test_records_fed_to_the_observers_show_in_logs_stats_and_metrics(fresh: ServerThread) -> None:
    feed(fresh, *three_records())
    logs = ok(fresh, "GET", "/api/logs")["logs"]
    assert [row["protocol"] for row in logs] == ["gemini", "anthropic", "openai"]  # newest first
    gemini, anthropic_row, openai_row = logs
    assert gemini["url"] == f"/v1beta/models/{MODEL}:generateContent?key=***"
    assert (gemini["status"], gemini["error"]) == (429, "All accounts limited.")
    assert (openai_row["input_tokens"], openai_row["output_tokens"], openai_row["stream"]) == (11, 7, True)
    assert (anthropic_row["cached_tokens"], anthropic_row["account_email"]) == (4, "demo2@sim.local")
    assert "request_body" not in openai_row  # bodies only from /api/logs/{id}
    full = ok(fresh, "GET", f"/api/logs/{openai_row['id']}")
    assert orjson.loads(full["response_body"])["text"] == "hi there"  # the stream, reconstructed
    assert full["request_body"] == '{"model": "gemini-3-flash"}'
    # Filters, paging, counts.
    assert [r["protocol"] for r in ok(fresh, "GET", "/api/logs?errorsOnly=true")["logs"]] == ["gemini"]
    assert [r["protocol"] for r in ok(fresh, "GET", "/api/logs?filter=messages")["logs"]] == ["anthropic"]
    assert [r["protocol"] for r in ok(fresh, "GET", "/api/logs?limit=1&offset=1")["logs"]] == ["anthropic"]
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 3}
    assert ok(fresh, "GET", "/api/logs/count?errorsOnly=1") == {"count": 1}
    # Statistics and request counts.
    summary = ok(fresh, "GET", "/api/stats/summary")
    assert (summary["requests"], summary["errors"], summary["success"]) == (3, 1, 2)
    assert (summary["input_tokens"], summary["output_tokens"], summary["cached_tokens"]) == (31, 12, 4)
    stats = ok(fresh, "GET", "/api/proxy/stats")
    assert (stats["total_requests"], stats["success_count"], stats["error_count"]) == (3, 2, 1)
    assert (stats["input_tokens"], stats["output_tokens"], stats["total_tokens"]) == (31, 12, 43)
    accounts = {a["account"]: a for a in ok(fresh, "GET", "/api/stats/accounts")["accounts"]}
    assert accounts["demo2@sim.local"]["input_tokens"] == 20 and accounts["demo1@sim.local"]["requests"] == 1
    [model] = ok(fresh, "GET", "/api/stats/models")["models"]
    assert (model["model"], model["total_tokens"]) == (MODEL, 43)
    [hour] = ok(fresh, "GET", "/api/stats/hourly?hours=2")["hours"]
    [day] = ok(fresh, "GET", "/api/stats/daily")["days"]
    assert hour["requests"] == day["requests"] == 3
    # Metrics moved with the same records.
    text = scrape(fresh)
    assert metric(text, "agfast_requests_total", surface="gemini", status="429") == 1
    assert metric(text, "agfast_requests_total", surface="openai", route="/v1/chat/completions") == 1
    assert metric(text, "agfast_tokens_total", account="demo2@sim.local", model=MODEL, kind="input") == 20
    # Clearing the log keeps the statistics.
    assert ok(fresh, "POST", "/api/logs/clear") == {"cleared": 3}
    assert ok(fresh, "GET", "/api/logs")["logs"] == []
    assert ok(fresh, "GET", "/api/stats/summary")["requests"] == 3


def test_bad_queries_are_400_and_unknown_logs_404_in_the_admin_shape(fresh: ServerThread) -> None:
    cases = [
        ("/api/logs?limit=abc", 400),
        ("/api/logs?limit=-1", 400),
        ("/api/logs?limit=1000000", 400),
        ("/api/logs?offset=ten", 400),
        ("/api/logs?offset=99999999999999999999999", 400),
        ("/api/logs?errorsOnly=maybe", 400),
        ("/api/logs?filter=" + "x" * 500, 400),
        ("/api/logs/count?errorsOnly=2", 400),
        ("/api/logs/abc", 400),
        ("/api/logs/-1", 400),
        ("/api/logs/123456", 404),
        ("/api/stats/hourly?hours=0", 400),
        ("/api/stats/daily?days=100000", 400),
        ("/api/security/events?limit=x", 400),
    ]
    for path, status in cases:
        reply = call(fresh, "GET", path)
        assert reply.status == status, (path, reply.status, reply.body)
        assert set(reply.json()) == {"error"} and reply.json()["error"], reply.body
    reply = call(fresh, "POST", "/api/accounts/oauth/start", {"client": 5})
    assert reply.status == 400 and set(reply.json()) == {"error"}
    reply = call(fresh, "POST", "/api/accounts/oauth/start", {"client": "no-such-client"})
    assert reply.status == 400 and "no-such-client" in reply.json()["error"]


def test_unusable_database_is_one_error_and_the_proxy_serves_on(
    sim: GoogleSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "agfast"
    data_dir.mkdir()
    (data_dir / DB_NAME).write_bytes(b"this is not a database " * 100)
    caplog.set_level(logging.ERROR, logger="agfast")
    with agfast_on(sim, data_dir) as st:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and DB_NAME in errors[0] and "serving without it" in errors[0], errors
        for path in ("/api/logs", "/api/logs/count", "/api/stats/summary", "/api/proxy/stats"):
            reply = call(st, "GET", path)
            assert reply.status == 503, (path, reply.body)
            assert set(reply.json()) == {"error"} and "unavailable" in reply.json()["error"]
        status = ok(st, "GET", "/api/proxy/status")
        assert status["running"] and "unavailable" in status["monitor"]["error"]
        assert st.app.record_bodies is False
        assert chat(st).http_response.status_code == 200
        assert "agfast_monitor_queue_depth 0.0" in scrape(st)


def test_monitor_toggle_and_retention_apply_live(fresh: ServerThread) -> None:
    monitor = fresh.app.monitor
    assert monitor is not None and monitor.enabled and fresh.app.record_bodies
    assert ok(fresh, "POST", "/api/config", {"monitor.enabled": False})["changed"] == ["monitor.enabled"]
    assert not monitor.enabled and fresh.app.record_bodies is False
    assert ok(fresh, "GET", "/api/proxy/status")["monitor"]["enabled"] is False
    feed(fresh, record("/v1/messages", "anthropic", tokens=(9, 3, 0)))
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 0}  # no row while off...
    assert ok(fresh, "GET", "/api/stats/summary")["input_tokens"] == 9  # ...but the tokens are counted
    ok(fresh, "POST", "/api/config", {"monitor": {"enabled": True, "retention_days": 7}})
    assert monitor.enabled and fresh.app.record_bodies and monitor.retention_days == 7
    feed(fresh, record("/v1/messages", "anthropic", tokens=(9, 3, 0)))
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 1}
    saved = (fresh.config.config_path).read_text()
    assert "retention_days = 7" in saved and "enabled = true" in saved


# -- sign-in from the dashboard --------------------------------------------------------------------------


@pytest.fixture
def signin_stack(sim: GoogleSimulator, tmp_path: Path) -> Iterator[ServerThread]:
    """agfast with the simulator's accounts; NEWCOMER exists at "Google" only, and is the preferred account."""
    config = {"oauth_auth_url": sim.auth_url, "preferred_account_id": NEWCOMER, "admin_password": ADMIN_PASSWORD}
    with agfast_on(sim, tmp_path / "agfast", **config) as st:
        sim.add_account(SimAccount(email=NEWCOMER, refresh_token="1//sim-refresh-dashboard", tier="ULTRA"))
        try:
            yield st
        finally:
            sim.accounts.pop(NEWCOMER, None)


def test_oauth_start_signs_in_an_account_that_serves_at_once(signin_stack: ServerThread) -> None:
    st = signin_stack
    assert call(st, "POST", "/api/accounts/oauth/start", key=None).status == 401
    assert call(st, "POST", "/api/accounts/oauth/start", key=KEY).status == 401  # the admin password rules
    url = ok(st, "POST", "/api/accounts/oauth/start", key=ADMIN_PASSWORD)["url"]
    assert CLIENT_SECRET not in url
    location = follow(url, login_hint=NEWCOMER)
    parts = urllib.parse.urlsplit(location)
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", st.port, "/auth/callback")
    page = request(st.port, "GET", f"/auth/callback?{parts.query}", headers={"Host": f"127.0.0.1:{st.port}"})
    assert page.status == 200 and f"Added {NEWCOMER}" in page.body.decode()
    emails = [a["email"] for a in ok(st, "GET", "/api/accounts", key=ADMIN_PASSWORD)["accounts"]]
    assert NEWCOMER in emails
    answer = chat(st)
    assert answer.http_response.headers["x-account-email"] == NEWCOMER  # fixed-account mode picks it at once


# -- IP rules ----------------------------------------------------------------------------------------------


def test_security_routes_show_a_denied_client(sim: GoogleSimulator, tmp_path: Path) -> None:
    rules = {"ip_deny": ["203.0.113.0/24"], "trusted_proxies": ["127.0.0.1"]}
    with agfast_on(sim, tmp_path / "agfast", **rules) as st:
        assert ok(st, "GET", "/api/security/events") == {"events": []}
        forwarded = {"X-Forwarded-For": DENIED_CLIENT, "Authorization": f"Bearer {KEY}"}
        for _ in range(2):
            assert request(st.port, "GET", "/v1/models", None, forwarded).status == 403
        assert call(st, "GET", "/api/security/events", key=None).status == 401
        events = ok(st, "GET", "/api/security/events")["events"]
        assert [(e["ip"], e["reason"], e["rule"], e["path"]) for e in events] == [
            (DENIED_CLIENT, "denied", "203.0.113.0/24", "/v1/models")
        ] * 2
        assert len(ok(st, "GET", "/api/security/events?limit=1")["events"]) == 1
        stats = ok(st, "GET", "/api/security/stats")
        assert stats == {"total_blocked": 2, "unique_ips": 1, "top_ips": [{"ip": DENIED_CLIENT, "count": 2}]}
        lists = ok(st, "GET", "/api/security/lists")
        assert lists == {"allow": [], "deny": ["203.0.113.0/24"], "trusted_proxies": ["127.0.0.1/32"]}


# -- /metrics ----------------------------------------------------------------------------------------------


def test_metrics_need_the_admin_secret_unless_public(sim: GoogleSimulator, tmp_path: Path) -> None:
    with agfast_on(sim, tmp_path / "closed", admin_password=ADMIN_PASSWORD) as st:
        for key in (None, KEY):
            reply = call(st, "GET", "/metrics", key=key)
            assert reply.status == 401 and set(reply.json()) == {"error"}
        reply = call(st, "GET", "/metrics", key=ADMIN_PASSWORD)
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = reply.body.decode()
        assert metric(text, "agfast_accounts", state="available") == 3
        assert "agfast_open_streams 0.0" in text and "agfast_monitor_queue_depth 0.0" in text
    with agfast_on(sim, tmp_path / "open", metrics_public=True) as st:
        text = scrape(st, key=None)
        assert metric(text, "agfast_accounts", state="available") == 3
        assert call(st, "GET", "/api/logs", key=None).status == 401  # only /metrics opened


def test_metrics_read_lockouts_and_open_streams(fresh: ServerThread) -> None:
    some = next(iter(account_ids(fresh).values()))
    fresh.call(fresh.app.pool.state.lock, some, time.time() + 60, "test")
    text = scrape(fresh)
    assert metric(text, "agfast_accounts", state="limited") == 1
    assert metric(text, "agfast_accounts", state="available") == 2
    ok(fresh, "DELETE", "/api/proxy/rate-limits")
    assert metric(scrape(fresh), "agfast_accounts", state="available") == 3


# -- secrets ----------------------------------------------------------------------------------------------


def test_no_secret_in_any_answer_the_log_or_the_database(
    sim: GoogleSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agfast")
    config = {"oauth_auth_url": sim.auth_url, "admin_password": ADMIN_PASSWORD, "auth_mode": "strict"}
    with agfast_on(sim, tmp_path / "agfast", **config) as st:
        assert chat(st).http_response.status_code == 200  # an account with a live access token
        feed(st, *three_records())
        log_id = str(ok(st, "GET", "/api/logs", key=ADMIN_PASSWORD)["logs"][0]["id"])
        answers = [call(st, m, p.replace("{log}", log_id), key=ADMIN_PASSWORD).body for m, p, _ in ROUTES]
        answers += [call(st, m, p.replace("{log}", log_id), key=WRONG).body for m, p, _ in ROUTES]
        answers.append(call(st, "GET", "/metrics", key=ADMIN_PASSWORD).body)
        answers.append(call(st, "GET", "/api/proxy/status", key=ADMIN_PASSWORD).body)
        feed(st, *three_records())
        secrets = secrets_of(st, sim)
    files = sorted((tmp_path / "agfast").glob(DB_NAME + "*"))
    assert files
    stored = b"".join(f.read_bytes() for f in files)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in logged, secret[:6]
        assert secret.encode() not in stored, secret[:6]
        for body in answers:
            assert secret.encode() not in body, (secret[:6], body[:200])


# -- real traffic: pass once the request driver feeds app.observers ---------------------------------------

PROMPT = "hello monitor, say something"


def openai_client(st: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=st.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def run_openai(st: ServerThread, stream: bool) -> None:
    with openai_client(st) as client:
        messages: Any = [{"role": "user", "content": PROMPT}]
        if stream:
            chunks = client.chat.completions.create(
                model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            assert list(chunks)
        else:
            assert client.chat.completions.create(model=MODEL, messages=messages).choices


def run_anthropic(st: ServerThread, stream: bool) -> None:
    with anthropic.Anthropic(base_url=st.url, api_key=KEY, max_retries=0, timeout=30) as client:
        messages: Any = [{"role": "user", "content": PROMPT}]
        if stream:
            with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as events:
                assert events.get_final_message().content
        else:
            assert client.messages.create(model=MODEL, max_tokens=256, messages=messages).content


def run_gemini(st: ServerThread, stream: bool) -> None:
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=st.url, api_version="v1beta"))
    if stream:
        assert list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    else:
        assert client.models.generate_content(model=MODEL, contents=PROMPT).text


SURFACES = [
    ("openai", run_openai, "/v1/chat/completions"),
    ("anthropic", run_anthropic, "/v1/messages"),
    ("gemini", run_gemini, f"/v1beta/models/{MODEL}:"),
]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "collected"])
@pytest.mark.parametrize(("protocol", "run", "path"), SURFACES, ids=[s[0] for s in SURFACES])
def test_real_requests_are_rows_with_googles_token_counts(
    fresh: ServerThread, sim: GoogleSimulator, protocol: str, run: Any, path: str, stream: bool
) -> None:
    run(fresh, stream)
    usage = upstream_usage(sim)
    flush(fresh)
    [row] = ok(fresh, "GET", "/api/logs")["logs"]
    google = (
        usage["promptTokenCount"],
        usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0),
        usage.get("cachedContentTokenCount", 0),
    )
    assert (row["protocol"], row["status"], row["stream"], row["error"]) == (protocol, 200, stream, "")
    assert row["url"].startswith(path) and row["mapped_model"] == MODEL and row["account_email"]
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == google
    full = ok(fresh, "GET", f"/api/logs/{row['id']}")
    assert PROMPT in full["request_body"] and full["response_body"]
    assert ok(fresh, "GET", "/api/stats/summary")["input_tokens"] == google[0]


def test_metrics_move_with_real_traffic(fresh: ServerThread) -> None:
    before = scrape(fresh)
    run_openai(fresh, stream=False)
    run_anthropic(fresh, stream=True)
    after = scrape(fresh)
    for surface, route in (("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")):
        labels = {"surface": surface, "route": route, "status": "200"}
        assert metric(after, "agfast_requests_total", **labels) == metric(before, "agfast_requests_total", **labels) + 1
        assert metric(after, "agfast_request_duration_seconds_count", surface=surface) == 1
    assert (
        sum(
            metric(after, "agfast_tokens_total", account=email, model=MODEL, kind="output")
            for email in account_ids(fresh)
        )
        > 0
    )


def test_full_queue_drops_are_counted_and_requests_keep_flowing(fresh: ServerThread) -> None:
    monitor = fresh.app.monitor
    assert monitor is not None
    fresh.call(setattr, monitor, "queue_size", 2)
    fresh.call(setattr, monitor, "body_slots", 1)
    assert monitor.pause()  # a stalled disk
    try:
        for _ in range(5):
            assert chat(fresh, PROMPT).http_response.status_code == 200
        assert monitor.dropped_rows == 3 and monitor.dropped_bodies == 1
        text = scrape(fresh)
        assert metric(text, "agfast_monitor_dropped_total", what="rows") == 3
        assert metric(text, "agfast_monitor_queue_depth") == 2
    finally:
        monitor.resume()
    flush(fresh)
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 2}
    assert ok(fresh, "GET", "/api/stats/summary")["requests"] == 5  # token counts are never dropped


def test_monitor_off_keeps_token_statistics_of_real_traffic(fresh: ServerThread) -> None:
    ok(fresh, "POST", "/api/config", {"monitor.enabled": False})
    run_gemini(fresh, stream=True)
    flush(fresh)
    assert ok(fresh, "GET", "/api/logs/count") == {"count": 0}
    summary = ok(fresh, "GET", "/api/stats/summary")
    assert summary["requests"] == 1 and summary["output_tokens"] > 0
