"""Shared fixtures: both hot-path implementations, and the server under test."""

from __future__ import annotations

from types import ModuleType
from typing import NoReturn

import pytest
from helpers import AGFAST_ROOT, in_ci

from agfast import _sse_py

try:
    from agfast import _sse as _sse_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CI builds it; a missing build must fail loudly there
    _sse_c = None

IMPLS = ["py", "c"]


def compiled_missing(name: str) -> NoReturn:
    """A compiled module the test needs is absent: fail in CI (it builds them), else skip saying why.

    Locally that happens with a pure-Python install (no C compiler) or when a source checkout without an
    in-place build shadows an installed agfast (`python -m pytest` puts the current directory first).
    """
    reason = f"{name} is not built for the agfast imported from {AGFAST_ROOT} (pip install -e . builds it in place)"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def sse_module(name: str) -> ModuleType:
    if name == "py":
        return _sse_py
    if _sse_c is None:
        compiled_missing("the Cython extension agfast._sse")
    return _sse_c


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """The hot-path implementation under test: every test using it runs once per twin."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sse(impl: str) -> ModuleType:
    return sse_module(impl)
