"""The request driver: one RequestRecord per proxied request, handed to every observer in `app.observers`."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from helpers import ServerThread
from stack import KEY, Fault

from agfast.record import BODY_CAP, RequestRecord
from agfast.sim import GoogleSimulator


def observed(stack: ServerThread) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    stack.app.observers.append(records.append)
    return records


def one(records: list[RequestRecord], wait: float = 2.0) -> RequestRecord:
    """The one record (observers are told right after the last byte is queued, on the server's thread)."""
    deadline = time.monotonic() + wait
    while not records and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(records) == 1, records
    return records[0]


def test_openai_record_has_model_mapping_account_attempts_retries_and_tokens(
    sim: GoogleSimulator, stack: ServerThread
) -> None:
    records = observed(stack)
    sim.script(Fault("status", status=429, retry_delay=5, action="streamGenerateContent"))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    answer = raw.parse()
    record = one(records)
    assert record.request_id == raw.headers["x-request-id"]
    assert (record.method, record.path, record.protocol) == ("POST", "/v1/chat/completions", "openai")
    assert not record.stream
    assert (record.status, record.error) == (200, "")
    assert record.model == "gpt-4o" and record.mapped_model == raw.headers["x-mapped-model"]
    assert record.account_email == raw.headers["x-account-email"]
    assert record.attempts == 2 and record.retries == ["rate_limited_delay"]
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert record.input_tokens == answer.usage.prompt_tokens > 0
    reasoning = answer.usage.completion_tokens_details.reasoning_tokens or 0
    assert record.output_tokens == answer.usage.completion_tokens + reasoning > 0
    assert record.client_ip == "127.0.0.1"
    assert 0 < record.first_byte <= record.duration and 0 < record.upstream_seconds <= record.duration
    # The monitor (on by default) asks for bodies: what the client sent and got, never the upstream envelope.
    assert stack.app.record_bodies
    assert b'"hello"' in record.request_body and b"project" not in record.request_body
    assert answer.choices[0].message.content is not None
    assert answer.choices[0].message.content.encode()[:20] in bytes(record.response_body)


def test_anthropic_stream_record_counts_tokens_from_the_last_usage(stack: ServerThread) -> None:
    records = observed(stack)
    client = anthropic.Anthropic(base_url=stack.url, api_key=KEY, max_retries=0)
    with client.messages.stream(
        model="claude-opus-4-6", max_tokens=200, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    record = one(records)
    assert (record.protocol, record.stream, record.status, record.attempts) == ("anthropic", True, 200, 1)
    assert record.input_tokens == final.usage.input_tokens > 0
    assert record.output_tokens >= final.usage.output_tokens > 0


def test_gemini_stream_record_counts_tokens(stack: ServerThread) -> None:
    records = observed(stack)
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=stack.url))
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    usage = chunks[-1].usage_metadata
    record = one(records)
    assert (record.protocol, record.stream, record.status, record.model) == ("gemini", True, 200, "gemini-2.5-flash")
    assert usage is not None and record.input_tokens == usage.prompt_token_count
    assert record.output_tokens == (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) > 0


def test_an_error_answer_is_recorded_with_its_status_and_message(stack: ServerThread) -> None:
    records = observed(stack)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    record = one(records)
    assert (record.status, record.model, record.attempts) == (404, "no-such-model", 0)
    assert record.error and record.error in str(caught.value)


def test_bodies_are_kept_capped_only_when_asked(stack: ServerThread) -> None:
    records = observed(stack)
    stack.app.record_bodies = True
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    text = "x" * (BODY_CAP + 100)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    record = one(records)
    assert len(record.request_body) == BODY_CAP and record.request_body.startswith(b"{")
    assert record.response_body == raw.http_response.content[:BODY_CAP]


def test_a_stream_that_fails_after_its_first_byte_records_why(sim: GoogleSimulator, stack: ServerThread) -> None:
    records = observed(stack)
    sim.script(
        Fault("stream_error", after_chunks=1, status=503, message="backend melted", action="streamGenerateContent")
    )
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    chunks = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(chunks)
    record = one(records)
    assert (record.status, record.stream) == (200, True)  # the head went out before the failure
    assert "backend melted" in record.error
