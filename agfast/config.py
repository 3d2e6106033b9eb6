"""The one place settings are resolved: defaults < config file < AGFAST_* environment < CLI flags.

Everything derived from settings (key bytes, bind address, effective auth mode) is computed here once, so the
request path only reads attributes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from agfast.fileio import atomic_write

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
    "monitor.enabled": "monitor_enabled",
    "allowed_hosts": "allowed_hosts",
    "cors.allowed_origins": "cors_allowed_origins",
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
    "AGFAST_NO_EXTENSIONS": "no_extensions",
    "AGFAST_CLIENT_VERSION": "client_version",
    "AGFAST_ALLOWED_HOSTS": "allowed_hosts",
    "AGFAST_CORS_ALLOWED_ORIGINS": "cors_allowed_origins",
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
    "retry_wait_scale": float,
    "stream_idle_timeout": float,
    "token_timeout": float,
    "quota_refresh_interval": float,
    "accounts_reload_interval": float,
    "no_extensions": bool,
    "demo": bool,
}
# Settings that are lists of strings (comma-separated in the environment) → what an entry looks like.
_LISTS = {
    "allowed_hosts": "a list of host names",
    "cors_allowed_origins": "a list of origins",
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
    for url in cfg.upstream_endpoints:
        if not url.startswith(("http://", "https://")) or not url.endswith("/v1internal"):
            raise ConfigError(f"upstream endpoint must be an http(s) URL ending in /v1internal (got {url!r})")
    if not cfg.upstream_endpoints:
        raise ConfigError("upstream.endpoints must list at least one URL")
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
        from agfast.upstream.proxy import ProxyURLError, parse_proxy

        try:
            parse_proxy(cfg.upstream_proxy)
        except ProxyURLError as exc:
            raise ConfigError(f"upstream.proxy: {exc}") from None
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: give both (--tls-cert FILE --tls-key FILE) or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(cfg, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: {path} is not a readable file")
    from agfast.http.access import parse_networks

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
    key = "sk-" + secrets.token_hex(16)
    path = cfg.config_path
    existing = b""
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    # Top-level keys must precede every [table] in TOML, so the key goes first.
    line = f'api_key = "{key}"\n'.encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, line + existing)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save the generated api key: {exc.strerror}") from None
    cfg.api_key = key
    return key
