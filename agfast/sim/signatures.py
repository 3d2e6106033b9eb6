"""Thought signatures the sim has issued, so a replayed history can be checked like Google checks it."""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections import OrderedDict

__all__ = ["SKIP_SIGNATURE", "SignatureBook", "is_base64"]

# Google documents this value as accepted in place of a real signature for Gemini function calls.
SKIP_SIGNATURE = "skip_thought_signature_validator"

_B64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


def is_base64(value: str) -> bool:
    """proto3 JSON `bytes` accepts standard or URL-safe base64, padded or not."""
    if not _B64.match(value):
        return False
    return len(value.rstrip("=")) % 4 != 1


class SignatureBook:
    """Issued signature -> model family; bounded so long benchmarks do not grow without limit."""

    __slots__ = ("_issued", "_limit", "_lock")

    def __init__(self, limit: int = 200_000) -> None:
        self._issued: OrderedDict[str, str] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def issue(self, family: str) -> str:
        raw = b"sim-thought:" + family.encode() + b":" + secrets.token_bytes(42)
        sig = base64.b64encode(raw).decode()
        with self._lock:
            self._issued[sig] = family
            if len(self._issued) > self._limit:
                self._issued.popitem(last=False)
        return sig

    def family_of(self, sig: str) -> str | None:
        return self._issued.get(sig)

    def __len__(self) -> int:
        return len(self._issued)
