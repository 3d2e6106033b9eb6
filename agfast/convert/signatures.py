"""Thought signatures remembered between turns (reference §6.7), so tool calls carry them back to Google.

Google signs its reasoning; the next turn's functionCall parts must carry that signature or thinking models
reject the request. Clients drop it (OpenAI has no field for it) or send it in a form we must check
(Anthropic `thinking.signature`). Three bounded maps, entries expire after two hours:

    signature → model family ("claude" / "gemini"): a signature only works with the family that made it
    tool call id → signature: the call's own signature, for the turn that sends its result back
    session → latest signature: for calls whose id the client rewrote
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

TTL = 2 * 3600.0
# Entry limits per map (reference: 500 / 200 / 1000); small, because only recent turns matter.
MAX_FAMILIES = 1000
MAX_TOOL_CALLS = 500
MAX_SESSIONS = 200
# Shorter "signatures" are placeholders some clients invent; Google's are far longer.
MIN_SIGNATURE_LEN = 50
# Google accepts this sentinel in place of a signature for Gemini models whose history has none.
SKIP_VALIDATOR = "skip_thought_signature_validator"


def family_of(model: str) -> str:
    return "claude" if "claude" in model.lower() else "gemini"


class _Bounded:
    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._limit = limit

    def put(self, key: str, value: str, now: float) -> None:
        self._data[key] = (now + TTL, value)
        self._data.move_to_end(key)
        while len(self._data) > self._limit:
            self._data.popitem(last=False)

    def get(self, key: str, now: float) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < now:
            del self._data[key]
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._data)


@dataclass(slots=True)
class SignatureCache:
    families: _Bounded
    tool_calls: _Bounded
    sessions: _Bounded

    @classmethod
    def create(cls) -> SignatureCache:
        return cls(_Bounded(MAX_FAMILIES), _Bounded(MAX_TOOL_CALLS), _Bounded(MAX_SESSIONS))

    def remember(
        self, signature: str, model: str, *, session: str | None = None, tool_call_id: str | None = None
    ) -> None:
        """Record a signature Google produced for `model` (optionally tied to a session and a tool call)."""
        if len(signature) < MIN_SIGNATURE_LEN:
            return
        now = time.monotonic()
        self.families.put(signature, family_of(model), now)
        if session:
            self.sessions.put(session, signature, now)
        if tool_call_id:
            self.tool_calls.put(tool_call_id, signature, now)

    def family(self, signature: str) -> str | None:
        return self.families.get(signature, time.monotonic())

    def for_tool_call(self, tool_call_id: str) -> str | None:
        return self.tool_calls.get(tool_call_id, time.monotonic())

    def for_session(self, session: str) -> str | None:
        return self.sessions.get(session, time.monotonic())

    def usable_for(self, signature: str | None, model: str) -> bool:
        """A signature may go upstream for `model`: long enough, and not known to belong to the other family."""
        if not signature or len(signature) < MIN_SIGNATURE_LEN:
            return False
        known = self.family(signature)
        return known is None or known == family_of(model)
