"""Model routing tables: built-in routes, custom wildcards, pool-aware family fallback, specs, model list."""

from __future__ import annotations

import pytest

from agfast.convert.models import (
    BUILTIN_ROUTES,
    IMAGE_VARIANTS,
    MODEL_SPECS,
    ModelSpec,
    is_thinking_model,
    list_models,
    model_family,
    model_spec,
    normalize_to_standard_id,
    resolve_model_route,
    route_for_pool,
    wildcard_match,
)

OPUS = "claude-opus-4-6-thinking"
SONNET = "claude-sonnet-4-6"
SONNET_T = "claude-sonnet-4-6-thinking"
FLASH = "gemini-2.5-flash"

# A pool that lists everything a PRO account typically offers.
FULL_POOL = frozenset(
    {
        OPUS,
        SONNET,
        SONNET_T,
        "gemini-pro-agent",
        "gemini-3.1-pro-preview",
        "gemini-3.1-pro-low",
        "gemini-3-flash",
        "gemini-3-flash-agent",
        "gemini-3.5-flash-low",
        "gemini-3.5-flash-extra-low",
        "gemini-3.1-flash-lite",
        FLASH,
        "gemini-2.5-flash-lite",
        "gemini-3-pro-image",
    }
)
GEMINI_ONLY = frozenset(n for n in FULL_POOL if n.startswith("gemini"))
FLASH_ONLY = frozenset({FLASH, "gemini-3-flash"})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-5", SONNET),
        ("claude-sonnet-4-5-20250929", SONNET_T),
        ("claude-3-5-sonnet-20240620", SONNET),
        ("claude-opus-4", OPUS),
        ("claude-opus-4.6", OPUS),
        ("claude-opus-4-6-20260201", OPUS),
        ("claude-haiku-4-5-20251001", SONNET),
        ("gpt-4o-mini-2024-07-18", FLASH),
        ("gpt-3.5-turbo-16k", FLASH),
        ("gemini-2.5-flash-lite", FLASH),
        ("gemini-3.1-pro-high", "gemini-pro-agent"),
        ("gemini-3-pro", "gemini-3-pro-preview"),
        ("gemini-3.1-pro", "gemini-3.1-pro-preview"),
        ("internal-background-task", FLASH),
        # (4) pass through
        ("gemini-9-ultra", "gemini-9-ultra"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("my-thinking-model", "my-thinking-model"),
    ],
)
def test_builtin_routes(model: str, expected: str) -> None:
    assert resolve_model_route(model, {}) == expected


def test_builtin_table_size_and_targets() -> None:
    """Guards against a row silently dropped or retargeted while editing the table."""
    assert len(BUILTIN_ROUTES) == 48
    assert set(BUILTIN_ROUTES.values()) == {
        SONNET,
        SONNET_T,
        OPUS,
        FLASH,
        "gemini-2.5-flash-thinking",
        "gemini-3.1-pro-low",
        "gemini-pro-agent",
        "gemini-3.1-pro-preview",
        "gemini-3-pro-low",
        "gemini-3-pro-preview",
        "gemini-3-flash",
        "gemini-3-pro-image",
    }


CUSTOM = {
    "gpt-4o": "exact-target",
    "gpt*": "gpt-any",
    "gpt-4*": "gpt-4-any",
    "claude-opus-*": "opus-any",
    "claude-opus*thinking": "opus-thinking",
    "*": "catch-all",
    "a*c": "ac",
    "ab*": "ab",
    "GEMINI-*": "upper",
    "odd?[x]*": "literal-specials",
}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "exact-target"),  # exact beats every wildcard
        ("gpt-4-turbo", "gpt-4-any"),  # more literal chars wins
        ("gpt-5", "gpt-any"),
        ("claude-opus-4-5-thinking", "opus-thinking"),
        ("claude-opus-4", "opus-any"),
        ("gemini-3-flash", "catch-all"),  # case-sensitive: GEMINI-* does not match
        ("abc", "ac"),  # "a*c" and "ab*" tie on literals and length: lexical ("*" < "b") decides
        ("odd?[x]1", "literal-specials"),
        ("oddq[x]1", "catch-all"),  # ? is not a wildcard
    ],
)
def test_custom_mapping(model: str, expected: str) -> None:
    assert resolve_model_route(model, CUSTOM) == expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("claude-*-sonnet-*", "claude-3-5-sonnet-20241022", True),
        ("*thinking*", "claude-thinking-extended", True),
        ("*thinking*", "random-model", False),
        ("a*b*c", "a1b2c", True),
        ("a*b*c", "a1b2c3", False),
        ("x*", "X1", False),
    ],
)
def test_wildcard_match(pattern: str, name: str, expected: bool) -> None:
    assert wildcard_match(pattern, name) is expected


FORWARDING = {"gemini-3-pro-preview": "gemini-3.1-pro-preview", "old-a": "old-b", "old-b": "old-a"}


@pytest.mark.parametrize(
    ("model", "custom", "expected"),
    [
        ("gemini-3-pro-preview", {"gemini-3-pro-preview": "custom"}, "gemini-3.1-pro-preview"),  # (0) first
        ("gemini-3-pro", {}, "gemini-3.1-pro-preview"),  # built-in target is deprecated → forwarded
        ("x", {"x": "gemini-3-pro-preview"}, "gemini-3.1-pro-preview"),  # custom target forwarded too
        ("old-a", {}, "old-b"),  # a cycle stops instead of spinning
    ],
)
def test_forwarding_rules(model: str, custom: dict[str, str], expected: str) -> None:
    assert resolve_model_route(model, custom, FORWARDING) == expected


@pytest.mark.parametrize(
    ("model", "available", "expected"),
    [
        # names the pool has are untouched
        ("claude-opus-4-6", FULL_POOL, OPUS),
        ("gemini-3-flash", FULL_POOL, "gemini-3-flash"),
        # unknown Claude names route by family
        ("claude-opus-5-5", FULL_POOL, OPUS),
        ("claude-opus-5-5", GEMINI_ONLY, "gemini-pro-agent"),
        ("claude-opus-5-5", frozenset({SONNET, "gemini-3-flash"}), SONNET),
        ("claude-sonnet-5", FULL_POOL, SONNET),
        ("claude-sonnet-5-thinking", FULL_POOL, SONNET_T),
        ("claude-sonnet-5-thinking", frozenset({SONNET, OPUS}), SONNET),
        ("claude-sonnet-5", frozenset({OPUS, "gemini-pro-agent"}), OPUS),
        ("claude-haiku-5", FULL_POOL, SONNET),
        ("claude-haiku-5", GEMINI_ONLY, "gemini-3-flash"),
        ("claude-5", FULL_POOL, SONNET),
        ("claude-opus-5-5", FLASH_ONLY, "gemini-3-flash"),
        # built-in target missing from the pool → same family
        ("claude-opus-4-6", frozenset({SONNET_T, SONNET}), SONNET_T),
        # newer Gemini names → nearest of the same family
        ("gemini-3.5-flash-lite", FULL_POOL, "gemini-3.1-flash-lite"),
        ("gemini-3.5-flash-lite", FLASH_ONLY, "gemini-3-flash"),
        ("gemini-3.5-flash", FULL_POOL, "gemini-3.5-flash-low"),  # same version beats newer-looking names
        ("gemini-4-flash", FULL_POOL, "gemini-3.5-flash-low"),  # no v4: newest flash
        ("gemini-4-flash", FLASH_ONLY, "gemini-3-flash"),
        ("gemini-4-pro", FULL_POOL, "gemini-pro-agent"),
        (
            "gemini-4-pro",
            frozenset({"gemini-3-pro-high", "gemini-3.1-pro-preview", FLASH}),
            "gemini-3.1-pro-preview",
        ),
        ("gemini-3.1-pro-preview", frozenset({"gemini-3.1-pro-low", FLASH}), "gemini-3.1-pro-low"),
        ("gemini-4-pro", FLASH_ONLY, "gemini-3-flash"),
        # OpenAI names → flash
        ("gpt-5", FULL_POOL, FLASH),
        ("gpt-4o", frozenset({"gemini-3-flash", SONNET}), "gemini-3-flash"),
        ("o3-mini", frozenset({"gemini-3.5-flash-low", "gemini-3-flash"}), "gemini-3.5-flash-low"),
        # left alone: image variants, unknown families, no quota data yet
        ("gemini-3-pro-image-4k-16x9", FULL_POOL, "gemini-3-pro-image-4k-16x9"),
        ("llama-4", FULL_POOL, "llama-4"),
        ("claude-opus-5-5", frozenset(), "claude-opus-5-5"),
        ("claude-opus-5-5", frozenset({"gpt-oss-120b-medium"}), "claude-opus-5-5"),
    ],
)
def test_route_for_pool(model: str, available: frozenset[str], expected: str) -> None:
    assert route_for_pool(model, {}, {}, available) == expected


def test_route_for_pool_custom_mapping_then_family() -> None:
    """A custom target the pool lacks still falls back by the target's family."""
    assert route_for_pool("mine", {"mine": "gemini-9-pro"}, None, FULL_POOL) == "gemini-pro-agent"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-opus-5-5", "opus"),
        ("claude-3-haiku", "haiku"),
        ("claude-sonnet-4-6-thinking", "sonnet-thinking"),
        ("gemini-3.5-flash-lite", "flash-lite"),
        ("gemini-pro-agent", "pro"),
        ("o1", "gpt"),
        ("gemini-3-pro-image", None),
        ("mistral", None),
    ],
)
def test_model_family(name: str, expected: str | None) -> None:
    assert model_family(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image"),
        ("gemini-3-pro-image-4k", "gemini-3-pro-image"),
        ("Gemini-2.5-Flash", "gemini-3-flash"),
        ("gemini-3.1-pro-low", "gemini-3-pro-high"),
        ("gemini-pro-agent", "gemini-3-pro-high"),
        ("claude-opus-4-6-thinking", "claude"),
        ("claude-sonnet-4-6", "claude"),
        ("gpt-oss-120b-medium", None),
    ],
)
def test_normalize_to_standard_id(name: str, expected: str | None) -> None:
    assert normalize_to_standard_id(name) == expected


@pytest.mark.parametrize(
    ("name", "account_max", "expected"),
    [
        ("gemini-2.5-flash", None, ModelSpec(65535, 32768)),
        ("gemini-3-pro-high", None, ModelSpec(65536, 49152)),
        ("claude-opus-4-6-thinking", None, ModelSpec(64000, 32768)),
        ("claude-sonnet-4-6-thinking", None, ModelSpec(64000, 32768)),  # -thinking shares the base spec
        ("gpt-oss-120b-medium", None, ModelSpec(32768, 0)),
        ("claude-next", None, ModelSpec(65535, 16000)),
        ("gemini-next", None, ModelSpec(65535, 24576)),
        ("gemini-2.5-flash", 8192, ModelSpec(8192, 32768)),  # account quota data overrides
    ],
)
def test_model_spec(name: str, account_max: int | None, expected: ModelSpec) -> None:
    assert model_spec(name, account_max) == expected


def test_model_specs_table() -> None:
    assert len(MODEL_SPECS) == 8


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-opus-4-6-thinking", True),
        ("claude-sonnet-4-6", False),
        ("gemini-2.5-flash", True),
        ("gemini-3-flash-agent", True),
        ("gemini-pro-agent", True),
        ("gemini-3.1-pro-low", True),
        ("gemini-3.1-flash-lite", False),
        ("gemini-3-pro-image", False),
        ("gpt-oss-120b-medium", False),
    ],
)
def test_is_thinking_model(name: str, expected: bool) -> None:
    assert is_thinking_model(name) is expected


def test_list_models_full() -> None:
    got = list_models({"my-alias": "x"}, ["gemini-3.5-flash-low", "claude-opus-4-6-thinking"])
    assert got == sorted(set(got))
    expected_members = {
        "my-alias",
        "gemini-3.5-flash-low",
        "gemini-3-flash",
        "claude",
        "gemini-2.0-flash-exp",
    }
    assert expected_members <= set(got)
    assert set(BUILTIN_ROUTES) <= set(got)
    assert set(IMAGE_VARIANTS) <= set(got)
    assert len(IMAGE_VARIANTS) == 21
    assert "gemini-3-pro-image-4k-21x9" in got


@pytest.mark.parametrize(
    ("account_models", "expected"),
    [
        ([], []),
        (["gemini-3.5-flash-low", "gemini-3.5-flash-low"], ["gemini-3-flash", "gemini-3.5-flash-low"]),
        (
            ["gpt-oss-120b-medium", "claude-sonnet-4-6"],
            ["claude", "claude-sonnet-4-6", "gpt-oss-120b-medium"],
        ),
    ],
)
def test_list_models_raw_only(account_models: list[str], expected: list[str]) -> None:
    assert list_models({"ignored": "x"}, account_models, only_raw_quota_models=True) == expected
