"""Crash-safe file writes: readers see the old file or the new one, never half of either.

Writers that must not interleave across processes (a server saving an account while `agfast accounts remove`
deletes it) hold `exclusive(lock_path)` around their read-check-write; a temp file left by a writer killed
mid-write is found with `stale_temp_files`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; single-writer use only
    fcntl = None  # type: ignore[assignment]

# Account files and the config hold refresh tokens and API keys: owner-only.
SECRET_FILE_MODE = 0o600
# atomic_write's temp names: `.<name>.<random>.tmp` beside the target (dot: hidden from `*.json` globs).
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: bytes, mode: int = SECRET_FILE_MODE) -> None:
    """Write via a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def stale_temp_files(directory: Path, name: str = "*") -> list[Path]:
    """Temp files atomic_write left in `directory` for targets matching `name` (only a killed writer leaves
    one); callers must hold the lock their writers hold, or a live write's temp file would be taken."""
    try:
        return sorted(directory.glob(f"{TEMP_PREFIX}{name}.*{TEMP_SUFFIX}"))
    except OSError:
        return []


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock shared by every process (and thread) that opens `lock_path`; held until exit."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, SECRET_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable; not possible (nor needed) on every platform."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
