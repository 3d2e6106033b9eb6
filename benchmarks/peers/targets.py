"""How each proxy is started in front of the fast upstream, and what a request to it looks like.

agfast speaks v1internal to the upstream; nginx, Portkey and LiteLLM speak OpenAI to the same process, which
writes both shapes in writes of the same sizes. Every process binds 127.0.0.1 on a port chosen here.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .install import LITELLM_BIN, PORTKEY_ENTRY, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from load import LISTENING, agfast_cmd, clean_env, upstream_env

MODEL = "gemini-3-flash"
# Two messages, as a chat client sends them: a system prompt and a question.
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Benchmark prompt: say something short please"},
]
MASTER_KEY = "sk-peers-bench-master"
STARTUP_SECONDS = 120.0  # LiteLLM imports for a long while on a busy 2-core machine
SIM_REFRESH = "1//sim-refresh-demo1"
# Lines of a process's own output shown when it fails to start: enough for a Python traceback's end.
LOG_TAIL_LINES = 15
POLL_SECONDS = 0.1


class StartFailure(RuntimeError):
    """A process of the run did not come up (or answered its first request wrongly): what, why, its last output."""

    def __init__(self, what: str, reason: str, log: Path | None = None) -> None:
        self.what, self.reason = what, reason
        tail = log_tail(log) if log is not None else ""
        super().__init__(f"{what}: {reason}" + (f"\n--- last lines of {log} ---\n{tail}" if tail else ""))


@functools.cache
def log_dir() -> Path:
    """One scratch directory per run for output that outlives a Session (the upstreams'), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="peers-logs-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def log_tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return ""


def spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[str]:
    """Start `cmd` with stdout and stderr in `log` (read back when it fails to start)."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True)


def start_listening(what: str, cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], int]:
    """Start an agfast-style program (port 0) and read its port from its "listening on http://host:PORT" line."""
    proc = spawn(cmd, env, log, ROOT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return proc, int(found.group(1))
        if proc.poll() is not None:
            raise StartFailure(what, f"exited with {proc.returncode} before listening", log)
        time.sleep(POLL_SECONDS)
    proc.kill()
    proc.wait(5)
    raise StartFailure(what, f"did not print its port within {STARTUP_SECONDS:.0f} s", log)


def chat_body(stream: bool) -> bytes:
    import orjson

    return orjson.dumps({"model": MODEL, "stream": stream, "messages": MESSAGES})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(what: str, proc: subprocess.Popen[str], port: int, log: Path, probe: str | None = None) -> None:
    """Until the port accepts (and `probe`, if given, answers 200), or fail saying why, with its last output."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartFailure(what, f"exited with {proc.returncode} before listening on {port}", log)
        try:
            if probe is None:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait(5)
    raise StartFailure(what, f"did not listen on {port} within {STARTUP_SECONDS:.0f} s", log)


@dataclass(slots=True)
class Running:
    """A started proxy: its process (the root of the tree charged for CPU), port and request shape."""

    proc: subprocess.Popen[str]
    port: int
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)
    log: Path | None = None  # its stdout and stderr

    def request(self, stream: bool) -> bytes:
        body = chat_body(stream)
        lines = [f"POST {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream mock {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(upstream_port: int, work: Path) -> Running:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, upstream=upstream_port, port=port))
    log = work / "nginx.log"
    proc = spawn(["nginx", "-c", str(conf), "-p", str(work)], dict(os.environ), log, work)
    wait_ready("nginx", proc, port, log)
    return Running(proc, port, log=log)


def start_agfast(upstream_port: int, work: Path, extensions: bool) -> Running:
    env = upstream_env(upstream_port)
    if not extensions:
        env["AGFAST_NO_EXTENSIONS"] = "1"
    data_dir = tempfile.mkdtemp(prefix="agfast-", dir=work)
    what = "agfast" if extensions else "agfast (AGFAST_NO_EXTENSIONS=1)"
    added = subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH,
                            "--data-dir", data_dir], env=env, capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    if added.returncode != 0:
        log = work / "accounts-add.log"
        log.write_text(added.stdout + added.stderr)
        raise StartFailure(what, f"`agfast accounts add` exited with {added.returncode}", log)
    log = work / "agfast.log"
    proc, port = start_listening(what, agfast_cmd(data_dir), env, log)
    if "accounts: 0" in log.read_text(errors="replace"):
        proc.terminate()
        proc.wait(15)
        raise StartFailure(what, "started with no account (onboarding against the fast upstream failed)", log)
    return Running(proc, port, log=log)


def start_portkey(upstream_port: int, work: Path) -> Running:
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    log = work / "portkey.log"
    proc = spawn(["node", str(PORTKEY_ENTRY), f"--port={port}", "--headless"], env, log, work)
    wait_ready("Portkey", proc, port, log)
    headers = {
        "Authorization": "Bearer sk-upstream",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
    }
    return Running(proc, port, headers=headers, log=log)


LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-upstream
litellm_settings:
  telemetry: false
"""


def start_litellm(upstream_port: int, work: Path) -> Running:
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(model=MODEL, upstream=upstream_port))
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the model price list at start
        "LITELLM_LOG": "ERROR",
    }
    cmd = [str(LITELLM_BIN), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    log = work / "litellm.log"
    proc = spawn(cmd, env, log, work)
    wait_ready("LiteLLM", proc, port, log, "/health/liveliness")
    return Running(proc, port, headers={"Authorization": f"Bearer {MASTER_KEY}"}, log=log)


# name -> (what it is, how to start it in front of an upstream on a port, in a scratch dir)
TARGETS: dict[str, Callable[[int, Path], Running]] = {
    "nginx": start_nginx,
    "agfast-c": lambda up, work: start_agfast(up, work, extensions=True),
    "agfast-py": lambda up, work: start_agfast(up, work, extensions=False),
    "portkey": start_portkey,
    "litellm": start_litellm,
}
LABELS = {
    "nginx": "nginx proxy_pass (floor)",
    "agfast-c": "agfast (compiled)",
    "agfast-py": "agfast (AGFAST_NO_EXTENSIONS=1)",
    "portkey": "Portkey gateway",
    "litellm": "LiteLLM (1 worker)",
    "direct": "upstream direct",
}


def start_upstream(chunks: int, chunk_delay: float = 0.0) -> tuple[subprocess.Popen[str], int]:
    """The simulator in fast mode, as its own process (its CPU is never charged to a proxy)."""
    cmd = [sys.executable, "-m", "agfast", "sim", "--fast", "--port", "0", "--chunks", str(chunks)]
    cmd += ["--chunk-delay", str(chunk_delay)]
    log = Path(tempfile.mkdtemp(prefix="upstream-", dir=log_dir())) / "upstream.log"
    return start_listening(f"the fast upstream ({chunks} events)", cmd, clean_env(), log)


def direct(upstream: subprocess.Popen[str], port: int, shape: str) -> Running:
    """The upstream itself as a target: the OpenAI path (nginx/Portkey/LiteLLM's view) or v1internal (agfast's)."""
    if shape == "openai":
        return Running(upstream, port)
    return Running(upstream, port, "/v1internal:streamGenerateContent?alt=sse", {"Authorization": "Bearer x"})
