"""agfast + the Google simulator over loopback: the pool, retries, rotation, lockouts, refresh, fallback.

Waits of the retry table are scaled by 0.01 (`retry_wait_scale`), so "5 s" is 50 ms here; the gaps between
upstream attempts are measured from the simulator's own request log.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from helpers import ServerThread, connect, encode, request, strict_sse
from stack import Fault, agfast_on, generations, onboard_all, stack_config, start_sim

from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import AccountStore

SCALE = 0.01


def sdk(st: ServerThread) -> genai.Client:
    return genai.Client(
        api_key="sk-anything",
        http_options=types.HttpOptions(base_url=st.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )


def generate(st: ServerThread, text: str, model: str = "gemini-3-flash", stream: bool = False) -> tuple[int, dict]:  # type: ignore[type-arg]
    """One call through the real google-genai SDK: (status, headers/text or the Google error)."""
    client = sdk(st)
    try:
        if stream:
            chunks = list(client.models.generate_content_stream(model=model, contents=text))
            head = chunks[0].sdk_http_response
            return 200, {
                "headers": dict(head.headers or {}) if head else {},
                "text": "".join(c.text or "" for c in chunks),
            }
        answer = client.models.generate_content(model=model, contents=text)
        head = answer.sdk_http_response
        return 200, {"headers": dict(head.headers or {}) if head else {}, "text": answer.text}
    except genai_errors.APIError as exc:
        return exc.code, {"error": exc.details["error"] if isinstance(exc.details, dict) else exc.details}


def raw_generate(st: ServerThread, text: str, stream: bool = False) -> tuple[int, bytes]:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    reply = request(
        st.port, "POST", f"/v1beta/models/gemini-3-flash:{action}", body, {"Content-Type": "application/json"}
    )
    return reply.status, reply.body


# -- the happy path through real SDKs -------------------------------------------------------------------------


def test_sdk_generate_stream_and_count(stack: ServerThread, sim: GoogleSimulator) -> None:
    client = sdk(stack)
    prompt = "Tell me about the simulator please"
    answer = client.models.generate_content(model="gemini-3-flash", contents=prompt)
    assert answer.text == f"[gemini-3-flash] echo: {prompt}"
    chunks = [c.text for c in client.models.generate_content_stream(model="gemini-3-flash", contents=prompt)]
    assert len(chunks) == 3  # the simulator's chunk count, one SDK chunk per upstream event
    assert "".join(chunks) == answer.text
    counted = client.models.count_tokens(model="gemini-3-flash", contents=prompt)
    counts = [r for r in sim.requests if r.action == "countTokens"]
    assert counted.total_tokens and counted.total_tokens > 0
    assert len(counts) == 1
    # Upstream was always streamed, even for the non-streaming call (reference: better quota).
    assert {r.action for r in generations(sim)} == {"streamGenerateContent"}


def test_envelope_and_headers_sent_upstream(stack: ServerThread, sim: GoogleSimulator) -> None:
    status, reply = generate(stack, "What does the envelope look like")
    assert status == 200
    (sent,) = generations(sim)
    envelope = sent.json
    assert envelope is not None
    assert set(envelope) >= {"project", "requestId", "request", "model", "userAgent", "requestType"}
    assert envelope["project"] == sim.accounts[sent.email].project_id
    assert envelope["requestId"].startswith("agent/")
    assert envelope["request"]["sessionId"].lstrip("-").isdigit()
    assert envelope["request"]["systemInstruction"]["parts"][0]["text"].startswith("You are Antigravity")
    assert sent.headers["user-agent"].startswith("Antigravity/")
    assert sent.headers["x-client-name"] == "antigravity"
    assert sent.headers["authorization"].startswith("Bearer ya29.")
    assert sent.query.get("alt") == "sse"
    assert reply["headers"]["x-account-email"] == sent.email
    assert reply["headers"]["x-mapped-model"] == "gemini-3-flash"


# -- rotation and waits (reference §5.5) -------------------------------------------------------------------

# Two accounts, one with more quota left: P2C draws both and keeps the fuller one, so the first pick is always
# FULLER, and an attempt that did not rotate would pick it again. Every row below therefore proves rotation.
FULLER, EMPTIER = "demo1@sim.local", "demo2@sim.local"


@pytest.fixture(scope="module")
def pair() -> Iterator[GoogleSimulator]:
    with start_sim(accounts=2) as thread:
        thread.accounts[EMPTIER].default_remaining = 0.4
        yield thread


@pytest.fixture
def pair_stack(pair: GoogleSimulator, tmp_path: Path) -> Iterator[ServerThread]:
    with agfast_on(pair, tmp_path) as st:
        yield st


ROTATE = [
    # (status, expected minimum gap between attempts in seconds at SCALE)
    (429, 5.0 * SCALE),
    (500, 3.0 * SCALE),
    (401, 0.2 * SCALE),
    (403, 0.2 * SCALE),
    (404, 0.3 * SCALE),
]


@pytest.mark.parametrize(("status", "gap"), ROTATE)
def test_error_rotates_to_next_account(
    pair_stack: ServerThread, pair: GoogleSimulator, status: int, gap: float
) -> None:
    # A 403 is first re-sent once without x-goog-user-project on the same account (reference §5.1).
    pair.script(Fault("status", status=status, action="streamGenerateContent", times=2 if status == 403 else 1))
    code, reply = generate(pair_stack, f"Please rotate after a {status}")
    assert code == 200, reply
    gens = generations(pair)
    if status == 403:
        retried, *gens = gens
        assert "x-goog-user-project" in retried.headers and "x-goog-user-project" not in gens[0].headers
        assert retried.email == gens[0].email
    first, second = gens
    assert (first.email, first.status) == (FULLER, status)
    assert (second.email, second.status) == (EMPTIER, 200)
    assert second.time - first.time >= gap * 0.9
    assert reply["headers"]["x-account-email"] == EMPTIER


# (status, fault extras). A stated 0.6 s delay (too long for a grace retry) keeps 429/500 lockouts at their 2 s
# floor, short enough that the pool would wait one out and re-ask a failed account if the gateway forgot which
# ones it had tried.
EVERY_ACCOUNT_ONCE = [
    (401, {}),
    (404, {}),
    (429, {"retry_delay": 0.6}),
    (500, {"retry_delay": 0.6}),
]


@pytest.mark.parametrize(("status", "extra"), EVERY_ACCOUNT_ONCE, ids=[str(r[0]) for r in EVERY_ACCOUNT_ONCE])
def test_each_account_is_tried_once_before_giving_up(
    pair_stack: ServerThread,
    pair: GoogleSimulator,
    status: int,
    extra: dict,  # type: ignore[type-arg]
) -> None:
    """Three attempts are allowed, but with two accounts the third has nobody new to ask: it is not sent."""
    pair.script(Fault("status", status=status, action="streamGenerateContent", times=None, **extra))
    code, reply = generate(pair_stack, f"Everyone answers {status}")
    assert code != 200, reply
    assert [(r.email, r.status) for r in generations(pair)] == [(FULLER, status), (EMPTIER, status)]


def test_refused_token_is_refreshed_before_the_accounts_next_use(pair: GoogleSimulator, tmp_path: Path) -> None:
    """Google revoked FULLER's access token early: the 401 rotates the request, and FULLER's next request gets a
    fresh token first instead of a second 401."""
    with agfast_on(pair, tmp_path, preferred_account_id=FULLER) as st:
        pair.expire_access_tokens(FULLER)  # agfast still believes the token has an hour left
        assert generate(st, "My token was revoked")[0] == 200
        # (the simulator records no account for a call it refused at the token check)
        assert [(r.email, r.status) for r in generations(pair)] == [(None, 401), (EMPTIER, 200)]
        pair.clear_requests()
        assert generate(st, "Fixed-account mode brings me back")[0] == 200
        assert [(r.email, r.status) for r in generations(pair)] == [(FULLER, 200)]
        assert pair.refresh_count[FULLER] == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "collected"])
def test_error_as_first_event_of_a_200_stream_is_retried(
    pair_stack: ServerThread, pair: GoogleSimulator, stream: bool
) -> None:
    """Google sometimes answers 200 and then sends an error as the first event: nothing reached the client yet,
    so it is an upstream error like any other (a 500 here: rotate) and the client sees only the good answer."""
    pair.script(Fault("stream_error", status=500, after_chunks=0, action="streamGenerateContent", times=1))
    prompt = "The first answer is an error in disguise"
    status, body = raw_generate(pair_stack, prompt, stream=stream)
    assert status == 200, body
    chunks = [orjson.loads(data) for _, data in strict_sse(body)] if stream else [orjson.loads(body)]
    assert all("error" not in c for c in chunks)
    assert "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"]) == (
        f"[gemini-3-flash] echo: {prompt}"
    )
    first, second = generations(pair)
    assert (first.email, first.status, first.fault, first.chunks_sent) == (FULLER, 200, "stream_error", 0)
    assert (second.email, second.status, second.fault) == (EMPTIER, 200, None)


def test_short_429_grace_retries_same_account(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=429, retry_delay=0.3, action="streamGenerateContent", times=1))
    code, _ = generate(stack, "A short rate limit should not rotate")
    assert code == 200
    first, second = generations(sim)
    assert first.email == second.email
    # 300 ms stated + 1500 ms grace + 100 ms pad, scaled.
    assert second.time - first.time >= 1.9 * SCALE * 0.9


def test_503_backs_off_without_rotating(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=503, action="streamGenerateContent", times=1))
    code, _ = generate(stack, "The model is overloaded right now")
    assert code == 200
    first, second = generations(sim)
    assert first.email == second.email
    assert second.time - first.time >= 10.0 * SCALE * 0.9


def test_exhaustion_names_last_status(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=500, action="streamGenerateContent", times=None))
    code, reply = generate(stack, "Everything is broken upstream")
    assert code == 429
    error = reply["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert "All 3 attempts failed. Last status: 500" in error["message"]
    assert len(generations(sim)) == 3


def test_non_retryable_error_passes_through(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=400, message="Bad thing in request", action="streamGenerateContent"))
    code, reply = generate(stack, "This one is simply invalid")
    assert code == 400
    assert reply["error"] == {
        "code": 400, "message": "Bad thing in request", "status": "UPSTREAM_ERROR",
    }  # fmt: skip
    assert len(generations(sim)) == 1


# -- lockouts ---------------------------------------------------------------------------------------------


def test_lockout_is_honoured_then_expires(sim: GoogleSimulator, tmp_path: Path) -> None:
    target = "demo1@sim.local"
    with agfast_on(sim, tmp_path, preferred_account_id=target) as st:
        sim.script(Fault("status", status=429, retry_delay=2.0, email=target, action="streamGenerateContent"))
        assert generate(st, "First request hits the limit")[0] == 200
        first, second = generations(sim)
        assert first.email == target and second.email != target
        sim.clear_requests()
        for i in range(3):  # fixed-account mode falls through while the account is locked
            assert generate(st, f"While locked {i} goes elsewhere")[0] == 200
        assert all(r.email != target for r in generations(sim))
        time.sleep(2.2)
        sim.clear_requests()
        assert generate(st, "After the lockout it is back")[0] == 200
        assert [r.email for r in generations(sim)] == [target]


# -- tokens -----------------------------------------------------------------------------------------------


def expire_on_disk(data_dir: Path) -> None:
    store = AccountStore(data_dir)
    for account in store.load_all():
        account.expiry_timestamp = int(time.time()) - 10
        store.save(account)


def test_invalid_grant_disables_account_file(sim: GoogleSimulator, tmp_path: Path) -> None:
    target = "demo2@sim.local"
    sim.clear_faults()
    cfg = stack_config(tmp_path, sim, preferred_account_id=target)
    onboard_all(cfg, sim)
    expire_on_disk(tmp_path)
    sim.script(Fault("invalid_grant", email=target))
    sim.clear_requests()
    with ServerThread(cfg) as st:
        assert generate(st, "Refresh fails for the preferred account")[0] == 200
        assert target not in {r.email for r in generations(sim)}
    saved = AccountStore(tmp_path).find(target)
    assert saved is not None and saved.disabled
    assert (saved.disabled_reason or "").startswith("invalid_grant")


def test_one_refresh_under_50_concurrent_requests(sim: GoogleSimulator, tmp_path: Path) -> None:
    target = "demo3@sim.local"
    sim.clear_faults()
    # 50 requests wait on one refresh: on a loaded 2-core machine that may take longer than the 5 s default, and
    # this test is about how many refreshes happen, not how fast.
    cfg = stack_config(tmp_path, sim, preferred_account_id=target, token_timeout=60.0)
    onboard_all(cfg, sim)
    expire_on_disk(tmp_path)
    sim.refresh_count.clear()
    sim.clear_requests()
    results: list[int] = []
    errors: list[dict] = []  # type: ignore[type-arg]
    with ServerThread(cfg) as st:
        barrier = threading.Barrier(50)

        def one(i: int) -> None:
            barrier.wait()
            status, detail = generate(st, f"Concurrent request number {i}")
            results.append(status)
            if status != 200:
                errors.append(detail)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == [200] * 50, errors
    assert sim.refresh_count[target] == 1
    assert {r.email for r in generations(sim)} == {target}


# -- endpoint fallback (reference §5.1) ---------------------------------------------------------------------


@pytest.mark.parametrize("first", ["404", "500", "503", "refused"])
def test_endpoint_fallback(sim: GoogleSimulator, tmp_path: Path, first: str) -> None:
    s = sim
    primary = "http://127.0.0.1:9/v1internal" if first == "refused" else s.endpoint_at("/primary")
    with agfast_on(sim, tmp_path, upstream_endpoints=[primary, s.endpoint]) as st:
        if first != "refused":
            s.script(Fault("status", status=int(first), prefix="/primary", times=None))
        assert generate(st, "Falls back to the second endpoint")[0] == 200
        gens = generations(s)
        assert gens[-1].status == 200 and gens[-1].prefix == ""
        if first != "refused":
            assert gens[0].prefix == "/primary" and gens[0].status == int(first)
            assert len({r.email for r in gens}) == 1  # fallback is per call, not an account rotation


def test_429_does_not_fall_back_to_next_endpoint(sim: GoogleSimulator, tmp_path: Path) -> None:
    s = sim
    with agfast_on(sim, tmp_path, upstream_endpoints=[s.endpoint_at("/primary"), s.endpoint]) as st:
        s.script(Fault("status", status=429, prefix="/primary", times=1))
        assert generate(st, "Rate limited on the first endpoint")[0] == 200
        gens = generations(s)
        assert [r.prefix for r in gens] == ["/primary", "/primary"]
        assert gens[0].email != gens[1].email


# -- sessions and streams ------------------------------------------------------------------------------------


def test_conversation_sticks_to_one_account(stack: ServerThread, sim: GoogleSimulator) -> None:
    history = [{"role": "user", "parts": [{"text": "This conversation is about sticky sessions"}]}]
    emails = []
    for turn in range(5):
        body = orjson.dumps({"contents": history})
        reply = request(stack.port, "POST", "/v1beta/models/gemini-3-flash:generateContent", body)
        assert reply.status == 200
        emails.append(reply.headers["x-account-email"])
        history = [
            *history,
            {"role": "model", "parts": [{"text": f"answer {turn}"}]},
            {"role": "user", "parts": [{"text": f"follow-up {turn}"}]},
        ]
        # Another conversation in between must not move this one.
        stack.app.pool.state.set_last_used("someone-else", time.time())
    assert len(set(emails)) == 1


def test_client_disconnect_cancels_upstream(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.chunk_delay = 0.3
    try:
        body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "a long slow answer please"}]}]})
        with contextlib.closing(connect(stack.port)) as sock:
            sock.sendall(encode("POST", "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", body))
            assert b"data: " in sock.recv(65536)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not generations(sim)[0].client_disconnected:
            time.sleep(0.02)
        (sent,) = generations(sim)
        assert sent.client_disconnected
        assert not sent.finished
    finally:
        sim.chunk_delay = 0.0


def test_no_retry_after_first_byte(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("disconnect", after_chunks=1, action="streamGenerateContent"))
    status, body = raw_generate(stack, "This stream breaks in the middle", stream=True)
    assert status == 200
    events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert b'"candidates"' in events[0]
    assert b'"error"' in events[-1] and b"interrupted" in events[-1]
    # What broke is logged; the client is told in words, never an exception class (ClientPayloadError, …).
    assert b"Error" not in events[-1] and b"Exception" not in events[-1]
    assert len(generations(sim)) == 1


def test_empty_stream_is_retried(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("empty_stream", action="streamGenerateContent", times=1))
    assert generate(stack, "The first answer is empty")[0] == 200
    assert len(generations(sim)) == 2


def test_sdk_sees_google_error_shape(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=400, message="Invalid argument here", action="streamGenerateContent"))
    client = sdk(stack)
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="gemini-3-flash", contents="hello there friend")
    assert info.value.code == 400
    assert "Invalid argument here" in str(info.value)


def test_v1_routes_for_genai_default_api_version(stack: ServerThread) -> None:
    reply = request(stack.port, "GET", "/v1/models", headers={"x-goog-api-key": "k"})
    assert reply.json()["models"][0]["name"].startswith("models/")
    openai_style = request(stack.port, "GET", "/v1/models")
    assert openai_style.json()["object"] == "list"
    body = orjson.dumps({"contents": [{"parts": [{"text": "via the v1 prefix"}]}]})
    assert request(stack.port, "POST", "/v1/models/gemini-3-flash:generateContent", body).status == 200


def test_antigravity_account_file_loads_unchanged(sim: GoogleSimulator, tmp_path: Path) -> None:
    """A file as Antigravity Tools writes it (extra fields and all) serves and keeps every field."""
    s = sim
    account = s.accounts["demo1@sim.local"]
    (tmp_path / "accounts").mkdir()
    raw = {
        "id": "0d6b1c4e-8f0a-4c9e-9d55-3a1f2b7c6e11",
        "email": account.email,
        "name": "Demo One",
        "token": {
            "access_token": "ya29.stale",
            "refresh_token": account.refresh_token,
            "expires_in": 3599,
            "expiry_timestamp": int(time.time()) - 5,
            "token_type": "Bearer",
            "email": account.email,
            "project_id": account.project_id,
            "oauth_client_key": "antigravity_enterprise",
            "is_gcp_tos": False,
        },
        "quota": None,
        "disabled": False,
        "proxy_disabled": False,
        "protected_models": [],
        "validation_blocked": False,
        "created_at": 1760000000,
        "last_used": 1760000000,
        "custom_label": "work laptop",
        "device_profile": {"machine_id": "abc", "mac_machine_id": "def"},
        "device_history": [{"at": 1, "v": "x"}],
    }
    path = tmp_path / "accounts" / f"{raw['id']}.json"
    path.write_bytes(orjson.dumps(raw))
    (tmp_path / "accounts.json").write_bytes(
        orjson.dumps({"version": "2.0", "accounts": [{"id": raw["id"], "email": account.email}],
                      "current_account_id": raw["id"], "current_target_ide": "antigravity"})
    )  # fmt: skip
    s.clear_faults()
    cfg = stack_config(tmp_path, s)
    with ServerThread(cfg) as st:
        assert generate(st, "Served from an Antigravity Tools file")[0] == 200
    after = orjson.loads(path.read_bytes())
    for key in ("id", "email", "name", "custom_label", "device_profile", "device_history", "created_at"):
        assert after[key] == raw[key]
    assert after["token"]["oauth_client_key"] == "antigravity_enterprise"
    assert after["token"]["project_id"] == account.project_id
    assert after["token"]["access_token"] != "ya29.stale"  # refreshed and saved
    assert after["token"]["refresh_token"] == account.refresh_token


@pytest.mark.parametrize(("mode", "spread"), [("Balance", False), ("PerformanceFirst", True)])
def test_scheduling_modes(sim: GoogleSimulator, tmp_path: Path, mode: str, spread: bool) -> None:
    """Balance reuses the last account (60 s window, warm caches); PerformanceFirst spreads by P2C."""
    with agfast_on(sim, tmp_path, scheduling_mode=mode) as st:
        for i in range(24):
            assert generate(st, f"Independent conversation number {i:02d}")[0] == 200
        used = {r.email for r in generations(sim)}
    assert (len(used) > 1) is spread


def test_signature_400_is_not_resent_unchanged(stack: ServerThread, sim: GoogleSimulator) -> None:
    """Re-sending the same bytes cannot fix a signature error; without a surface fix it goes to the client."""
    sim.script(Fault("status", status=400, message="Corrupted thought signature.", action="streamGenerateContent"))
    code, reply = generate(stack, "A history with a broken signature")
    assert code == 400
    assert "Corrupted thought signature" in reply["error"]["message"]
    assert len(generations(sim)) == 1


def test_silent_upstream_before_first_chunk_rotates(sim: GoogleSimulator, tmp_path: Path) -> None:
    """An account whose stream stays silent past stream_idle_timeout is given up on; another one answers."""
    with agfast_on(sim, tmp_path, stream_idle_timeout=0.5) as st:
        sim.script(Fault("slow_first_byte", delay=3.0, action="streamGenerateContent", times=1))
        started = time.monotonic()
        code, reply = generate(st, "The first account never starts talking")
        assert code == 200, reply
        assert time.monotonic() - started < 2.5
        first, second = generations(sim)[:2]
        assert first.email != second.email


def test_accounts_added_or_removed_on_disk_join_the_running_pool(sim: GoogleSimulator, tmp_path: Path) -> None:
    sim.clear_faults()
    cfg = stack_config(tmp_path, sim, accounts_reload_interval=0.1)
    onboard_all(cfg, sim, emails=["demo1@sim.local"])
    with ServerThread(cfg) as st:
        pool = st.app.pool

        def emails() -> set[str]:
            return st.call(lambda: {m.email for m in pool.members.values()})  # type: ignore[no-any-return]

        def wait_for(expected: set[str]) -> None:
            deadline = time.monotonic() + 3
            while emails() != expected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert emails() == expected

        assert emails() == {"demo1@sim.local"}
        onboard_all(cfg, sim, emails=["demo2@sim.local"])  # what `agfast accounts add` does meanwhile
        wait_for({"demo1@sim.local", "demo2@sim.local"})
        AccountStore(tmp_path).remove("demo1@sim.local")
        wait_for({"demo2@sim.local"})
        sim.clear_requests()
        assert generate(st, "Served by the account that was added later")[0] == 200
        assert {r.email for r in generations(sim)} == {"demo2@sim.local"}


def test_model_missing_everywhere_is_404_not_429(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=404, action="streamGenerateContent", times=None))
    code, reply = generate(stack, "Nobody has this model")
    assert code == 404
    assert "not available to any account" in reply["error"]["message"]
    assert len(generations(sim)) == 3  # each account was asked (404 rotates), then the honest answer


def test_claude_models_carry_the_anthropic_beta_header_upstream(stack: ServerThread, sim: GoogleSimulator) -> None:
    """Antigravity marks Claude-model calls with anthropic-beta (reference §5.2); Gemini models get none."""
    generate(stack, "A Gemini model request", model="gemini-3-flash")
    generate(stack, "A Claude model through the Gemini API", model="claude-sonnet-4-6")
    body = orjson.dumps(
        {"model": "claude-sonnet-4-6", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert request(stack.port, "POST", "/v1/messages", body, {"content-type": "application/json"}).status == 200
    gemini, via_gemini, via_messages = generations(sim)
    assert "anthropic-beta" not in gemini.headers
    assert via_gemini.headers["anthropic-beta"].split(",") == [
        "claude-code-20250219", "interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14",
    ]  # fmt: skip
    assert via_messages.headers["anthropic-beta"] == "claude-code-20250219"


NON_STREAMING = [
    # (path, body, how to read the answer text)
    (
        "/v1beta/models/gemini-3-flash:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "Collected answers survive a broken stream"}]}]},
        lambda doc: doc["candidates"][0]["content"]["parts"][0]["text"],
    ),
    (
        "/v1/chat/completions",
        {"model": "gemini-3-flash",
         "messages": [{"role": "user", "content": "Collected answers survive a broken stream"}]},
        lambda doc: doc["choices"][0]["message"]["content"],
    ),
    (
        "/v1/messages",
        {"model": "gemini-3-flash", "max_tokens": 1000,
         "messages": [{"role": "user", "content": "Collected answers survive a broken stream"}]},
        lambda doc: doc["content"][-1]["text"],
    ),
    (
        "/v1/responses",
        {"model": "gemini-3-flash", "input": "Collected answers survive a broken stream"},
        lambda doc: doc["output"][-1]["content"][0]["text"],
    ),
]  # fmt: skip


# Per-response values (ids, times, signatures, token counts that prompt caching changes): all else must match.
VOLATILE = frozenset(
    {"id", "created", "created_at", "createTime", "responseId", "thoughtSignature", "usage", "usageMetadata"}
)


def stable(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


@pytest.mark.parametrize(("path", "body", "text_of"), NON_STREAMING, ids=["gemini", "chat", "messages", "responses"])
def test_non_streaming_answer_survives_a_mid_stream_break(
    stack: ServerThread,
    sim: GoogleSimulator,
    path: str,
    body: dict,  # type: ignore[type-arg]
    text_of: object,
) -> None:
    """A client that did not ask to stream has received nothing yet: a broken upstream is simply re-run, and
    the answer is exactly the one an unbroken run gives (nothing of the broken attempt kept, e.g. reasoning)."""
    clean = request(stack.port, "POST", path, orjson.dumps(body), {"content-type": "application/json"})
    assert clean.status == 200, clean.body[:300]
    sim.clear_requests()
    sim.script(Fault("disconnect", after_chunks=1, action="streamGenerateContent", times=1))
    reply = request(stack.port, "POST", path, orjson.dumps(body), {"content-type": "application/json"})
    assert reply.status == 200, reply.body[:300]
    expected = "[gemini-3-flash] echo: Collected answers survive a broken stream"
    assert text_of(reply.json()) == expected  # type: ignore[operator]
    assert stable(reply.json()) == stable(clean.json())
    first, second = generations(sim)
    assert first.aborted and second.finished
    assert first.chunks_sent >= 1  # the broken attempt did deliver something that had to be dropped
    assert first.email != second.email  # the re-run goes to another account
