"""Sizes for the standing reliability campaigns: bounded in the normal test run, full size on request.

`AGFAST_RELIABILITY_FULL=1 pytest tests/reliability -s` runs every campaign at the size the README's reliability
section reports; without it each campaign runs a small slice of the same code so CI stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

FULL = os.environ.get("AGFAST_RELIABILITY_FULL", "") not in ("", "0")


def size(bounded: int | float, full: int | float) -> int | float:
    """The campaign size for this run."""
    return full if FULL else bounded


def knob(name: str, bounded: float, full: float) -> float:
    """A campaign size that one variable (`name`) can also set on its own, e.g. for a longer flood."""
    value = os.environ.get(name)
    return float(value) if value else size(bounded, full)  # type: ignore[arg-type]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory (or `VmHWM`, its peak) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def report(name: str, **figures: object) -> None:
    """One line a campaign prints (visible with -s) so its figures can be copied into the README."""
    print(f"\n[campaign] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
