"""The simulator's HTTP face: OAuth token + userinfo, and `…/v1internal:<method>` under any path prefix."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .accounts import DEPRECATED_MODEL_IDS, MODEL_CATALOG, TIERS, ModelSpec, SimAccount, supported_mime_types
from .answers import CacheBook, build_answer, count_tokens, render_chunks
from .errors import (
    AUTH_INVALID,
    AUTH_MISSING,
    SimError,
    error_info,
    google_error,
    human_duration,
    retry_info,
    rfc3339,
)
from .faults import Fault, FaultBook, fault_error_body, oauth_fault_body
from .records import RecordedRequest
from .signatures import SignatureBook
from .signin import CodeBook, loopback_redirect, redirect_with
from .validate import field, validate_count_request, validate_envelope, validate_generate_request

__all__ = ["GoogleSimulator", "RecordedRequest"]

SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
    "https://www.googleapis.com/auth/userinfo.profile openid https://www.googleapis.com/auth/cclog "
    "https://www.googleapis.com/auth/experimentsandconfigs"
)
V1INTERNAL = re.compile(r"^(?P<prefix>.*)/v1internal:(?P<method>[A-Za-z]+)$")
AUTHORIZE_PATH = "/o/oauth2/v2/auth"
USERINFO_SUFFIXES = ("/oauth2/v2/userinfo", "/oauth2/v1/userinfo", "/userinfo/v2/me")
V1_METHODS = frozenset(
    {"loadCodeAssist", "fetchAvailableModels", "generateContent", "streamGenerateContent", "countTokens"}
)
GENERATE = frozenset({"generateContent", "streamGenerateContent"})
JSON_TYPE = "application/json; charset=UTF-8"
SSE_END = b"\r\n\r\n"  # Google frontends end each SSE event with CRLF CRLF
ANTIGRAVITY_UA = re.compile(r"antigravity/(\d+(?:\.\d+)*)", re.IGNORECASE)
ALLOWED_HOSTS = frozenset({"127.0.0.1", "::1"})


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(slots=True)
class _StreamPlan:
    abort_after: int | None = None
    error_after: int | None = None
    error_body: dict[str, Any] | None = None
    empty: bool = False


class GoogleSimulator:
    """A local stand-in for Google's OAuth, userinfo and Cloud Code `v1internal` endpoints.

    Start it inside a running event loop (`await sim.start()`), or use `SimulatorThread` from sync code.
    """

    def __init__(
        self,
        accounts: Iterable[SimAccount] | None = None,
        *,
        chunks: int = 3,
        chunk_delay: float = 0.0,
        access_token_ttl: int = 3599,
        client_id: str | None = None,
        client_secret: str | None = None,
        min_client_version: str | None = None,
        record: bool = True,
        cache_min_tokens: int = 1024,
        catalog: Mapping[str, ModelSpec] | None = None,
        clients: Mapping[str, str] | None = None,
    ) -> None:
        # What this "Google" says about each model (fetchAvailableModels) and enforces when serving it; entries
        # given here replace the built-in catalog's, so a test can describe a model differently.
        self.catalog: dict[str, ModelSpec] = {**MODEL_CATALOG, **(catalog or {})}
        self.accounts: dict[str, SimAccount] = {}
        for account in accounts or ():
            self.add_account(account)
        self.chunks = max(1, chunks)
        self.chunk_delay = chunk_delay
        self.access_token_ttl = access_token_ttl
        self.client_id = client_id
        self.client_secret = client_secret
        # More OAuth clients (client_id → secret) besides client_id/client_secret; tokens issued by sign-in
        # are bound to the client that asked, and another client refreshing them is `unauthorized_client`.
        self.clients: dict[str, str] = dict(clients or {})
        # Sign-in: who consents (None: the first account) and whether consent is given ("approve" / "deny").
        self.signin_email: str | None = None
        self.consent = "approve"
        self.codes = CodeBook()
        # Refresh tokens issued by sign-in: token → (email, client_id).
        self.grants: dict[str, tuple[str, str]] = {}
        self.min_client_version = min_client_version
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.cancelled: list[RecordedRequest] = []
        self.refresh_count: Counter[str] = Counter()
        self.signatures = SignatureBook()
        self.cache = CacheBook(cache_min_tokens)
        self._faults = FaultBook()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def endpoint(self) -> str:
        return self.base_url + "/v1internal"

    def endpoint_at(self, prefix: str) -> str:
        """The v1internal base under a path prefix, e.g. endpoint_at("/a") -> http://…/a/v1internal."""
        return self.base_url + "/" + prefix.strip("/") + "/v1internal" if prefix.strip("/") else self.endpoint

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def auth_url(self) -> str:
        return self.base_url + AUTHORIZE_PATH

    @property
    def userinfo_url(self) -> str:
        return self.base_url + "/oauth2/v2/userinfo"

    @property
    def faults(self) -> list[Fault]:
        return self._faults.snapshot()

    def script(self, fault: Fault) -> Fault:
        self._faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def clear_requests(self) -> None:
        self.requests.clear()
        self.cancelled.clear()

    def add_account(self, account: SimAccount) -> SimAccount:
        self.accounts[account.email] = account
        return account

    def issue_access_token(self, email: str, ttl: float | None = None) -> str:
        """Mint an access token directly (as a refresh would), without counting a refresh."""
        if email not in self.accounts:
            raise KeyError(email)
        token = f"ya29.sim-{next(self._ids)}-{secrets.token_urlsafe(24)}"
        self._tokens[token] = (email, time.time() + (self.access_token_ttl if ttl is None else ttl))
        return token

    def expire_access_tokens(self, email: str | None = None) -> None:
        for token, (owner, _) in list(self._tokens.items()):
            if email is None or owner == email:
                self._tokens[token] = (owner, 0.0)

    def requests_for(self, action: str | None = None, email: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if (action is None or r.action == action) and (email is None or r.email == email)
        ]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ALLOWED_HOSTS:
            raise ValueError(f"the simulator binds loopback only (127.0.0.1 or ::1), not {host!r}")
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._host = host
        self._port = int(runner.addresses[0][1])
        self._stopping = False

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await runner.cleanup()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        match = V1INTERNAL.match(path)
        if match:
            action, prefix = match["method"], match["prefix"]
        elif path.endswith("/token"):
            action, prefix = "token", path[: -len("/token")]
        elif path.endswith(AUTHORIZE_PATH):
            action, prefix = "authorize", path[: -len(AUTHORIZE_PATH)]
        else:
            suffix = next((s for s in USERINFO_SUFFIXES if path.endswith(s)), None)
            action, prefix = ("userinfo", path[: -len(suffix)]) if suffix else ("unknown", "")
        body = await request.read()
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            time=time.time(),
            action=action,
            prefix=prefix.rstrip("/"),
        )
        if self.record:
            self.requests.append(rec)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._handle(request, rec)
        except SimError as exc:
            return self._json(rec, exc.status, exc.body, exc.headers)
        except asyncio.CancelledError:
            if not self._stopping and not rec.aborted and not rec.finished:
                rec.client_disconnected = True
                self.cancelled.append(rec)
            raise
        except ConnectionError:
            if not rec.aborted:
                rec.client_disconnected = True
                self.cancelled.append(rec)
            return web.Response(status=499)
        finally:
            if task is not None:
                self._tasks.discard(task)

    def _json(
        self, rec: RecordedRequest, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        rec.status = status
        rec.finished = True
        all_headers = {"Server": "ESF", "Vary": "Origin, X-Origin, Referer"}
        if headers:
            all_headers.update(headers)
        return web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type="application/json",
            charset="UTF-8",
            headers=all_headers,
        )

    async def _handle(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        if rec.action == "token":
            if request.method != "POST":
                raise SimError(405, google_error(405, "Method Not Allowed"))
            return await self._token(request, rec)
        if rec.action == "userinfo":
            return await self._userinfo(request, rec)
        if rec.action == "authorize":
            return self._authorize(rec)
        if rec.action not in V1_METHODS:
            raise SimError(404, google_error(404, f"Method not found: {rec.path}"))
        if request.method != "POST":
            raise SimError(404, google_error(404, "Method not found."))
        return await self._v1internal(request, rec)

    # ------------------------------------------------------------------ faults
    async def _apply_fault(
        self, request: web.Request, rec: RecordedRequest
    ) -> tuple[Fault | None, web.StreamResponse | None]:
        """Returns (fault, response): a response ends the request; a fault alone shapes the normal answer."""
        fault = self._faults.take(rec.email, rec.model, rec.action, rec.prefix)
        if fault is None:
            return None, None
        rec.fault = fault.kind
        if fault.delay and fault.kind != "hang":
            await asyncio.sleep(fault.delay)
        kind = fault.kind
        if kind == "slow_first_byte":
            return fault, None
        if kind == "hang":
            await asyncio.Event().wait()  # until the client leaves (handler cancelled) or the sim stops
        if kind == "invalid_grant":
            return fault, self._json(
                rec,
                400,
                {"error": "invalid_grant", "error_description": fault.message or "Token has been expired or revoked."},
            )
        if kind == "disconnect" and rec.action != "streamGenerateContent":
            await self._abort(request, rec)
        if kind == "status" or (kind == "stream_error" and rec.action != "streamGenerateContent"):
            if rec.action == "token":
                status, body = oauth_fault_body(fault)
                return fault, self._json(rec, status, body)
            error = fault_error_body(fault, rec.model)
            return fault, self._json(rec, error["error"]["code"], error)
        if kind == "empty_stream" and rec.action != "streamGenerateContent":
            return fault, self._json(rec, 200, {"response": {}, "traceId": self._trace_id()})
        return fault, None

    async def _abort(self, request: web.Request, rec: RecordedRequest) -> None:
        rec.aborted = True
        transport = request.transport
        if transport is not None:
            transport.abort()
        await asyncio.sleep(30)  # handler_cancellation delivers CancelledError once the loss is noticed
        raise ConnectionResetError("aborted by disconnect fault")

    # ------------------------------------------------------------------ OAuth
    async def _token(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        form = self._parse_form(request, rec.body)
        rec.form = form
        refresh = form.get("refresh_token")
        account = next((a for a in self.accounts.values() if refresh and a.refresh_token == refresh), None)
        issued_to: str | None = account.client_id if account else None
        if account is None and refresh in self.grants:
            email, issued_to = self.grants[refresh]
            account = self.accounts.get(email)
        rec.email = account.email if account else None
        _, response = await self._apply_fault(request, rec)
        if response is not None:
            return response

        def oauth_error(status: int, error: str, description: str) -> web.Response:
            return self._json(rec, status, {"error": error, "error_description": description})

        grant = form.get("grant_type", "")
        if grant not in ("refresh_token", "authorization_code"):
            return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        client = form.get("client_id")
        if not client:
            return oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        known = self._client_secrets()
        if known is not None and client not in known:
            return oauth_error(401, "invalid_client", "The OAuth client was not found.")
        secret = form.get("client_secret")
        if not secret:
            return oauth_error(400, "invalid_request", "client_secret is missing.")
        if known is not None and known[client] is not None and secret != known[client]:
            return oauth_error(401, "invalid_client", "Unauthorized")
        if grant == "authorization_code":
            code, error, description = self.codes.redeem(
                form.get("code", ""), client, form.get("redirect_uri", ""), form.get("code_verifier", "")
            )
            if code is None:
                return oauth_error(400, error, description)
            account = self.accounts.get(code.email)
            if account is None or account.revoked:
                return oauth_error(400, "invalid_grant", "Account has been deleted")
            rec.email = account.email
            refresh = f"1//sim-signin-{next(self._ids)}-{secrets.token_urlsafe(24)}"
            self.grants[refresh] = (account.email, client)
            issued_to = client
        if not refresh:
            return oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        if account is None or account.revoked:
            return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        if issued_to is not None and issued_to != client:
            return oauth_error(401, "unauthorized_client", "Unauthorized")
        self.refresh_count[account.email] += 1
        access = self.issue_access_token(account.email)
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "azp": client,
            "aud": client,
            "sub": account.user_id,
            "email": account.email,
            "email_verified": True,
            "at_hash": _b64url(hashlib.sha256(access.encode()).digest()[:16]),
            "name": account.name,
            "iat": now,
            "exp": now + self.access_token_ttl,
        }
        id_token = ".".join(
            (
                _b64url(orjson.dumps({"alg": "RS256", "kid": "sim", "typ": "JWT"})),
                _b64url(orjson.dumps(claims)),
                _b64url(secrets.token_bytes(64)),
            )
        )
        body = {
            "access_token": access,
            "expires_in": self.access_token_ttl,
            "scope": SCOPES,
            "token_type": "Bearer",
            "id_token": id_token,
        }
        if grant == "authorization_code":
            body["refresh_token"] = refresh
        return self._json(rec, 200, body, {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})

    def _client_secrets(self) -> dict[str, str | None] | None:
        """The OAuth clients this Google knows (client_id → secret, None: any secret), or None: any client."""
        if self.client_id is None and not self.clients:
            return None
        known: dict[str, str | None] = dict(self.clients)
        if self.client_id is not None:
            known[self.client_id] = self.client_secret
        return known

    def _authorize(self, rec: RecordedRequest) -> web.Response:
        """The consent page, approved (or denied) at once: a 302 back to the app's loopback redirect URI."""
        q = rec.query
        client, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
        known = self._client_secrets()

        def page(status: int, text: str) -> web.Response:
            rec.status, rec.finished = status, True
            return web.Response(status=status, text=f"Error {status}: {text}", content_type="text/html")

        if not client or (known is not None and client not in known):
            return page(401, "invalid_client: The OAuth client was not found.")
        if not loopback_redirect(redirect_uri):
            return page(400, "redirect_uri_mismatch")
        missing = [k for k in ("response_type", "scope", "state", "code_challenge") if not q.get(k)]
        if missing or q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return page(400, f"invalid_request: {', '.join(missing) or 'response_type=code with S256 PKCE'}")
        state = q["state"]
        if q.get("sim_consent", self.consent) == "deny":
            location = redirect_with(redirect_uri, {"error": "access_denied", "state": state})
        else:
            email = q.get("login_hint") or self.signin_email or next(iter(self.accounts), "")
            if email not in self.accounts:
                return page(400, f"no such account: {email}")
            code = self.codes.issue(email, client, redirect_uri, q["code_challenge"])
            rec.email = email
            location = redirect_with(redirect_uri, {"state": state, "code": code, "scope": SCOPES})
        rec.status, rec.finished = 302, True
        return web.Response(status=302, headers={"Location": location})

    @staticmethod
    def _parse_form(request: web.Request, body: bytes) -> dict[str, str]:
        if request.content_type == "application/json":
            try:
                data = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                return {}
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        pairs += list(request.query.items())
        return dict(pairs)

    def _bearer(self, request: web.Request, rec: RecordedRequest) -> tuple[str | None, str | None]:
        """(email, problem) where problem is "missing" / "invalid" / "expired" / None."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not token.strip():
            return None, "missing"
        entry = self._tokens.get(token.strip())
        if entry is None:
            return None, "invalid"
        email, expiry = entry
        if time.time() >= expiry:
            return email, "expired"
        return email, None

    @staticmethod
    def _auth_error(problem: str, method: str) -> SimError:
        reason = {"missing": "CREDENTIALS_MISSING", "expired": "ACCESS_TOKEN_EXPIRED"}.get(
            problem, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        )
        meta = {"service": "cloudcode-pa.googleapis.com", "method": f"google.internal.cloud.code.v1internal.{method}"}
        message = AUTH_MISSING if problem == "missing" else AUTH_INVALID
        headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
        if problem != "missing":
            headers["WWW-Authenticate"] += ', error="invalid_token"'
        return SimError(401, google_error(401, message, [error_info(reason, meta, "googleapis.com")]), headers)

    async def _userinfo(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        email, problem = self._bearer(request, rec)
        rec.email = email if problem is None else None
        _, response = await self._apply_fault(request, rec)
        if response is not None:
            return response
        if problem is not None or email not in self.accounts:
            raise self._auth_error(problem or "invalid", "Userinfo")
        account = self.accounts[email]
        digest = hashlib.sha256(account.email.encode()).hexdigest()
        body = {
            "id": account.user_id,
            "email": account.email,
            "verified_email": True,
            "name": account.name,
            "given_name": account.name.split(" ")[0],
            "family_name": " ".join(account.name.split(" ")[1:]) or account.name,
            "picture": f"https://lh3.googleusercontent.com/a/sim-{digest[:24]}=s96-c",
        }
        return self._json(rec, 200, body)

    # ------------------------------------------------------------------ v1internal
    async def _v1internal(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        email, problem = self._bearer(request, rec)
        rec.email = email if problem is None else None
        try:
            payload: Any = orjson.loads(rec.body) if rec.body.strip() else {}
        except orjson.JSONDecodeError:
            payload = None
            bad_json = True
        else:
            bad_json = False
            rec.json = payload
            if isinstance(payload, dict) and isinstance(payload.get("model"), str):
                rec.model = payload["model"]
        fault, response = await self._apply_fault(request, rec)
        if response is not None:
            return response
        if problem is not None or email not in self.accounts:
            raise self._auth_error(problem or "invalid", f"CloudCode.{rec.action[0].upper()}{rec.action[1:]}")
        account = self.accounts[email]
        if bad_json:
            snippet = rec.body[:40].decode("utf-8", "replace")
            raise SimError(400, google_error(400, f"Invalid JSON payload received. Unexpected token.\n{snippet}\n^"))
        user_project = request.headers.get("x-goog-user-project")
        if user_project and user_project != account.project_id:
            raise SimError(
                403,
                google_error(
                    403,
                    f"Caller does not have required permission to use project {user_project}. Grant the caller "
                    "the roles/serviceusage.serviceUsageConsumer role, or a custom role with the "
                    "serviceusage.services.use permission, by visiting https://console.developers.google.com/"
                    f"iam-admin/iam/admin?project={user_project} and then retry. Propagation of the new "
                    "permission may take a few minutes.",
                    [
                        error_info(
                            "USER_PROJECT_DENIED",
                            {"consumer": f"projects/{user_project}", "service": "cloudcode-pa.googleapis.com"},
                            "googleapis.com",
                        )
                    ],
                ),
            )
        if rec.action == "loadCodeAssist":
            return self._json(rec, 200, self._load_code_assist(account, payload))
        if rec.action == "fetchAvailableModels":
            if not isinstance(payload, dict):
                raise SimError(400, google_error(400, "Invalid JSON payload received. Expected an object."))
            project = payload.get("project")
            if project:
                self._check_project(account, project, "fetchAvailableModels")
            return self._json(rec, 200, self._available_models(account))
        if rec.action == "countTokens":
            req = validate_count_request(payload)
            return self._json(rec, 200, {"totalTokens": count_tokens(req)})
        return await self._generate(request, rec, account, payload, fault)

    def _check_project(self, account: SimAccount, project: str, method: str) -> None:
        if project == account.project_id:
            return
        if any(a.project_id == project for a in self.accounts.values()):
            resource = f"//cloudaicompanion.googleapis.com/projects/{project}/locations/global"
            permission = "cloudaicompanion.companions.generateChat"
            raise SimError(
                403,
                google_error(
                    403,
                    f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
                    [
                        error_info(
                            "IAM_PERMISSION_DENIED",
                            {"permission": permission, "resource": resource},
                            "cloudaicompanion.googleapis.com",
                        )
                    ],
                ),
            )
        raise SimError(404, google_error(404, f"Resource projects/{project} could not be found."))

    @staticmethod
    def _load_code_assist(account: SimAccount, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise SimError(400, google_error(400, "Invalid JSON payload received. Expected an object."))
        current, paid = TIERS[account.tier]
        current_tier = {
            **current,
            "description": "Cloud Code Assist tier for " + str(current["name"]),
            "privacyNotice": {},
        }
        allowed = [
            {"id": "free-tier", "name": "Free", "description": "Free tier", "isDefault": account.tier == "FREE"},
            {
                "id": "standard-tier",
                "name": "Gemini Code Assist",
                "description": "Standard tier",
                "userDefinedCloudaicompanionProject": True,
                **({"isDefault": True} if account.tier != "FREE" else {}),
            },
        ]
        for tier in allowed:
            if tier.get("isDefault") is False:
                del tier["isDefault"]  # proto3 JSON leaves false out
        body: dict[str, Any] = {
            "currentTier": current_tier,
            "allowedTiers": allowed,
            "cloudaicompanionProject": account.project_id,
        }
        if paid is not None:
            body["paidTier"] = {**paid, "description": str(paid["name"]) + " subscription"}
        return body

    def _available_models(self, account: SimAccount) -> dict[str, Any]:
        reset = rfc3339(time.time() + account.reset_after)
        models: dict[str, Any] = {}
        for name in account.models:
            spec = spec_for(name, self.catalog)
            quota: dict[str, Any] = {"resetTime": reset}
            fraction = account.remaining_fraction(name)
            if fraction > 0:  # proto3 JSON drops zero values, so an exhausted model has no remainingFraction
                quota = {"remainingFraction": fraction, "resetTime": reset}
            entry: dict[str, Any] = {
                "displayName": spec.display_name,
                "quotaInfo": quota,
                "maxTokens": spec.max_tokens,
                "maxOutputTokens": spec.max_output_tokens,
            }
            if spec.supports_thinking:
                entry["supportsThinking"] = True
                entry["thinkingBudget"] = spec.thinking_budget
            if spec.supports_images:
                entry["supportsImages"] = True
                entry["supportedMimeTypes"] = supported_mime_types(spec)
            if spec.recommended:
                entry["recommended"] = True
            entry["modelProvider"] = {
                "gemini": "MODEL_PROVIDER_GOOGLE",
                "claude": "MODEL_PROVIDER_ANTHROPIC",
                "gpt": "MODEL_PROVIDER_OPENAI",
            }[spec.family]
            models[name] = entry
        return {
            "models": models,
            "deprecatedModelIds": {old: {"newModelId": new} for old, new in DEPRECATED_MODEL_IDS.items()},
        }

    def _is_stale_client(self, request: web.Request) -> bool:
        if self.min_client_version is None:
            return False
        found = ANTIGRAVITY_UA.search(request.headers.get("User-Agent", ""))
        if not found:
            return True

        def parts(v: str) -> tuple[int, ...]:
            return tuple(int(x) for x in v.split(".") if x.isdigit())

        return parts(found[1]) < parts(self.min_client_version)

    @staticmethod
    def _trace_id() -> str:
        return secrets.token_hex(8)

    async def _generate(
        self,
        request: web.Request,
        rec: RecordedRequest,
        account: SimAccount,
        payload: Any,
        fault: Fault | None,
    ) -> web.StreamResponse:
        req = validate_envelope(payload)
        project = field(payload, "project")
        if not project:
            raise SimError(400, google_error(400, "Invalid project resource name projects/"))
        self._check_project(account, project, rec.action)
        model = payload.get("model")
        if not model:
            raise SimError(400, google_error(400, "Request contains an invalid argument."))
        if model not in account.models:
            raise SimError(404, google_error(404, "Requested entity was not found."))
        spec = spec_for(model, self.catalog)
        if account.remaining_fraction(model) <= 0:
            delay = account.reset_after
            raise SimError(
                429,
                google_error(
                    429,
                    "You have exhausted your capacity on this model. "
                    f"Your quota will reset after {human_duration(delay)}.",
                    [
                        error_info(
                            "QUOTA_EXHAUSTED",
                            {
                                "uiMessage": "true",
                                "model": model,
                                "quotaResetDelay": human_duration(delay),
                                "quotaResetTimeStamp": rfc3339(time.time() + delay),
                            },
                        ),
                        retry_info(delay),
                    ],
                ),
            )
        validate_generate_request(req, spec, self.signatures)
        prompt_tokens = count_tokens(req)
        cached = self.cache.observe(f"{account.email}|{model}", req)
        answer = build_answer(
            req,
            spec,
            self.signatures,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            stale_client=self._is_stale_client(request),
        )
        trace = self._trace_id()
        response_id = _b64url(secrets.token_bytes(15))
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        if rec.action == "generateContent":
            merged = render_chunks(answer, 1, response_id, created)[0]
            return self._json(rec, 200, {"response": merged, "traceId": trace}, {"x-cloudaicompanion-trace-id": trace})
        plan = _StreamPlan()
        if fault is not None:
            if fault.kind == "disconnect":
                plan.abort_after = 1 if fault.after_chunks is None else fault.after_chunks
            elif fault.kind == "stream_error":
                plan.error_after = 1 if fault.after_chunks is None else fault.after_chunks
                plan.error_body = fault_error_body(fault, model)
            elif fault.kind == "empty_stream":
                plan.empty = True
        chunks = [] if plan.empty else render_chunks(answer, self.chunks, response_id, created)
        return await self._stream(request, rec, chunks, trace, plan)

    async def _stream(
        self,
        request: web.Request,
        rec: RecordedRequest,
        chunks: list[dict[str, Any]],
        trace: str,
        plan: _StreamPlan,
    ) -> web.StreamResponse:
        sse = request.query.get("alt") == "sse"
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream" if sse else JSON_TYPE,
                "x-cloudaicompanion-trace-id": trace,
                "Server": "ESF",
                "Vary": "Origin, X-Origin, Referer",
                "Cache-Control": "private",
            },
        )
        await resp.prepare(request)
        rec.status = 200
        if not sse:
            await resp.write(b"[")
        for i, chunk in enumerate(chunks):
            if plan.abort_after is not None and i >= plan.abort_after:
                await self._abort(request, rec)
            if plan.error_after is not None and i >= plan.error_after:
                break
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            data = orjson.dumps({"response": chunk, "traceId": trace})
            if sse:
                await resp.write(b"data: " + data + SSE_END)
            else:
                await resp.write((b",\r\n" if i else b"") + data)
            rec.chunks_sent += 1
        if plan.abort_after is not None:
            await self._abort(request, rec)
        if plan.error_body is not None:
            data = orjson.dumps(plan.error_body)
            if sse:
                await resp.write(b"data: " + data + SSE_END)
            else:
                await resp.write((b",\r\n" if rec.chunks_sent else b"") + data)
        if not sse:
            await resp.write(b"]")
        rec.finished = True
        await resp.write_eof()
        return resp


def spec_for(name: str, catalog: Mapping[str, ModelSpec] = MODEL_CATALOG) -> ModelSpec:
    """The catalog's entry for `name`, or what Google would plausibly say about an uncatalogued id."""
    spec = catalog.get(name)
    if spec is not None:
        return spec
    family = "claude" if name.startswith("claude") else "gpt" if name.startswith("gpt") else "gemini"
    thinking = "thinking" in name or (family == "gemini" and not name.endswith("-lite"))
    return ModelSpec(name, name, family, 1048576, 65536, thinking, 16384 if thinking else 0, family == "gemini")
