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

MUTATIONS: list[Mutation] = [
    # -- the survivors of issue #18 -------------------------------------------------------------------------
    Mutation(
        "gateway-in-stream-error",
        "agfast/upstream/gateway.py",
        "    if not data.startswith(b'{\"error\"'):\n        return None\n",
        "    return None\n",
        (f"{UP}::test_error_as_first_event_of_a_200_stream_is_retried",),
        "a 200 stream whose first event is a Google error is served as an answer instead of retried",
    ),
    Mutation(
        "gateway-rotation-bookkeeping",
        "agfast/upstream/gateway.py",
        "            elif decision.rotate:\n                attempted.add(lease.account_id)\n",
        "            elif decision.rotate:\n                pass\n",
        (f"{UP}::test_error_rotates_to_next_account", f"{UP}::test_each_account_is_tried_once_before_giving_up"),
        "a retry after an error may go back to the account that just failed",
    ),
]
