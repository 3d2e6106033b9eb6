"""The mutations `run.py` applies, one at a time: each is a bug a plausible edit could introduce."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    file: str
    original: str  # exact text; must occur once in `file`
    mutated: str
    tests: tuple[str, ...]  # pytest node ids / files (with -k if needed) that must notice
    why: str  # what the mutation breaks, in one line


UP = "tests/test_upstream.py"
POOL = "tests/test_pool.py"
RETRY = "tests/test_retry.py"
OCONV = "tests/test_openai_convert.py"
ACONV = "tests/test_anthropic_convert.py"
FRAMING = "tests/test_framing.py"
GATEWAY = "agfast/upstream/gateway.py"
POOL_PY = "agfast/upstream/pool.py"
RETRY_PY = "agfast/upstream/retry.py"

MUTATIONS: list[Mutation] = [
    # -- the survivors of issue #18 -------------------------------------------------------------------------
    Mutation(
        "gateway-in-stream-error",
        GATEWAY,
        "    if not data.startswith(b'{\"error\"'):\n        return None\n",
        "    return None\n",
        (f"{UP}::test_error_as_first_event_of_a_200_stream_is_retried",),
        "a 200 stream whose first event is a Google error is served as an answer instead of retried",
    ),
    Mutation(
        "gateway-rotation-bookkeeping",
        GATEWAY,
        "            elif decision.rotate:\n                attempted.add(lease.account_id)\n",
        "            elif decision.rotate:\n                pass\n",
        (f"{UP}::test_error_rotates_to_next_account", f"{UP}::test_each_account_is_tried_once_before_giving_up"),
        "a retry after an error may go back to the account that just failed",
    ),
    Mutation(
        "cache-control-noop",
        "agfast/convert/anthropic.py",
        '        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}\n',
        "        return value\n",
        (f"{ACONV}::test_cache_control_removed_everywhere",),
        "cache_control removal does nothing (only the Gemini converter's field-by-field rebuild hides it)",
    ),
    Mutation(
        "chat-done-one-newline",
        "agfast/convert/openai_chat.py",
        'DONE = b"data: [DONE]\\n\\n"',
        'DONE = b"data: [DONE]\\n"',
        (OCONV,),
        "the final [DONE] event of chat/completions streams is not closed by a blank line",
    ),
    Mutation(
        "collect-restart-keeps-old",
        GATEWAY,
        "        nonlocal feed\n        feed = start()\n",
        "        nonlocal feed\n",
        (f"{UP}::test_non_streaming_answer_survives_a_mid_stream_break",),
        "a collected answer re-run after a mid-stream break keeps what the broken attempt gave (reasoning twice)",
    ),
    # -- gateway ---------------------------------------------------------------------------------------------
    Mutation(
        "gateway-grace-elsewhere",
        GATEWAY,
        "                graced.add(lease.account_id)\n                reuse = lease\n",
        "                graced.add(lease.account_id)\n",
        (f"{UP}::test_short_429_grace_retries_same_account",),
        "a short 429 (grace retry) is re-sent to any account instead of the same one after the wait",
    ),
    Mutation(
        "gateway-not-found-flag",
        GATEWAY,
        "not_found=statuses == {404})",
        "not_found=False)",
        (f"{UP}::test_model_missing_everywhere_is_404_not_429",),
        "a model every account lacks is reported as exhaustion (429) instead of 404",
    ),
    Mutation(
        "gateway-400-resent",
        GATEWAY,
        "            if status == 400 and (recovered or recover is None):\n",
        "            if status == 400 and recovered:\n",
        (f"{UP}::test_signature_400_is_not_resent_unchanged",),
        "a signature 400 is re-sent unchanged by surfaces that have no way to fix it",
    ),
    Mutation(
        "gateway-empty-stream-served",
        GATEWAY,
        "            if done:\n                answer.response.release()\n                return None\n",
        "            if done:\n                return Stream(answer, lease, [], decoder, done=True, trace_id=trace)\n",
        (f"{UP}::test_empty_stream_is_retried",),
        "a 200 stream that ends without any event is served (empty answer) instead of retried",
    ),
    Mutation(
        "gateway-reopen-same-account",
        GATEWAY,
        "recover=recover, avoid=broken_on\n",
        "recover=recover, avoid=None\n",
        (f"{UP}::test_non_streaming_answer_survives_a_mid_stream_break",),
        "the re-run after a mid-stream break may go back to the account whose stream broke",
    ),
    # -- pool ------------------------------------------------------------------------------------------------
    Mutation(
        "pool-rotation-stays-sticky",
        POOL_PY,
        'sticky = not rotate and self.config.scheduling_mode != "PerformanceFirst"',
        'sticky = self.config.scheduling_mode != "PerformanceFirst"',
        (f"{POOL}::test_rotation_ignores_the_binding_and_the_reuse_window",),
        "rotation still honours the session binding and the 60 s reuse window",
    ),
    Mutation(
        "pool-p2c-emptier",
        POOL_PY,
        "    return a if a.quotas.get(key, a.max_pct) >= b.quotas.get(key, b.max_pct) else b\n",
        "    return a if a.quotas.get(key, a.max_pct) <= b.quotas.get(key, b.max_pct) else b\n",
        (f"{UP}::test_error_rotates_to_next_account", POOL),
        "power-of-two-choices keeps the account with less quota left",
    ),
    Mutation(
        "pool-p2c-top",
        POOL_PY,
        "P2C_TOP = 5\n",
        "P2C_TOP = 12\n",
        (f"{POOL}::test_p2c_only_draws_from_the_best_five",),
        "P2C draws from the whole pool instead of the five best",
    ),
    Mutation(
        "pool-model-lock-ignored",
        POOL_PY,
        'until = max(self.state.locked_until(member.id), self.state.locked_until(f"{member.id}:{key}"))',
        "until = self.state.locked_until(member.id)",
        (f"{POOL}::test_lockouts_are_capped_and_cleared_by_success",),
        "a per-model lockout (quota gone for one model) does not keep the account out",
    ),
    Mutation(
        "pool-success-keeps-lock",
        POOL_PY,
        "        self.state.reset_failures(lease.account_id)\n        self.state.unlock(lease.account_id)\n",
        "        self.state.reset_failures(lease.account_id)\n",
        (f"{POOL}::test_success_lifts_the_account_lockout",),
        "a success does not lift the account-level lockout",
    ),
    Mutation(
        "pool-401-no-refresh",
        POOL_PY,
        "            member.account.expiry_timestamp = 0  # the token was refused: refresh before its next use\n",
        "            pass\n",
        (f"{UP}::test_refused_token_is_refreshed_before_the_accounts_next_use",),
        "a 401 does not make the account refresh its token before its next use",
    ),
    Mutation(
        "pool-reuse-window",
        POOL_PY,
        "REUSE_WINDOW = 60.0\n",
        "REUSE_WINDOW = 0.0\n",
        (f"{UP}::test_scheduling_modes",),
        "Balance mode stops reusing the last account across conversations",
    ),
    # -- retry policy ----------------------------------------------------------------------------------------
    Mutation(
        "retry-no-grace",
        RETRY_PY,
        "RETRY_DELAY_GRACE_MS = 1_500\n",
        "RETRY_DELAY_GRACE_MS = 0\n",
        (RETRY, f"{UP}::test_short_429_grace_retries_same_account"),
        "a stated 429 delay is honoured without Google's 1.5 s grace",
    ),
    Mutation(
        "retry-grace-twice",
        RETRY_PY,
        "            if allow_grace and delay <= GRACE_RETRY_MAX_MS:\n",
        "            if delay <= GRACE_RETRY_MAX_MS:\n",
        (RETRY,),
        "an account may get a second grace retry, pinning a request to one rate-limited account",
    ),
    Mutation(
        "retry-attempts",
        RETRY_PY,
        "MAX_ATTEMPTS = 3\n",
        "MAX_ATTEMPTS = 4\n",
        (f"{RETRY}::test_attempts_for", f"{UP}::test_exhaustion_names_last_status"),
        "one attempt more than the policy allows (burns quota on accounts that share a fate)",
    ),
    Mutation(
        "retry-503-rotates",
        RETRY_PY,
        '_OVERLOADED = Strategy(Kind.EXPONENTIAL, 10_000, 60_000, reason="overloaded")',
        '_OVERLOADED = Strategy(Kind.EXPONENTIAL, 10_000, 60_000, rotate=True, reason="overloaded")',
        (f"{UP}::test_503_backs_off_without_rotating",),
        "an overloaded model (503/529) is retried on another account instead of after a backoff on the same",
    ),
    Mutation(
        "retry-lockout-floor",
        RETRY_PY,
        "        return cap_lockout(max(LOCKOUT_MIN_S, stated))\n",
        "        return cap_lockout(stated)\n",
        (f"{RETRY}::test_lockout_seconds",),
        "a tiny stated wait locks an account out for less than 2 s (the pool hammers it)",
    ),
    Mutation(
        "retry-404-not-server-error",
        RETRY_PY,
        "SERVER_ERROR_STATUSES = frozenset({404, 500, 503, 529})",
        "SERVER_ERROR_STATUSES = frozenset({500, 503, 529})",
        (f"{RETRY}::test_classify_limit",),
        "a 404's lockout reason comes from text heuristics instead of the short server-error back-off",
    ),
    # -- stream framing --------------------------------------------------------------------------------------
    Mutation(
        "responses-unnamed-events",
        "agfast/convert/openai_responses.py",
        "        return sse.frame_event(orjson.dumps(fields), kind.encode())\n",
        "        return sse.frame_event(orjson.dumps(fields))\n",
        (OCONV,),
        "Responses events lose their `event:` line (the Agents SDK and Codex dispatch on it)",
    ),
    Mutation(
        "anthropic-text-delta-one-newline",
        "agfast/convert/anthropic_stream.py",
        """b'"delta":{"type":"text_delta","text":%b}}\\n\\n'""",
        """b'"delta":{"type":"text_delta","text":%b}}\\n'""",
        (ACONV,),
        "the hot-path text delta event is not closed by a blank line (merges with the next event)",
    ),
    Mutation(
        "anthropic-stop-unnamed",
        "agfast/convert/anthropic_stream.py",
        """_STOP_EVENT = frame_event(b'{"type":"message_stop"}', _E_STOP)""",
        """_STOP_EVENT = frame_event(b'{"type":"message_stop"}')""",
        (ACONV,),
        "message_stop loses its event name",
    ),
    Mutation(
        "completions-no-done",
        "agfast/convert/openai_completions.py",
        """b'],"usage":' + usage + b"}") + DONE""",
        """b'],"usage":' + usage + b"}")""",
        (OCONV,),
        "legacy completions streams end without [DONE]",
    ),
    Mutation(
        "anthropic-ping-one-newline",
        "agfast/convert/anthropic_stream.py",
        """PING = b'event: ping\\ndata: {"type": "ping"}\\n\\n'""",
        """PING = b'event: ping\\ndata: {"type": "ping"}\\n'""",
        ("tests/test_anthropic_api.py::test_silent_upstream_gets_pings",),
        "the keep-alive ping is not closed by a blank line",
    ),
]
