"""Model routing tables: built-in routes, custom wildcards, pool-aware family fallback, specs, model list."""

from __future__ import annotations

import pytest

from agfast.convert.models import (
    BUILTIN_ROUTES,
    MODEL_SPECS,
    ModelSpec,
    cautious_spec,
    described_spec,
    is_thinking_model,
    list_models,
    model_family,
    model_spec,
    normalize_to_standard_id,
    resolve_model_route,
    route_for_pool,
    route_known,
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
        ("gemini-2.5-flash", None, ModelSpec(65535, 32768, True)),
        ("gemini-3-pro-high", None, ModelSpec(65536, 49152, True)),
        ("claude-opus-4-6-thinking", None, ModelSpec(64000, 32768, True)),
        ("claude-sonnet-4-6-thinking", None, ModelSpec(64000, 32768, True)),  # -thinking shares the base spec
        ("claude-sonnet-4-6", None, ModelSpec(64000, 32768, True)),  # can think when asked
        ("gpt-oss-120b-medium", None, ModelSpec(32768, 0, False)),
        ("claude-next", None, ModelSpec(65535, 16000, True)),
        ("gemini-next", None, ModelSpec(65535, 24576, False)),
        ("gemini-3.1-flash-lite", None, ModelSpec(65535, 24576, False)),
        ("gemini-2.5-flash", 8192, ModelSpec(8192, 32768, True)),  # account quota data overrides
    ],
)
def test_model_spec(name: str, account_max: int | None, expected: ModelSpec) -> None:
    assert model_spec(name, account_max) == expected


@pytest.mark.parametrize(
    ("name", "supports_thinking", "budget", "max_out", "expected"),
    [
        # Google's word first
        ("claude-sonnet-4-6", True, 24576, 64000, ModelSpec(64000, 24576, True)),
        ("claude-sonnet-4-6", None, None, 64000, ModelSpec(64000, 32768, False)),  # proto3: absent = false
        ("gemini-3-flash", True, 8192, 8192, ModelSpec(8192, 8192, True)),
        # what Google leaves out comes from the static table
        ("gemini-3-flash", True, None, None, ModelSpec(65536, 32768, True)),
        # a -thinking id thinks whatever the description omits
        ("claude-opus-4-6-thinking", None, None, None, ModelSpec(64000, 32768, True)),
    ],
)
def test_described_spec(
    name: str, supports_thinking: bool | None, budget: int | None, max_out: int | None, expected: ModelSpec
) -> None:
    assert described_spec(name, supports_thinking, budget, max_out) == expected


def test_cautious_spec_takes_the_smaller_limits() -> None:
    a, b = ModelSpec(64000, 32768, True), ModelSpec(8192, 40000, False)
    assert cautious_spec(a, b) == cautious_spec(b, a) == ModelSpec(8192, 32768, False)


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


CATALOG_CUSTOM = {"my-alias": "gemini-3-flash", "gpt-4*": "gemini-3-flash", "ghost": "nowhere"}


@pytest.mark.parametrize(
    ("model", "offered", "complete", "expected"),
    [
        # every account's list known: a name is known when it routes to something offered
        ("gemini-3-flash", FULL_POOL, True, "gemini-3-flash"),
        ("claude-opus-5-5", FULL_POOL, True, OPUS),  # family routing
        ("gemini-3.5-flash-lite", FULL_POOL, True, "gemini-3.1-flash-lite"),
        ("gpt-5", FULL_POOL, True, FLASH),
        ("my-alias", FULL_POOL, True, "gemini-3-flash"),
        ("gpt-4.1", FULL_POOL, True, "gemini-3-flash"),  # custom wildcard
        ("gpt-5", FLASH_ONLY, True, FLASH),
        ("foo-bar", FULL_POOL, True, None),
        ("dall-e-3", FULL_POOL, True, None),
        ("ghost", FULL_POOL, True, None),  # mapped, but to a model nobody offers
        ("gemini-9-ultra", FULL_POOL, True, None),
        # an offered image model's size/ratio variants (§7.4) route as they are: the image request reads them
        ("gemini-3-pro-image-4k-16x9", FULL_POOL, True, "gemini-3-pro-image-4k-16x9"),
        ("gemini-3-pro-image-16x9-2k", FULL_POOL, True, "gemini-3-pro-image-16x9-2k"),
        ("gemini-3-pro-image-5x7", FULL_POOL, True, None),  # no ratio the model draws
        ("gemini-3-pro-image-4k-16x9", FLASH_ONLY, True, None),  # nobody offers the image model
        # lists unknown (no quota data yet): the tables decide, Google judges the rest
        ("claude-sonnet-4-6", frozenset(), False, SONNET),
        ("gpt-4o", frozenset(), False, "gemini-3-flash"),
        ("gpt-3.5-turbo", frozenset(), False, FLASH),
        ("gemini-9-ultra", frozenset(), False, "gemini-9-ultra"),
        ("claude-opus-5-5", frozenset(), False, "claude-opus-5-5"),
        ("ghost", frozenset(), False, "nowhere"),
        ("o3-mini", frozenset(), False, "o3-mini"),
        ("foo-bar", frozenset(), False, None),
        ("dall-e-3", frozenset(), False, None),
        # some lists known: what they offer, plus what the tables know
        ("foo-bar", FLASH_ONLY, False, None),
        ("gemini-3-pro", FLASH_ONLY, False, "gemini-3-flash"),
    ],
)
def test_route_known(model: str, offered: frozenset[str], complete: bool, expected: str | None) -> None:
    assert route_known(model, CATALOG_CUSTOM, None, offered, complete) == expected


def test_list_models_names_only_what_routes_to_an_offered_model() -> None:
    got = list_models(CATALOG_CUSTOM, None, FLASH_ONLY, True)
    assert got == sorted(set(got))
    assert set(FLASH_ONLY) | {"my-alias", "gpt-4o", "claude-opus-4-6", "gemini-3-pro-high"} <= set(got)
    assert not {"ghost", "gpt-4*", "internal-background-task", "claude"} & set(got)
    assert not any("*" in name for name in got)
    assert all(route_known(name, CATALOG_CUSTOM, None, FLASH_ONLY, True) for name in got)


def test_list_models_with_unknown_lists_falls_back_to_the_tables() -> None:
    got = set(list_models(CATALOG_CUSTOM, None, frozenset(), False))
    assert set(BUILTIN_ROUTES) - {"internal-background-task"} | {"my-alias", "ghost"} == got
