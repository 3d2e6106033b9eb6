"""agfast + the Google simulator on loopback, accounts onboarded the real way (token, userinfo, project, quota)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import ServerThread

from agfast.config import Config
from agfast.sim import Fault, GoogleSimulator, SimulatorThread, demo_accounts
from agfast.sim.records import RecordedRequest
from agfast.upstream.accounts import AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import discover, save_discovery

CLIENT_ID = "agfast-tests.apps.sim.local"
CLIENT_SECRET = "agfast-tests-secret"
KEY = "sk-stack-test-key"


def start_sim(accounts: int = 3, **kwargs: Any) -> SimulatorThread:
    sim = GoogleSimulator(accounts=demo_accounts(accounts), client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **kwargs)
    return SimulatorThread(sim)


def stack_config(data_dir: Path, sim: GoogleSimulator, **overrides: Any) -> Config:
    cfg = Config(
        data_dir=data_dir,
        port=0,
        api_key=KEY,
        auth_mode="off",
        upstream_endpoints=[sim.endpoint],
        oauth_token_url=sim.token_url,
        userinfo_url=sim.userinfo_url,
        oauth_client_id=CLIENT_ID,
        oauth_client_secret=CLIENT_SECRET,
        retry_wait_scale=0.01,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def google_env(sim: GoogleSimulator) -> dict[str, str]:
    """The environment that points an agfast child process at this simulator (endpoints and OAuth client)."""
    return {
        "AGFAST_UPSTREAM_ENDPOINTS": sim.endpoint,
        "AGFAST_OAUTH_TOKEN_URL": sim.token_url,
        "AGFAST_USERINFO_URL": sim.userinfo_url,
        "AGFAST_OAUTH_CLIENT_ID": CLIENT_ID,
        "AGFAST_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
    }


def onboard_all(cfg: Config, sim: GoogleSimulator, emails: list[str] | None = None) -> AccountStore:
    store = AccountStore(cfg.data_dir)

    async def run() -> None:
        client = UpstreamClient(cfg)
        try:
            for account in sim.accounts.values():
                if emails is None or account.email in emails:
                    found = await discover(client, account.refresh_token)
                    save_discovery(store, found, account.refresh_token)
        finally:
            await client.close()

    asyncio.run(run())
    return store


@contextmanager
def agfast_on(sim: GoogleSimulator, data_dir: Path, **overrides: Any) -> Iterator[ServerThread]:
    """A fresh agfast (own data dir and pool) in front of a running simulator, faults and log cleared."""
    sim.clear_faults()
    cfg = stack_config(data_dir, sim, **overrides)
    onboard_all(cfg, sim)
    sim.clear_requests()
    sim.refresh_count.clear()
    with ServerThread(cfg) as st:
        yield st


def generations(sim: GoogleSimulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.action in ("streamGenerateContent", "generateContent")]


__all__ = ["Fault", "agfast_on", "generations", "google_env", "start_sim"]


def ask_in_session(base_url: str, session: str, text: str = "Say hello to the shared pool") -> str:
    """One Claude Code-style request with a session id; the e-mail of the account that answered."""
    import anthropic

    with anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-6",
            max_tokens=32,
            messages=[{"role": "user", "content": text}],
            extra_headers={"X-Claude-Code-Session-Id": session},
        )
    return raw.headers["x-account-email"]
