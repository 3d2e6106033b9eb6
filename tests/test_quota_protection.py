"""Quota protection (reference §4.7): the last of an account's quota for a model stays for its owner's IDE.

Fixed-account mode prefers LOW, whose gemini-3-flash quota is nearly spent: the choice of account is then the
protection's doing, not P2C's coin. As in the reference, a model's quota is its group's (models sharing a
normalized id, e.g. the Gemini Flash family) best percentage, so the whole group is spent here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import ServerThread, request
from stack import agfast_on, generations, start_sim

from agfast.convert.models import normalize_to_standard_id
from agfast.sim import MODEL_CATALOG, GoogleSimulator

SIM_ACCOUNTS = 2
LOW, HIGH = "demo1@sim.local", "demo2@sim.local"
PROTECTED = "gemini-3-flash"
ON = {"quota_protection_enabled": True, "preferred_account_id": LOW}
FLASH_GROUP = [m for m in MODEL_CATALOG if normalize_to_standard_id(m) == PROTECTED]


def spend(sim: GoogleSimulator, email: str, fraction: float) -> None:
    for model in FLASH_GROUP:
        sim.accounts[email].remaining[model] = fraction


@pytest.fixture
def sim() -> Iterator[GoogleSimulator]:
    """LOW has 5 % of gemini-3-flash left (below the default 10 % threshold), HIGH all of it."""
    with start_sim(accounts=SIM_ACCOUNTS) as simulator:
        spend(simulator, LOW, 0.05)
        yield simulator


def chat(st: ServerThread, model: str) -> tuple[int, str, str]:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Who keeps my quota?"}]})
    reply = request(st.port, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    message = reply.json().get("error", {}).get("message", "") if reply.status != 200 else ""
    return reply.status, reply.headers.get("x-account-email", ""), message


CASES = [
    # (config, model, who serves)
    (ON, PROTECTED, HIGH),  # LOW is below the threshold for it: skipped, another serves
    (ON, "claude-sonnet-4-6", LOW),  # other models still use LOW
    ({**ON, "quota_protection_models": ["claude-sonnet-4-6"]}, PROTECTED, LOW),  # only listed models are protected
    ({**ON, "quota_protection_threshold": 5}, PROTECTED, LOW),  # 5 % is not below 5 %
    ({"preferred_account_id": LOW}, PROTECTED, LOW),  # off by default
]


@pytest.mark.parametrize(("config", "model", "served_by"), CASES)
def test_protected_account_is_skipped_for_that_model_only(
    sim: GoogleSimulator, tmp_path: Path, config: dict[str, object], model: str, served_by: str
) -> None:
    with agfast_on(sim, tmp_path, **config) as st:
        for _ in range(3):
            status, who, message = chat(st, model)
            assert (status, who) == (200, served_by), message


def test_every_account_protected_is_a_clear_503(sim: GoogleSimulator, tmp_path: Path) -> None:
    spend(sim, HIGH, 0.02)
    with agfast_on(sim, tmp_path, **ON) as st:
        status, _, message = chat(st, PROTECTED)
        assert status == 503
        assert "Quota protection" in message and "below 10%" in message and "quota resets in" in message
        assert generations(sim) == []  # nothing was sent to Google
        assert chat(st, "claude-sonnet-4-6")[:2] == (200, LOW)
