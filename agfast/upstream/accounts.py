"""Account files, compatible with Antigravity Tools (reference §4.1, §4.2).

Layout: ``<data_dir>/accounts.json`` (index) and ``<data_dir>/accounts/<uuid>.json`` (one per account), with
Antigravity's field names, so ``--data-dir ~/.antigravity_tools`` reuses existing accounts and the desktop
app keeps reading what agfast wrote.

An ``Account`` is a typed view over the file's whole JSON object: accessors read it, setters write into it,
and fields agfast does not know (device profiles, quota groups, newer app versions' additions) are carried
through a load → save untouched. Files are replaced atomically (temp file, fsync, rename; mode 0600), so a
reader — another agfast process, or the desktop app — never sees half a file.

Several processes write here (a server, `agfast accounts …`, other workers). Every write holds one advisory
lock (``.accounts.lock``), and the server never saves a whole account it read earlier: ``merge`` writes only
the fields it changed onto the file as it is *now*, and writes nothing when the file is gone. So a removal or
a disable by anyone wins over what a server holds in memory, and a removed account is never resurrected.

Tokens are secrets: they never appear in ``repr(Account)``, in log lines or in exception messages.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agfast.fileio import atomic_write, exclusive, stale_temp_files
from agfast.netaddr import ProxyURLError, parse_proxy_url

log = logging.getLogger("agfast.accounts")

INDEX_FILE = "accounts.json"
ACCOUNTS_DIR = "accounts"
# Held by every writer of the files above, in every process (hidden: not an account, not Antigravity's).
LOCK_FILE = ".accounts.lock"
INDEX_VERSION = "2.0"
# Same bound as Antigravity Tools: reasons quote upstream error text, which can be long.
DISABLED_REASON_MAX = 800
# Refresh this long before expiry, so a token cannot expire between selection and the upstream call.
REFRESH_SKEW_S = 90
# proxy_disabled with this reason is the old form of model-level quota protection, not a user's switch-off.
QUOTA_PROTECTION_REASON = "quota_protection"
FILE_MODE = 0o600
DIR_MODE = 0o700
# Timestamps above this are milliseconds (year 5138 in seconds), seen in some hand-edited files.
_MS_THRESHOLD = 100_000_000_000
# An id becomes a file name: no separators, no leading dot.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Top-level fields each kind of server-side change owns; `AccountStore.merge` writes only these.
TOKEN_FIELDS = ("token",)
QUOTA_FIELDS = ("quota",)
DISABLE_FIELDS = ("disabled", "disabled_reason", "disabled_at")
PROXY_FIELDS = ("proxy_disabled", "proxy_disabled_reason", "proxy_disabled_at")
PROXY_FIELD = "proxy_url"
VALIDATION_FIELDS = ("validation_blocked", "validation_blocked_until", "validation_blocked_reason", "validation_url")
_INDEX_SUMMARY_KEYS = (
    "id",
    "email",
    "name",
    "disabled",
    "proxy_disabled",
    "protected_models",
    "created_at",
    "last_used",
)


class AccountFileError(ValueError):
    """An account or import file that cannot be used; the message names the file and field, never a value."""


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class QuotaModel:
    name: str
    percentage: int  # 0-100, floor(remainingFraction × 100)
    reset_time: str | None  # RFC 3339
    max_output_tokens: int | None
    # What Google says the model can do (fetchAvailableModels); None = not said.
    supports_thinking: bool | None = None
    thinking_budget: int | None = None
    display_name: str | None = None
    max_tokens: int | None = None  # context window


@dataclass(slots=True, repr=False)
class Account:
    """A typed view over one account file's JSON object (``raw``), which stays the source of truth."""

    raw: dict[str, Any]

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, email={self.email!r}, disabled={self.disabled})"

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_raw(cls, raw: Any, source: str = "account") -> Account:
        """Validate the fields agfast cannot work without; everything else is taken as is."""
        if not isinstance(raw, dict):
            raise AccountFileError(f"{source}: not a JSON object")
        for key in ("id", "email"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise AccountFileError(f"{source}: missing or invalid {key!r}")
        token = raw.get("token")
        if not isinstance(token, dict):
            raise AccountFileError(f"{source}: missing 'token' object")
        if not isinstance(token.get("refresh_token"), str) or not token["refresh_token"]:
            raise AccountFileError(f"{source}: missing or invalid 'token.refresh_token'")
        return cls(raw)

    @classmethod
    def new(
        cls,
        email: str,
        refresh_token: str,
        *,
        access_token: str = "",
        expires_in: int = 0,
        name: str | None = None,
        project_id: str | None = None,
        now: float | None = None,
        account_id: str | None = None,
    ) -> Account:
        """A fresh account with every field Antigravity Tools requires when it reads the file."""
        ts = _now() if now is None else int(now)
        token: dict[str, Any] = {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "expires_in": expires_in,
            "expiry_timestamp": ts + expires_in if access_token else 0,
            "token_type": "Bearer",
            "email": email,
        }
        if project_id:
            token["project_id"] = project_id
        raw: dict[str, Any] = {
            "id": account_id or str(uuid.uuid4()),
            "email": email,
            "name": name,
            "token": token,
            "quota": None,
            "disabled": False,
            "proxy_disabled": False,
            "validation_blocked": False,
            "created_at": ts,
            "last_used": ts,
        }
        return cls(raw)

    def to_json(self) -> bytes:
        return orjson.dumps(self.raw, option=orjson.OPT_INDENT_2)

    def summary(self) -> dict[str, Any]:
        """This account's entry in the accounts.json index."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "disabled": self.disabled,
            "proxy_disabled": self.proxy_disabled,
            "protected_models": self.protected_models,
            "created_at": self.created_at,
            "last_used": self.last_used,
        }

    # -- identity -----------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return _str(self.raw.get("id")) or ""

    @property
    def email(self) -> str:
        return _str(self.raw.get("email")) or ""

    @property
    def name(self) -> str | None:
        return _str(self.raw.get("name"))

    @name.setter
    def name(self, value: str | None) -> None:
        self.raw["name"] = value

    @property
    def created_at(self) -> int:
        return _int(self.raw.get("created_at")) or 0

    @property
    def last_used(self) -> int:
        return _int(self.raw.get("last_used")) or 0

    def touch(self, now: float | None = None) -> None:
        self.raw["last_used"] = _now() if now is None else int(now)

    @property
    def proxy_url(self) -> str | None:
        """This account's own outbound proxy (agfast's field; Antigravity Tools binds a pool entry by
        `proxy_id` instead); it wins over `upstream.proxy`. Holds credentials: never shown."""
        return _str(self.raw.get(PROXY_FIELD)) or None

    @proxy_url.setter
    def proxy_url(self, value: str | None) -> None:
        if value:
            self.raw[PROXY_FIELD] = value
        else:
            self.raw.pop(PROXY_FIELD, None)

    # -- token --------------------------------------------------------------------------------------------

    def _token(self) -> dict[str, Any]:
        token = self.raw.get("token")
        if not isinstance(token, dict):
            token = self.raw["token"] = {}
        return token

    @property
    def refresh_token(self) -> str:
        return _str(_dict(self.raw.get("token")).get("refresh_token")) or ""

    @refresh_token.setter
    def refresh_token(self, value: str) -> None:
        self._token()["refresh_token"] = value

    @property
    def access_token(self) -> str:
        return _str(_dict(self.raw.get("token")).get("access_token")) or ""

    @access_token.setter
    def access_token(self, value: str) -> None:
        self._token()["access_token"] = value

    @property
    def expires_in(self) -> int | None:
        return _int(_dict(self.raw.get("token")).get("expires_in"))

    @property
    def expiry_timestamp(self) -> int:
        """Unix seconds when the access token expires; 0 when unknown."""
        return _int(_dict(self.raw.get("token")).get("expiry_timestamp")) or 0

    @expiry_timestamp.setter
    def expiry_timestamp(self, value: int) -> None:
        self._token()["expiry_timestamp"] = int(value)

    @property
    def project_id(self) -> str | None:
        return _str(_dict(self.raw.get("token")).get("project_id")) or None

    @project_id.setter
    def project_id(self, value: str | None) -> None:
        if value:
            self._token()["project_id"] = value
        else:
            self._token().pop("project_id", None)

    @property
    def oauth_client_key(self) -> str | None:
        """The OAuth client that issued the refresh token (reference field; refresh tries it first)."""
        return _str(_dict(self.raw.get("token")).get("oauth_client_key")) or None

    @oauth_client_key.setter
    def oauth_client_key(self, value: str | None) -> None:
        if value:
            self._token()["oauth_client_key"] = value
        else:
            self._token().pop("oauth_client_key", None)

    def needs_refresh(self, now: float, skew: float = REFRESH_SKEW_S) -> bool:
        """True when there is no access token or it expires within ``skew`` seconds."""
        return not self.access_token or now >= self.expiry_timestamp - skew

    def ready_token(self, now: float) -> tuple[str, str] | None:
        """(access token, project id) when both are known and the token needs no refresh, else None.

        The same answer as `project_id` and `not needs_refresh(now)`, with the token object read once: every
        request asks this before its upstream call."""
        token = self.raw.get("token")
        if not isinstance(token, dict):
            return None
        access, project = _str(token.get("access_token")), _str(token.get("project_id"))
        if not access or not project or now >= (_int(token.get("expiry_timestamp")) or 0) - REFRESH_SKEW_S:
            return None
        return access, project

    def apply_refresh(
        self,
        access_token: str,
        expires_in: int,
        now: float,
        *,
        refresh_token: str | None = None,
        id_token: str | None = None,
    ) -> None:
        """Store a token refresh (§4.4): a rotated refresh token or new id_token replaces the old one."""
        token = self._token()
        token["access_token"] = access_token
        token["expires_in"] = int(expires_in)
        token["expiry_timestamp"] = int(now) + int(expires_in)
        token.setdefault("token_type", "Bearer")
        if refresh_token:
            token["refresh_token"] = refresh_token
        if id_token:
            token["id_token"] = id_token

    # -- state flags --------------------------------------------------------------------------------------

    @property
    def disabled(self) -> bool:
        return self.raw.get("disabled") is True

    @property
    def disabled_reason(self) -> str | None:
        return _str(self.raw.get("disabled_reason"))

    @property
    def disabled_at(self) -> int | None:
        return _int(self.raw.get("disabled_at"))

    def disable(self, reason: str, now: float | None = None) -> None:
        """Take the account out of the pool for good (e.g. invalid_grant) until it is re-added."""
        self.raw["disabled"] = True
        self.raw["disabled_reason"] = reason[:DISABLED_REASON_MAX]
        self.raw["disabled_at"] = _now() if now is None else int(now)

    def enable(self) -> None:
        self.raw["disabled"] = False
        self.raw.pop("disabled_reason", None)
        self.raw.pop("disabled_at", None)

    @property
    def proxy_disabled(self) -> bool:
        return self.raw.get("proxy_disabled") is True

    @property
    def proxy_disabled_reason(self) -> str | None:
        return _str(self.raw.get("proxy_disabled_reason"))

    def set_proxy_disabled(self, disabled: bool, reason: str | None = None, now: float | None = None) -> None:
        """The operator's switch (Antigravity's toggle-proxy): a proxy-disabled account is never selected."""
        self.raw["proxy_disabled"] = disabled
        if disabled:
            self.raw["proxy_disabled_reason"] = (reason or "disabled by the operator")[:DISABLED_REASON_MAX]
            self.raw["proxy_disabled_at"] = _now() if now is None else int(now)
        else:
            self.raw.pop("proxy_disabled_reason", None)
            self.raw.pop("proxy_disabled_at", None)

    @property
    def validation_blocked(self) -> bool:
        return self.raw.get("validation_blocked") is True

    @property
    def validation_blocked_until(self) -> int | None:
        """Unix seconds (millisecond values are converted)."""
        until = _int(self.raw.get("validation_blocked_until"))
        if until is not None and until > _MS_THRESHOLD:
            until //= 1000
        return until

    @property
    def validation_blocked_reason(self) -> str | None:
        return _str(self.raw.get("validation_blocked_reason"))

    @property
    def validation_url(self) -> str | None:
        return _str(self.raw.get("validation_url"))

    def block_validation(self, until: float, reason: str, url: str | None = None) -> None:
        """Park the account after a 403 VALIDATION_REQUIRED until ``until`` (unix s)."""
        self.raw["validation_blocked"] = True
        self.raw["validation_blocked_until"] = int(until)
        self.raw["validation_blocked_reason"] = reason[:DISABLED_REASON_MAX]
        if url:
            self.raw["validation_url"] = url

    def clear_validation_block(self) -> None:
        self.raw["validation_blocked"] = False
        for key in ("validation_blocked_until", "validation_blocked_reason", "validation_url"):
            self.raw.pop(key, None)

    def validation_block_expired(self, now: float) -> bool:
        """A block whose time has passed (or that has no end) should be cleared on disk (§4.2)."""
        until = self.validation_blocked_until
        return self.validation_blocked and (until is None or now >= until)

    @property
    def protected_models(self) -> list[str]:
        """Normalised model ids under quota protection (older files: a list; newer: an object keyed by id)."""
        value = self.raw.get("protected_models")
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        if isinstance(value, dict):
            return [k for k in value if isinstance(k, str)]
        return []

    @protected_models.setter
    def protected_models(self, models: Iterable[str]) -> None:
        self.raw["protected_models"] = sorted(set(models))

    # -- quota --------------------------------------------------------------------------------------------

    @property
    def quota(self) -> dict[str, Any] | None:
        value = self.raw.get("quota")
        return value if isinstance(value, dict) else None

    def _quota(self) -> dict[str, Any]:
        quota = self.quota
        if quota is None:
            quota = self.raw["quota"] = {"models": [], "last_updated": 0, "is_forbidden": False}
        return quota

    @property
    def quota_models(self) -> list[QuotaModel]:
        models = _dict(self.quota).get("models")
        out: list[QuotaModel] = []
        for m in models if isinstance(models, list) else ():
            if isinstance(m, dict) and isinstance(m.get("name"), str):
                pct = _int(m.get("percentage"))
                out.append(
                    QuotaModel(
                        m["name"],
                        0 if pct is None else pct,
                        _str(m.get("reset_time")) or None,
                        _int(m.get("max_output_tokens")),
                        _bool(m.get("supports_thinking")),
                        _int(m.get("thinking_budget")),
                        _str(m.get("display_name")),
                        _int(m.get("max_tokens")),
                    )
                )
        return out

    @property
    def has_quota_data(self) -> bool:
        return bool(self.quota_models)

    @property
    def quota_last_updated(self) -> int | None:
        return _int(_dict(self.quota).get("last_updated"))

    @property
    def subscription_tier(self) -> str | None:
        return _str(_dict(self.quota).get("subscription_tier")) or None

    @property
    def is_forbidden(self) -> bool:
        return _dict(self.quota).get("is_forbidden") is True

    @property
    def forbidden_reason(self) -> str | None:
        return _str(_dict(self.quota).get("forbidden_reason"))

    def mark_forbidden(self, reason: str) -> None:
        """A 403 from Google: the account drops out of the pool on the next load (§4.10)."""
        quota = self._quota()
        quota["is_forbidden"] = True
        quota["forbidden_reason"] = reason[:DISABLED_REASON_MAX]

    @property
    def model_forwarding_rules(self) -> dict[str, str]:
        """Deprecated → new model ids announced by upstream (``deprecatedModelIds``)."""
        rules = _dict(self.quota).get("model_forwarding_rules")
        return {k: v for k, v in _dict(rules).items() if isinstance(v, str) and v}

    def set_quota(
        self,
        models: Sequence[Mapping[str, Any]],
        now: float,
        *,
        subscription_tier: str | None = None,
        forwarding_rules: Mapping[str, str] | None = None,
    ) -> None:
        """Store a successful quota fetch; fields of the quota object agfast does not write are kept."""
        quota = self._quota()
        quota["models"] = [dict(m) for m in models]
        quota["last_updated"] = int(now)
        quota["is_forbidden"] = False
        quota.pop("forbidden_reason", None)
        if subscription_tier is not None:
            quota["subscription_tier"] = subscription_tier
        if forwarding_rules is not None:
            quota["model_forwarding_rules"] = dict(forwarding_rules)


def usable(account: Account, now: float) -> tuple[bool, str]:
    """Whether the account may enter the pool (§4.2), and if not, why.

    Unlike the reference, an account without quota data is usable: its quota is unknown, not zero.
    """
    if account.proxy_disabled and account.proxy_disabled_reason != QUOTA_PROTECTION_REASON:
        return False, "proxy_disabled"
    if account.validation_blocked and not account.validation_block_expired(now):
        return False, "validation_blocked"
    if account.disabled:
        return False, "disabled"
    if account.is_forbidden:
        return False, "forbidden"
    return True, "ok"


# ---------------------------------------------------------------------------------------------------------
# Files


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as e:
        problem = f"cannot read ({e.strerror or type(e).__name__})"
    else:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            problem = f"invalid JSON at line {e.lineno} column {e.colno}"
    # Raised outside the handlers: a decode error carries the whole document (tokens included), and
    # must not ride along as __context__.
    raise AccountFileError(f"{path}: {problem}")


def read_account_file(path: Path) -> Account:
    return Account.from_raw(_read_json(path), str(path))


def _valid_id(account_id: str) -> bool:
    return _ID_RE.fullmatch(account_id) is not None


class AccountStore:
    """The accounts of one data dir. Disk is the source of truth: every call reads or writes files."""

    __slots__ = ("_lock", "accounts_dir", "data_dir", "index_path")

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.accounts_dir = self.data_dir / ACCOUNTS_DIR
        self.index_path = self.data_dir / INDEX_FILE
        # Serialises index read-modify-write within this process.
        self._lock = threading.Lock()

    def _path(self, account_id: str) -> Path:
        if not _valid_id(account_id):
            raise AccountFileError("invalid account id")
        return self.accounts_dir / f"{account_id}.json"

    # -- reading ------------------------------------------------------------------------------------------

    def load_all(self) -> list[Account]:
        """Every readable account file, by file name; bad files are logged and skipped."""
        try:
            paths = sorted(p for p in self.accounts_dir.glob("*.json") if not p.name.startswith("."))
        except OSError:
            return []
        accounts: list[Account] = []
        for path in paths:
            try:
                accounts.append(read_account_file(path))
            except AccountFileError as e:
                log.warning("skipping account file: %s", e)
        return accounts

    def get(self, account_id: str) -> Account | None:
        if not _valid_id(account_id):
            return None
        path = self.accounts_dir / f"{account_id}.json"
        if not path.exists():
            return None
        try:
            return read_account_file(path)
        except AccountFileError as e:
            log.warning("unreadable account file: %s", e)
            return None

    def find(self, id_or_email: str) -> Account | None:
        """By id, else by email (case-insensitive)."""
        found = self.get(id_or_email)
        if found is not None:
            return found
        wanted = id_or_email.casefold()
        return next((a for a in self.load_all() if a.email.casefold() == wanted), None)

    def read_index(self) -> dict[str, Any]:
        """accounts.json; rebuilt from the account files when missing or unreadable."""
        if self.index_path.exists():
            try:
                index = _read_json(self.index_path)
                if isinstance(index, dict) and isinstance(index.get("accounts"), list):
                    return index
                log.warning("rebuilding account index: %s has an unexpected shape", self.index_path)
            except AccountFileError as e:
                log.warning("rebuilding account index: %s", e)
        return {
            "version": INDEX_VERSION,
            "accounts": [a.summary() for a in self.load_all()],
            "current_account_id": None,
        }

    # -- writing ------------------------------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        # The data dir holds refresh tokens: owner-only, like the files in it.
        self.data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.accounts_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.index_path, orjson.dumps(index, option=orjson.OPT_INDENT_2))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock: this process's threads, and every other process writing this data dir."""
        with self._lock, exclusive(self.data_dir / LOCK_FILE):
            yield

    def _put_index_entry(self, account: Account) -> None:
        index = self.read_index()
        entries: list[Any] = index["accounts"]
        summary = account.summary()
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == account.id:
                entry.update(summary)
                break
        else:
            entries.append(summary)
        if not index.get("current_account_id"):
            index["current_account_id"] = account.id
        self._write_index(index)

    def save(self, account: Account) -> None:
        """Write the whole account file (creating it), then its index entry (unknown index fields are kept).

        For adding or replacing an account on purpose (`accounts add`); a server updating an account it
        holds uses `merge`, which cannot undo what another process did to the file.
        """
        path = self._path(account.id)
        self._ensure_dirs()
        with self._writing():
            atomic_write(path, account.to_json())
            self._put_index_entry(account)

    def merge(self, account: Account, fields: Iterable[str]) -> Account | None:
        """Write `account`'s `fields` onto its file as the file is now, and return what was written.

        Never creates a file: None when it is gone (removed by another process, and that removal wins) or
        unreadable. Every other field is kept as it is on disk, so a disable done meanwhile stays; the caller
        checks whether the returned account is still usable.
        """
        path = self._path(account.id)
        with self._writing():
            if not path.exists():
                return None
            try:
                current = read_account_file(path)
            except AccountFileError as e:
                log.warning("not updating an unreadable account file: %s", e)
                return None
            for name in fields:
                if name in account.raw:
                    current.raw[name] = account.raw[name]
                else:
                    current.raw.pop(name, None)
            atomic_write(path, current.to_json())
            self._put_index_entry(current)
        return current

    def remove_stale_temp_files(self) -> int:
        """Delete temp files left by a writer killed mid-write (under the write lock, so none is live)."""
        if not self.accounts_dir.is_dir():
            return 0
        with self._writing():
            stale = stale_temp_files(self.accounts_dir) + stale_temp_files(self.data_dir, INDEX_FILE)
            for path in stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return len(stale)

    def upsert(
        self,
        email: str,
        refresh_token: str,
        *,
        access_token: str | None = None,
        expires_in: int | None = None,
        name: str | None = None,
        project_id: str | None = None,
        now: float | None = None,
    ) -> Account:
        """Add an account, or update the one with this email (case-insensitive); returns what was saved."""
        ts = time.time() if now is None else now
        wanted = email.casefold()
        account = next((a for a in self.load_all() if a.email.casefold() == wanted), None)
        if account is None:
            account = Account.new(
                email,
                refresh_token,
                access_token=access_token or "",
                expires_in=expires_in or 0,
                name=name,
                project_id=project_id,
                now=ts,
            )
        else:
            if refresh_token != account.refresh_token:
                account.enable()  # a new grant revives an account disabled for a revoked one
                account.refresh_token = refresh_token
            if access_token:
                account.apply_refresh(access_token, expires_in or 0, ts)
            if name is not None:
                account.name = name
            if project_id:
                account.project_id = project_id
        self.save(account)
        return account

    def remove(self, id_or_email: str) -> bool:
        """Delete the account file and its index entry; False when there is no such account."""
        account = self.find(id_or_email)
        if account is None:
            return False
        with self._writing():
            with contextlib.suppress(FileNotFoundError):
                self._path(account.id).unlink()
            index = self.read_index()
            index["accounts"] = [
                e for e in index["accounts"] if not (isinstance(e, dict) and e.get("id") == account.id)
            ]
            if index.get("current_account_id") == account.id:
                remaining = [e.get("id") for e in index["accounts"] if isinstance(e, dict)]
                index["current_account_id"] = remaining[0] if remaining else None
            if self.index_path.exists() or index["accounts"]:
                self._write_index(index)
        return True

    def disable(self, account: Account, reason: str, now: float | None = None) -> Account | None:
        """Mark the account disabled on disk (reason truncated to 800 chars), as on invalid_grant; a removed
        account stays removed (None)."""
        account.disable(reason, now)
        return self.merge(account, DISABLE_FIELDS)

    def import_path(self, path: Path) -> list[tuple[str, str]]:
        """(email, refresh_token) pairs found at ``path``; see read_import."""
        return read_import(Path(path))


# ---------------------------------------------------------------------------------------------------------
# Import: an Antigravity Tools data dir, its accounts/ dir, an account file, or an export file.


def _pair(entry: Any) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    email = entry.get("email")
    refresh = entry.get("refresh_token")
    if refresh is None:
        refresh = _dict(entry.get("token")).get("refresh_token")
    if isinstance(email, str) and email and isinstance(refresh, str) and refresh:
        return email, refresh
    return None


def _pairs_from_document(doc: Any) -> list[tuple[str, str]]:
    entries: Any
    if isinstance(doc, dict) and isinstance(doc.get("accounts"), list):
        entries = doc["accounts"]  # export file {"accounts": [{"email", "refresh_token"}]}
    elif isinstance(doc, list):
        entries = doc
    else:
        entries = [doc]  # a single account file
    return [p for p in map(_pair, entries) if p is not None]


def read_import(path: Path) -> list[tuple[str, str]]:
    """Pairs to import, de-duplicated by email (first wins). Bad files inside a directory are skipped;
    an explicit file that cannot be read raises AccountFileError."""
    if path.is_dir():
        directory = path / ACCOUNTS_DIR if (path / ACCOUNTS_DIR).is_dir() else path
        pairs: list[tuple[str, str]] = []
        for file in sorted(directory.glob("*.json")):
            if file.name == INDEX_FILE or file.name.startswith("."):
                continue
            try:
                pairs.extend(_pairs_from_document(_read_json(file)))
            except AccountFileError as e:
                log.warning("skipping import file: %s", e)
    elif path.exists():
        pairs = _pairs_from_document(_read_json(path))
    else:
        raise AccountFileError(f"{path}: no such file or directory")
    seen: set[str] = set()
    unique: list[tuple[str, str]] = []
    for email, refresh in pairs:
        if email.casefold() not in seen:
            seen.add(email.casefold())
            unique.append((email, refresh))
    return unique


# ---------------------------------------------------------------------------------------------------------
# What operators are shown of an account (CLI `list --json`, admin API): everything but secrets.


def status_detail(account: Account, reason: str) -> str | None:
    """Why `usable()` said no, in the account's own recorded words."""
    if reason == "disabled":
        return account.disabled_reason
    if reason == "proxy_disabled":
        return account.proxy_disabled_reason
    if reason == "forbidden":
        return account.forbidden_reason
    if reason == "validation_blocked":
        parts = [account.validation_blocked_reason or "VALIDATION_REQUIRED"]
        if account.validation_blocked_until:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(account.validation_blocked_until))
            parts.append(f"until {until}")
        if account.validation_url:
            parts.append(f"verify at {account.validation_url}")
        return " ".join(parts)
    return None


def proxy_label(url: str | None) -> str | None:
    """An account's own proxy as scheme://host:port (its credentials stay in the file)."""
    if url is None:
        return None
    try:
        return parse_proxy_url(url).label
    except ProxyURLError:
        return "(invalid proxy_url)"


def account_view(account: Account, now: float) -> dict[str, Any]:
    """An account as `accounts list --json` and the admin API show it: never a token."""
    ok, reason = usable(account, now)
    percentages = [m.percentage for m in account.quota_models]
    return {
        "id": account.id,
        "email": account.email,
        "name": account.name,
        "tier": account.subscription_tier,
        "project_id": account.project_id,
        "status": "ok" if ok else reason,
        "status_detail": None if ok else status_detail(account, reason),
        "disabled": account.disabled,
        "disabled_reason": account.disabled_reason,
        "proxy_disabled": account.proxy_disabled,
        "proxy_disabled_reason": account.proxy_disabled_reason,
        "quota": {
            "models": len(percentages),
            "lowest_percentage": min(percentages) if percentages else None,
            "highest_percentage": max(percentages) if percentages else None,
            "last_updated": account.quota_last_updated or None,
        },
        "token_expires_at": account.expiry_timestamp or None,
        "proxy": proxy_label(account.proxy_url),
        "created_at": account.created_at or None,
        "last_used": account.last_used or None,
    }
