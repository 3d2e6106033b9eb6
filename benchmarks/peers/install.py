"""Installs the peers once, pinned, into benchmarks/.peers/ (gitignored): each step is skipped when already done.

nginx and wrk come from Debian (apt-get: needs root), Portkey's gateway from npm, LiteLLM into its own venv,
matplotlib into this venv (its pin is the `bench` extra in pyproject.toml).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / ".peers"
PORTKEY_DIR = CACHE / "portkey"
LITELLM_VENV = CACHE / "litellm"

PORTKEY_VERSION = "1.15.2"
# Portkey's own range pulls a newer @hono/node-server whose streaming breaks; 1.13.8 is the one that works.
HONO_NODE_SERVER_VERSION = "1.13.8"
# The newest LiteLLM whose `proxy` extra resolves from PyPI (1.110.x needs an unpublished litellm-proxy).
# Never 1.82.7 / 1.82.8: those releases were compromised.
LITELLM_VERSION = "1.106.2"
BANNED_LITELLM = frozenset({"1.82.7", "1.82.8"})
APT_PACKAGES = {"nginx": "nginx-light", "wrk": "wrk"}

PORTKEY_ENTRY = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_debian_tools() -> None:
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", *missing], env=env)


def ensure_portkey() -> None:
    manifest = {
        "name": "agfast-peers-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
    }
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    package_json = PORTKEY_DIR / "package.json"
    text = json.dumps(manifest, indent=2) + "\n"
    if PORTKEY_ENTRY.exists() and package_json.exists() and package_json.read_text() == text:
        return
    package_json.write_text(text)
    _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTKEY_DIR)


def ensure_litellm() -> None:
    if LITELLM_VERSION in BANNED_LITELLM:
        raise SystemExit(f"LiteLLM {LITELLM_VERSION} is a compromised release: refusing to install it")
    if LITELLM_BIN.exists() and installed_litellm() == LITELLM_VERSION:
        return
    if not (LITELLM_VENV / "bin" / "pip").exists():
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
    _run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"])


def installed_litellm() -> str:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return ""
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def matplotlib_pin() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(req for req in extras["bench"] if req.startswith("matplotlib"))


def ensure_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _run([sys.executable, "-m", "pip", "install", "-q", matplotlib_pin()])


def ensure_all(peers: set[str]) -> None:
    """Install what the chosen targets need; agfast itself is this checkout."""
    ensure_debian_tools()
    if "portkey" in peers:
        ensure_portkey()
    if "litellm" in peers:
        ensure_litellm()
    ensure_matplotlib()


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def _npm_version(package: str) -> str:
    manifest = PORTKEY_DIR / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else ""


def versions() -> dict[str, str]:
    """What actually ran, read from the installed programs rather than from the pins."""
    return {
        "nginx": _first_line(["nginx", "-v"]).split("/")[-1],
        "wrk": _first_line(["wrk", "-v"]).split(" [")[0].removeprefix("wrk "),
        "node": _first_line(["node", "--version"]),
        "portkey": _npm_version("@portkey-ai/gateway"),
        "hono_node_server": _npm_version("@hono/node-server"),
        "litellm": installed_litellm(),
    }
