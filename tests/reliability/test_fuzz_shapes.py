"""Wrong types at every level of every surface's body: never a 500, always an answer in the caller's shape.

Each example takes a valid body, picks one to three nodes at any depth (messages, contents, input, tools, system, a
part, a schema keyword…) and replaces it with a value of another JSON type, or drops it. The real server
must answer 2xx or 4xx in its protocol's shape; a handler crash (logged "handler failed", answered 500)
fails the example. Bounded for CI; `AGFAST_RELIABILITY_FULL=1` (5,000 examples) or `AGFAST_FUZZ_EXAMPLES=N`
runs a full sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from campaign import knob
from helpers import ServerThread, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stack import agfast_on, start_sim
from surfaces import BASES, CASES, in_shape

from agfast.sim import GoogleSimulator

EXAMPLES = int(knob("AGFAST_FUZZ_EXAMPLES", 60, 5000))

Node = tuple[Any, ...]


def paths(value: Any, prefix: Node = ()) -> Iterator[Node]:
    """Every node's path in a JSON value (the root excluded)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(body: Any, path: Node, value: Any, drop: bool) -> Any:
    """A copy of `body` with the node at `path` set to `value` (or removed)."""
    copy = orjson.loads(orjson.dumps(body))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(INT64, max_size=3),
    st.dictionaries(st.text(max_size=4), INT64, max_size=2),
    st.recursive(
        st.none() | st.booleans() | INT64 | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    ),
    # Containers whose insides are wrong: what a converter meets one level further down.
    st.sampled_from(
        [
            [[[]]],
            {"type": 5},
            [{}],
            [5],
            [None],
            {"text": 5},
            [{"type": "text", "text": 5}],
            {"parts": [5]},
            [{"name": 5}],
        ]
    ),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, GoogleSimulator]]:
    with start_sim() as sim, agfast_on(sim, Path(tmp_path_factory.mktemp("fuzz"))) as st:
        yield st, sim


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_no_body_shape_crashes_a_handler(
    server: tuple[ServerThread, GoogleSimulator], caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    st_, sim = server
    route, start, extra = data.draw(st.sampled_from(CASES), label="case")
    base = {**BASES[start], **extra}
    body = base
    # One to three nodes changed; a later change may land inside an earlier one's value.
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        nodes = list(paths(body))
        if not nodes:
            break
        path = data.draw(st.sampled_from(nodes), label="path")
        drop = data.draw(st.booleans(), label="drop") and isinstance(path[-1], str)
        value = data.draw(WRONG, label="value")
        body = replaced(body, path, value, drop)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="agfast.http"):
        reply = request(st_.port, "POST", route, orjson.dumps(body), {"content-type": "application/json"})
    crashes = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert not crashes, (route, body, caplog.text[-2000:])
    assert reply.status < 500 or reply.status in (502, 503), (route, body, reply.status, reply.body[:300])
    if reply.status >= 400:
        assert in_shape(route, reply.json()), (route, reply.body[:300])
        assert b"Traceback" not in reply.body
    sim.clear_requests()
