"""What several agfast processes (workers of one host, or hosts behind a load balancer) share about the pool.

`LocalState` is today's in-process state and costs nothing extra. `RedisState` keeps the same state in Redis
so that one process's 429, token refresh, session binding or operator action holds for all of them:

- the pool reads a local mirror synchronously, and in steady state the request path costs Redis nothing:
  every write the writer flushes is also published on `prefix:state` in the same pipeline (so it goes out only
  once Redis holds it), and every process applies the writes (its own too, for Redis's order) as they arrive;
- the mirror is pulled whole (lockouts, failure counters, last-used) whenever it cannot be trusted: once the
  subscription is (re)established, when an outage ends, and every `PULL_EVERY` seconds as a safety net, all off
  the request path. While the subscription is down a request pulls first (today's one round trip, bounded by
  `REDIS_TIMEOUT`), so correctness never rests on a live subscription;
- a session this process has not seen costs one GET for its binding (concurrent requests of that session share
  it); a binding is set only if no other process moved it first (`BIND_UNLESS_MOVED`, a script that publishes
  it only if it won), so when two processes bind one session at once the first wins and the other adopts it;
- writes go to the mirror at once and to Redis through one ordered background writer; a write not yet
  confirmed stays in `_unsynced` and is laid over every pull, so nothing learned locally is lost;
- access tokens live under their own keys with the token's expiry as TTL, and one refresh per account at a time
  across processes is a lease (`SET NX PX`) that expires if its holder dies;
- operator actions and live config changes are published on one channel that every process subscribes to.

When Redis is slow or gone, the process carries on with its own mirror (logged once), retries every
`RECONNECT_EVERY` seconds, and on return writes what it learned meanwhile back (reconciliation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

log = logging.getLogger("agfast.state")

# The failure counter behind backoff steps forgets after an hour of quiet (reference §4.9).
FAILURE_MEMORY = 3600.0


class PoolState(Protocol):
    """The pool's shared mutable state; in memory here, shareable (e.g. Redis) later."""

    def locked_until(self, key: str) -> float: ...
    def lock(self, key: str, until: float, reason: str) -> None: ...
    def unlock(self, key: str) -> None: ...
    def clear_locks(self) -> None: ...
    def locks_of(self, account_id: str) -> list[tuple[str, float, str]]: ...
    def clear_bindings(self) -> int: ...
    def binding(self, session_id: str) -> str | None: ...
    def bind(self, session_id: str, account_id: str) -> None: ...
    def unbind(self, session_id: str) -> None: ...
    def last_used(self) -> tuple[str, float] | None: ...
    def set_last_used(self, account_id: str, at: float) -> None: ...
    def failures(self, account_id: str, now: float) -> int: ...
    def add_failure(self, account_id: str, now: float) -> int: ...
    def reset_failures(self, account_id: str) -> None: ...


class MemoryState:
    """PoolState in this process's memory."""

    # Session bindings kept at most; the oldest are forgotten first (a long-running gateway sees many).
    MAX_BINDINGS = 100_000

    def __init__(self) -> None:
        self.locks: dict[str, tuple[float, str]] = {}
        self.bindings: dict[str, str] = {}
        self._last: tuple[str, float] | None = None
        self._failures: dict[str, tuple[int, float]] = {}

    def locked_until(self, key: str) -> float:
        entry = self.locks.get(key)
        return entry[0] if entry is not None else 0.0

    def lock(self, key: str, until: float, reason: str) -> None:
        self.locks[key] = (until, reason)

    def unlock(self, key: str) -> None:
        self.locks.pop(key, None)

    def clear_locks(self) -> None:
        self.locks.clear()

    def locks_of(self, account_id: str) -> list[tuple[str, float, str]]:
        """(key, until, reason) of every lock of one account: account-wide, per model, refresh back-off."""
        return [
            (key, until, reason)
            for key, (until, reason) in self.locks.items()
            if key == account_id or key.startswith((account_id + ":", account_id + "#"))
        ]

    def clear_bindings(self) -> int:
        count = len(self.bindings)
        self.bindings.clear()
        self._last = None
        return count

    def binding(self, session_id: str) -> str | None:
        return self.bindings.get(session_id)

    def bind(self, session_id: str, account_id: str) -> None:
        if len(self.bindings) >= self.MAX_BINDINGS and session_id not in self.bindings:
            self.bindings.pop(next(iter(self.bindings)))
        self.bindings[session_id] = account_id

    def unbind(self, session_id: str) -> None:
        self.bindings.pop(session_id, None)

    def last_used(self) -> tuple[str, float] | None:
        return self._last

    def set_last_used(self, account_id: str, at: float) -> None:
        self._last = (account_id, at)

    def failures(self, account_id: str, now: float) -> int:
        count, at = self._failures.get(account_id, (0, 0.0))
        return count if now - at < FAILURE_MEMORY else 0

    def add_failure(self, account_id: str, now: float) -> int:
        count = self.failures(account_id, now) + 1
        self._failures[account_id] = (count, now)
        return count

    def reset_failures(self, account_id: str) -> None:
        self._failures.pop(account_id, None)


# No request waits on Redis longer than this by default (`state.timeout`): past it the request uses this
# process's own state.
REDIS_TIMEOUT = 0.05
# Timeouts in a row after which Redis counts as gone (one slow answer on a busy machine is not an outage).
TIMEOUTS_FOR_OUTAGE = 3
# While Redis is unreachable, try it again at most this often (not on every request: each try could cost
# REDIS_TIMEOUT).
# close() cancels its tasks again this often while one still runs (a swallowed cancellation), for at most
# CLOSE_CANCEL_FOR: shutdown must end even when a task ignores every cancel.
CLOSE_CANCEL_EVERY = 0.05
CLOSE_CANCEL_FOR = 2.0
RECONNECT_EVERY = 1.0
# The mirror is pulled whole this often even while the subscription looks healthy: a safety net for anything a
# message cannot carry (a key expired, or written by hand) and for two processes' writes to one key crossing.
PULL_EVERY = 5.0
# A binding is set only if Redis holds none or the one this process replaces (ARGV[5], "" for none): when two
# processes bind one session at once the first wins, and the loser gets the winner's account back. Only a
# binding set is published, at its place in the batch.
BIND_UNLESS_MOVED = """
local bound = redis.call('GET', KEYS[1])
if bound and bound ~= ARGV[5] then
  return bound
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return false
"""
# A session's binding is forgotten after a day without use (MemoryState's bound keeps the local mirror small).
BINDING_TTL_S = 86_400
# Writes kept while Redis is away; beyond this the oldest are dropped (they are lockouts and bindings, which
# expire or are re-learned anyway).
MAX_UNSYNCED = 10_000
# A refresh lease outlives any real token call; a holder that crashed frees the account after this.
REFRESH_LEASE_S = 30.0
# How often a process waiting for another's refresh looks for the new token.
TOKEN_POLL_S = 0.05

Listener = Callable[[dict[str, Any]], None]


class LocalState(MemoryState):
    """Shared state for one process: the in-memory pool state, with no-op sharing hooks."""

    shared = False

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Listener] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stale(self, session_id: str | None) -> bool:
        return False

    async def pull(self, session_id: str | None) -> None:
        return None

    async def shared_token(self, account_id: str) -> tuple[str, int] | None:
        return None

    async def lease_refresh(self, account_id: str) -> bool:
        return True

    async def end_refresh(self, account_id: str, access_token: str | None, expiry: int) -> None:
        return None

    def unlock_account(self, account_id: str) -> None:
        for key, _, _ in self.locks_of(account_id):
            self.unlock(key)

    def publish(self, event: dict[str, Any], keep: str | None = None) -> None:
        """Nobody else to tell: the caller already applied it."""
        return None


class RedisState(LocalState):
    """Shared state in Redis (keys under `prefix:`), mirrored locally for the synchronous pool."""

    shared = True

    def __init__(self, url: str, prefix: str = "agfast", timeout: float = REDIS_TIMEOUT) -> None:
        super().__init__()
        import redis.asyncio as aioredis  # only a Redis deployment pays for importing the client

        self.url = url
        self.timeout = timeout
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One immediate retry (a pooled connection from before an outage fails once and is replaced), not
        # redis-py's default ten with growing back-off: an outage must be noticed, not waited out.
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=max(timeout * 20, 1.0),
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),
        )
        # Subscriptions wait for messages indefinitely: their own connection, without the request timeouts.
        # No retry: a lost subscription must surface (messages were missed) rather than be quietly re-made.
        self.events = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, health_check_interval=30, retry=Retry(NoBackoff(), 0)
        )
        self.prefix = prefix
        self.k_locks = f"{prefix}:locks"
        self.k_failures = f"{prefix}:failures"
        self.k_last = f"{prefix}:last"
        self.k_bind = f"{prefix}:bind:"
        self.k_token = f"{prefix}:token:"
        self.k_lease = f"{prefix}:lease:"
        self.channel = f"{prefix}:events"
        # Every state write, as a JSON list of ops, in Redis's order: how every process's mirror stays current.
        self.state_channel = f"{prefix}:state"
        self.k_kept = f"{prefix}:kept"
        # Who sent an event: a process ignores its own.
        self.origin = f"{os.getpid()}-{os.urandom(4).hex()}"
        # Round trips a request waited for (a pull while the mirror is not current, a new session's GET).
        self.round_trips = 0
        # Whole pulls made off the request path (subscription start, outage end, the PULL_EVERY safety net).
        self.background_pulls = 0
        # True while the subscription is live and the mirror was pulled since it started: requests read the
        # mirror alone.
        self.current = False
        # Sessions whose binding (or its absence) the mirror knows for certain since the subscription started.
        self._verified: dict[str, None] = {}
        # One GET per unknown session in flight, shared by its concurrent requests; a binding another process
        # published while that GET ran is newer than its answer (`_overridden`).
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._overridden: set[str] = set()
        self._unsynced: list[tuple[Any, ...]] = []
        self._queue: list[tuple[Any, ...]] = []
        self._wake = asyncio.Event()
        self._down_until = 0.0
        self._down = False
        self._timeouts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # close() began: the subscriber must not subscribe again

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._writer()), loop.create_task(self._subscriber())]
        await self._pull(None)
        await self._replay_kept()

    async def close(self) -> None:
        self._closing = True
        await _cancel_until_done([*self._tasks, *self._fetching.values()])
        if self._queue:  # last writes of a clean shutdown
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(self._queue), self.timeout * 10)
        await self.redis.aclose()
        await self.events.aclose()

    # -- availability ----------------------------------------------------------------------------------

    def _usable(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self._timeouts += 1
            if self._timeouts < TIMEOUTS_FOR_OUTAGE:
                return
        self._timeouts = 0
        self._down_until = time.monotonic() + RECONNECT_EVERY
        self.current = False  # messages may be lost while Redis is away: pull before trusting the mirror again
        if not self._down:
            self._down = True
            log.warning(
                "Redis %s unreachable (%s): using this process's own pool state until it returns",
                _safe_url(self.url),
                type(exc).__name__,
            )

    def _back(self) -> None:
        self._timeouts = 0
        if self._down:
            self._down = False
            log.warning("Redis is back: writing what this process learned meanwhile")
            self._reconcile()

    def _reconcile(self) -> None:
        """After an outage (Redis may have restarted empty): push the mirror's live lockouts and bindings."""
        now = time.time()
        for key, (until, reason) in self.locks.items():
            if until > now:
                self._write(("lock", key, until, reason))
        for session_id, account_id in self.bindings.items():
            self._write(("bind", session_id, account_id, None))

    # -- the request path: the mirror, a round trip only when it cannot answer -------------------------------

    def stale(self, session_id: str | None) -> bool:
        """Whether a request must `pull` before reading the mirror (no: the steady state, no await at all)."""
        if not self.current:
            return True
        return bool(session_id) and session_id not in self._verified

    async def pull(self, session_id: str | None) -> None:
        """Bring the mirror up to date for one request: while it is current only an unknown session's binding
        (one GET shared by that session's concurrent requests); otherwise one whole pull (one pipeline). On
        timeout or outage the request goes on with the mirror as it is."""
        if self.current:
            if session_id:
                await self._known(session_id)
            return
        if await self._pull(session_id):
            self.round_trips += 1

    async def _pull(self, session_id: str | None) -> bool:
        """The whole mirror (and one session's binding) from Redis in one pipeline; False when not answered."""
        if not self._usable():
            return False
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.k_locks)
        pipe.hgetall(self.k_failures)
        pipe.get(self.k_last)
        if session_id:
            pipe.get(self.k_bind + session_id)
        try:
            async with asyncio.timeout(self.timeout):
                found = await pipe.execute()
        except Exception as exc:  # timeout, connection refused/reset: the request goes on with local state
            self._lost(exc)
            return False
        self._back()
        self._apply_pulled(found, session_id)
        return True

    async def _known(self, session_id: str) -> None:
        """Make the mirror know `session_id`'s binding (another process may have bound it)."""
        fetch = self._fetching.get(session_id)
        if fetch is None:
            fetch = self._fetching[session_id] = asyncio.get_running_loop().create_task(self._fetch(session_id))
        await asyncio.shield(fetch)  # one request giving up does not cancel the others' GET

    async def _fetch(self, session_id: str) -> None:
        try:
            if not self._usable():
                return
            try:
                async with asyncio.timeout(self.timeout):
                    bound = await self.redis.get(self.k_bind + session_id)
            except Exception as exc:  # the request goes on with the mirror; the next one asks again
                self._lost(exc)
                return
            self.round_trips += 1
            self._back()
            if session_id in self._overridden:  # a newer binding arrived while the GET ran
                self._verify(session_id)
                return
            if bound is None:
                MemoryState.unbind(self, session_id)
            else:
                self._mirror_bind(session_id, bound.decode() if isinstance(bound, bytes) else bound)
            for op in self._unsynced:  # this process's own writes Redis has not confirmed yet
                self._replay(op)
            if self.current:
                self._verify(session_id)
        finally:
            del self._fetching[session_id]
            self._overridden.discard(session_id)

    def _verify(self, session_id: str) -> None:
        verified = self._verified
        if len(verified) >= MemoryState.MAX_BINDINGS and session_id not in verified:
            verified.pop(next(iter(verified)))
        verified[session_id] = None

    def _mirror_bind(self, session_id: str, account_id: str) -> None:
        """Bind in the mirror only; a binding the mirror's bound pushes out is no longer known for certain."""
        bindings = self.bindings
        if len(bindings) >= self.MAX_BINDINGS and session_id not in bindings:
            self._verified.pop(next(iter(bindings)), None)
        MemoryState.bind(self, session_id, account_id)

    def _apply_pulled(self, found: list[Any], session_id: str | None) -> None:
        now = time.time()
        locks: dict[str, tuple[float, str]] = {}
        for key, value in found[0].items():
            until, _, reason = value.decode().partition("|")
            if float(until) > now:
                locks[key.decode()] = (float(until), reason)
        self.locks = locks
        failures: dict[str, tuple[int, float]] = {}
        for key, value in found[1].items():
            count, _, at = value.decode().partition("|")
            failures[key.decode()] = (int(count), float(at))
        self._failures = failures
        if found[2]:
            account_id, _, at = found[2].decode().partition("|")
            self._last = (account_id, float(at))
        if session_id:
            bound = found[3]
            if bound is None:
                self.bindings.pop(session_id, None)
            else:
                self.bindings[session_id] = bound.decode()
        for op in self._unsynced:  # what this process wrote that Redis has not confirmed yet
            self._replay(op)

    def _replay(self, op: tuple[Any, ...] | list[Any]) -> None:
        kind = op[0]
        if kind == "lock":
            MemoryState.lock(self, op[1], op[2], op[3])
        elif kind == "unlock":
            MemoryState.unlock(self, op[1])
        elif kind == "clear_locks":
            MemoryState.clear_locks(self)
        elif kind == "unlock_account":
            for key, _, _ in self.locks_of(op[1]):
                MemoryState.unlock(self, key)
        elif kind == "failure":
            self._failures[op[1]] = (op[2], op[3])
        elif kind == "reset_failures":
            MemoryState.reset_failures(self, op[1])
        elif kind == "bind":
            self._mirror_bind(op[1], op[2])
        elif kind == "unbind":
            MemoryState.unbind(self, op[1])
        elif kind == "clear_bindings":
            MemoryState.clear_bindings(self)
        elif kind == "last":
            self._last = (op[1], op[2])

    def _hear(self, data: bytes) -> None:
        """Apply one flushed batch of writes to the mirror, this process's own included: messages come in the
        order Redis executed the writes, so replaying all of them leaves the mirror as Redis is, even where
        this process's early local write crossed another's."""
        for op in orjson.loads(data):
            self._replay(op)
            kind = op[0]
            if kind == "bind" or kind == "unbind":
                self._verify(op[1])
                if op[1] in self._fetching:
                    self._overridden.add(op[1])
            elif kind == "clear_bindings":
                self._overridden.update(self._fetching)

    # -- writes: the mirror now, Redis through the writer ----------------------------------------------

    def _write(self, op: tuple[Any, ...]) -> None:
        self._unsynced.append(op)
        self._queue.append(op)
        if len(self._unsynced) > MAX_UNSYNCED:
            dropped = self._unsynced.pop(0)
            if dropped in self._queue:
                self._queue.remove(dropped)
        self._wake.set()

    def lock(self, key: str, until: float, reason: str) -> None:
        super().lock(key, until, reason)
        self._write(("lock", key, until, reason))

    def unlock(self, key: str) -> None:
        if key in self.locks:  # every success calls this: no write when there is nothing to lift
            super().unlock(key)
            self._write(("unlock", key))

    def clear_locks(self) -> None:
        super().clear_locks()
        self._write(("clear_locks",))

    def unlock_account(self, account_id: str) -> None:
        """Lift every lock of one account in Redis too, including ones this process has not pulled yet."""
        for key, _, _ in self.locks_of(account_id):
            MemoryState.unlock(self, key)
        self._write(("unlock_account", account_id))

    def add_failure(self, account_id: str, now: float) -> int:
        count = super().add_failure(account_id, now)
        self._write(("failure", account_id, count, now))
        return count

    def reset_failures(self, account_id: str) -> None:
        if account_id in self._failures:  # every success calls this: no write when there is nothing to reset
            super().reset_failures(account_id)
            self._write(("reset_failures", account_id))

    def bind(self, session_id: str, account_id: str) -> None:
        """Written only if no other process bound the session since this one saw it (`BIND_UNLESS_MOVED`: the
        loser adopts the winner's account)."""
        replaces = self.bindings.get(session_id)
        if replaces == account_id:
            return
        self._mirror_bind(session_id, account_id)
        self._write(("bind", session_id, account_id, replaces))

    def unbind(self, session_id: str) -> None:
        super().unbind(session_id)
        self._write(("unbind", session_id))

    def clear_bindings(self) -> int:
        count = super().clear_bindings()
        self._write(("clear_bindings",))
        return count

    def set_last_used(self, account_id: str, at: float) -> None:
        last = self._last
        super().set_last_used(account_id, at)
        if last is None or last[0] != account_id or at - last[1] > 1.0:  # at most one write a second
            self._write(("last", account_id, at))

    async def _writer(self) -> None:
        """The one writer: queued ops in order, one pipeline per batch; kept for later when Redis is away.
        While Redis is away it also looks for its return, so an idle process reconciles without a request."""
        while True:
            if self._down:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(self._down_until - time.monotonic(), 0.01))
                if self._down and self._usable():
                    await self._probe()
            else:
                await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if not self._usable():
                    await asyncio.sleep(max(self._down_until - time.monotonic(), 0.01))
                    continue
                batch = self._queue[:]
                try:
                    await asyncio.wait_for(self._flush(batch), self.timeout * 10)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._lost(exc)
                    continue
                del self._queue[: len(batch)]
                done = set(map(id, batch))
                self._unsynced = [op for op in self._unsynced if id(op) not in done]
                self._back()

    async def _probe(self) -> None:
        """PING, twice: the first use of a connection from before the outage fails and drops it."""
        for _ in range(2):
            try:
                async with asyncio.timeout(self.timeout * 10):
                    await self.redis.ping()
            except Exception as exc:
                last: BaseException = exc
                continue
            self._back()
            return
        self._lost(last)

    async def _flush(self, batch: list[tuple[Any, ...]]) -> None:
        """One pipeline: the batch's writes in order, each also published (in order, after it) for the other
        processes' mirrors; then a binding that lost to another process's is adopted."""
        pipe = self.redis.pipeline(transaction=False)
        told: list[tuple[Any, ...]] = []  # written, not yet published
        binds: list[tuple[int, tuple[Any, ...]]] = []  # (place in the pipeline, op)
        for op in batch:
            kind = op[0]
            if kind == "bind":
                if told:
                    pipe.publish(self.state_channel, orjson.dumps(told))
                    told = []
                binds.append((len(pipe), op))
                payload = orjson.dumps([op])
                key, channel = self.k_bind + op[1], self.state_channel
                pipe.eval(BIND_UNLESS_MOVED, 1, key, op[2], BINDING_TTL_S, channel, payload, op[3] or "")
                continue
            if kind == "event":
                pipe.publish(self.channel, op[1])
                if op[2] is not None:
                    pipe.hset(self.k_kept, op[2], op[1])
                continue
            told.append(op)
            if kind == "lock":
                pipe.hset(self.k_locks, op[1], f"{op[2]!r}|{op[3]}")
            elif kind == "unlock":
                pipe.hdel(self.k_locks, op[1])
            elif kind == "clear_locks":
                pipe.delete(self.k_locks)
            elif kind == "unlock_account":
                for key in await self.redis.hkeys(self.k_locks):
                    name = key.decode() if isinstance(key, bytes) else key
                    if name == op[1] or name.startswith((op[1] + ":", op[1] + "#")):
                        pipe.hdel(self.k_locks, key)
            elif kind == "failure":
                pipe.hset(self.k_failures, op[1], f"{op[2]}|{op[3]!r}")
            elif kind == "reset_failures":
                pipe.hdel(self.k_failures, op[1])
            elif kind == "unbind":
                pipe.delete(self.k_bind + op[1])
            elif kind == "clear_bindings":
                async for key in self.redis.scan_iter(match=self.k_bind + "*", count=1000):
                    pipe.delete(key)
                pipe.delete(self.k_last)
            elif kind == "last":
                pipe.set(self.k_last, f"{op[1]}|{op[2]!r}")
        if told:
            pipe.publish(self.state_channel, orjson.dumps(told))
        found = await pipe.execute()
        for at, op in binds:
            winner = found[at]
            if winner is not None and self.bindings.get(op[1]) == op[2]:
                self._mirror_bind(op[1], winner.decode() if isinstance(winner, bytes) else winner)

    # -- tokens: one refresh per account across processes ----------------------------------------------

    async def shared_token(self, account_id: str) -> tuple[str, int] | None:
        """The access token another process refreshed (token, expiry timestamp), if Redis has one."""
        if not self._usable():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self.redis.get(self.k_token + account_id)
        except Exception as exc:
            self._lost(exc)
            return None
        if raw is None:
            return None
        token, _, expiry = (raw.decode() if isinstance(raw, bytes) else raw).partition("|")
        return token, int(expiry)

    async def lease_refresh(self, account_id: str) -> bool:
        """True: this process refreshes the token. False: another holds the lease; its token was waited for
        (see shared_token) and did not come."""
        if not self._usable():
            return True
        try:
            async with asyncio.timeout(self.timeout):
                got = await self.redis.set(
                    self.k_lease + account_id, self.origin, nx=True, px=int(REFRESH_LEASE_S * 1000)
                )
        except Exception as exc:
            self._lost(exc)
            return True
        return bool(got)

    async def end_refresh(self, account_id: str, access_token: str | None, expiry: int) -> None:
        """Publish the new token (TTL = its expiry) and free the lease; a failed refresh just frees it."""
        if not self._usable():
            return
        pipe = self.redis.pipeline(transaction=False)
        ttl = int(expiry - time.time())
        if access_token and ttl > 0:
            pipe.set(self.k_token + account_id, f"{access_token}|{expiry}", ex=ttl)
        pipe.delete(self.k_lease + account_id)
        try:
            async with asyncio.timeout(self.timeout * 4):
                await pipe.execute()
        except Exception as exc:
            self._lost(exc)

    # -- events: operator actions and live config for every process ------------------------------------

    def publish(self, event: dict[str, Any], keep: str | None = None) -> None:
        """Tell every other process; `keep` names a slot where the event also stays for processes that start
        later (the proxy switch, a live setting)."""
        payload = orjson.dumps({**event, "origin": self.origin}, default=str)
        self._write(("event", payload, keep))

    async def _replay_kept(self) -> None:
        """A process that starts late applies what the others were told before (e.g. the proxy is stopped)."""
        try:
            async with asyncio.timeout(self.timeout * 10):
                kept = await self.redis.hgetall(self.k_kept)
        except Exception as exc:
            self._lost(exc)
            return
        for payload in kept.values():
            event = orjson.loads(payload)
            event.pop("origin", None)
            for listener in self.listeners:
                listener(event)

    async def _subscriber(self) -> None:
        """Listen for the other processes' events and state writes; pull the mirror whole once subscribed,
        when it stopped being current (an outage) and every PULL_EVERY seconds. The pulls run here, between
        messages, so a message is never applied under a snapshot older than itself."""
        channels = (self.channel, self.state_channel)
        state_channel = self.state_channel.encode()
        while not self._closing:
            pubsub = self.events.pubsub()
            self.current = False
            try:
                await pubsub.subscribe(*channels)
                subscribed = False  # both subscriptions confirmed
                pulled_at = float("-inf")
                while True:
                    # Pull again PULL_EVERY seconds after the last pull; while not current, sooner.
                    due = pulled_at + (PULL_EVERY if self.current else RECONNECT_EVERY)
                    wait = max(due - time.monotonic(), 0.0) if subscribed else None
                    message = await pubsub.get_message(timeout=wait)
                    if message is not None:
                        kind = message["type"]
                        if kind == "message":
                            if message["channel"] == state_channel:
                                self._hear(message["data"])
                            else:
                                self._event(message["data"])
                        elif kind == "subscribe":  # (again, should the client ever resubscribe on its own)
                            self.current = False
                            subscribed = message["data"] == len(channels)
                            if subscribed:
                                self._verified.clear()  # bindings may have moved while nobody listened
                                pulled_at = float("-inf")
                    due = pulled_at + (PULL_EVERY if self.current else RECONNECT_EVERY)
                    if subscribed and time.monotonic() >= due:
                        if await self._pull(None):
                            self.background_pulls += 1
                            self.current = True
                        pulled_at = time.monotonic()
            except asyncio.CancelledError:
                self.current = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:  # Redis away: requests pull until the subscription is back
                self.current = False
                log.debug("state subscription lost: %s", type(exc).__name__)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if not self._closing:
                    await asyncio.sleep(RECONNECT_EVERY)

    def _event(self, data: bytes) -> None:
        event = orjson.loads(data)
        if event.pop("origin", None) == self.origin:
            return
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("applying a shared event failed")


async def _cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any goes on (bounded): redis-py can swallow a
    CancelledError (redis/redis-py#2028, #2551), and a subscriber cancelled while subscribing then listened for
    ever, keeping its worker alive after SIGTERM."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_CANCEL_FOR
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CLOSE_CANCEL_EVERY)
    if pending:
        log.warning("%d Redis task(s) did not stop when cancelled", len(pending))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: an error on the way out is not worth a "never retrieved" warning


def _safe_url(url: str) -> str:
    """The URL without its password (secrets never in logs)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


def state_for(redis_url: str | None, prefix: str, timeout: float = REDIS_TIMEOUT) -> LocalState:
    return RedisState(redis_url, prefix, timeout) if redis_url else LocalState()
