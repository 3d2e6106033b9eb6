"""`agfast --demo`: the real proxy in front of the in-process Google simulator, with three demo accounts.

Everything but Google is real: the accounts are onboarded through the same token/userinfo/project/quota
flow as `agfast accounts add`, into a temporary data dir that is removed on exit.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from agfast.config import Config
from agfast.sim import GoogleSimulator, demo_accounts
from agfast.upstream.accounts import AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import discover, save_discovery

DEMO_ACCOUNTS = 3
# The simulator's OAuth client, like the one a real user configures for their own refresh tokens.
DEMO_CLIENT_ID = "agfast-demo.apps.sim.local"
DEMO_CLIENT_SECRET = "agfast-demo-secret"


class Demo:
    __slots__ = ("data_dir", "emails", "sim")

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="agfast-demo-"))
        self.sim = GoogleSimulator(
            accounts=demo_accounts(DEMO_ACCOUNTS), client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET
        )
        self.emails: list[str] = []

    async def start(self, config: Config) -> None:
        """Start the simulator and point `config` (data dir, endpoints, OAuth URLs) at it."""
        await self.sim.start(host="127.0.0.1", port=0)
        config.data_dir = self.data_dir
        config.config_file = None
        config.upstream_endpoints = [self.sim.endpoint]
        config.oauth_token_url = self.sim.token_url
        config.userinfo_url = self.sim.userinfo_url
        config.oauth_client_id = DEMO_CLIENT_ID
        config.oauth_client_secret = DEMO_CLIENT_SECRET
        client = UpstreamClient(config)
        try:
            store = AccountStore(self.data_dir)
            for account in self.sim.accounts.values():
                found = await discover(client, account.refresh_token)
                saved, _ = save_discovery(store, found, account.refresh_token)
                self.emails.append(saved.email)
        finally:
            await client.close()

    async def stop(self) -> None:
        await self.sim.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
