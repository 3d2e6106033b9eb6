"""Named API keys besides the main one (reference §1.2 user tokens, §2.2 step 8): limits, expiry, usage.

Keys live in `<data-dir>/user_tokens.json` (0600, atomic writes) as the sha256 of the key and a short display
prefix; the key itself is shown once, when it is made, and never stored, logged or shown again. Checking a
presented key is one sha256 and one dict lookup of the digest: no prefix is compared byte by byte.

Limits, all checked before any upstream call:
- requests per minute: a fixed window of RPM_WINDOW seconds that opens with a key's first request in it; a
  key over its count gets 429 with `Retry-After` = the seconds until that window closes;
- tokens per day: charged after each request from its record (`observe`), input + output; a key at or over
  its count gets 429 until the next UTC day;
- allowed models: fnmatch patterns on the client's model name (`allows_model`); outside them → 403.

The server keeps usage in memory and writes it back every FLUSH_EVERY seconds (and at exit); a file changed by
`agfast keys …` or another process is read back at the same pace, usage of keys it still has kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agfast.fileio import atomic_write, exclusive
from agfast.http import auth
from agfast.record import RequestRecord

log = logging.getLogger("agfast.keys")

KEY_FILE = "user_tokens.json"
LOCK_FILE = ".user_tokens.lock"
# New keys look like the main key (`sk-…`, which config requires) so clients that check the shape accept them.
KEY_PREFIX = "sk-ag-"
# 32 random bytes, 43 url-safe characters: not guessable, short enough to paste.
KEY_BYTES = 32
# Characters of a key kept for display ("sk-ag-AbCd…"): enough to tell keys apart, far too few to use one.
DISPLAY_CHARS = 10
# The requests-per-minute window, in seconds (fixed window, see the module docstring).
RPM_WINDOW = 60.0
SECONDS_PER_DAY = 86400
# How often the server writes usage back and looks for changes made by `agfast keys` (seconds).
FLUSH_EVERY = 5.0
# Longest key name; names show in logs, the monitor and tables.
MAX_NAME = 64
# Client model names remembered per key for the pattern check; a hostile caller cannot grow it past this.
MODEL_CACHE_SIZE = 256
# `renew` without a date extends expiry by this many days.
DEFAULT_RENEW_DAYS = 30

REVOKED_MESSAGE = "This API key was revoked."
EXPIRED_MESSAGE = "This API key has expired; ask the operator to renew it (agfast keys renew)."


class KeyDefinitionError(ValueError):
    """A key definition or command that cannot be carried out; the message says why (CLI line, admin 400)."""


def digest_of(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def utc_day(now: float) -> int:
    return int(now // SECONDS_PER_DAY)


def parse_expiry(value: Any) -> float | None:
    """None/""/0 → never; a number → unix seconds; a string → ISO date (end of that UTC day) or datetime."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise KeyDefinitionError("expires must be a date, a datetime or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise KeyDefinitionError("expires must be a date, a datetime or unix seconds")
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day.timestamp() + SECONDS_PER_DAY  # a date means "through that day"
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KeyDefinitionError(f"expires {value!r} is not an ISO date (2027-01-31) or datetime") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _limit(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeyDefinitionError(f"{name} must be a whole number ≥ 0 (0 = no limit)")
    return value


def _models(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
        raise KeyDefinitionError("models must be a list of model name patterns (fnmatch: gemini-*, claude-sonnet-*)")
    return tuple(p.strip() for p in value if p.strip())


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KeyDefinitionError("a key needs a name")
    value = value.strip()
    if len(value) > MAX_NAME or not value.isprintable():
        raise KeyDefinitionError(f"a key name is at most {MAX_NAME} printable characters")
    return value


class ApiKey:
    """One named key: its definition (saved) and its usage and window (kept in memory, saved as usage)."""

    __slots__ = (
        "_allowed",
        "created",
        "day",
        "day_tokens",
        "digest",
        "expires",
        "id",
        "last_used",
        "models",
        "name",
        "prefix",
        "requests",
        "revoked",
        "rpm",
        "tokens",
        "tpd",
        "window_count",
        "window_start",
    )

    def __init__(self, key_id: str, name: str, digest: bytes, prefix: str, created: float) -> None:
        self.id = key_id
        self.name = name
        self.digest = digest
        self.prefix = prefix
        self.created = created
        self.expires: float | None = None
        self.models: tuple[str, ...] = ()
        self.rpm = 0  # 0: no limit
        self.tpd = 0  # 0: no limit
        self.revoked = False
        self.requests = 0
        self.tokens = 0
        self.last_used: float | None = None
        self.day = 0  # utc_day of day_tokens
        self.day_tokens = 0
        self.window_start = -math.inf
        self.window_count = 0
        self._allowed: dict[str, bool] = {}

    def set_models(self, models: tuple[str, ...]) -> None:
        self.models = models
        self._allowed = {}

    def allows(self, model: str) -> bool:
        """Whether the client's model name matches one of the key's patterns (no patterns: every model)."""
        if not self.models:
            return True
        found = self._allowed.get(model)
        if found is None:
            found = any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)
            if len(self._allowed) < MODEL_CACHE_SIZE:
                self._allowed[model] = found
        return found

    def status(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def view(self, now: float) -> dict[str, Any]:
        """What the CLI and the admin API show: never the key, never its hash."""
        today = utc_day(now)
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix + "…",
            "status": self.status(now),
            "created": iso(self.created),
            "expires": iso(self.expires),
            "models": list(self.models),
            "rpm": self.rpm,
            "tpd": self.tpd,
            "requests": self.requests,
            "tokens": self.tokens,
            "tokens_today": self.day_tokens if self.day == today else 0,
            "last_used": iso(self.last_used),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.digest.hex(),
            "prefix": self.prefix,
            "created": self.created,
            "expires": self.expires,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpd": self.tpd,
            "revoked": self.revoked,
            "usage": {
                "requests": self.requests,
                "tokens": self.tokens,
                "last_used": self.last_used,
                "day": self.day,
                "day_tokens": self.day_tokens,
            },
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ApiKey:
        key = cls(str(raw["id"]), _name(raw["name"]), bytes.fromhex(raw["sha256"]), str(raw["prefix"]), raw["created"])
        key.update(raw)
        key.revoked = bool(raw.get("revoked", False))
        usage = raw.get("usage") or {}
        key.requests = int(usage.get("requests", 0))
        key.tokens = int(usage.get("tokens", 0))
        key.last_used = usage.get("last_used")
        key.day = int(usage.get("day", 0))
        key.day_tokens = int(usage.get("day_tokens", 0))
        return key

    def update(self, fields: Mapping[str, Any]) -> None:
        """Apply the changeable fields present in `fields` (name, expires, models, rpm, tpd); validated first."""
        changes: dict[str, Any] = {}
        if "name" in fields:
            changes["name"] = _name(fields["name"])
        if "expires" in fields:
            changes["expires"] = parse_expiry(fields["expires"])
        if "rpm" in fields:
            changes["rpm"] = _limit(fields["rpm"], "rpm")
        if "tpd" in fields:
            changes["tpd"] = _limit(fields["tpd"], "tpd")
        for attr, value in changes.items():
            setattr(self, attr, value)
        if "models" in fields:
            self.set_models(_models(fields["models"]))


class KeyStore:
    """The key file: load, save (atomic, 0600, under a lock shared with `agfast keys`), and the indexes the
    request path uses: by digest (admitting a key) and by name (charging a request's tokens)."""

    __slots__ = ("_stamp", "by_digest", "by_name", "keys", "lock", "path")

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEY_FILE
        self.lock = data_dir / LOCK_FILE
        self.keys: dict[str, ApiKey] = {}  # by id
        self.by_digest: dict[bytes, ApiKey] = {}
        self.by_name: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self.load()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def changed_on_disk(self) -> bool:
        return self._file_stamp() != self._stamp

    def load(self) -> None:
        """Read the file; keys this process already knows keep their in-memory usage and window."""
        stamp = self._file_stamp()
        if stamp is None:
            raw: dict[str, Any] = {"keys": []}
        else:
            try:
                raw = orjson.loads(self.path.read_bytes())
                loaded = [ApiKey.from_json(k) for k in raw.get("keys", [])]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise KeyDefinitionError(f"{self.path} is not a valid key file: {exc}") from None
            raw = {"keys": loaded}
        fresh: dict[str, ApiKey] = {}
        for key in raw["keys"]:
            known = self.keys.get(key.id)
            if known is not None:  # this process counts usage; what it counted so far is the latest
                key.requests, key.tokens, key.last_used = known.requests, known.tokens, known.last_used
                key.day, key.day_tokens = known.day, known.day_tokens
                key.window_start, key.window_count = known.window_start, known.window_count
            fresh[key.id] = key
        self.keys = fresh
        self.reindex()
        self._stamp = stamp

    def reindex(self) -> None:
        """Rebuild the digest and name indexes from `keys` (after a load or an edit)."""
        self.by_digest = {key.digest: key for key in self.keys.values()}
        self.by_name = {key.name: key for key in reversed(self.keys.values())}  # a hand-made twin: the first wins

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": 1, "keys": [key.to_json() for key in self.keys.values()]}
        atomic_write(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def editing(self) -> Any:
        """Read-change-write under the file lock, starting from what is on disk now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.lock):
            if self.changed_on_disk():
                self.load()
            try:
                yield
            finally:
                self.reindex()  # an edit may add a key or rename one, even when it then fails
            self.save()

    def find(self, ref: str) -> ApiKey:
        """A key by id or name."""
        key = self.keys.get(ref)
        if key is not None:
            return key
        for key in self.keys.values():
            if key.name == ref:
                return key
        raise KeyDefinitionError(f"no API key named {ref!r} (agfast keys list shows them)")

    def add(self, fields: Mapping[str, Any], now: float) -> tuple[ApiKey, str]:
        """A new key from `fields` (name, expires, models, rpm, tpd); returns it and the key, shown once."""
        with self.editing():
            name = _name(fields.get("name"))
            if any(key.name == name for key in self.keys.values()):
                raise KeyDefinitionError(f"an API key named {name!r} exists already")
            secret = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
            key = ApiKey("k_" + secrets.token_hex(6), name, digest_of(secret.encode()), secret[:DISPLAY_CHARS], now)
            key.update(fields)
            self.keys[key.id] = key
        return key, secret

    def change(self, ref: str, fields: Mapping[str, Any]) -> ApiKey:
        with self.editing():
            key = self.find(ref)
            name = fields.get("name")
            if name is not None and any(k.name == str(name).strip() and k is not key for k in self.keys.values()):
                raise KeyDefinitionError(f"an API key named {name!r} exists already")
            key.update(fields)
        return key

    def revoke(self, ref: str) -> ApiKey:
        with self.editing():
            key = self.find(ref)
            key.revoked = True
        return key

    def renew(self, ref: str, now: float, days: float | None = None, expires: Any = None) -> ApiKey:
        """Extend the expiry (the key itself stays the same): to `expires`, or by `days` (default 30) from
        the later of now and the current expiry. A revoked key stays revoked."""
        with self.editing():
            key = self.find(ref)
            if key.revoked:
                raise KeyDefinitionError(f"API key {key.name!r} was revoked; add a new key instead")
            if expires is not None:
                key.expires = parse_expiry(expires)
            else:
                base = max(now, key.expires or now)
                key.expires = base + (DEFAULT_RENEW_DAYS if days is None else days) * SECONDS_PER_DAY
        return key


class KeyPolicy:
    """The request-time side: admit a presented key (expiry, revocation, rpm, tokens/day), model patterns,
    token charging. `clock` is wall time (expiry and UTC days are); tests inject their own."""

    __slots__ = ("_dirty", "clock", "reason", "retry_after", "store", "window")

    def __init__(self, store: KeyStore, clock: Callable[[], float] = time.time, window: float = RPM_WINDOW) -> None:
        self.store = store
        self.clock = clock
        self.window = window
        self.retry_after = 0  # of the last LIMITED verdict
        self.reason = ""  # message of the last LIMITED verdict
        self._dirty = False

    def last_refusal(self) -> tuple[str, int]:
        """(message, Retry-After seconds) of the last LIMITED verdict."""
        return self.reason, self.retry_after

    def admit(self, presented: bytes, charge: bool = True) -> tuple[int, ApiKey | None]:
        """(auth outcome, the key) for a key that is not the main one; `charge`: count the request if admitted."""
        key = self.store.by_digest.get(digest_of(presented))
        if key is None:
            return auth.INVALID, None
        if key.revoked:
            return auth.REVOKED, key
        now = self.clock()
        if key.expires is not None and now >= key.expires:
            return auth.EXPIRED, key
        if key.tpd and key.day_tokens >= key.tpd and key.day == utc_day(now):
            self.retry_after = max(1, math.ceil((key.day + 1) * SECONDS_PER_DAY - now))
            self.reason = f"This API key used its {key.tpd} tokens for today (UTC); it serves again tomorrow."
            return auth.LIMITED, key
        if not charge:
            return auth.OK, key
        if key.rpm:
            if now - key.window_start >= self.window:
                key.window_start = now
                key.window_count = 0
            if key.window_count >= key.rpm:
                self.retry_after = max(1, math.ceil(key.window_start + self.window - now))
                self.reason = f"This API key is over its limit of {key.rpm} requests per minute."
                return auth.LIMITED, key
            key.window_count += 1
        key.requests += 1
        key.last_used = now
        self._dirty = True
        return auth.OK, key

    def allows_model(self, key: ApiKey | None, model: str) -> bool:
        """Whether `key` (None: the main key, or no key) may use the client's model name `model`."""
        return key is None or key.allows(model)

    def observe(self, record: RequestRecord) -> None:
        """A request observer: charge its tokens to the key that made it."""
        if not record.key_name:
            return
        key = self.store.by_name.get(record.key_name)
        if key is None:
            return
        used = record.input_tokens + record.output_tokens
        today = utc_day(self.clock())
        if key.day != today:
            key.day, key.day_tokens = today, 0
        key.day_tokens += used
        key.tokens += used
        self._dirty = True

    def flush(self) -> None:
        """Write usage back (and pick up keys changed by other processes); only when something changed."""
        store = self.store
        if not self._dirty and not store.changed_on_disk():
            return
        try:
            with store.editing():
                pass
        except (OSError, KeyDefinitionError) as exc:
            log.warning("cannot write API key usage to %s: %s", store.path, exc)
            return
        self._dirty = False

    async def upkeep(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self.flush()


def views(keys: Iterable[ApiKey], now: float) -> list[dict[str, Any]]:
    return [key.view(now) for key in keys]
