"""Shared fixtures: both hot-path implementations, and the server under test."""

from __future__ import annotations

from types import ModuleType

import pytest

from agfast import _sse_py

try:
    from agfast import _sse as _sse_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CI builds it; a missing build must fail loudly there
    _sse_c = None

IMPLS = ["py", "c"]


def sse_module(name: str) -> ModuleType:
    if name == "py":
        return _sse_py
    if _sse_c is None:
        pytest.fail("the Cython extension agfast._sse is not built (pip install -e . compiles it)")
    return _sse_c


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """The hot-path implementation under test: every test using it runs once per twin."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sse(impl: str) -> ModuleType:
    return sse_module(impl)
