"""One upstream call with the retry/rotation policy around it: what every client surface goes through.

An attempt = pick an account, send, and (for streams) wait for the first meaningful event. Failures before
that first event are retried per `retry.decide` (up to `attempts_for(pool)`), rotating accounts as the
policy says; after it, the client owns the stream and errors are reported in-stream by the surface. So a
retry never duplicates bytes the client already has.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp
import orjson

from agfast import sse
from agfast.config import Config
from agfast.logtext import mask_email
from agfast.record import RequestRecord
from agfast.upstream import retry
from agfast.upstream.client import (
    Answer,
    TransportError,
    UpstreamClient,
    pause_reading,
    pipe_to,
    resume_parsing,
    resume_reading,
    take_buffered,
    total_timer,
    unpipe,
)
from agfast.upstream.pool import AccountPool, Lease, NoAccountError

log = logging.getLogger("agfast.upstream")

DONE = b"[DONE]"
# ExhaustedError.status when the last attempt got no answer at all (refused, DNS, TLS, timeout).
UNREACHABLE = 0
# What a client is told then; the endpoint URL and the exception go to the log only.
UNREACHABLE_MESSAGE = "Google could not be reached (no upstream endpoint answered); see the agfast log for details"
# Body bytes a pipe holds while no consumer awaits them (between the first event and the answer's pump): past
# this, Google's transport is paused until one does, so a handler that awaits something there cannot pile up
# an answer in memory. Twice aiohttp's own reader limit (2 × 64 KiB high-water mark).
HELD_LIMIT = 256 * 1024
# Network read size for upstream streams; one read usually holds several SSE events.
READ_SIZE = 64 * 1024


class UpstreamError(Exception):
    """Google answered with an error the policy does not retry; the surface passes it on."""

    def __init__(self, status: int, body: bytes, email: str = "") -> None:
        super().__init__(f"upstream HTTP {status}")
        self.status = status
        self.body = body
        self.email = email

    @property
    def message(self) -> str:
        return google_message(self.body) or f"HTTP {self.status}"


class ExhaustedError(Exception):
    """Every attempt failed; names the last upstream status and reason (never a token)."""

    def __init__(self, attempts: int, status: int, reason: str, email: str = "", *, not_found: bool = False) -> None:
        super().__init__(f"All {attempts} attempts failed. Last status: {status}. Error: {reason}")
        self.attempts = attempts
        self.status = status
        self.reason = reason
        self.email = email
        # Every account answered 404: the model is not there for anyone, which no amount of waiting fixes.
        self.not_found = not_found

    @property
    def unreachable(self) -> bool:
        """The last attempt reached no Google endpoint at all: a 502 for the client, not a rate limit."""
        return self.status == UNREACHABLE


# What a broken upstream read raises (reset, truncated body, read timeout).
STREAM_BREAKS = (aiohttp.ClientError, OSError, TimeoutError)
# What a client is told when Google's stream broke off; the exception's class goes to the log only.
STREAM_BROKE = "upstream stream interrupted: Google's answer broke off before it was complete"


# What a piped consumer's `on_batch` returns to go on; anything else stops the stream and is what `pipe` returns.
GO_ON = None
# One network read's event payloads → GO_ON, or why the stream stops here (e.g. an error event's status, message).
OnBatch = Callable[[list[bytes]], Any]


def stream_broke(exc: BaseException) -> str:
    """The client-facing message for a broken upstream stream (logged with its cause)."""
    log.warning("upstream stream interrupted: %s", type(exc).__name__)
    return STREAM_BROKE


@dataclass(slots=True)
class Stream:
    """An upstream SSE stream whose first event has arrived; `pipe()` hands over the rest."""

    answer: Answer
    lease: Lease
    first: list[bytes]
    decoder: Any
    done: bool = False
    trace_id: str = ""
    # How to get a fresh stream for the same request (a new attempt through the pool).
    reopen: Callable[[], Awaitable[Stream]] | None = None
    # The request's record, and the last `usageMetadata` the reader saw: tokens are counted on close.
    record: RequestRecord | None = None
    usage: dict[str, Any] | None = None
    # Reading is paused for a slow client (see `pause`).
    paused: bool = False
    # The body's pipe, attached since the first event was awaited (None for an answer read whole).
    reading: _Pipe | None = None
    _closed: bool = field(default=False)

    async def pipe(self, on_batch: OnBatch, restart: Callable[[], None] | None = None) -> Any:
        """Hand the event payloads to `on_batch`, one list per network read, until the stream ends: GO_ON when it
        completed, else what `on_batch` returned to stop it. A break raises one of STREAM_BREAKS.

        Nothing here wakes the caller's task per read: the body's bytes go from aiohttp's parser through the SSE
        decoder to `on_batch` inside the read's own callback (`_Pipe`), and the task awaits once, for the end. A
        consumer that has sent nothing to its client yet (a non-streaming answer being collected) passes
        `restart`: if the upstream breaks mid-stream, the request is sent again once and `restart()` tells the
        consumer to drop what it gathered, exactly as for a failure before the first byte.
        """
        while True:
            try:
                if self.first:
                    stop = on_batch(self.first)
                    if stop is not GO_ON:
                        return stop
                assert self.reading is not None
                return await self.reading.until(on_batch)
            except STREAM_BREAKS as exc:
                await self._reopen(exc, restart)

    async def _reopen(self, broke: BaseException, restart: Callable[[], None] | None) -> None:
        """After a break: raise it, or (once, for a consumer that can restart) open a fresh stream for the same
        request in place of this broken one."""
        if restart is None or self.reopen is None:
            raise broke
        reopen, self.reopen = self.reopen, None
        self.close()
        try:
            fresh = await reopen()
        except (UpstreamError, ExhaustedError, NoAccountError):
            raise ConnectionResetError("upstream stream broke and a second attempt failed") from None
        self.answer, self.lease, self.first, self.decoder = fresh.answer, fresh.lease, fresh.first, fresh.decoder
        self.done, self.trace_id, self._closed = fresh.done, fresh.trace_id, False
        self.reading, fresh.reading = fresh.reading, None
        if self.reading is not None:
            self.reading.stream = self
        self.paused = False
        restart()

    def pause(self) -> None:
        """Stop reading from Google (the client is slow): the uvicorn way, the upstream transport stops reading and
        the idle-read clock stops with it (the silence is ours, not Google's)."""
        if not self.paused and not self.done:
            self.paused = pause_reading(self.answer.response)

    def resume(self) -> None:
        """Read from Google again (the client took what it had)."""
        if self.paused:
            self.paused = False
            resume_reading(self.answer.response)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            reading, self.reading = self.reading, None  # the pipe points back here: no cycle left for the GC
            if reading is not None:
                reading.close()
            self.answer.response.release()
            if self.usage is not None and self.record is not None:
                count_tokens(self.record, self.usage)

    def note(self, chunk: dict[str, Any]) -> None:
        """Keep the chunk's usageMetadata (Google sends running totals; the last one counts)."""
        usage = chunk.get("usageMetadata")
        if usage.__class__ is dict:
            self.usage = usage


def _opened(batch: list[bytes]) -> list[bytes]:
    """The consumer while the first event is awaited: the first read with events stops it, they are the answer."""
    return batch


class _Pipe:
    """One upstream body read in aiohttp's read callbacks (client.PipedHandler) instead of by a task, from the head
    on: the first event is awaited through it too, so neither `readany` nor a second wake-up is paid for it.

    Each body piece the parser hands over is kept (`take`); after the read, `flush` decodes what the read held into
    event payloads and calls the consumer with them, still inside the callback, so the client's bytes leave in the
    same turn they arrived. A consumer is there while a task awaits `until`: what its reads stop with (the first
    event's payloads, an error event), the body's end or a break completes `ended`, the one future the task awaits,
    inside the call's total timeout. Between consumers (the first event taken, the answer not yet being pumped)
    pieces are held. The pipe lets go of the connection at the body's end (EOF or a break: then the connection is
    the pool's, or gone) and on `close`.
    """

    __slots__ = ("decoder", "ended", "handler", "held_paused", "on_batch", "parts", "reader", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        response = stream.answer.response
        self.reader = reader = response.content
        self.on_batch: OnBatch = _opened
        self.decoder = stream.decoder
        self.ended: asyncio.Future[Any] | None = None
        self.held_paused = False  # Google's transport paused because HELD_LIMIT bytes wait for a consumer
        held = take_buffered(reader)  # what came with the head
        self.parts: list[bytes] = [held] if held else []
        self.handler = pipe_to(response, self)
        resume_parsing(reader)

    async def until(self, on_batch: OnBatch) -> Any:
        """Run `on_batch` per read, what is held first, until it stops (its value) or the body ends (GO_ON, or
        what it returned for the last events); a break raises one of STREAM_BREAKS."""
        if self.handler is None:  # the body is complete (or the connection is not ours): no callback will come
            return await self._read_rest(on_batch)
        self.on_batch = on_batch
        ended = self.ended = asyncio.get_running_loop().create_future()
        if self.held_paused:  # before the held pieces go: the consumer's own backpressure may pause again
            self.held_paused = False
            self.stream.resume()
        try:
            self.flush()
            if ended.done():
                return ended.result()
            with total_timer(self.stream.answer.response):
                return await ended
        finally:
            self.ended = None

    def close(self) -> None:
        """No more callbacks: the stream is done with (its connection released or closed next)."""
        self.parts.clear()
        self._detach()

    def _detach(self) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            unpipe(self.stream.answer.response, handler)

    async def _read_rest(self, on_batch: OnBatch) -> Any:
        """The plain reading loop, for a body that cannot be piped (or whose end came while no consumer was on)."""
        reader = self.reader
        while True:
            if self.parts:
                stop = self._deliver(on_batch, self.decoder.feed(b"".join(self.parts)))
                self.parts.clear()
                if stop is not GO_ON:
                    return stop
            chunk = await reader.readany()
            if not chunk:
                self.stream.done = True
                return self._deliver(on_batch, self.decoder.close())
            self.parts.append(chunk)

    @staticmethod
    def _deliver(on_batch: OnBatch, events: list[tuple[bytes, bytes]]) -> Any:
        payloads = [data for _, data in events if data]
        return on_batch(payloads) if payloads else GO_ON

    def take(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        """After a read: the read's events to the consumer, if one awaits; the body's end, if it came, to it too."""
        reader = self.reader
        ended = self.ended
        try:
            if ended is None or ended.done():  # no consumer: the pieces are held for the next
                if not self.held_paused and sum(map(len, self.parts)) > HELD_LIMIT:
                    stream = self.stream
                    if not stream.paused:
                        stream.pause()
                        self.held_paused = stream.paused
                return
            stream = self.stream
            if reader.is_eof():
                stream.done = True  # before delivering: the connection is back in the pool, never to be paused
            parts = self.parts
            if parts:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                stop = self._deliver(self.on_batch, self.decoder.feed(data))
                if stop is not GO_ON:
                    ended.set_result(stop)
                    return
            error = reader.exception()
            if error is not None:
                ended.set_exception(error)
            elif stream.done:
                ended.set_result(self._deliver(self.on_batch, self.decoder.close()))
        except BaseException as exc:  # a consumer's failure (an error event, a bug) belongs to the awaiting task
            if ended is not None and not ended.done():
                ended.set_exception(exc)
        finally:
            if reader.is_eof() or reader.exception() is not None:
                self._detach()


def count_tokens(record: RequestRecord, usage: dict[str, Any]) -> None:
    """Google's usageMetadata → the record: output includes thinking; cached is what the prompt reused."""
    record.input_tokens = _count(usage, "promptTokenCount")
    record.output_tokens = _count(usage, "candidatesTokenCount") + _count(usage, "thoughtsTokenCount")
    record.cached_tokens = _count(usage, "cachedContentTokenCount")


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if value.__class__ is int else 0


# What Antigravity adds for Claude models behind v1internal (reference §5.2); the Gemini-native surface uses
# its own gateway with the longer list.
CLAUDE_BETA = "claude-code-20250219"
CLAUDE_BETA_GEMINI_PATH = "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"


@functools.lru_cache(maxsize=256)
def _beta_headers(beta: str) -> dict[str, str]:
    return {"anthropic-beta": beta}


def upstream_extra_headers(model: str, beta: str) -> dict[str, str] | None:
    return _beta_headers(beta) if "claude" in model else None


def parse_event(data: bytes) -> tuple[dict[str, Any] | None, tuple[int, str] | None]:
    """One upstream event → (GenerateContentResponse, None), or (None, (status, message)) for an error event."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    return event_chunk(doc)


def event_chunk(doc: Any) -> tuple[dict[str, Any] | None, tuple[int, str] | None]:
    """`parse_event` of an event already parsed."""
    if not isinstance(doc, dict):
        return None, None
    inner = doc.get("response", doc)
    if not isinstance(inner, dict):
        return None, None
    err = inner.get("error")
    if err is not None and "candidates" not in inner:
        err = err if isinstance(err, dict) else {"message": str(err)}
        code = err.get("code")
        return None, (code if isinstance(code, int) else 502, str(err.get("message") or "upstream stream error"))
    return inner, None


async def collect(
    stream: Stream,
    start: Callable[[], Callable[[dict[str, Any]], object]],
    fail: Callable[[int, str], Exception],
) -> None:
    """Feed a whole stream to a collector made by `start()`, for a client that did not ask to stream.

    That client has received nothing yet, so an upstream break mid-stream re-runs the request once and
    `start()` makes a fresh collector; a second break raises one of STREAM_BREAKS. An error event raises
    `fail(status, message)`.
    """
    feed = start()
    fold = _fold_of(feed)
    loads, not_json = orjson.loads, orjson.JSONDecodeError

    def restart() -> None:
        nonlocal feed, fold
        feed = start()
        fold = _fold_of(feed)

    def on_batch(batch: list[bytes]) -> None:
        # Runs of plain text events go to the collector's step (`fold`) as bytes. Per other event: the usual
        # `{"response": {…}}` goes to the collector with no call between (`parse_event` and `stream.note`
        # inlined); anything else, `event_chunk`'s way.
        k, n = 0, len(batch)
        while k < n:
            if fold is not None:
                k, usage = fold(batch, k)
                if usage is not None:
                    stream.usage = usage
                if k == n:
                    return
            data = batch[k]
            k += 1
            if data == DONE:
                continue
            try:
                doc = loads(data)
            except not_json:
                continue
            chunk = doc.get("response") if doc.__class__ is dict else None
            if chunk.__class__ is not dict or "error" in chunk:
                chunk, error = event_chunk(doc)
                if error is not None:
                    raise fail(*error)
                if chunk is None:
                    continue
            usage = chunk.get("usageMetadata")
            if usage.__class__ is dict:
                stream.usage = usage
            feed(chunk)

    await stream.pipe(on_batch, restart)


def _fold_of(feed: Callable[[dict[str, Any]], object]) -> Callable[[list[bytes], int], tuple[int, Any]] | None:
    """The collector step of the collector whose `feed` this is (its `fast` attribute's `fold`), if it has one."""
    return getattr(getattr(getattr(feed, "__self__", None), "fast", None), "fold", None)


def google_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return body[:500].decode("utf-8", "replace").strip()


def _in_stream_error(data: bytes) -> tuple[int, bytes] | None:
    """A 200 stream whose event is a Google error object (it happens before the first chunk)."""
    if not data.startswith(b'{"error"'):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return (code if isinstance(code, int) else 500), data


# What a client is told when the last attempt got no Google status, per retry.NO_ANSWER reason.
NO_ANSWER_LAST = {
    "unreachable": (UNREACHABLE, UNREACHABLE_MESSAGE),
    "stream_failed": (502, "the upstream stream failed before the first chunk"),
    "empty_stream": (502, "upstream stream ended without content"),
}


class _Tries:
    """One request's retry state across its attempts: accounts tried, grace retries spent, the last failure."""

    __slots__ = ("attempted", "graced", "last", "recover", "reuse", "rotate", "statuses", "total")

    def __init__(
        self, total: int, avoid: str | None, pool_size: int, recover: Callable[[int, bytes], bool] | None
    ) -> None:
        self.total = total
        self.attempted: set[str] = {avoid} if avoid is not None and pool_size > 1 else set()
        self.graced: set[str] = set()
        self.rotate = bool(self.attempted)
        self.reuse: Lease | None = None
        self.last: tuple[int, str, str] | None = None
        self.statuses: set[int] = set()
        self.recover = recover

    def rotate_from(self, lease: Lease, status: int, message: str) -> None:
        self.last = (status, message, lease.email)
        self.attempted.add(lease.account_id)
        self.rotate = True

    def recovered(self, status: int, raw: bytes) -> bool:
        """The surface's recovery rule rebuilt the request (it is used once)."""
        recover, self.recover = self.recover, None
        return recover is not None and recover(status, raw)

    def follow(self, decision: retry.RetryDecision, lease: Lease) -> None:
        if decision.same_account:
            self.graced.add(lease.account_id)
            self.reuse = lease
        elif decision.rotate:
            self.attempted.add(lease.account_id)
            self.rotate = True

    def exhausted(self) -> ExhaustedError:
        assert self.last is not None
        status, reason, email = self.last
        return ExhaustedError(self.total, status, reason, email, not_found=retry.absent(self.statuses))


class Gateway:
    __slots__ = ("beta_for_claude", "client", "config", "pool")

    def __init__(
        self, config: Config, pool: AccountPool, client: UpstreamClient, beta_for_claude: str = CLAUDE_BETA
    ) -> None:
        self.config = config
        self.pool = pool
        self.client = client
        self.beta_for_claude = beta_for_claude

    async def open_stream(
        self,
        record: RequestRecord,
        *,
        model: str,
        session_id: str | None,
        build: Callable[[Lease], bytes],
        attempts: int | None = None,
        recover: Callable[[int, bytes], bool] | None = None,
    ) -> Stream:
        """Call streamGenerateContent with retries until a first event arrives; the caller closes it.

        `recover(status, body)` is the surface's recovery rule for the statuses the policy marks `recover`
        (a 400 about thinking signatures): True means the caller changed what `build` will produce (e.g.
        dropped unverifiable thinking history), and the new request is sent at once on the same account, as one
        extra attempt. It is used at most once; without it such an error goes to the client.
        """
        stream = await self._attempts(record, model, session_id, build, attempts, "streamGenerateContent", recover)
        stream.record = record
        broken_on = stream.lease.account_id

        async def reopen() -> Stream:
            # A stream that broke mid-way is retried on another account when there is one.
            method = "streamGenerateContent"
            return await self._attempts(record, model, session_id, build, attempts, method, recover, broken_on)

        stream.reopen = reopen
        return stream

    async def call(
        self,
        record: RequestRecord,
        *,
        method: str,
        model: str,
        session_id: str | None,
        build: Callable[[Lease], bytes],
        attempts: int | None = None,
    ) -> tuple[bytes, Lease]:
        """A non-streaming method (countTokens) with the same retry policy; returns the 200 body."""
        answered = await self._attempts(record, model, session_id, build, attempts, method, None)
        return answered.first[0], answered.lease

    async def _attempts(
        self,
        record: RequestRecord,
        model: str,
        session_id: str | None,
        build: Callable[[Lease], bytes],
        attempts: int | None,
        method: str,
        recover: Callable[[int, bytes], bool] | None,
        avoid: str | None = None,
    ) -> Stream:
        """Attempts until one succeeds (a Stream; for a non-streaming method, done, its body the one event), the
        policy gives up (UpstreamError) or the attempts run out (ExhaustedError)."""
        pool = self.pool
        tries = _Tries(attempts if attempts is not None else retry.attempts_for(pool.size), avoid, pool.size, recover)
        extra = upstream_extra_headers(model, self.beta_for_claude)
        record.mapped_model = model
        attempt = 0
        while attempt < tries.total:
            lease = await self._lease(model, session_id, tries)
            if lease is None:
                break
            record.attempts += 1
            record.account_email = lease.email
            outcome = await self._send(record, method, build(lease), lease, extra)
            if isinstance(outcome, Stream):
                pool.mark_success(lease)
                return outcome
            if isinstance(outcome, str):  # no Google status: rotate at once
                tries.rotate_from(lease, *NO_ANSWER_LAST[outcome])
                record.retries.append(outcome)
                attempt += 1
                continue
            status, raw, retry_after = outcome
            pool.mark_failure(lease, status, raw, retry_after, model)
            tries.last = (status, google_message(raw), lease.email)
            tries.statuses.add(status)
            if retry.recovers(status):
                if not tries.recovered(status, raw):
                    raise UpstreamError(status, raw, lease.email)
                tries.total += 1
                tries.reuse = lease
                record.retries.append("recovered")
                attempt += 1
                continue
            decision = retry.decide(
                status, raw, attempt, self.config.retry_wait_scale, retry_after=retry_after,
                allow_grace=lease.account_id not in tries.graced,
            )  # fmt: skip
            if decision is None:
                raise UpstreamError(status, raw, lease.email)
            attempt += 1
            if attempt >= tries.total:
                break
            record.retries.append(decision.reason)
            tries.follow(decision, lease)
            await asyncio.sleep(decision.wait_s)
        raise tries.exhausted()

    async def _lease(self, model: str, session_id: str | None, tries: _Tries) -> Lease | None:
        """The account for the next attempt; None when none is left after a failed attempt (NoAccountError
        before any attempt)."""
        if tries.reuse is not None:
            lease, tries.reuse = tries.reuse, None
            return lease
        try:
            return await self.pool.acquire(model, session_id, rotate=tries.rotate, exclude=tries.attempted)
        except NoAccountError:
            if tries.last is None:
                raise
            return None

    async def _send(
        self, record: RequestRecord, method: str, body: bytes, lease: Lease, extra: dict[str, str] | None
    ) -> Stream | tuple[int, bytes, str | None] | str:
        """One attempt: a Stream (its first event in), Google's error (status, body, Retry-After), or the
        NO_ANSWER reason when no status came."""
        stream = method == "streamGenerateContent"
        started = perf_counter()
        try:
            try:
                answer = await self.client.call(
                    method,
                    body,
                    lease.access_token,
                    project=lease.project_id,
                    stream=stream,
                    extra_headers=extra,
                    proxy=lease.proxy,
                )
            except TransportError as exc:
                log.warning("upstream unreachable (account %s): %s", mask_email(lease.email), exc)
                return "unreachable"
            if answer.status != 200:
                retry_after = answer.response.headers.get("Retry-After")
                raw = await answer.response.read()
                answer.response.release()
                return answer.status, raw, retry_after
            try:
                if not stream:
                    raw = await answer.response.read()
                    answer.response.release()
                    return Stream(answer, lease, [raw], None, done=True)
                opened = await self._first_event(answer, lease)
            except STREAM_BREAKS as exc:
                answer.response.release()
                log.warning("upstream stream failed before the first chunk: %s", type(exc).__name__)
                return "stream_failed"
            except BaseException:  # cancelled (client gone, shutdown): the connection goes with the request
                answer.response.close()
                raise
            if opened is None:
                return "empty_stream"
            if isinstance(opened, Stream):
                return opened
            return opened[0], opened[1], answer.response.headers.get("Retry-After")
        finally:
            record.upstream_seconds += perf_counter() - started

    async def _first_event(self, answer: Answer, lease: Lease) -> Stream | tuple[int, bytes] | None:
        """Pipe the body until one non-empty event arrives: a Stream, an in-stream error (status, body), or None."""
        trace = answer.response.headers.get("x-cloudaicompanion-trace-id", "")
        stream = Stream(answer, lease, [], sse.SSEDecoder(), trace_id=trace)
        reading = stream.reading = _Pipe(stream)
        try:
            first = await reading.until(_opened)
            error = None if first is GO_ON else _in_stream_error(first[0])
        except BaseException:
            stream.close()
            raise
        if first is GO_ON or error is not None:
            stream.close()
            return error
        stream.first = first
        return stream
