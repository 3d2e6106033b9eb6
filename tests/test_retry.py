"""Retry/rotation table (§5.5) and lockout math (§4.9)."""

from __future__ import annotations

import orjson
import pytest

from agfast.upstream.retry import (
    LOCKOUT_CAP_S,
    STATUS_POLICY,
    Kind,
    LimitReason,
    RetryDecision,
    attempts_for,
    classify_limit,
    decide,
    lock_key,
    lock_scope,
    lockout_seconds,
    parse_duration_ms,
    parse_retry_delay_ms,
    seconds_until,
)

Q = LimitReason.QUOTA_EXHAUSTED
R = LimitReason.RATE_LIMIT_EXCEEDED
C = LimitReason.MODEL_CAPACITY_EXHAUSTED
S = LimitReason.SERVER_ERROR
U = LimitReason.UNKNOWN


def google_error(code: int, message: str, *details: dict[str, object]) -> bytes:
    """A Google API error body as the upstream sends it."""
    return orjson.dumps({"error": {"code": code, "message": message, "status": "X", "details": list(details)}})


def retry_info(delay: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_info(reason: str, **metadata: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "metadata": metadata}


def d(wait_s: float, rotate: bool, same: bool, reason: str) -> RetryDecision:
    return RetryDecision(wait_s, rotate, same, reason)


@pytest.mark.parametrize(
    ("status", "body", "attempt", "expected"),
    [
        # 400: only thinking-signature problems are retried
        (
            400,
            "messages.1.content.0: Invalid `signature` in `thinking` block",
            0,
            d(0.2, False, False, "thinking_signature"),
        ),
        (400, b"Corrupted thought signature.", 2, d(0.2, False, False, "thinking_signature")),
        (
            400,
            "Function call is missing a thought_signature in functionCall parts",
            0,
            d(0.2, False, False, "thinking_signature"),
        ),
        (400, "Invalid JSON payload received.", 0, None),
        # 429 without a stated delay: linear 5 s × (attempt+1), rotate
        (429, "Resource has been exhausted", 0, d(5.0, True, False, "rate_limited")),
        (429, "Resource has been exhausted", 2, d(15.0, True, False, "rate_limited")),
        # 429 with a delay: +1.5 s grace; ≤ 2 s → same account after delay+100 ms
        (429, google_error(429, "x", retry_info("0.3s")), 0, d(1.9, False, True, "rate_limited_grace")),
        (429, google_error(429, "x", retry_info("500ms")), 0, d(2.1, False, True, "rate_limited_grace")),
        (429, google_error(429, "x", retry_info("501ms")), 0, d(2.201, True, False, "rate_limited_delay")),
        (429, google_error(429, "x", retry_info("1.203608125s")), 1, d(2.904, True, False, "rate_limited_delay")),
        (
            429,
            google_error(429, "x", error_info("QUOTA_EXHAUSTED", quotaResetDelay="1h2m3s")),
            0,
            d(30.0, True, False, "rate_limited_delay"),
        ),
        (429, "Quota exceeded; quota will reset after 10s.", 0, d(11.7, True, False, "rate_limited_delay")),
        # 503/529: exponential 10 s × 2^attempt capped at 60 s, same pool selection (no forced rotation)
        (503, "", 0, d(10.0, False, False, "overloaded")),
        (529, "", 1, d(20.0, False, False, "overloaded")),
        (503, "", 2, d(40.0, False, False, "overloaded")),
        (503, "", 3, d(60.0, False, False, "overloaded")),
        (503, "", 99, d(60.0, False, False, "overloaded")),
        # 500: linear 3 s; 401/403: 200 ms; 404: 300 ms; all rotate
        (500, "", 0, d(3.0, True, False, "server_error")),
        (500, "", 1, d(6.0, True, False, "server_error")),
        (401, "", 0, d(0.2, True, False, "auth")),
        (403, "VALIDATION_REQUIRED", 2, d(0.2, True, False, "auth")),
        (404, "Requested entity was not found.", 0, d(0.3, True, False, "not_found")),
        # everything else goes straight to the client
        (402, "", 0, None),
        (413, "", 0, None),
        (502, "", 0, None),
        (200, "", 0, None),
    ],
)
def test_decide(status: int, body: str | bytes, attempt: int, expected: RetryDecision | None) -> None:
    got = decide(status, body, attempt)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.rotate, got.same_account, got.reason) == (expected.rotate, expected.same_account, expected.reason)
        assert got.wait_s == pytest.approx(expected.wait_s)


@pytest.mark.parametrize(
    ("retry_after", "allow_grace", "scale", "expected"),
    [
        ("1", True, 1.0, d(2.7, True, False, "rate_limited_delay")),  # header wins over the body's 0.2 s
        ("0", True, 1.0, d(1.6, False, True, "rate_limited_grace")),
        ("Wed, 21 Oct 2015 07:28:00 GMT", True, 1.0, d(1.8, False, True, "rate_limited_grace")),  # date ignored
        (None, False, 1.0, d(1.9, True, False, "rate_limited_delay")),  # grace already used: rotate
        (None, True, 0.001, d(0.0018, False, True, "rate_limited_grace")),
    ],
)
def test_decide_429_options(retry_after: str | None, allow_grace: bool, scale: float, expected: RetryDecision) -> None:
    body = google_error(429, "x", retry_info("0.2s"))
    got = decide(429, body, 0, scale, retry_after=retry_after, allow_grace=allow_grace)
    assert got is not None
    assert (got.rotate, got.same_account, got.reason) == (expected.rotate, expected.same_account, expected.reason)
    assert got.wait_s == pytest.approx(expected.wait_s)


@pytest.mark.parametrize(("status", "attempt"), [(500, 2), (503, 3), (404, 0), (429, 1)])
def test_scale_multiplies_every_wait(status: int, attempt: int) -> None:
    full, scaled = decide(status, "", attempt), decide(status, "", attempt, scale=0.001)
    assert full is not None and scaled is not None
    assert scaled.wait_s == pytest.approx(full.wait_s / 1000)


def test_status_policy_table() -> None:
    """The table itself, so a changed row is a visible diff."""
    rows = {s: (p.kind, p.base_ms, p.cap_ms, p.rotate) for s, p in STATUS_POLICY.items()}
    assert rows == {
        400: (Kind.FIXED, 200, None, False),
        401: (Kind.FIXED, 200, None, True),
        403: (Kind.FIXED, 200, None, True),
        404: (Kind.FIXED, 300, None, True),
        429: (Kind.LINEAR, 5000, None, True),
        500: (Kind.LINEAR, 3000, None, True),
        503: (Kind.EXPONENTIAL, 10000, 60000, False),
        529: (Kind.EXPONENTIAL, 10000, 60000, False),
    }


@pytest.mark.parametrize(
    ("pool", "gemini", "expected"),
    [
        (0, False, 2),
        (1, False, 2),
        (2, False, 3),
        (10, False, 3),
        (0, True, 1),
        (1, True, 1),
        (2, True, 2),
        (9, True, 3),
    ],
)
def test_attempts_for(pool: int, gemini: bool, expected: int) -> None:
    assert attempts_for(pool, gemini=gemini) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h2m3.5s", 3_723_500),
        ("0.5s", 500),
        ("850ms", 850),
        ("510.790006ms", 511),
        ("72h", 259_200_000),
        ("30", 30_000),
        ("2 minutes", 120_000),
        ("99 Seconds", 99_000),
        ("", None),
        ("soon", None),
        ("5 days", None),
        ("1s2", None),
    ],
)
def test_parse_duration_ms(text: str, expected: int | None) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (google_error(429, "x", retry_info("1.203608125s")), 1204),
        (google_error(429, "x", error_info("RATE_LIMIT_EXCEEDED", quotaResetDelay="42s")), 42_000),
        (b'{"error":{"retry_after":7}}', 7_000),
        (b'{"error":{"details":[{"retryDelay":{"seconds":"3","nanos":500000000}}]}}', 3_500),
        (b'{"a":[{"b":{"c":{"seconds":2}}}]}', 2_000),
        (b'{"error":{"backoff-limit":"1m"}}', 60_000),
        (b'{"error":{"message":"wait 5s","retryDelay":"oops"}}', None),  # prose in JSON is not a hint key
        (b'{"seconds": 1, "other": 2}', None),  # not a duration object
        ("Quota exhausted; quota will reset after 1h2m3.5s. Bye", 3_723_500),
        ("Please retry after 99 seconds", 99_000),
        ('{"quotaResetDelay": "12s"', 12_000),  # truncated JSON: the prose regex still finds it
        ("Resource has been exhausted", None),
        (b"\xff\xfe not utf-8", None),
        ("[" * 50 + "]" * 50, None),
    ],
)
def test_parse_retry_delay_ms(body: str | bytes, expected: int | None) -> None:
    assert parse_retry_delay_ms(body) == expected


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        # ErrorInfo reason wins over any text
        (google_error(429, "Tokens per minute", error_info("QUOTA_EXHAUSTED")), 429, Q),
        (google_error(429, "daily quota", retry_info("1s"), error_info("RATE_LIMIT_EXCEEDED")), 429, R),
        (google_error(429, "quota", error_info("MODEL_CAPACITY_EXHAUSTED")), 429, C),
        (google_error(429, "x", error_info("SOMETHING_NEW")), 429, U),
        # text heuristics
        ("No capacity available: MODEL_CAPACITY exhausted", 429, C),
        ("Resource has been exhausted (e.g. check quota). Quota limit 'Tokens per minute' exceeded.", 429, R),
        ("Too Many Requests", 429, R),
        ('{"error":{"status":"RESOURCE_EXHAUSTED","message":"Resource exhausted"}}', 429, R),
        ("RESOURCE_EXHAUSTED: daily quota used up", 429, Q),
        ("Quota exceeded for quota metric 'requests per day'", 429, Q),
        ("Your quota is exhausted", 429, Q),
        ("something odd", 429, U),
        # 5xx (and the Claude path's 404) are server errors whatever the body says
        ("quota", 503, S),
        ("", 500, S),
        ("", 529, S),
        ("Requested entity was not found.", 404, S),
    ],
)
def test_classify_limit(body: str | bytes, status: int, expected: LimitReason) -> None:
    assert classify_limit(body, status) is expected


@pytest.mark.parametrize(
    ("status", "body", "header", "reason", "failures", "expected"),
    [
        # stated waits: header, JSON, prose; at least 2 s
        (429, "", "30", U, 1, 30.0),
        (429, "", "1", U, 1, 2.0),
        (429, google_error(429, "x", error_info("QUOTA_EXHAUSTED", quotaResetDelay="42s")), None, Q, 1, 42.0),
        (429, google_error(429, "x", error_info("QUOTA_EXHAUSTED", quotaResetDelay="1h2m3.5s")), None, Q, 1, 300.0),
        (429, '{"error":{"retry_after":17}}', None, R, 1, 17.0),
        (429, "Rate limit exceeded. Try again in 2m 30s", None, R, 1, 150.0),
        (429, "busy (wait 9s)", None, R, 1, 9.0),
        (429, "quota will reset in 45 seconds", None, Q, 1, 45.0),
        (429, "Retry After 99 Seconds", None, R, 1, 99.0),
        # per-reason defaults
        (429, "quota", None, Q, 1, 60.0),
        (429, "quota", None, Q, 2, 300.0),
        (429, "quota", None, Q, 3, 300.0),  # 1800 capped
        (429, "quota", None, Q, 0, 60.0),
        (429, "too many requests", None, R, 1, 5.0),
        (429, "RESOURCE_EXHAUSTED", None, R, 1, 30.0),
        (429, "", None, C, 1, 5.0),
        (429, "", None, C, 2, 10.0),
        (429, "", None, C, 7, 15.0),
        (404, "", None, S, 1, 5.0),
        (503, "", None, S, 1, 8.0),
        (429, "", None, U, 1, 60.0),
    ],
)
def test_lockout_seconds(
    status: int, body: str | bytes, header: str | None, reason: LimitReason, failures: int, expected: float
) -> None:
    assert lockout_seconds(status, body, header, reason, failures) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("steps", "failures", "expected"),
    [((10, 20), 1, 10.0), ((10, 20), 2, 20.0), ((10, 20), 9, 20.0), ((1000,), 1, LOCKOUT_CAP_S), ((), 1, 60.0)],
)
def test_lockout_custom_backoff_steps(steps: tuple[int, ...], failures: int, expected: float) -> None:
    assert lockout_seconds(429, "quota", None, Q, failures, backoff_steps=steps) == expected


@pytest.mark.parametrize(
    ("reason", "model", "scope", "key"),
    [
        (Q, "gemini-3.5-flash-low", "model", "acc:gemini-3-flash"),
        (Q, "gpt-oss-120b-medium", "model", "acc:gpt-oss-120b-medium"),
        (Q, None, "account", "acc"),
        (R, "gemini-3-flash", "account", "acc"),
        (C, "claude-sonnet-4-6", "account", "acc"),
        (S, "gemini-3-flash", "account", "acc"),
    ],
)
def test_lock_scope_and_key(reason: LimitReason, model: str | None, scope: str, key: str) -> None:
    assert lock_scope(reason, model) == scope
    assert lock_key("acc", reason, model) == key


NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("reset_time", "expected"),
    [
        ("2026-01-01T00:01:30Z", 90.0),
        ("2026-01-01T01:00:00.5+01:00", 0.5),
        ("2025-12-31T23:59:59Z", None),
        ("2026-01-01T00:01:30", None),  # no zone: ambiguous
        ("not a time", None),
    ],
)
def test_seconds_until(reset_time: str, expected: float | None) -> None:
    assert seconds_until(reset_time, NOW) == expected
