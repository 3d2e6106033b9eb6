"""How each proxy is started in front of the fast upstream, and what a request to it looks like.

agfast speaks v1internal to the upstream; nginx, Portkey and LiteLLM speak OpenAI to the same process, which
writes both shapes in writes of the same sizes. Every process binds 127.0.0.1 on a port chosen here.
"""

from __future__ import annotations

import os
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
from load import agfast_cmd, clean_env, start, upstream_env

MODEL = "gemini-3-flash"
# Two messages, as a chat client sends them: a system prompt and a question.
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Benchmark prompt: say something short please"},
]
MASTER_KEY = "sk-peers-bench-master"
STARTUP_SECONDS = 120.0  # LiteLLM imports for a long while on a busy 2-core machine
SIM_REFRESH = "1//sim-refresh-demo1"


def chat_body(stream: bool) -> bytes:
    import orjson

    return orjson.dumps({"model": MODEL, "stream": stream, "messages": MESSAGES})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes] | subprocess.Popen[str], port: int, probe: str | None = None) -> None:
    """Until the port accepts (and `probe`, if given, answers 200), or fail with the process's exit code."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening")
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
    raise RuntimeError(f"{proc.args} did not listen on {port} within {STARTUP_SECONDS:.0f} s")


@dataclass(slots=True)
class Running:
    """A started proxy: its process (the root of the tree charged for CPU), port and request shape."""

    proc: subprocess.Popen[str]
    port: int
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)

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
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL, text=True)
    wait_ready(proc, port)
    return Running(proc, port)


def start_agfast(upstream_port: int, work: Path, extensions: bool) -> Running:
    env = upstream_env(upstream_port)
    if not extensions:
        env["AGFAST_NO_EXTENSIONS"] = "1"
    data_dir = tempfile.mkdtemp(prefix="agfast-", dir=work)
    subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH,
                    "--data-dir", data_dir], env=env, check=True, capture_output=True, cwd=ROOT)  # fmt: skip
    proc, port = start(agfast_cmd(data_dir), env)
    return Running(proc, port)


def start_portkey(upstream_port: int, work: Path) -> Running:
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    proc = subprocess.Popen(["node", str(PORTKEY_ENTRY), f"--port={port}", "--headless"], env=env, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    wait_ready(proc, port)
    headers = {
        "Authorization": "Bearer sk-upstream",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
    }
    return Running(proc, port, headers=headers)


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
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    wait_ready(proc, port, "/health/liveliness")
    return Running(proc, port, headers={"Authorization": f"Bearer {MASTER_KEY}"})


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
    return start(cmd, clean_env())


def direct(upstream: subprocess.Popen[str], port: int, shape: str) -> Running:
    """The upstream itself as a target: the OpenAI path (nginx/Portkey/LiteLLM's view) or v1internal (agfast's)."""
    if shape == "openai":
        return Running(upstream, port)
    return Running(upstream, port, "/v1internal:streamGenerateContent?alt=sse", {"Authorization": "Bearer x"})
