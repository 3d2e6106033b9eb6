"""The access log at the default level: one line per answer, what an operator needs, no secret, no raw control byte."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator

import openai
import pytest
from helpers import Reader, ServerThread, connect, encode, request
from stack import KEY, Fault, agfast_on, start_sim

from agfast.logtext import escape, mask_email
from agfast.sim import GoogleSimulator

ACCESS = "agfast.access"


@pytest.fixture(scope="module")
def sim() -> Iterator[GoogleSimulator]:
    with start_sim() as thread:
        yield thread


@pytest.fixture
def stack(sim: GoogleSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with agfast_on(sim, tmp_path_factory.mktemp("access"), auth_mode="strict") as st:
        yield st


def lines_for(caplog: pytest.LogCaptureFixture, request_id: str, wait: float = 2.0) -> list[str]:
    """The access lines for one request (the server thread logs right after its last write, so allow a moment)."""
    deadline = time.monotonic() + wait
    while True:
        found = [m for r in caplog.records if r.name == ACCESS and (m := r.getMessage()).startswith(request_id + " ")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_proxied_request_line_names_model_mapping_masked_account_and_attempts(
    sim: GoogleSimulator, stack: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    # The first account asked answers 429 once: the line must count both upstream attempts.
    sim.script(Fault("status", status=429, retry_delay=0.01, action="streamGenerateContent"))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    email = raw.headers["x-account-email"]
    mapped = raw.headers["x-mapped-model"]
    [line] = lines_for(caplog, raw.headers["x-request-id"])
    pattern = (
        rf"^req_\w+ POST /v1/chat/completions 200 [0-9.]+ms gpt-4o->{re.escape(mapped)} "
        rf"{re.escape(email[:3])}\*\*\*@{re.escape(email.split('@')[1][:2])}\*\*\* attempts=2$"
    )
    assert re.match(pattern, line), line
    assert email not in line and KEY not in line
    for account in sim.accounts.values():
        assert account.refresh_token not in caplog.text


def test_not_found_line_has_no_model_or_account(stack: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    reply = request(stack.port, "GET", "/v2/nothing?key=" + KEY, headers={"x-api-key": KEY})
    assert reply.status == 404
    [line] = lines_for(caplog, reply.headers["x-request-id"])
    assert re.match(r"^req_\w+ GET /v2/nothing 404 [0-9.]+ms - - attempts=0$", line), line
    assert KEY not in caplog.text  # neither the header nor the query string is logged


def test_control_bytes_in_paths_are_escaped(stack: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    reply = request(stack.port, "GET", "/x%0d%0aFAKE%20200%00%1b[2J", headers={"x-api-key": KEY})
    assert reply.status == 404
    [line] = lines_for(caplog, reply.headers["x-request-id"])
    assert "GET /x\\r\\nFAKE 200\\x00\\x1b[2J 404 " in line
    assert not any(ch in line for ch in "\r\n\x00\x1b")


def test_unauthenticated_answer_is_logged_too(stack: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    reply = request(stack.port, "GET", "/v1/models")
    assert reply.status == 401
    assert lines_for(caplog, reply.headers["x-request-id"])[0].split()[1:4] == ["GET", "/v1/models", "401"]


def test_client_that_leaves_mid_request_is_logged_as_499(
    sim: GoogleSimulator, stack: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    sim.script(Fault("slow_first_byte", delay=3.0, action="streamGenerateContent"))
    body = b'{"model":"gemini-3-flash","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    headers = {"x-api-key": KEY, "Content-Type": "application/json", "X-Request-Id": "leaver-1"}
    with contextlib.closing(connect(stack.port)) as sock:
        sock.sendall(encode("POST", "/v1/chat/completions", body, headers))
        time.sleep(0.5)  # the upstream call is under way
    [line] = lines_for(caplog, "leaver-1")
    assert re.match(r"^leaver-1 POST /v1/chat/completions 499 [0-9.]+ms gemini-3-flash->gemini-3-flash ", line), line


def test_malformed_request_line_names_no_method(stack: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    with contextlib.closing(connect(stack.port)) as sock:
        sock.sendall(b"GET\r\n\r\n")
        reply = Reader(sock).read()
    assert reply.status == 400
    [line] = lines_for(caplog, reply.headers["x-request-id"])
    assert re.match(r"^req_\w+ - - 400 [0-9.]+ms - - attempts=0$", line), line


def test_silent_above_info(stack: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=ACCESS)
    reply = request(stack.port, "GET", "/healthz", headers={"x-api-key": KEY})
    assert reply.status == 200
    assert lines_for(caplog, reply.headers["x-request-id"], wait=0.3) == []


ESCAPES = [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("a\r\nb", "a\\r\\nb"),
    ("nul\x00del\x7f", "nul\\x00del\\x7f"),
    ("esc\x1b[31m", "esc\\x1b[31m"),
    ("tab\there", "tab\\there"),
    ("line\u2028sep", "line\\u2028sep"),
    ("café ✓", "café ✓"),
]


@pytest.mark.parametrize(("raw", "shown"), ESCAPES)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown


MASKS = [
    ("user@gmail.com", "use***@gm***"),
    ("ab@x.io", "ab***@x.***"),
    ("no-at-sign", "no-***"),
    ("", ""),
]


@pytest.mark.parametrize(("email", "masked"), MASKS)
def test_mask_email(email: str, masked: str) -> None:
    assert mask_email(email) == masked
