"""Real coding agents from the npm registry, installed once into a cache shared by test runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest
from helpers import in_ci

CACHE = Path(os.environ.get("AGFAST_TEST_NPM_CACHE", Path.home() / ".cache" / "agfast-tests" / "npm"))
# A cold install of an agent CLI takes seconds on a good link; give slow mirrors room, but bound it.
INSTALL_TIMEOUT = 600


def unavailable(reason: str) -> NoReturn:
    """Skip locally (no node, offline laptop); in CI a missing agent CLI is a broken pipeline: fail."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: real-CLI tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def npm_binary(package: str, version: str, binary: str) -> Path:
    """Path to `binary` from `package@version`, installing it on first use; skips the test when impossible
    (fails instead under CI=true)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        unavailable(f"{package}: node/npm not installed")
    prefix = CACHE / f"{package.replace('/', '__')}@{version}"
    exe = prefix / "node_modules" / ".bin" / binary
    if exe.exists():
        return exe
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{package}@{version}"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        unavailable(f"{package}@{version}: npm install timed out (registry unreachable?)")
    if done.returncode != 0 or not exe.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        unavailable(f"{package}@{version}: npm install failed: {' | '.join(tail)}")
    return exe
