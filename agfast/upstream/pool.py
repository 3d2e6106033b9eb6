"""The account pool: which Google account serves the next request.

Theory of operation
-------------------
Accounts come from the data dir (Antigravity Tools' layout). The usable ones become `Member`s, ordered by
tier (ULTRA, PRO, FREE, unknown) and then by the target model's remaining quota. `acquire()` picks one
(reference §4.8):

1. fixed-account mode (`preferred_account_id`) when that account can serve;
2. the account bound to the conversation (session stickiness keeps Google's prompt cache warm);
3. the account used last, if within 60 s (same reason, across conversations);
4. otherwise power-of-two-choices among the five best: two at random, the one with more quota left.

Rotation (after an upstream error) skips 2 and 3. Rate-limited accounts are skipped; if all are limited and
the shortest lockout is ≤ 2 s we wait it out, else the error says how long. Before returning, the access
token is refreshed when it expires within 90 s (one refresh per account at a time, however many requests
wait) and the project id is looked up once. `invalid_grant` disables the account on disk; any other refresh
failure puts the account in a refresh back-off (15 s doubling to 5 min) that every request respects, and a
request tries each account at most once — so a broken OAuth client costs one token call per account, not a
storm. With no OAuth client configured at all, no refresh is attempted.

Disk wins over memory: saves write only the fields the pool changed onto the file as it is now (never
creating it), and an account found removed or disabled there leaves the pool at once. State changes
(disabled, blocked, forbidden, locked, refresh back-off, left the pool) are logged at WARNING, email masked.

Shared mutable state (lockouts, session bindings, last-used, failure counters) lives behind `PoolState`;
`upstream/state.py` shares it between workers and hosts (Redis): a request reads a mirror that pub/sub keeps
current (a round trip only for a session this process has not seen, or while the subscription is down), and a
token refresh is leased so that one process refreshes and the others take its token.
Accounts with no quota data yet are usable (unknown is not zero); quota is refreshed in the background.

Quota protection (§4.7, `quota_protection.*`): an account whose remaining quota for a protected model is below
the threshold is not selected for that model, so the last of it stays for the user's own IDE. The protected
set is computed when an account's quota changes (reindex), never per request; the ranking cache leaves such
accounts out, and when they are all that is left the error names the protection and when quota resets.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from agfast.config import Config
from agfast.convert.models import normalize_to_standard_id
from agfast.logtext import mask_email
from agfast.upstream import oauth, retry
from agfast.upstream.accounts import (
    DISABLE_FIELDS,
    QUOTA_FIELDS,
    TOKEN_FIELDS,
    VALIDATION_FIELDS,
    Account,
    AccountStore,
    usable,
)
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import set_tier, store_quota
from agfast.upstream.proxy import ProxyFailure
from agfast.upstream.state import LocalState, MemoryState, PoolState

log = logging.getLogger("agfast.pool")

# Reuse the last account for this long across conversations (reference §4.8 mode B).
REUSE_WINDOW = 60.0
# P2C draws from this many of the best-ranked accounts.
P2C_TOP = 5
# All accounts limited but one frees up within this: wait instead of failing.
SHORT_WAIT = 2.0
# VALIDATION_REQUIRED keeps an account out for this long (reference §4.10).
VALIDATION_BLOCK = 600.0
BACKOFF_STEPS = (60, 300, 1800, 7200)
# Model keys whose account ranking is remembered between pool changes (a handful in practice).
RANK_CACHE_SIZE = 256
# Statuses that lock an account out (reference §4.9). Not 503/529: "overloaded" is the model's state, not the
# account's, and the policy retries it on the same account after a backoff; a lockout would defeat that.
LOCKOUT_STATUSES = frozenset({429, 500})
# A failed token refresh (not invalid_grant) is not retried for this long, doubling per failure up to the
# maximum: a wrong OAuth client or an unreachable token endpoint must not be asked again by every request.
REFRESH_BACKOFF_FIRST = 15.0
REFRESH_BACKOFF_MAX = 300.0
# The doubling stops here (15 s × 2^5 > 300 s already); keeps the arithmetic bounded.
REFRESH_BACKOFF_STEPS = 5
NO_OAUTH_CLIENT = (
    "no OAuth client configured, so its expired access token cannot be refreshed: set oauth.client_id and "
    "oauth.client_secret in config.toml (or AGFAST_OAUTH_CLIENT_ID and AGFAST_OAUTH_CLIENT_SECRET, or "
    "[[oauth.clients]] / ANTIGRAVITY_OAUTH_CLIENTS) to the client that issued the refresh tokens"
)
NO_ACCOUNTS = "no accounts yet: add one with `agfast accounts add` (or try `agfast --demo`)"


@dataclass(frozen=True, slots=True)
class QuotaProtection:
    """What §4.7 protects: models (normalized ids; None = every model) whose remaining % is below `threshold`."""

    threshold: int
    models: frozenset[str] | None

    @classmethod
    def of(cls, config: Config) -> QuotaProtection | None:
        if not config.quota_protection_enabled:
            return None
        models = frozenset(quota_key(m) for m in config.quota_protection_models) or None
        return cls(config.quota_protection_threshold, models)

    def protected(self, quotas: dict[str, int]) -> frozenset[str]:
        """The quota keys an account must not serve."""
        models = self.models
        return frozenset(
            key
            for key, pct in quotas.items()
            if pct < self.threshold and (models is None or key in models or quota_key(key) in models)
        )


class NoAccountError(Exception):
    """No account can take the request now; `retry_after` is set when waiting would help."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccountNotReady(Exception):
    """This account cannot serve now (token refresh failed or backing off, no project); the text says why,
    `retry_after` how long a refresh back-off still lasts."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def refresh_key(account_id: str) -> str:
    """The PoolState key of an account's refresh back-off (a lock) and its failure count."""
    return account_id + "#refresh"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%SZ")


@dataclass(slots=True, eq=False)
class Member:
    """One pooled account with what selection needs precomputed."""

    account: Account
    tier_rank: int = 3
    quotas: dict[str, int] = field(default_factory=dict)
    max_pct: int = 0
    reset_times: dict[str, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Why the last token refresh failed; quoted to requests while the refresh back-off lasts.
    refresh_error: str = ""
    # Quota keys this account keeps for its owner's IDE (quota protection); computed by reindex.
    protected: frozenset[str] = frozenset()
    # quota key → this account's per-model lockout key (`retry.lock_key`'s "<id>:<key>"), built once per key.
    model_lock_keys: dict[str, str] = field(default_factory=dict)

    def model_lock_key(self, key: str) -> str:
        """The PoolState key of this account's lockout for one quota key, without a string built per request."""
        found = self.model_lock_keys.get(key)
        if found is None:
            if len(self.model_lock_keys) >= RANK_CACHE_SIZE:  # keys come from client model names: bounded
                self.model_lock_keys.clear()
            found = self.model_lock_keys[key] = f"{self.id}:{key}"
        return found

    # The account's id, read once: `Account.id` parses its JSON view on every access, and selection asks often.
    # An account file keeps its id (the pool keys members by it), so a reload never changes it.
    id: str = field(init=False)

    # The account's e-mail, read when the account is (re)loaded: every attempt names it in its record.
    email: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.account.id
        self.email = self.account.email

    @property
    def masked(self) -> str:
        return mask_email(self.account.email)

    def reindex(self, protection: QuotaProtection | None = None) -> None:
        self.email = self.account.email  # `load` may have handed this member a re-read account
        self.tier_rank = oauth.tier_rank(self.account.subscription_tier)
        self.quotas = {}
        self.reset_times = {}
        for model in self.account.quota_models:
            for key in {model.name, normalize_to_standard_id(model.name) or model.name}:
                self.quotas[key] = max(self.quotas.get(key, 0), model.percentage)
                if model.reset_time:
                    self.reset_times[key] = model.reset_time
        self.max_pct = max(self.quotas.values(), default=0)
        self.protected = protection.protected(self.quotas) if protection is not None else frozenset()

    def serves(self, key: str) -> bool:
        """Unknown quota is not zero quota: an account without quota data is tried. A protected one is not."""
        return (not self.quotas or key in self.quotas) and key not in self.protected


@dataclass(slots=True)
class Lease:
    member: Member
    access_token: str
    project_id: str

    @property
    def account_id(self) -> str:
        return self.member.id

    @property
    def email(self) -> str:
        return self.member.email

    @property
    def proxy(self) -> str | None:
        """The account's own outbound proxy URL (None: upstream.proxy or direct)."""
        return self.member.account.proxy_url


# Model names whose quota key is remembered: clients use a handful, but a name is whatever a client sends, so
# the memo is bounded (cleared when full) rather than growing with every typo.
QUOTA_KEY_MEMO_SIZE = 256
_quota_keys: dict[str, str] = {}


def quota_key(model: str) -> str:
    """The quota group a model name belongs to; memoised, since every request asks for the same few names."""
    key = _quota_keys.get(model)
    if key is None:
        key = normalize_to_standard_id(model) or model
        if len(_quota_keys) >= QUOTA_KEY_MEMO_SIZE:
            _quota_keys.clear()
        _quota_keys[model] = key
    return key


def _took_shared(found: tuple[str, int] | None, account: Account) -> bool:
    """Take a token another process refreshed (token, expiry timestamp) if it is fresh and not the one we hold;
    True when the account needs no refresh now."""
    now = time.time()
    if found is None or found[1] <= now or found[0] == account.access_token:
        return False
    account.apply_refresh(found[0], found[1] - int(now), now)
    return not account.needs_refresh(now)


class AccountPool:
    def __init__(
        self,
        config: Config,
        store: AccountStore,
        client: UpstreamClient,
        state: PoolState | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.state: PoolState = state if state is not None else MemoryState()
        # The state other processes share (Redis), or None: then no request awaits anything for it.
        self.shared: LocalState | None = state if getattr(state, "shared", False) else None  # type: ignore[assignment]
        # P2C's coin; a test seeds its own to make selection reproducible.
        self.rng = rng if rng is not None else random.Random()
        self.protection = QuotaProtection.of(config)
        self.members: dict[str, Member] = {}
        self.skipped: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.version = 0
        self._rank_cache: dict[str, tuple[int, list[Member]]] = {}
        self._view_cache: tuple[int, set[str], dict[str, str]] | None = None

    # -- membership --------------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)read the data dir; members keep their locks and runtime state across reloads."""
        now = time.time()
        stale = self.store.remove_stale_temp_files()
        if stale:
            log.warning("removed %d temp file(s) left by an interrupted write in %s", stale, self.store.data_dir)
        fresh: dict[str, Member] = {}
        self.skipped = {}
        for account in self.store.load_all():
            if account.validation_blocked and account.validation_block_expired(now):
                account.clear_validation_block()
                self.store.merge(account, VALIDATION_FIELDS)
            ok, reason = usable(account, now)
            if not ok:
                self.skipped[account.email] = reason
                continue
            member = self.members.get(account.id) or Member(account)
            member.account = account
            member.reindex(self.protection)
            fresh[account.id] = member
        for gone in self.members.keys() - fresh.keys():
            member = self.members[gone]
            why = self.skipped.get(member.email, "removed")
            log.warning("account %s left the pool: %s on disk", member.masked, why)
        self.members = fresh
        self.changed()

    @property
    def size(self) -> int:
        return len(self.members)

    def changed(self) -> None:
        """Membership or quota data moved: derived views (model sets, routes) must be recomputed."""
        self.version += 1

    def available_models(self) -> set[str]:
        return self._views()[0]

    def forwarding(self) -> dict[str, str]:
        return self._views()[1]

    def _views(self) -> tuple[set[str], dict[str, str]]:
        cached = self._view_cache
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        models = {m.name for member in self.members.values() for m in member.account.quota_models}
        rules: dict[str, str] = {}
        for member in self.members.values():
            rules.update(member.account.model_forwarding_rules)
        self._view_cache = (self.version, models, rules)
        return models, rules

    def _drop(self, member: Member) -> None:
        self.members.pop(member.id, None)
        self.changed()

    # -- selection ---------------------------------------------------------------------------------------

    def _limited(self, member: Member, key: str, now: float) -> float:
        """Seconds until `member` may serve `key` again (0: free now)."""
        locked_until = self.state.locked_until
        until = max(locked_until(member.id), locked_until(member.model_lock_key(key)))
        return until - now if until > now else 0.0

    def _ranked(self, key: str, exclude: Iterable[str]) -> list[Member]:
        """Accounts that can serve `key`, best first; the order is computed once per pool version."""
        cached = self._rank_cache.get(key)
        if cached is None or cached[0] != self.version:
            ranked = [m for m in self.members.values() if m.serves(key)]
            ranked.sort(key=lambda m: (m.tier_rank, -m.quotas.get(key, m.max_pct)))
            if len(self._rank_cache) >= RANK_CACHE_SIZE:
                self._rank_cache.clear()
            cached = self._rank_cache[key] = (self.version, ranked)
        if not exclude:  # the common case: no set built
            return cached[1]
        excluded = exclude if isinstance(exclude, set) else set(exclude)
        return [m for m in cached[1] if m.id not in excluded]

    async def acquire(
        self, model: str, session_id: str | None = None, *, rotate: bool = False, exclude: Iterable[str] = ()
    ) -> Lease:
        """An account ready to call `model` (fresh token, known project), or NoAccountError."""
        key = quota_key(model)
        if not self.members:
            raise NoAccountError(self._empty_message())
        if not self._ranked(key, ()):
            raise self._protected_error(model, key) or NoAccountError(
                f"No accounts available with quota for model: {model}"
            )
        attempted = set(exclude)
        shared = self.shared
        if shared is not None and shared.stale(session_id):  # steady state: the mirror is current, no await
            await shared.pull(session_id)
        sticky = not rotate and self.config.scheduling_mode != "PerformanceFirst"
        # The common case needs no await: a selected account whose token and project are ready.
        chosen = self._choose(key, session_id, sticky, attempted)
        if isinstance(chosen, Member):
            ready = chosen.account.ready_token(time.time())
            if ready is not None:
                return Lease(chosen, *ready)
        try:
            async with asyncio.timeout(self.config.token_timeout):
                return await self._acquire(key, session_id, sticky, attempted, chosen)
        except TimeoutError:
            raise NoAccountError(
                f"Token acquisition timed out ({self.config.token_timeout:g}s): the token or project lookup is slow"
            ) from None

    async def lease_for(self, member: Member) -> Lease:
        """A lease on one named account (warmup), its token refreshed as for any request; AccountNotReady."""
        return await self._ready(member)

    def _protected_error(self, model: str, key: str) -> NoAccountError | None:
        """When quota protection is what keeps every account away from `model`: say so, and until when."""
        held = [m for m in self.members.values() if key in m.protected]
        if not held or self.protection is None:
            return None
        now = time.time()
        waits = [retry.seconds_until(m.reset_times[key], now) for m in held if key in m.reset_times]
        wait = min((w for w in waits if w is not None and w > 0), default=None)
        when = f"; quota resets in {int(wait + 0.999)}s" if wait is not None else ""
        return NoAccountError(
            f"Quota protection: every account's remaining quota for {model} is below "
            f"{self.protection.threshold}% (kept for your own IDE{when}); lower quota_protection.threshold or "
            "disable quota_protection to use it",
            retry_after=wait,
        )

    def _empty_message(self) -> str:
        if not self.skipped:
            return NO_ACCOUNTS
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return f"no usable account ({summary}): see `agfast accounts list`, or add one with `agfast accounts add`"

    def _choose(self, key: str, session_id: str | None, sticky: bool, attempted: set[str]) -> Member | float | None:
        """The next account to try (marked attempted and bound), seconds to wait if all are limited, or None."""
        now = time.time()
        ranked = self._ranked(key, attempted)
        if not ranked:
            return None
        member = self._preferred(ranked, key, now)
        if member is None and sticky and session_id:
            member = self._sticky(session_id, key, now, attempted)
        if member is None and sticky:
            member = self._recent(ranked, key, now)
        if member is None:
            free = [m for m in ranked if not self._limited(m, key, now)]
            if not free:
                return min(self._limited(m, key, now) for m in ranked)
            member = _p2c(free, key, self.rng)
        if sticky:
            self.state.set_last_used(member.id, now)
            if session_id:
                self.state.bind(session_id, member.id)
        attempted.add(member.id)
        return member

    async def _acquire(
        self, key: str, session_id: str | None, sticky: bool, attempted: set[str], chosen: Member | float | None
    ) -> Lease:
        last_error = ""
        back_off: float | None = None  # the shortest refresh back-off met: when asking again makes sense
        while chosen is not None:
            if not isinstance(chosen, Member):
                if chosen > SHORT_WAIT:
                    raise NoAccountError(f"All accounts limited. Wait {int(chosen + 0.999)}s.", retry_after=chosen)
                await asyncio.sleep(chosen)
            else:
                try:
                    return await self._ready(chosen)
                except AccountNotReady as exc:
                    last_error = f"{chosen.email}: {exc}"
                    if exc.retry_after is not None:
                        back_off = exc.retry_after if back_off is None else min(back_off, exc.retry_after)
                    log.debug("account %s not ready: %s", chosen.masked, exc)
            chosen = self._choose(key, session_id, sticky, attempted)
        if last_error:
            raise NoAccountError(f"All accounts failed or unhealthy. Last error: {last_error}", retry_after=back_off)
        raise NoAccountError("All accounts failed or unhealthy.")

    def _preferred(self, ranked: list[Member], key: str, now: float) -> Member | None:
        wanted = self.config.preferred_account_id
        if not wanted:
            return None
        for member in ranked:
            if wanted in (member.id, member.email) and not self._limited(member, key, now):
                return member
        return None

    def _sticky(self, session_id: str, key: str, now: float, attempted: set[str]) -> Member | None:
        bound = self.state.binding(session_id)
        if bound is None or bound in attempted:  # tried in this request already: the next choice rebinds
            return None
        member = self.members.get(bound)
        if member is None or not member.serves(key) or self._limited(member, key, now):
            self.state.unbind(session_id)
            return None
        return member

    def _recent(self, ranked: list[Member], key: str, now: float) -> Member | None:
        last = self.state.last_used()
        if last is None or now - last[1] >= REUSE_WINDOW:
            return None
        for member in ranked:
            if member.id == last[0]:
                return None if self._limited(member, key, now) else member
        return None

    async def _ready(self, member: Member) -> Lease:
        """A lease with a fresh token and a known project, or AccountNotReady saying why not."""
        account = member.account
        if account.needs_refresh(time.time()) or not account.project_id:
            async with member.lock:  # one refresh per account; later waiters find it done (or backing off)
                if self.members.get(member.id) is not member:
                    raise AccountNotReady("the account left the pool (removed or disabled)")
                account = member.account
                fields: tuple[str, ...] = ()
                if account.needs_refresh(time.time()):
                    if self.shared is None:
                        await self._refresh(member, account)
                    else:
                        await self._refresh_shared(self.shared, member, account)
                    fields = TOKEN_FIELDS
                if not account.project_id:
                    try:
                        project, tier = await oauth.load_code_assist(
                            self.client, account.access_token, account.proxy_url
                        )
                    except oauth.AccountSetupError as exc:
                        if fields:  # keep the fresh token even though the project is still unknown
                            await self._persist(member, fields)
                        raise AccountNotReady(str(exc)) from None
                    account.project_id = project
                    fields = TOKEN_FIELDS
                    if tier:
                        set_tier(account, tier)
                        member.reindex(self.protection)
                        self.changed()
                        fields = TOKEN_FIELDS + QUOTA_FIELDS
                if fields:
                    await self._persist(member, fields)
                    if self.members.get(member.id) is not member:  # removed or disabled on disk meanwhile
                        raise AccountNotReady("the account left the pool (removed or disabled on disk)")
        return Lease(member, account.access_token, account.project_id or "")

    async def _refresh_shared(self, shared: LocalState, member: Member, account: Account) -> None:
        """One refresh per account across processes: take the token another process refreshed, else hold
        the lease and refresh; a lease whose holder died expires and the next waiter refreshes."""
        from agfast.upstream.state import TOKEN_POLL_S

        while True:
            if _took_shared(await shared.shared_token(member.id), account):
                return
            if await shared.lease_refresh(member.id):
                # The holder before us may have published its token and freed the lease between our look and
                # our lease (end_refresh writes the token first): look again before refreshing a second time.
                if _took_shared(await shared.shared_token(member.id), account):
                    await shared.end_refresh(member.id, None, account.expiry_timestamp)  # frees the lease
                    return
                break
            await asyncio.sleep(TOKEN_POLL_S)  # bounded by acquire's token_timeout
        ok = False
        try:
            await self._refresh(member, account)
            ok = True
        finally:
            await shared.end_refresh(member.id, account.access_token if ok else None, account.expiry_timestamp)

    async def _refresh(self, member: Member, account: Account) -> None:
        """New access token into `account`; a failure disables (invalid_grant) or starts the back-off."""
        if not self.config.oauth_client_chain():
            raise AccountNotReady(NO_OAUTH_CLIENT)
        key = refresh_key(member.id)
        now = time.time()
        wait = self.state.locked_until(key) - now
        if wait > 0:
            raise AccountNotReady(f"{member.refresh_error} (next refresh attempt in {int(wait + 0.999)}s)", wait)
        try:
            session = self.client.session_for(self.config.oauth_token_url, account.proxy_url)
            grant, client_key = await oauth.refresh_any(
                session, self.config, account.refresh_token, account.oauth_client_key
            )
        except oauth.OAuthError as exc:
            if exc.invalid_grant:
                await self._disable(member, f"invalid_grant: {exc.description or exc.error}")
                raise AccountNotReady("token refresh failed (invalid_grant): the account is disabled") from None
            now = time.time()
            failures = self.state.add_failure(key, now)
            seconds = min(REFRESH_BACKOFF_FIRST * 2 ** min(failures - 1, REFRESH_BACKOFF_STEPS), REFRESH_BACKOFF_MAX)
            member.refresh_error = f"token refresh failed ({exc}){oauth.client_hint(exc)}"
            self.state.lock(key, now + seconds, member.refresh_error)
            log.warning(
                "account %s: %s; refresh back-off until %s (%ds)",
                member.masked,
                member.refresh_error,
                _clock(now + seconds),
                seconds,
            )
            raise AccountNotReady(member.refresh_error, seconds) from None
        self.state.reset_failures(key)  # success ends the doubling (rare: once an hour per account)
        self.state.unlock(key)
        member.refresh_error = ""
        account.apply_refresh(
            grant.access_token,
            grant.expires_in,
            time.time(),
            refresh_token=grant.refresh_token,
            id_token=grant.id_token,
        )
        # Remembered with the token (one merge of the token object): the next refresh asks this client first.
        account.oauth_client_key = oauth.client_to_remember(self.config, account.oauth_client_key, client_key)

    async def _persist(self, member: Member, fields: tuple[str, ...]) -> None:
        """Write what the pool changed onto the file as it is now; a removed or disabled file wins."""
        try:
            merged = await asyncio.get_running_loop().run_in_executor(None, self.store.merge, member.account, fields)
        except OSError as exc:
            log.warning("account %s: cannot save (%s)", member.masked, exc.strerror or type(exc).__name__)
            return
        if merged is None:
            self._leave(member, "removed on disk")
            return
        ok, reason = usable(merged, time.time())
        if not ok:
            self._leave(member, f"{reason} on disk")

    def _leave(self, member: Member, why: str) -> None:
        if self.members.get(member.id) is member:
            self._drop(member)
            log.warning("account %s left the pool: %s", member.masked, why)

    async def _disable(self, member: Member, reason: str) -> None:
        self._drop(member)
        member.account.disable(reason)
        log.warning("account %s disabled: %s", member.masked, reason[:200])
        await self._persist(member, DISABLE_FIELDS)
        self._tell_others()

    def _tell_others(self) -> None:
        """An account left the pool on disk: every other process re-reads the accounts now."""
        if self.shared is not None:
            self.shared.publish({"kind": "accounts"})

    async def _persist_and_tell(self, member: Member, fields: tuple[str, ...]) -> None:
        await self._persist(member, fields)
        self._tell_others()

    # -- outcomes ----------------------------------------------------------------------------------------

    def mark_success(self, lease: Lease) -> None:
        self.state.reset_failures(lease.account_id)
        self.state.unlock(lease.account_id)

    def mark_failure(self, lease: Lease, status: int, body: bytes, retry_after: str | None, model: str) -> None:
        """Record what an upstream error says about this account (lockouts §4.9, state changes §4.10)."""
        member = lease.member
        now = time.time()
        if status == 401:
            member.account.expiry_timestamp = 0  # the token was refused: refresh before its next use
            return
        if status == 403:
            text = body.decode("utf-8", "replace")
            account = member.account
            fields: tuple[str, ...]
            if "VALIDATION_REQUIRED" in text or "verify your account" in text.lower() or "validation_url" in text:
                account.block_validation(now + VALIDATION_BLOCK, "VALIDATION_REQUIRED", _validation_url(text))
                fields = VALIDATION_FIELDS
                log.warning(
                    "account %s validation-blocked until %s: VALIDATION_REQUIRED (the owner must verify it)",
                    member.masked,
                    _clock(now + VALIDATION_BLOCK),
                )
            else:
                account.mark_forbidden(f"403: {text[:300]}")
                fields = QUOTA_FIELDS
                log.warning("account %s forbidden (403): out of the pool until re-added", member.masked)
            self._drop(member)
            self._spawn(self._persist_and_tell(member, fields))
            return
        if status not in LOCKOUT_STATUSES:
            return
        reason = retry.classify_limit(body, status)
        failures = self.state.add_failure(member.id, now)
        key = quota_key(model)
        seconds = retry.lockout_seconds(status, body, retry_after, reason, failures, BACKOFF_STEPS)
        if (
            reason is retry.LimitReason.QUOTA_EXHAUSTED
            and retry.explicit_lockout_s(retry_after, body) is None
            and key in member.reset_times
        ):
            # Quota gone and Google named no wait: the account's own reset time is the honest lockout.
            until_reset = retry.seconds_until(member.reset_times[key], now)
            if until_reset is not None:
                seconds = retry.cap_lockout(max(until_reset, 2.0))
        lock_key = retry.lock_key(member.id, reason, key)
        self.state.lock(lock_key, now + seconds, reason.value)
        log.warning(
            "account %s locked%s until %s (%gs): %s after HTTP %d",
            member.masked,
            "" if lock_key == member.id else f" for {key}",
            _clock(now + seconds),
            round(seconds, 1),
            reason.value,
            status,
        )

    # -- operator actions (admin API) --------------------------------------------------------------------

    def lockouts(self, account_id: str) -> list[dict[str, Any]]:
        """The account's current lockouts: scope (account, a model, token refresh), reason, until, seconds left."""
        now = time.time()
        found = []
        for key, until, reason in self.state.locks_of(account_id):
            if until <= now:
                continue
            rest = key[len(account_id) :]
            scope = "account" if not rest else "token_refresh" if rest.startswith("#") else rest[1:]
            found.append(
                {
                    "scope": scope,
                    "reason": reason,
                    "until": datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z"),
                    "seconds_left": round(until - now, 1),
                }
            )
        return found

    def clear_lockouts(self, account_id: str | None = None) -> int:
        """Lift rate-limit lockouts (all accounts', or one's) so the account serves again at once."""
        ids = list(self.members) if account_id is None else [account_id]
        cleared = 0
        for member_id in ids:
            for key, _, _ in self.state.locks_of(member_id):
                self.state.unlock(key)
                cleared += 1
            self.state.reset_failures(member_id)
            if self.shared is not None:
                self.shared.unlock_account(member_id)  # locks other processes learned since our last pull
        if account_id is None:
            self.state.clear_locks()
        if cleared:
            log.warning("%d lockout(s) cleared by the operator", cleared)
        return cleared

    def clear_bindings(self) -> int:
        """Forget which conversation is bound to which account (and the 60 s reuse)."""
        return self.state.clear_bindings()

    # -- background upkeep -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def refresh_quota(self, member: Member) -> None:
        """Tier (it changes on upgrades) and quota, then saved; never on a request's path."""
        lease = await self._ready(member)
        _, tier = await oauth.load_code_assist(self.client, lease.access_token, lease.proxy)
        snapshot = await oauth.fetch_quota(self.client, lease.access_token, lease.project_id, lease.proxy)
        store_quota(member.account, tier, snapshot, time.time())
        member.reindex(self.protection)
        self.changed()
        await self._persist(member, TOKEN_FIELDS + QUOTA_FIELDS)

    async def refresh_quotas(self, only_missing: bool = False) -> None:
        for member in list(self.members.values()):
            if only_missing and member.account.has_quota_data:
                continue
            try:
                await self.refresh_quota(member)
            except (AccountNotReady, oauth.AccountSetupError, ProxyFailure, aiohttp.ClientError, OSError) as exc:
                log.warning("quota refresh failed for %s: %s", member.masked, exc)

    def _disk_stamp(self) -> tuple[int, int]:
        """Changes whenever an account file or the index is written (atomic renames touch the directory)."""
        stamps = []
        for path in (self.store.accounts_dir, self.store.index_path):
            try:
                stamps.append(path.stat().st_mtime_ns)
            except OSError:
                stamps.append(0)
        return stamps[0], stamps[1]

    async def upkeep(self) -> None:
        """Quota for accounts that have none right away; accounts added or edited on disk (`agfast accounts
        add` while serving) join within `accounts_reload_interval`; all quotas every `quota_refresh_interval`."""
        await self.refresh_quotas(only_missing=True)
        stamp = self._disk_stamp()
        next_quota = time.monotonic() + self.config.quota_refresh_interval
        while True:
            await asyncio.sleep(self.config.accounts_reload_interval)
            now_stamp = self._disk_stamp()
            if time.monotonic() >= next_quota:
                next_quota = time.monotonic() + self.config.quota_refresh_interval
                self.load()
                await self.refresh_quotas()
            elif now_stamp != stamp:
                self.load()
                await self.refresh_quotas(only_missing=True)
            stamp = self._disk_stamp()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _p2c(free: list[Member], key: str, rng: random.Random) -> Member:
    top = free[:P2C_TOP]
    if len(top) == 1:
        return top[0]
    a, b = rng.sample(top, 2)
    return a if a.quotas.get(key, a.max_pct) >= b.quotas.get(key, b.max_pct) else b


def _validation_url(text: str) -> str | None:
    marker = "validation_url"
    at = text.find(marker)
    if at < 0:
        return None
    start = text.find("http", at)
    if start < 0:
        return None
    end = start
    while end < len(text) and text[end] not in "\"' ,}":
        end += 1
    return text[start:end]
