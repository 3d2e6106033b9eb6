"""The real-CLI tests' installer: skip on a laptop without node, fail in CI where skipping would hide them."""

from __future__ import annotations

from pathlib import Path

import pytest
from npm_tools import npm_binary


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [(None, pytest.skip.Exception), ("", pytest.skip.Exception), ("false", pytest.skip.Exception),
     ("true", pytest.fail.Exception), ("1", pytest.fail.Exception)],
)  # fmt: skip
def test_missing_node_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str | None, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no node, no npm
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    # Caught as BaseException: a skip escaping here would turn this test into a skip instead of a failure.
    with pytest.raises(BaseException, match="node/npm not installed") as info:
        npm_binary("@example/agent-cli", "1.0.0", "agent")
    assert info.type is outcome
