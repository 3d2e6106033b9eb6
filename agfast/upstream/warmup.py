"""Warmup: one tiny request per account and model, so the account's quota window starts ticking
(reference §1.1 `/internal/warmup`, §3 `scheduled_warmup`). Never for a model quota protection keeps for the
account's owner; every attempt is logged (email masked) and counted.

The schedule sleeps until the earliest quota window of a monitored model family resets (at most
SCHEDULE_INTERVAL_S, so newly fetched quota data is seen), then warms each account whose window reset or never
started, once per window. Time comes from a `Clock` (wall time + sleep), so a test can drive it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from agfast.logtext import mask_email
from agfast.upstream.client import TransportError, envelope, fnv1a64_signed
from agfast.upstream.gateway import google_message
from agfast.upstream.pool import AccountNotReady, AccountPool, Member, quota_key
from agfast.upstream.proxy import ProxyFailure
from agfast.upstream.retry import seconds_until

log = logging.getLogger("agfast.warmup")

# The reference's tiny request: a greeting, answered in a few tokens.
WARMUP_PROMPT = "Say hi"
# Enough for "Hi!"; the point is to open the quota window, not to read an answer.
WARMUP_MAX_TOKENS = 8
# Models `agfast accounts warmup` warms when none is named: one per quota family Google meters separately.
DEFAULT_WARMUP_MODELS = ("gemini-3-flash", "gemini-3-pro-high", "claude-sonnet-4-6")
# Longest the schedule sleeps without looking: quota data itself is refreshed about this often, and a window
# that reset in new data is found within this.
SCHEDULE_INTERVAL_S = 600.0
# Shortest sleep between passes: a reset time a hair away (or a clock step) must not make the schedule spin.
MIN_SCHEDULE_SLEEP_S = 1.0
# A window counts as not started while the account still has all of its quota for the model.
FULL_QUOTA = 100
OUTCOMES = ("sent", "failed", "skipped", "unknown")


@dataclass(slots=True)
class WarmupResult:
    """The reference's answer shape `{success, message, error?}` plus whom it was for."""

    email: str
    model: str
    success: bool
    message: str
    error: str | None = None
    outcome: str = "sent"

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"success": self.success, "message": self.message}
        if self.error is not None:
            doc["error"] = self.error
        return doc


class Clock(Protocol):
    """Where the schedule reads the time: wall-clock seconds (quota reset times are wall-clock) and a sleep."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class Warmup:
    """Sends warmups through the pool's accounts (their tokens refreshed as for any request)."""

    pool: AccountPool
    clock: Clock = field(default_factory=SystemClock)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    # (account id, quota key) → the reset time of the window last warmed (or refused, protected): once per window.
    warmed: dict[tuple[str, str], str] = field(default_factory=dict)

    def member(self, email: str) -> Member | None:
        wanted = email.strip().lower()
        return next((m for m in self.pool.members.values() if m.email.lower() == wanted), None)

    def _done(self, result: WarmupResult) -> WarmupResult:
        self.counts[result.outcome] += 1
        level = logging.WARNING if result.outcome == "failed" else logging.INFO
        log.log(level, "warmup %s %s: %s", mask_email(result.email), result.model, result.error or result.message)
        return result

    async def warm(self, email: str, model: str) -> WarmupResult:
        """One warmup for `email` on `model`; refused (skipped) while quota protection keeps the model."""
        member = self.member(email)
        if member is None:
            return self._done(WarmupResult(email, model, False, "no such account", "no such account", "unknown"))
        key = quota_key(model)
        if key in member.protected:
            why = "quota protection keeps this model's remaining quota for the account's owner"
            return self._done(WarmupResult(email, model, False, "skipped", why, "skipped"))
        try:
            lease = await self.pool.lease_for(member)
        except AccountNotReady as exc:
            return self._done(WarmupResult(email, model, False, "account not ready", str(exc), "failed"))
        request = {
            "contents": [{"role": "user", "parts": [{"text": WARMUP_PROMPT}]}],
            "generationConfig": {"maxOutputTokens": WARMUP_MAX_TOKENS},
            "sessionId": fnv1a64_signed(lease.account_id),
        }
        body = envelope(request, model=model, project=lease.project_id, request_id=f"warmup-{uuid.uuid4()}")
        try:
            answer = await self.pool.client.call(
                "generateContent", body, lease.access_token, project=lease.project_id, proxy=lease.proxy
            )
        except (TransportError, ProxyFailure) as exc:
            return self._done(WarmupResult(email, model, False, "upstream unreachable", str(exc), "failed"))
        async with answer.response as response:
            raw = await response.read()
            retry_after = response.headers.get("Retry-After")
        if answer.status != 200:
            self.pool.mark_failure(lease, answer.status, raw, retry_after, model)
            error = f"upstream {answer.status}: {google_message(raw)}"
            return self._done(WarmupResult(email, model, False, "warmup failed", error, "failed"))
        self.pool.mark_success(lease)
        return self._done(WarmupResult(email, model, True, f"Warmup sent for {model}"))

    async def warm_all(self, models: tuple[str, ...] | list[str]) -> list[WarmupResult]:
        """Every pooled account × every model it has quota for, one at a time (a warmup is never urgent)."""
        results = []
        for member in list(self.pool.members.values()):
            for model in models:
                key = quota_key(model)
                if member.quotas and key not in member.quotas:
                    continue  # the account does not offer it: nothing to warm
                results.append(await self.warm(member.email, model))
        return results

    def _due(self, member: Member, key: str, now: float) -> str | None:
        """The window (its reset time) `member` should be warmed for on quota `key`, or None: due when the
        quota is full (the window reset and has not started) or its reset time has passed; once per window.
        Accounts without quota data for the key are left alone."""
        if key not in member.quotas:
            return None
        window = member.reset_times.get(key, "")
        if self.warmed.get((member.id, key)) == window:
            return None
        if member.quotas[key] >= FULL_QUOTA or reset_passed(window, now):
            return window
        return None

    async def tick(self, models: tuple[str, ...] | list[str]) -> list[WarmupResult]:
        """One scheduled pass: warm each account once per monitored model family whose window is due (see
        `_due`); quota protection still refuses (skipped, nothing sent)."""
        results = []
        now = self.clock.now()
        for member in list(self.pool.members.values()):
            tried: set[str] = set()  # one attempt per family and pass, whichever of its models comes first
            for model in models:
                key = quota_key(model)
                window = self._due(member, key, now)
                if window is None or key in tried:
                    continue
                tried.add(key)
                result = await self.warm(member.email, model)
                results.append(result)
                if result.success or result.outcome == "skipped":  # a refusal holds for the window too
                    self.warmed[(member.id, key)] = window
        return results

    def next_wait(self, models: tuple[str, ...] | list[str]) -> float:
        """Seconds until the earliest monitored window not yet warmed resets, bounded by the schedule's limits."""
        now = self.clock.now()
        keys = {quota_key(model) for model in models}
        wait = SCHEDULE_INTERVAL_S
        for member in self.pool.members.values():
            for key in keys & member.reset_times.keys():
                window = member.reset_times[key]
                left = seconds_until(window, now)
                if left is not None and self.warmed.get((member.id, key)) != window:
                    wait = min(wait, left)
        return max(wait, MIN_SCHEDULE_SLEEP_S)

    async def schedule(self, models: tuple[str, ...] | list[str]) -> None:
        """Tick at each monitored window's reset (cancelled at shutdown); a failing pass is logged, never the
        end of the schedule."""
        while True:
            await self.clock.sleep(self.next_wait(models))
            try:
                await self.tick(models)
            except Exception:
                log.exception("scheduled warmup pass failed")


def reset_passed(reset_time: str, now: float) -> bool:
    """Whether an RFC 3339 reset time is at or before `now` (a missing or garbled one never has passed)."""
    return seconds_until(reset_time, now) is None and seconds_until(reset_time, 0.0) is not None
