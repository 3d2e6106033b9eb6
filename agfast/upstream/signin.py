"""Google sign-in (reference §4.3): the authorization URL, the pending flows, and the code → account step.

A flow starts with `start(redirect_uri)`: a random `state` and a PKCE S256 verifier are kept (bounded in number,
expiring) and Google's consent URL is returned. Google sends the browser back to `redirect_uri` with the code
and the state; `complete(state, code, error)` takes the flow out (so a state works once), exchanges the code
with the flow's client and verifier, then does what `accounts add` does — userinfo, project, tier, quota — and
saves the account. Nothing is written unless every step before the save worked: a failed sign-in leaves no
partial account. Used by `agfast accounts login` (its own one-shot loopback listener) and by the proxy's
`GET /auth/callback` (the dashboard's "Sign in with Google").
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agfast.config import Config, OAuthClient
from agfast.upstream import oauth
from agfast.upstream.accounts import Account, AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import Discovery, discover_grant, save_discovery
from agfast.upstream.proxy import ProxyFailure

# A user takes a minute or two on Google's consent page; after ten the flow is forgotten (Google's codes
# themselves last about that long).
FLOW_TTL = 600.0
# Flows waiting for their callback at once. A user starts one or two; the bound keeps a page that starts
# flows in a loop from growing memory (the oldest is dropped first).
MAX_PENDING = 32
# RFC 7636: a verifier of 43-128 characters; 64 random bytes give 86.
VERIFIER_BYTES = 64
STATE_BYTES = 24


class SignInError(Exception):
    """A sign-in that cannot finish; the text is for the user (no token in it)."""


@dataclass(slots=True)
class PendingFlow:
    client: OAuthClient
    redirect_uri: str
    verifier: str
    expires: float


@dataclass(slots=True)
class SignedIn:
    account: Account
    found: Discovery
    verb: str  # "added" / "updated" / "updated and re-enabled"


class SignIn:
    """Pending sign-ins of one process and the step that turns a callback into a saved account."""

    __slots__ = ("_flows", "client", "config", "on_added", "store", "ttl")

    def __init__(
        self,
        config: Config,
        client: UpstreamClient,
        store: AccountStore,
        on_added: Callable[[Account], None] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.on_added = on_added
        self.ttl = FLOW_TTL
        self._flows: OrderedDict[str, PendingFlow] = OrderedDict()

    def oauth_client(self, key: str | None = None) -> OAuthClient:
        """The client to sign in with: the one named, else the first configured."""
        chain = self.config.oauth_client_chain()
        if not chain:
            raise SignInError(oauth.NO_CLIENT_MESSAGE)
        if key is None:
            return chain[0]
        for client in chain:
            if client.key == key:
                return client
        raise SignInError(f"no OAuth client with key {key!r} (configured: {', '.join(c.key for c in chain)})")

    def start(self, redirect_uri: str, client_key: str | None = None) -> str:
        """A new flow; returns Google's consent URL for it."""
        client = self.oauth_client(client_key)
        self._expire(time.monotonic())
        while len(self._flows) >= MAX_PENDING:
            self._flows.popitem(last=False)
        state = secrets.token_urlsafe(STATE_BYTES)
        verifier = secrets.token_urlsafe(VERIFIER_BYTES)
        self._flows[state] = PendingFlow(client, redirect_uri, verifier, time.monotonic() + self.ttl)
        return oauth.authorization_url(self.config, client, redirect_uri, state, oauth.pkce_challenge(verifier))

    @property
    def pending(self) -> int:
        self._expire(time.monotonic())
        return len(self._flows)

    def _expire(self, now: float) -> None:
        for state in [s for s, flow in self._flows.items() if flow.expires <= now]:
            del self._flows[state]

    async def complete(self, state: str, code: str | None, error: str | None = None) -> SignedIn:
        """The callback's parameters → a saved account, or SignInError saying why not (nothing saved)."""
        flow = self._flows.pop(state, None) if state else None
        if flow is None or flow.expires <= time.monotonic():
            raise SignInError(
                "unknown or expired sign-in (the state does not match a pending sign-in): start the sign-in again"
            )
        if error:
            if error == "access_denied":
                raise SignInError("Google sign-in was denied (access_denied): consent was not given")
            raise SignInError(f"Google sign-in failed: {error[:200]}")
        if not code:
            raise SignInError("the callback carried no authorization code")
        cfg = self.config
        try:
            grant = await oauth.exchange_code(
                self.client.session_for(cfg.oauth_token_url), cfg, flow.client, code, flow.verifier, flow.redirect_uri
            )
        except oauth.OAuthError as exc:
            hint = ""
            if exc.error in oauth.CLIENT_ERRORS:
                hint = f" (is the secret of OAuth client {flow.client.key!r} right? another one: --client KEY)"
            raise SignInError(f"the authorization code exchange failed: {exc}{hint}") from None
        except TimeoutError:
            raise SignInError(f"Google's token endpoint did not answer within {cfg.request_timeout:g} s") from None
        except ProxyFailure as exc:
            raise SignInError(exc.message) from None
        try:
            found = await discover_grant(self.client, grant, flow.client.key)
        except (oauth.OAuthError, oauth.AccountSetupError) as exc:
            raise SignInError(f"signed in, but the account cannot be set up: {exc}") from None
        except TimeoutError:
            raise SignInError(f"Google did not answer within {cfg.request_timeout:g} s") from None
        except ProxyFailure as exc:
            raise SignInError(exc.message) from None
        if not grant.refresh_token:  # pragma: no cover - exchange_code insists on one
            raise SignInError("Google returned no refresh token")
        account, verb = save_discovery(self.store, found, grant.refresh_token)
        if self.on_added is not None:
            self.on_added(account)
        return SignedIn(account, found, verb)
