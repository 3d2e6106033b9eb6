"""Ids of what agfast answers (completions, messages, tool calls, response items): unique, not secret.

One random prefix per process and a counter after it, instead of `os.urandom` per id (a getrandom system call
and a bytes object per request): ids never repeat within a process, and two processes' ids differ by their
prefixes (a forked worker draws its own). The shapes stay what clients know: `chatcmpl-` + 24 hex digits, etc.
"""

from __future__ import annotations

import itertools
import os

# Random hex digits each process puts in front of its counter: 48 bits, so two processes' prefixes collide
# with odds of one in 2^48 (and even then only ids with the same counter value would).
PREFIX_DIGITS = 12

_prefix = ""
_count = itertools.count().__next__


def _draw() -> None:
    """A fresh prefix and counter: at import and in every forked child (workers must not share the parent's)."""
    global _prefix, _count
    _prefix = os.urandom(PREFIX_DIGITS // 2).hex()
    _count = itertools.count(1).__next__


_draw()
os.register_at_fork(after_in_child=_draw)


def hex24() -> str:
    """24 hex digits unique in this process and (by its prefix) across processes."""
    return f"{_prefix}{_count():012x}"


def hex32() -> str:
    """32 hex digits, the same way (Responses ids)."""
    return f"{_prefix}{_count():020x}"
