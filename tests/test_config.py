"""Settings precedence (defaults < config file < AGFAST_* env < CLI) and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from agfast import config
from agfast.config import ConfigError, load


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PRECEDENCE = [
    # (file text, env, cli, attribute, expected)
    ("", {}, {}, "port", 8045),
    ("port = 9001\n", {}, {}, "port", 9001),
    ("port = 9001\n", {"AGFAST_PORT": "9002"}, {}, "port", 9002),
    ("port = 9001\n", {"AGFAST_PORT": "9002"}, {"port": 9003}, "port", 9003),
    ("", {}, {}, "auth_mode", "auto"),
    ('auth_mode = "strict"\n', {}, {}, "auth_mode", "strict"),
    ('auth_mode = "strict"\n', {"AGFAST_AUTH_MODE": "off"}, {}, "auth_mode", "off"),
    (
        'auth_mode = "strict"\n',
        {"AGFAST_AUTH_MODE": "off"},
        {"auth_mode": "all_except_health"},
        "auth_mode",
        "all_except_health",
    ),
    ('api_key = "sk-from-file-1"\n', {"AGFAST_API_KEY": "sk-from-env-22"}, {}, "api_key", "sk-from-env-22"),
    ("allow_lan_access = true\n", {}, {}, "bind_host", "0.0.0.0"),
    ("allow_lan_access = true\n", {"AGFAST_HOST": "127.0.0.2"}, {}, "bind_host", "127.0.0.2"),
    ('host = "127.0.0.3"\n', {}, {"allow_lan_access": True}, "bind_host", "127.0.0.3"),
    ("", {}, {"allow_lan_access": True}, "effective_auth_mode", "all_except_health"),
    ("", {}, {}, "effective_auth_mode", "off"),
    ("", {}, {"host": "0.0.0.0"}, "effective_auth_mode", "all_except_health"),
    ("", {}, {"host": "::1"}, "effective_auth_mode", "off"),
    ('[scheduling]\nmode = "PerformanceFirst"\n', {}, {}, "scheduling_mode", "PerformanceFirst"),
    (
        '[upstream]\nendpoints = ["http://127.0.0.1:1/v1internal/"]\n',
        {},
        {},
        "upstream_endpoints",
        ["http://127.0.0.1:1/v1internal"],
    ),
    (
        "",
        {"AGFAST_UPSTREAM_ENDPOINTS": "http://a/v1internal, http://b/v1internal"},
        {},
        "upstream_endpoints",
        ["http://a/v1internal", "http://b/v1internal"],
    ),
    ('[custom_mapping]\n"gpt-4*" = "gemini-3-flash"\n', {}, {}, "custom_mapping", {"gpt-4*": "gemini-3-flash"}),
    ('[zai]\nenabled = true\ndispatch_mode = "fallback"\n', {}, {}, "zai.dispatch_mode", "fallback"),
    ("[monitor]\nenabled = false\n", {}, {}, "monitor_enabled", False),
    ("", {"AGFAST_NO_EXTENSIONS": "1"}, {}, "no_extensions", True),
    ('[oauth]\nclient_id = "cid"\n', {"AGFAST_OAUTH_CLIENT_ID": "env-cid"}, {}, "oauth_client_id", "env-cid"),
    # Every config key has its AGFAST_ twin (dots → _), typed like the file's value.
    ("client_stall_timeout = 9\n", {"AGFAST_CLIENT_STALL_TIMEOUT": "12.5"}, {}, "client_stall_timeout", 12.5),
    ("", {"AGFAST_UPSTREAM_RETRY_WAIT_SCALE": "0.5"}, {}, "retry_wait_scale", 0.5),
    ("", {"AGFAST_SCHEDULING_MODE": "PerformanceFirst"}, {}, "scheduling_mode", "PerformanceFirst"),
    ("", {"AGFAST_MONITOR_ENABLED": "false"}, {}, "monitor_enabled", False),
    ("[monitor]\nretention_days = 7\nmax_body_bytes = 4096\n", {}, {}, "monitor_retention_days", 7),
    ("[monitor]\nmax_body_bytes = 4096\n", {}, {}, "monitor_max_body_bytes", 4096),
    ("", {"AGFAST_MONITOR_RETENTION_DAYS": "0"}, {}, "monitor_retention_days", 0),
    ("metrics_public = true\n", {}, {}, "metrics_public", True),
    ("", {"AGFAST_METRICS_PUBLIC": "1"}, {}, "metrics_public", True),
    ("", {}, {}, "metrics_public", False),
    ("", {"AGFAST_MAX_BODY_SIZE": "2048"}, {}, "max_body_size", 2048),
    ("", {"AGFAST_OAUTH_USERINFO_URL": "http://u/info"}, {}, "userinfo_url", "http://u/info"),
    ("", {"AGFAST_CUSTOM_MAPPING": '{"gpt-4*": "gemini-3-flash"}'}, {}, "custom_mapping", {"gpt-4*": "gemini-3-flash"}),
]


def attr(cfg: config.Config, dotted: str) -> object:
    value: object = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("text", "env", "cli", "name", "expected"), PRECEDENCE)
def test_precedence(tmp_path: Path, text: str, env: dict, cli: dict, name: str, expected: object) -> None:  # type: ignore[type-arg]
    write(tmp_path / "config.toml", text)
    cfg = load({"data_dir": str(tmp_path), **cli}, env)
    assert attr(cfg, name) == expected


def test_data_dir_from_env_and_explicit_config_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "config.toml", "port = 7001\n")
    assert load({}, {"AGFAST_DATA_DIR": str(tmp_path / "d")}).port == 7001
    other = write(tmp_path / "other.toml", "port = 7002\n")
    cfg = load({"config_file": str(other)}, {"AGFAST_DATA_DIR": str(tmp_path / "d")})
    assert cfg.port == 7002
    assert cfg.config_path == other


INVALID = [
    ('port = "eighty"\n', {}, {}, "port must be an integer"),
    ("", {"AGFAST_PORT": "x"}, {}, "AGFAST_PORT: port must be an integer"),
    ('auth_mode = "sometimes"\n', {}, {}, "auth_mode must be one of"),
    ('api_key = "abc"\n', {}, {}, "must start with 'sk-'"),
    ("", {"AGFAST_API_KEY": "sk-short"}, {}, "at least 10 characters"),
    ("port = [\n", {}, {}, "invalid TOML"),
    ('[upstream]\nendpoints = ["https://example.test/api"]\n', {}, {}, "ending in /v1internal"),
    ("", {"AGFAST_ALLOW_LAN": "maybe"}, {}, "true or false"),
    ("[zai]\nbogus = 1\n", {}, {}, "unknown key zai.bogus"),
    ("max_body_size = 10\n", {}, {}, "at least 1024 bytes"),
    ("[monitor]\nretention_days = -1\n", {}, {}, "monitor.retention_days must be 0"),
    ("", {"AGFAST_MONITOR_MAX_BODY_BYTES": "lots"}, {}, "monitor_max_body_bytes must be an integer"),
    ("", {"AGFAST_CUSTOM_MAPPING": "{not json"}, {}, "AGFAST_CUSTOM_MAPPING: custom_mapping must be a JSON object"),
    ("", {"AGFAST_CUSTOM_MAPPING": '{"a": 1}'}, {}, "AGFAST_CUSTOM_MAPPING: custom_mapping must be a table"),
    ("", {"AGFAST_CLIENT_STALL_TIMEOUT": "0"}, {}, "client_stall_timeout must be positive"),
    ("", {"AGFAST_REDIS_URL": "localhost:6379"}, {}, "state.redis_url must be a redis://, rediss:// or unix:// URL"),
    ("[state]\ntimeout = 0\n", {}, {}, "state.timeout must be more than 0 and at most 5 seconds"),
    ("", {}, {"workers": -1}, "workers must be 0 (one per core) or more"),
]


@pytest.mark.parametrize(("text", "env", "cli", "fragment"), INVALID)
def test_invalid_settings_are_one_clear_error(tmp_path: Path, text: str, env: dict, cli: dict, fragment: str) -> None:  # type: ignore[type-arg]
    write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as info:
        load({"data_dir": str(tmp_path), **cli}, env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_file_keys_are_reported(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", "prot = 1\n[scheduling]\nmood = 2\n")
    assert load({"data_dir": str(tmp_path)}, {}).unknown_keys == ["prot", "scheduling.mood"]


def test_generated_key_is_saved_atomically_first_and_reused(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", '[scheduling]\nmode = "Balance"\n')
    cfg = load({"data_dir": str(tmp_path)}, {})
    key = config.ensure_api_key(cfg)
    assert key is not None and key.startswith("sk-") and len(key) == 35
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600
    again = load({"data_dir": str(tmp_path)}, {})
    assert again.api_key == key
    assert again.scheduling_mode == "Balance"  # the table after the inserted key still parses
    assert config.ensure_api_key(again) is None


def test_explicit_empty_key_means_no_key(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", 'api_key = ""\n')
    cfg = load({"data_dir": str(tmp_path)}, {})
    assert config.ensure_api_key(cfg) is None
    assert cfg.api_key == ""
