"""The one place settings are resolved: defaults < config file < AGFAST_* environment < CLI flags.

Everything derived from settings (key bytes, bind address, effective auth mode) is computed here once, so the
request path only reads attributes. `LiveConfig` re-resolves them while serving (config.toml edits, SIGHUP, the
admin API) and applies what can change live (`LIVE_KEYS`); the rest is logged as needing a restart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson
import tomlkit

from agfast.fileio import atomic_write, exclusive
from agfast.netaddr import ProxyURLError, parse_networks, parse_proxy_url

AUTH_MODES = ("off", "strict", "all_except_health", "auto")
SCHEDULING_MODES = ("CacheFirst", "Balance", "PerformanceFirst")
ZAI_DISPATCH_MODES = ("off", "exclusive", "pooled", "fallback")
LOG_LEVELS = ("debug", "info", "warning", "error")

GOOGLE_ENDPOINTS = (
    "https://daily-cloudcode-pa.sandbox.googleapis.com/v1internal",
    "https://daily-cloudcode-pa.googleapis.com/v1internal",
    "https://cloudcode-pa.googleapis.com/v1internal",
)
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_USERINFO_URL = "https://www.googleapis.com/oauth2/v2/userinfo"
GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
# The key of the client given as oauth.client_id / oauth.client_secret (the single-client settings).
DEFAULT_CLIENT_KEY = "default"
# Antigravity Tools' own variable for several OAuth clients: `key|client_id|client_secret|label;…` (§4.4).
ANTIGRAVITY_CLIENTS_ENV = "ANTIGRAVITY_OAUTH_CLIENTS"
# Quota protection keeps the last of a model's quota for the user's own IDE (reference §4.7 default: 10 %).
DEFAULT_QUOTA_THRESHOLD = 10
# An OAuth client key becomes a config table entry and an account field: short, no separators.
CLIENT_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Antigravity Tools accepts request bodies up to 100 MiB (base64 images and long agent histories are big).
DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
# h11's own default for an incomplete head; real clients send < 8 KiB (Claude Code's beta list included).
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
# A client must finish sending its request head this quickly, or it is a slowloris and gets 408.
DEFAULT_HEADER_TIMEOUT = 10.0
# Longer than every SDK's own idle expiry (httpx 5 s, undici 4 s, aiohttp 15 s), as nginx does, so a client
# never reuses a connection the server is closing at the same moment.
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
# A stalled upload holds a connection open; 60 s without a byte of body is given up.
DEFAULT_BODY_TIMEOUT = 60.0
# SIGTERM lets in-flight answers (long agent streams included) finish for this long, then closes them.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# A streaming client that takes nothing of its answer for this long is cut: otherwise it holds its upstream
# stream (and a slot of a Google account) open for as long as it likes. As long as a silent upstream may last.
DEFAULT_CLIENT_STALL_TIMEOUT = 300.0
# An allowed host: a name or address, optionally with a port; or "*".
HOST_PATTERN = re.compile(r"\*|\[[0-9a-f:.]+\](:\d+)?|[^\s/?#@\[\]:]+(:\d+)?")
# An allowed origin as browsers serialise it (scheme://host[:port]), "null" (file:// pages), or "*".
ORIGIN_PATTERN = re.compile(r"\*|null|[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[^\s/?#@\[\]:]+)(:\d+)?")


class ConfigError(Exception):
    """A setting that cannot work; the CLI prints it as one line and exits non-zero."""


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """One OAuth client the user brought (agfast ships none); `key` is what an account remembers."""

    key: str
    client_id: str
    client_secret: str
    label: str = ""

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"OAuthClient(key={self.key!r}, client_id={self.client_id!r}, label={self.label!r})"


@dataclass(slots=True)
class ZaiConfig:
    enabled: bool = False
    base_url: str = "https://api.z.ai/api/anthropic"
    api_key: str = ""
    dispatch_mode: str = "off"
    model_mapping: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(
        default_factory=lambda: {"opus": "glm-4.7", "sonnet": "glm-4.7", "haiku": "glm-4.5-air"}
    )


@dataclass(slots=True)
class Config:
    host: str | None = None
    port: int = 8045
    allow_lan_access: bool = False
    data_dir: Path = field(default_factory=lambda: Path.home() / ".agfast")
    config_file: Path | None = None
    auth_mode: str = "auto"
    api_key: str | None = None
    admin_password: str | None = None
    log_level: str = "info"
    demo: bool = False
    request_timeout: float = 120.0
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    client_stall_timeout: float = DEFAULT_CLIENT_STALL_TIMEOUT
    custom_mapping: dict[str, str] = field(default_factory=dict)
    scheduling_mode: str = "Balance"
    preferred_account_id: str | None = None
    upstream_endpoints: list[str] = field(default_factory=lambda: list(GOOGLE_ENDPOINTS))
    oauth_token_url: str = GOOGLE_TOKEN_URL
    userinfo_url: str = GOOGLE_USERINFO_URL
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    # Google's sign-in page (`agfast accounts login`, the dashboard's "Sign in with Google").
    oauth_auth_url: str = GOOGLE_AUTH_URL
    # More OAuth clients ([[oauth.clients]], ANTIGRAVITY_OAUTH_CLIENTS); tried after oauth.client_id.
    oauth_clients: list[OAuthClient] = field(default_factory=list)
    # Quota protection (reference §4.7): an account whose remaining quota for a protected model is below
    # the threshold (percent) is not used for that model. No models listed = every model is protected.
    quota_protection_enabled: bool = False
    quota_protection_threshold: int = DEFAULT_QUOTA_THRESHOLD
    # Shared pool state (lockouts, bindings, tokens) for several workers or hosts; None: this process only.
    state_redis_url: str | None = None
    # Every Redis key agfast writes starts with this, so several pools can share one Redis.
    state_prefix: str = "agfast"
    # A request waits on Redis at most this long (seconds), then goes on with this process's own state.
    state_timeout: float = 0.05
    # Worker processes for `agfast serve` (0: one per core).
    workers: int = 1
    quota_protection_models: list[str] = field(default_factory=list)
    # Scheduled warmup (reference `scheduled_warmup`): every account whose quota window for a monitored model is
    # full (reset, not yet started) gets the tiny warmup request, once per window. Empty list: the CLI's defaults.
    warmup_schedule_enabled: bool = False
    warmup_models: list[str] = field(default_factory=list)
    user_agent: str | None = None
    # Google refuses clients that report an old Antigravity version; 4.3.0 is the original's floor.
    client_version: str = "4.3.0"
    # Multiplies every retry wait of the policy table (tests use 0.01 instead of sleeping for real).
    retry_wait_scale: float = 1.0
    # Upstream silent this long fails the read: before the first chunk the attempt is retried on another
    # account, after it the client is told in-stream (reference: 300 s for both).
    stream_idle_timeout: float = 300.0
    # Seconds a request may wait for an account (refresh, project lookup) before 503 (reference: 5 s).
    token_timeout: float = 5.0
    # Background quota refresh period (reference: 15 min).
    quota_refresh_interval: float = 900.0
    # How often the data dir is checked for accounts added or changed by another process (a stat, no reads).
    accounts_reload_interval: float = 15.0
    monitor_enabled: bool = True
    # Proxy Monitor rows older than this are deleted (at start and hourly); 0 keeps them (reference: 30 days).
    monitor_retention_days: int = 30
    # Request and response body bytes stored per row (the request record holds at most 64 KiB of each).
    monitor_max_body_bytes: int = 64 * 1024
    # GET /metrics without admin auth (for a scraper on a trusted network).
    metrics_public: bool = False
    # Host header values served besides this machine's own names (a reverse proxy's, say); "*" = any.
    allowed_hosts: list[str] = field(default_factory=list)
    # Web pages (exact origins, "*" = any) whose cross-origin requests are served and get CORS headers.
    cors_allowed_origins: list[str] = field(default_factory=list)
    # Outbound proxy for every call to Google (http, https, socks4, socks5 URL; credentials allowed); an account's
    # own `proxy_url` wins. Hosts in no_proxy (NO_PROXY's format) go direct.
    upstream_proxy: str | None = None
    no_proxy: list[str] = field(default_factory=list)
    # Serve HTTPS directly with this certificate chain and private key (PEM files).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Client addresses and CIDRs let in / kept out (deny wins; an empty allow list lets everyone in), and the
    # reverse proxies whose X-Forwarded-For names the real client.
    ip_allow: list[str] = field(default_factory=list)
    ip_deny: list[str] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)
    no_extensions: bool = False
    zai: ZaiConfig = field(default_factory=ZaiConfig)
    # Config-file keys that matched nothing; the CLI warns about them (a typo should not pass silently).
    unknown_keys: list[str] = field(default_factory=list)
    # The CLI flags load() was given: a reload resolves the sources again and flags still win.
    cli_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def bind_host(self) -> str:
        """An explicit host wins; otherwise LAN access decides between loopback and all interfaces."""
        if self.host:
            return self.host
        return "0.0.0.0" if self.allow_lan_access else "127.0.0.1"

    @property
    def lan_exposed(self) -> bool:
        if self.allow_lan_access:
            return True
        host = self.bind_host
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

    @property
    def effective_auth_mode(self) -> str:
        """`auto` guards everything but health when reachable from other machines, else nothing."""
        if self.auth_mode != "auto":
            return self.auth_mode
        return "all_except_health" if self.lan_exposed else "off"

    def oauth_client_chain(self) -> list[OAuthClient]:
        """Every configured OAuth client, oauth.client_id first; refresh tries them in this order (§4.4)."""
        chain: list[OAuthClient] = []
        if self.oauth_client_id and self.oauth_client_secret:
            chain.append(
                OAuthClient(DEFAULT_CLIENT_KEY, self.oauth_client_id, self.oauth_client_secret, "oauth.client_id")
            )
        for client in self.oauth_clients:
            if all(c.key != client.key and c.client_id != client.client_id for c in chain):
                chain.append(client)
        return chain

    @property
    def config_path(self) -> Path:
        return self.config_file if self.config_file is not None else self.data_dir / "config.toml"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    @property
    def base_url(self) -> str:
        host = self.bind_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


# Config-file keys (snake_case of Antigravity Tools' ProxyConfig) → Config attribute.
FILE_KEYS: dict[str, str] = {
    "host": "host",
    "port": "port",
    "allow_lan_access": "allow_lan_access",
    "auth_mode": "auth_mode",
    "api_key": "api_key",
    "admin_password": "admin_password",
    "log_level": "log_level",
    "request_timeout": "request_timeout",
    "max_body_size": "max_body_size",
    "max_header_size": "max_header_size",
    "header_timeout": "header_timeout",
    "body_timeout": "body_timeout",
    "keepalive_timeout": "keepalive_timeout",
    "shutdown_timeout": "shutdown_timeout",
    "client_stall_timeout": "client_stall_timeout",
    "custom_mapping": "custom_mapping",
    "preferred_account_id": "preferred_account_id",
    "user_agent_override": "user_agent",
    "scheduling.mode": "scheduling_mode",
    "upstream.endpoints": "upstream_endpoints",
    "upstream.user_agent": "user_agent",
    "upstream.client_version": "client_version",
    "upstream.retry_wait_scale": "retry_wait_scale",
    "upstream.stream_idle_timeout": "stream_idle_timeout",
    "upstream.token_timeout": "token_timeout",
    "upstream.quota_refresh_interval": "quota_refresh_interval",
    "upstream.proxy": "upstream_proxy",
    "upstream.no_proxy": "no_proxy",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "security.ip_allow": "ip_allow",
    "security.ip_deny": "ip_deny",
    "security.trusted_proxies": "trusted_proxies",
    "accounts_reload_interval": "accounts_reload_interval",
    "oauth.token_url": "oauth_token_url",
    "oauth.userinfo_url": "userinfo_url",
    "oauth.client_id": "oauth_client_id",
    "oauth.client_secret": "oauth_client_secret",
    "oauth.auth_url": "oauth_auth_url",
    "oauth.clients": "oauth_clients",
    "quota_protection.enabled": "quota_protection_enabled",
    "quota_protection.threshold": "quota_protection_threshold",
    "quota_protection.protected_models": "quota_protection_models",
    "scheduled_warmup.enabled": "warmup_schedule_enabled",
    "scheduled_warmup.monitored_models": "warmup_models",
    "monitor.enabled": "monitor_enabled",
    "monitor.retention_days": "monitor_retention_days",
    "monitor.max_body_bytes": "monitor_max_body_bytes",
    "metrics_public": "metrics_public",
    "allowed_hosts": "allowed_hosts",
    "cors.allowed_origins": "cors_allowed_origins",
    "state.redis_url": "state_redis_url",
    "state.prefix": "state_prefix",
    "state.timeout": "state_timeout",
    "workers": "workers",
}
ZAI_KEYS = {f.name for f in fields(ZaiConfig)}

ENV_KEYS: dict[str, str] = {
    "AGFAST_HOST": "host",
    "AGFAST_PORT": "port",
    "AGFAST_ALLOW_LAN": "allow_lan_access",
    "AGFAST_API_KEY": "api_key",
    "AGFAST_AUTH_MODE": "auth_mode",
    "AGFAST_ADMIN_PASSWORD": "admin_password",
    "AGFAST_LOG_LEVEL": "log_level",
    "AGFAST_UPSTREAM_ENDPOINTS": "upstream_endpoints",
    "AGFAST_OAUTH_TOKEN_URL": "oauth_token_url",
    "AGFAST_USERINFO_URL": "userinfo_url",
    "AGFAST_OAUTH_CLIENT_ID": "oauth_client_id",
    "AGFAST_OAUTH_CLIENT_SECRET": "oauth_client_secret",
    "AGFAST_OAUTH_AUTH_URL": "oauth_auth_url",
    "AGFAST_NO_EXTENSIONS": "no_extensions",
    "AGFAST_CLIENT_VERSION": "client_version",
    "AGFAST_ALLOWED_HOSTS": "allowed_hosts",
    "AGFAST_CORS_ALLOWED_ORIGINS": "cors_allowed_origins",
    "AGFAST_REDIS_URL": "state_redis_url",
}
# Every config-file key also has its environment twin: `AGFAST_` + the key upper-cased, dots → `_`
# (`upstream.retry_wait_scale` → `AGFAST_UPSTREAM_RETRY_WAIT_SCALE`); the names above win where they differ.
ENV_KEYS = {**{"AGFAST_" + key.upper().replace(".", "_"): name for key, name in FILE_KEYS.items()}, **ENV_KEYS}

_TYPES: dict[str, type] = {
    "port": int,
    "allow_lan_access": bool,
    "request_timeout": float,
    "max_body_size": int,
    "max_header_size": int,
    "header_timeout": float,
    "body_timeout": float,
    "keepalive_timeout": float,
    "shutdown_timeout": float,
    "client_stall_timeout": float,
    "monitor_enabled": bool,
    "monitor_retention_days": int,
    "monitor_max_body_bytes": int,
    "metrics_public": bool,
    "retry_wait_scale": float,
    "stream_idle_timeout": float,
    "token_timeout": float,
    "quota_refresh_interval": float,
    "accounts_reload_interval": float,
    "no_extensions": bool,
    "demo": bool,
    "quota_protection_enabled": bool,
    "warmup_schedule_enabled": bool,
    "quota_protection_threshold": int,
    "workers": int,
    "state_timeout": float,
}
# Settings that are lists of strings (comma-separated in the environment) → what an entry looks like.
_LISTS = {
    "allowed_hosts": "a list of host names",
    "cors_allowed_origins": "a list of origins",
    "quota_protection_models": "a list of model names",
    "warmup_models": "a list of model names",
    "no_proxy": "a list of host names, addresses or CIDRs",
    "ip_allow": "a list of addresses or CIDRs",
    "ip_deny": "a list of addresses or CIDRs",
    "trusted_proxies": "a list of addresses or CIDRs",
}
# Settings that are file paths.
_PATHS = frozenset({"tls_cert", "tls_key"})
# The proxy-bypass list every HTTP tool reads; agfast's own key (upstream.no_proxy) wins over it.
NO_PROXY_ENV = ("no_proxy", "NO_PROXY")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES.get(name)
    try:
        if name == "upstream_endpoints":
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("a list of URLs")
            return [v.rstrip("/") for v in value]
        if name in _LISTS:
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(_LISTS[name])
            return list(value)
        if name == "oauth_clients":
            try:
                return parse_clients(value)
            except ValueError as exc:  # the value holds client secrets: never quoted back
                raise ConfigError(f"{source}: oauth.clients must be {exc}") from None
        if name == "custom_mapping":
            if isinstance(value, str):  # from the environment: a JSON object
                value = orjson.loads(value) if value.strip() else {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError("a table of model name = upstream model")
            return dict(value)
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("true or false")
        if kind is int:
            if isinstance(value, bool):
                raise ValueError("an integer")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("a number")
            return float(value)
        if value is None:
            return None
        if name in _PATHS:
            return Path(str(value)).expanduser() if str(value).strip() else None
        return str(value)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{source}: {name} must be a JSON object of model name: upstream model") from None
    except (TypeError, ValueError) as exc:
        expected = str(exc) if isinstance(exc, ValueError) and not str(exc).startswith("invalid") else ""
        expected = expected or ("an integer" if kind is int else "a number" if kind is float else "valid")
        raise ConfigError(f"{source}: {name} must be {expected} (got {value!r})") from None


def parse_clients(value: Any) -> list[OAuthClient]:
    """[[oauth.clients]] tables, or the reference's `key|client_id|client_secret|label;…` text."""
    if isinstance(value, str):
        value = [
            dict(zip(("key", "client_id", "client_secret", "label"), part.strip().split("|")))
            for part in value.split(";")
            if part.strip()
        ]
    if not isinstance(value, list):
        raise ValueError("a list of {key, client_id, client_secret, label} tables")
    clients: list[OAuthClient] = []
    for entry in value:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry[k] for k in ("key", "client_id", "client_secret")
        ):
            raise ValueError(
                "a list of clients, each with key, client_id and client_secret (key|client_id|client_secret|label)"
            )
        if not CLIENT_KEY_PATTERN.fullmatch(entry["key"]):
            raise ValueError(f"client keys of letters, digits, '.', '_' and '-' (got {entry['key']!r})")
        clients.append(
            OAuthClient(entry["key"], entry["client_id"], entry["client_secret"], str(entry.get("label") or ""))
        )
    return clients


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in ("custom_mapping",) and not dotted.startswith("zai"):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
    """Parsed TOML, or {} when the file does not exist yet."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Merge every source once; `cli` holds only the flags the user actually gave."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    env = os.environ if env is None else env
    cfg = Config()
    unknown: list[str] = []

    if "config_file" in cli:
        cfg.config_file = Path(cli["config_file"]).expanduser()
    if "data_dir" in cli:
        cfg.data_dir = Path(cli["data_dir"]).expanduser()
    elif env.get("AGFAST_DATA_DIR"):
        cfg.data_dir = Path(env["AGFAST_DATA_DIR"]).expanduser()

    table = read_config_file(cfg.config_path)
    source = str(cfg.config_path)
    for key, value in _flatten(table).items():
        if key == "zai":
            _apply_zai(cfg, value, source)
        elif key in FILE_KEYS:
            name = FILE_KEYS[key]
            setattr(cfg, name, _coerce(name, value, source))
        elif key == "data_dir" and cfg.config_file is not None and "data_dir" not in cli:
            if not env.get("AGFAST_DATA_DIR"):
                cfg.data_dir = Path(str(value)).expanduser()
        else:
            unknown.append(key)

    if env.get(ANTIGRAVITY_CLIENTS_ENV):
        # Antigravity Tools users already have this variable; its clients join the config file's.
        extra = _coerce("oauth_clients", env[ANTIGRAVITY_CLIENTS_ENV], ANTIGRAVITY_CLIENTS_ENV)
        keys = {c.key for c in extra}
        cfg.oauth_clients = [c for c in cfg.oauth_clients if c.key not in keys] + extra
    for var in NO_PROXY_ENV:
        if var in env:
            cfg.no_proxy = _coerce("no_proxy", env[var], var)
    for var, name in ENV_KEYS.items():
        if var in env:
            setattr(cfg, name, _coerce(name, env[var], var))

    for name, value in cli.items():
        if name in ("config_file", "data_dir"):
            continue
        if not hasattr(cfg, name):
            raise ConfigError(f"unknown setting {name!r}")
        setattr(cfg, name, _coerce(name, value, f"--{name.replace('_', '-')}"))

    _validate(cfg)
    cfg.unknown_keys = unknown
    cfg.cli_overrides = cli
    return cfg


def _apply_zai(cfg: Config, value: Any, source: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: zai must be a table")
    for key, item in value.items():
        if key not in ZAI_KEYS:
            raise ConfigError(f"{source}: unknown key zai.{key}")
        setattr(cfg.zai, key, item)


def _validate(cfg: Config) -> None:
    if cfg.auth_mode not in AUTH_MODES:
        raise ConfigError(f"auth_mode must be one of {', '.join(AUTH_MODES)} (got {cfg.auth_mode!r})")
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535 (got {cfg.port})")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)} (got {cfg.log_level!r})")
    cfg.log_level = cfg.log_level.lower()
    if cfg.scheduling_mode not in SCHEDULING_MODES:
        raise ConfigError(f"scheduling.mode must be one of {', '.join(SCHEDULING_MODES)}")
    if cfg.zai.dispatch_mode not in ZAI_DISPATCH_MODES:
        raise ConfigError(f"zai.dispatch_mode must be one of {', '.join(ZAI_DISPATCH_MODES)}")
    if cfg.api_key:
        check_api_key(cfg.api_key)
    for name in ("max_body_size", "max_header_size"):
        if getattr(cfg, name) < 1024:
            raise ConfigError(f"{name} must be at least 1024 bytes")
    for name in (
        "header_timeout",
        "body_timeout",
        "keepalive_timeout",
        "shutdown_timeout",
        "client_stall_timeout",
        "request_timeout",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if not 0 < cfg.state_timeout <= 5:
        raise ConfigError("state.timeout must be more than 0 and at most 5 seconds")
    if cfg.workers < 0:
        raise ConfigError("workers must be 0 (one per core) or more")
    if cfg.state_redis_url is not None and not cfg.state_redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"state.redis_url must be a redis://, rediss:// or unix:// URL (got {cfg.state_redis_url!r})")
    if cfg.monitor_retention_days < 0:
        raise ConfigError("monitor.retention_days must be 0 (keep everything) or more")
    if cfg.monitor_max_body_bytes < 0:
        raise ConfigError("monitor.max_body_bytes must be 0 (no bodies) or more")
    for url in cfg.upstream_endpoints:
        if not url.startswith(("http://", "https://")) or not url.endswith("/v1internal"):
            raise ConfigError(f"upstream endpoint must be an http(s) URL ending in /v1internal (got {url!r})")
    if not cfg.upstream_endpoints:
        raise ConfigError("upstream.endpoints must list at least one URL")
    if not 0 <= cfg.quota_protection_threshold <= 100:
        raise ConfigError("quota_protection.threshold must be a percentage between 0 and 100")
    if not cfg.oauth_auth_url.startswith(("http://", "https://")):
        raise ConfigError(f"oauth.auth_url must be an http(s) URL (got {cfg.oauth_auth_url!r})")
    cfg.allowed_hosts = [h.strip().lower() for h in cfg.allowed_hosts]
    for host in cfg.allowed_hosts:
        if not HOST_PATTERN.fullmatch(host):
            raise ConfigError(f"allowed_hosts entries must be host names like proxy.example or '*' (got {host!r})")
    _validate_access(cfg)
    # Browsers send origins lower case without a trailing slash; compare them in that form.
    cfg.cors_allowed_origins = [o.strip().lower().rstrip("/") for o in cfg.cors_allowed_origins]
    for origin in cfg.cors_allowed_origins:
        if not ORIGIN_PATTERN.fullmatch(origin):
            raise ConfigError(
                "cors.allowed_origins entries must be origins like http://localhost:3000 (scheme://host[:port], "
                f"no path) or '*' (got {origin!r})"
            )


def _validate_access(cfg: Config) -> None:
    """Outbound proxy, TLS files and IP rules: refused at start, not on the first request."""
    if cfg.upstream_proxy is not None and not cfg.upstream_proxy.strip():
        cfg.upstream_proxy = None
    if cfg.upstream_proxy is not None:
        try:
            parse_proxy_url(cfg.upstream_proxy)
        except ProxyURLError as exc:
            raise ConfigError(f"upstream.proxy: {exc}") from None
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: give both (--tls-cert FILE --tls-key FILE) or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(cfg, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: {path} is not a readable file")
    for key, name in (
        ("security.ip_allow", "ip_allow"),
        ("security.ip_deny", "ip_deny"),
        ("security.trusted_proxies", "trusted_proxies"),
    ):
        try:
            parse_networks(getattr(cfg, name))
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def check_api_key(key: str) -> None:
    """Refuse keys a client could guess or mistype into something else (Antigravity's own format)."""
    if not key.startswith("sk-") or len(key) < 10:
        raise ConfigError("api_key must start with 'sk-' and be at least 10 characters long")


def ensure_api_key(cfg: Config) -> str | None:
    """Generate and persist a key on first start; returns it when new so the CLI can print it once.

    An explicit empty `api_key = ""` means "no key": guarded routes then answer 401 (fail closed).
    """
    if cfg.api_key is not None:
        return None
    generated = "sk-" + secrets.token_hex(16)
    found: Any = None

    def add_key(doc: tomlkit.TOMLDocument) -> bool:
        nonlocal found
        found = doc.get("api_key")
        if found is not None:  # another agfast process starting beside this one saved its key first
            return False
        doc["api_key"] = generated  # tomlkit puts a new top-level key before the first [table], as TOML requires
        return True

    edit_config_file(cfg.config_path, add_key, "save the generated api key")
    if found is not None:
        cfg.api_key = str(found)
        return None
    cfg.api_key = generated
    return generated


# ---------------------------------------------------------------------------------------------------------
# Writing the config file. Three things change it besides the user's editor: the generated api key on first
# start, `agfast accounts client add|remove` ([[oauth.clients]]), and the admin API's saved settings. They go
# through one writer, `edit_config_file`: under a lock every agfast process shares, it reads the file as it is
# now, changes the tomlkit document (the user's comments, order and layout survive), checks that the result
# still parses and replaces the file atomically, so no writer loses another's change.

# The lock beside the config file (`.config.toml.lock`); a dot file, like atomic_write's temp files.
CONFIG_LOCK_SUFFIX = ".lock"


def config_lock(path: Path) -> Path:
    return path.with_name(f".{path.name}{CONFIG_LOCK_SUFFIX}")


def edit_config_file(path: Path, change: Callable[[tomlkit.TOMLDocument], bool | None], what: str = "save") -> None:
    """Apply `change` to the config file's document and save it (locked, atomic, comments kept); a `change`
    that returns False changed nothing and the file is left alone. ConfigError says why when the file cannot
    be read, parsed or written (`what`: the action, for that message)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(config_lock(path)):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            try:
                doc = tomlkit.parse(text)
            except tomlkit.exceptions.ParseError as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc}); fix it by hand first") from None
            if change(doc) is False:
                return
            new_text = tomlkit.dumps(doc)
            try:
                tomllib.loads(new_text)
            except tomllib.TOMLDecodeError as exc:  # pragma: no cover - tomlkit writes what it parsed
                raise ConfigError(f"{path}: editing it would leave invalid TOML ({exc}); edit it by hand") from None
            atomic_write(path, new_text.encode())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot {what}: {exc.strerror or type(exc).__name__}") from None


def _client_entries(doc: tomlkit.TOMLDocument) -> Any:
    """The document's oauth.clients array (of tables, or inline), created empty when missing."""
    oauth = doc.get("oauth")
    if oauth is None:
        oauth = tomlkit.table(is_super_table=True)  # no `[oauth]` header of its own: just [[oauth.clients]]
        doc.add("oauth", oauth)
    if not isinstance(oauth, dict):
        raise ConfigError("oauth is not a table in the config file; edit it by hand")
    clients = oauth.get("clients")
    if clients is None:
        clients = tomlkit.aot()
        oauth["clients"] = clients
    if not isinstance(clients, list):
        raise ConfigError("oauth.clients is not a list of tables in the config file; edit it by hand")
    return clients


def add_client_to_file(path: Path, client: OAuthClient) -> None:
    """Append a [[oauth.clients]] entry; a client with the same key is an error (remove it first)."""

    def add(doc: tomlkit.TOMLDocument) -> None:
        existing = parse_clients(_flatten(doc.unwrap()).get("oauth.clients", []))
        if any(c.key == client.key for c in existing):
            raise ConfigError(f"{path}: an OAuth client with key {client.key!r} exists already (remove it first)")
        clients = _client_entries(doc)
        entry = tomlkit.table() if isinstance(clients, tomlkit.items.AoT) else tomlkit.inline_table()
        entry.update(key=client.key, client_id=client.client_id, client_secret=client.client_secret, label=client.label)
        if isinstance(entry, tomlkit.items.Table):
            entry.add(tomlkit.nl())  # a blank line before whatever follows, as a person would leave it
        clients.append(entry)

    edit_config_file(path, add)


def remove_client_from_file(path: Path, key: str) -> bool:
    """Drop the [[oauth.clients]] entry with this key; False when the file has none (and is left as it was)."""
    if not path.exists():
        return False
    removed = False

    def remove(doc: tomlkit.TOMLDocument) -> bool:
        nonlocal removed
        oauth = doc.get("oauth")
        clients = oauth.get("clients") if isinstance(oauth, dict) else None
        if not isinstance(clients, list):
            return False
        for index, entry in enumerate(clients):
            if isinstance(entry, dict) and entry.get("key") == key:
                del clients[index]
                removed = True
                return True
        return False

    edit_config_file(path, remove)
    return removed


# Live config

log = logging.getLogger("agfast.config")

# Config-file keys that change while serving (admin API, config.toml edits, SIGHUP) → Config attribute. The
# request path reads these attributes on every use (or a listener rebuilds what it derived from them).
LIVE_KEYS: dict[str, str] = {
    "auth_mode": "auth_mode",
    "api_key": "api_key",
    "admin_password": "admin_password",
    "custom_mapping": "custom_mapping",
    "scheduling.mode": "scheduling_mode",
    "preferred_account_id": "preferred_account_id",
    "monitor.enabled": "monitor_enabled",
    "monitor.retention_days": "monitor_retention_days",
    "log_level": "log_level",
}
LIVE_ATTRS = frozenset(LIVE_KEYS.values())
# Live settings the HTTP shell derives its key checks from.
AUTH_ATTRS = frozenset({"auth_mode", "api_key", "admin_password"})
# Never shown by the admin API nor logged: masked (`sk-…abcd` for the api key, `***` for the others).
SECRET_ATTRS = frozenset({"api_key", "admin_password", "oauth_client_secret"})
# Attributes that are not settings from the sources a reload reads again.
_NOT_RELOADED = frozenset({"unknown_keys", "cli_overrides", "config_file", "data_dir", "demo"})
_ATTR_KEYS = {attr: key for key, attr in FILE_KEYS.items()}
_ATTR_KEYS["user_agent"] = "upstream.user_agent"


def mask_secret(attr: str, value: Any) -> Any:
    """What the admin API and the log show of a setting: secrets masked, the api key by its last 4 characters."""
    if attr not in SECRET_ATTRS or not value:
        return value
    if attr == "api_key" and isinstance(value, str) and len(value) > 12:
        return f"{value[:3]}…{value[-4:]}"
    return "***"


def public_view(cfg: Config) -> dict[str, Any]:
    """Every setting by its config-file key, secrets masked (GET /api/config)."""
    view: dict[str, Any] = {}
    for attr, key in _ATTR_KEYS.items():
        view[key] = mask_secret(attr, getattr(cfg, attr))
    zai = dataclasses.asdict(cfg.zai)
    zai["api_key"] = "***" if cfg.zai.api_key else ""
    view["zai"] = zai
    view["data_dir"] = str(cfg.data_dir)
    view["config_file"] = str(cfg.config_path)
    view["live_keys"] = sorted(LIVE_KEYS)
    return view


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """Changes whenever the file is edited or replaced (an editor's or our own atomic rename)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def save_keys(path: Path, values: Mapping[str, Any]) -> None:
    """Write `values` (config-file keys, dotted for tables) into the config file through `edit_config_file`;
    None removes a key."""

    def set_values(doc: tomlkit.TOMLDocument) -> None:
        for dotted, value in values.items():
            *tables, last = dotted.split(".")
            table: Any = doc
            for name in tables:
                if name not in table:
                    table[name] = tomlkit.table()
                table = table[name]
            if value is None:
                table.pop(last, None)
            else:
                table[last] = value

    edit_config_file(path, set_values)


Listener = Callable[[frozenset[str]], None]


class LiveConfig:
    """Applies setting changes to the running `config` object and tells listeners which attributes changed.

    Sources: the config file (its stamp polled on the server's tick), SIGHUP, the admin API. A reload resolves
    every source again exactly like start-up (CLI flags and environment still win) and compares the result with
    the previous resolution, so only what the user changed is applied; a bad file keeps the running config.
    """

    __slots__ = ("_resolved", "_stamp", "config", "listeners")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.listeners: list[Listener] = []
        self._stamp = _file_stamp(config.config_path)
        try:
            self._resolved = self._resolve()
        except ConfigError:
            self._resolved = dataclasses.replace(config)

    def _resolve(self) -> Config:
        cfg = self.config
        sources = {**cfg.cli_overrides, "data_dir": str(cfg.data_dir)}
        if cfg.config_file is not None:
            sources["config_file"] = str(cfg.config_file)
        return load(sources)

    def poll(self) -> None:
        """One stat per tick; a changed file is reloaded."""
        stamp = _file_stamp(self.config.config_path)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.reload(f"{self.config.config_path} changed")
            except Exception:  # the server's tick must go on whatever a listener did
                log.exception("applying the changed config failed")

    def reload(self, why: str) -> dict[str, Any]:
        """Resolve the sources again; apply what changed and can change live, log what needs a restart."""
        try:
            fresh = self._resolve()
        except ConfigError as exc:
            log.warning("%s: not applied, keeping the running config: %s", why, exc)
            return {}
        previous, self._resolved = self._resolved, fresh
        changed: dict[str, Any] = {}
        for f in fields(Config):
            name = f.name
            if name in _NOT_RELOADED or getattr(previous, name) == getattr(fresh, name):
                continue
            if name == "api_key" and fresh.api_key is None:
                # Start-up would generate a new key here; taking the key away live would lock every client out.
                log.warning("%s: api_key removed from the file; keeping the running key until a restart", why)
            elif name in LIVE_ATTRS:
                changed[name] = getattr(fresh, name)
            else:
                log.warning("%s: %s changed but needs a restart to take effect", why, _ATTR_KEYS.get(name, name))
        if changed:
            self.apply(changed, why)
        return changed

    def update(self, values: Mapping[str, Any]) -> list[str]:
        """The admin API's change: config-file keys (dotted or as tables) → validated, applied, saved to the
        config file; returns the keys set. ConfigError (naming the key) and nothing applied when one is wrong."""
        flat = _flatten(values)
        attrs: dict[str, Any] = {}
        for key, value in flat.items():
            attr = LIVE_KEYS.get(key)
            if attr is None:
                if key in FILE_KEYS or key.startswith("zai"):
                    raise ConfigError(f"{key} cannot change while serving: edit the config file and restart")
                raise ConfigError(f"unknown setting {key!r}; live settings: {', '.join(sorted(LIVE_KEYS))}")
            if value is None and attr not in _NULLABLE:
                raise ConfigError(f"{key} must not be null")
            attrs[attr] = None if value is None else _coerce(attr, value, key)
        if attrs.get("api_key") == "":
            raise ConfigError("api_key must not be empty (it would lock every client out)")
        candidate = dataclasses.replace(self.config, **attrs)
        _validate(candidate)
        attrs = {attr: getattr(candidate, attr) for attr in attrs}
        path = self.config.config_path
        save_keys(path, {_ATTR_KEYS[attr]: value for attr, value in attrs.items()})
        # What we wrote is what a reload would now find: the watcher must not apply (or log) it a second time.
        self._stamp = _file_stamp(path)
        for attr, value in attrs.items():
            setattr(self._resolved, attr, value)
        self.apply(attrs, "admin API")
        return [_ATTR_KEYS[attr] for attr in attrs]

    def apply(self, values: Mapping[str, Any], why: str) -> None:
        cfg = self.config
        for attr, value in values.items():
            setattr(cfg, attr, value)
            log.info("%s: %s is now %r", why, _ATTR_KEYS.get(attr, attr), mask_secret(attr, value))
        names = frozenset(values)
        for listener in self.listeners:
            listener(names)


# Live settings that may be cleared (null in JSON, absent from the file).
_NULLABLE = frozenset({"preferred_account_id", "admin_password"})
