"""`python -m agfast` as a user runs it: start-up line, key generation, failures, signals, both hot paths."""

from __future__ import annotations

import argparse
import io
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import sse_module
from helpers import AgfastProcess, request, run_agfast, seed_account

from agfast.cli import build_parser, say


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    seed_account(tmp_path)
    return tmp_path


def test_serves_with_each_hot_path(data_dir: Path, impl: str) -> None:
    sse_module(impl)  # "c" needs the build
    with AgfastProcess("--port", "0", "--data-dir", str(data_dir), impl=impl) as proc:
        line = proc.lines[-1]
        assert f"hot path: {impl}" in line
        assert "auth: off" in line and "accounts: 1" in line
        assert request(proc.port, "GET", "/healthz").json()["status"] == "ok"
        assert proc.stop() == 0


def test_no_account_still_serves(tmp_path: Path) -> None:
    """Starting empty is how a new user begins; the proxy routes' 503s are in test_pool_health."""
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path)) as proc:
        assert "accounts: 0" in proc.lines[-1]
        assert request(proc.port, "GET", "/healthz").json()["status"] == "ok"
        assert proc.stop() == 0
    assert "agfast: no usable account yet: add one with 'agfast accounts add'" in proc.stderr_text
    assert "Traceback" not in proc.stderr_text


def test_first_start_generates_and_persists_key(data_dir: Path) -> None:
    tmp_path = data_dir
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path)) as proc:
        generated = [line for line in proc.lines if "generated API key" in line]
        assert len(generated) == 1
        key = generated[0].split("generated API key ")[1].split()[0]
        assert proc.stop() == 0
    assert f'api_key = "{key}"' in (tmp_path / "config.toml").read_text()
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path), "--auth-mode", "strict") as proc:
        assert not any("generated API key" in line for line in proc.lines)
        assert request(proc.port, "GET", "/healthz").status == 401
        assert request(proc.port, "GET", "/healthz", headers={"x-api-key": key}).status == 200
        proc.stop()


def test_precedence_end_to_end(data_dir: Path) -> None:
    tmp_path = data_dir
    (tmp_path / "config.toml").write_text('api_key = "sk-file-key-0001"\nauth_mode = "strict"\n')
    env = {"AGFAST_AUTH_MODE": "all_except_health"}
    cases = [((), {}, "strict"), ((), env, "all_except_health"), (("--auth-mode", "off"), env, "off")]
    for flags, environ, mode in cases:
        with AgfastProcess("--port", "0", "--data-dir", str(tmp_path), *flags, env=environ) as proc:
            assert f"auth: {mode}" in proc.lines[-1]
            proc.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_exit_zero(data_dir: Path, sig: int) -> None:
    tmp_path = data_dir
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path)) as proc:
        assert request(proc.port, "GET", "/healthz").status == 200
        assert proc.stop(sig) == 0


def test_port_in_use_is_one_line_exit_1(data_dir: Path) -> None:
    tmp_path = data_dir
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_agfast("--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.endswith(f"\nagfast: cannot bind 127.0.0.1:{port}: address already in use\n")
    assert "Traceback" not in result.stderr


BAD_START = [
    (("--api-key", "abc"), "agfast: api_key must start with 'sk-' and be at least 10 characters long\n"),
    (("--port", "70000"), "agfast: port must be between 0 and 65535 (got 70000)\n"),
]


@pytest.mark.parametrize(("flags", "stderr"), BAD_START)
def test_bad_settings_refused_at_start(tmp_path: Path, flags: tuple[str, ...], stderr: str) -> None:
    result = run_agfast("--data-dir", str(tmp_path), *flags)
    assert result.returncode == 2
    assert result.stderr == stderr


def test_bad_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("port = [\n")
    result = run_agfast("--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("agfast: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_help_shows_defaults() -> None:
    out = run_agfast("--help").stdout
    for fragment in ("default: 8045", "default: 127.0.0.1", "--allow-lan", "--auth-mode", "serve", "sim"):
        assert fragment in out
    assert "--port" in run_agfast("serve", "--help").stdout


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def _parser_for(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


COMMANDS = list(_subcommands(build_parser()))


def test_every_command_is_covered() -> None:
    assert {("serve",), ("sim",), ("accounts",), ("accounts", "remove"), ("accounts", "list")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "agfast")
def test_every_help_has_a_description_and_defaults(command: tuple[str, ...]) -> None:
    out = run_agfast(*command, "--help").stdout
    # usage block, blank line, then the description paragraph (not straight into an options section)
    after_usage = out.split("\n\n", 1)[1].lstrip("\n")
    first = after_usage.splitlines()[0]
    assert first and not first.endswith(":"), out
    flat = " ".join(out.split())
    for action in _parser_for(command)._actions:
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings or action.help is None:
            continue
        assert f"(default: {action.default})" in flat, (action.option_strings, out)


def test_serve_subcommand_and_lan_flag(data_dir: Path) -> None:
    tmp_path = data_dir
    with AgfastProcess("serve", "--port", "0", "--data-dir", str(tmp_path), "--allow-lan") as proc:
        assert "listening on http://0.0.0.0:" in proc.lines[-1]
        assert "auth: all_except_health" in proc.lines[-1]
        assert request(proc.port, "GET", "/healthz").status == 200
        assert request(proc.port, "GET", "/v1/models").status == 401
        proc.stop()


def test_sim_subcommand_serves_google_endpoints() -> None:
    with AgfastProcess("sim", "--port", "0") as proc:
        form = b"grant_type=refresh_token&refresh_token=1//sim-refresh-demo1&client_id=c&client_secret=s"
        reply = request(proc.port, "POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status == 200
        assert reply.json()["access_token"].startswith("ya29.")
        bad = request(proc.port, "POST", "/token", form.replace(b"demo1", b"nobody"),
                      {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert bad.status == 400 and bad.json()["error"] == "invalid_grant"
        assert proc.stop() == 0


def test_debug_level_writes_an_access_log_without_secrets(data_dir: Path) -> None:
    key = "sk-access-log-test-key"
    with AgfastProcess("--port", "0", "--data-dir", str(data_dir), "--log-level", "debug",
                       "--auth-mode", "strict", "--api-key", key) as proc:  # fmt: skip
        assert request(proc.port, "GET", "/healthz", headers={"Authorization": f"Bearer {key}"}).status == 200
        assert request(proc.port, "GET", "/nope").status == 401
        assert proc.stop() == 0
    assert " GET /healthz 200 " in proc.stderr_text
    assert " GET /nope 401 " in proc.stderr_text
    assert key not in proc.stderr_text and "seed-refresh" not in proc.stderr_text and "ya29" not in proc.stderr_text


class _Writes(io.RawIOBase):
    """A raw stream that records each write call, as the kernel would see them on a shared pipe."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_a_start_up_line_leaves_in_one_write_even_unbuffered(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `--workers` every worker writes its start-up line to the same stdout pipe; under PYTHONUNBUFFERED
    `print` writes the text and the newline apart and two workers' lines ran together (a test waiting for two
    "worker pid" lines then saw one). One write per line keeps each line whole (writes under PIPE_BUF are atomic)."""
    raw = _Writes()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))  # as -u makes it
    print("what print does", flush=True)
    assert raw.writes == [b"what print does", b"\n"]  # the interleaving this guards against
    raw.writes.clear()
    say("agfast listening on http://127.0.0.1:1 (worker pid: 1)")
    assert raw.writes == [b"agfast listening on http://127.0.0.1:1 (worker pid: 1)\n"]
