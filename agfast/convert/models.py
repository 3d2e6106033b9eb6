"""Model routing: client model names → upstream Antigravity model names (reference §7).

Everything here is a table plus a few small functions reading it. The resolution order is
forwarding rules → exact custom mapping → wildcard custom mapping → ``BUILTIN_ROUTES`` → pass through,
and, when the pool's model list is known, a family fallback so that names newer than any table
(``claude-opus-5-5``, ``gemini-3.5-flash-lite``, ``gpt-5``) land on the nearest model the accounts offer
instead of an upstream 404. `route_known` adds the refusal: a name neither the tables nor any account's model
list knows is not sent upstream at all. What a model can do (`ModelSpec`) is Google's description when an
account fetched one, the static table otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from agfast.convert.images import image_variants, is_image_model, is_variant, parse_variant

_OPUS = "claude-opus-4-6-thinking"
_SONNET = "claude-sonnet-4-6"
_SONNET_THINKING = "claude-sonnet-4-6-thinking"
_FLASH = "gemini-2.5-flash"

BUILTIN_ROUTES: dict[str, str] = {
    # Claude Sonnet
    "claude-sonnet-4-6": _SONNET,
    "claude-sonnet-4-6-thinking": _SONNET_THINKING,
    "claude-sonnet-4-5": _SONNET,
    "claude-sonnet-4-5-thinking": _SONNET_THINKING,
    "claude-sonnet-4-5-20250929": _SONNET_THINKING,
    "claude-3-5-sonnet-20241022": _SONNET,
    "claude-3-5-sonnet-20240620": _SONNET,
    # Claude Opus
    "claude-opus-4": _OPUS,
    "claude-opus-4-5-thinking": _OPUS,
    "claude-opus-4-5-20251101": _OPUS,
    "claude-opus-4-6": _OPUS,
    "claude-opus-4-6-thinking": _OPUS,
    "claude-opus-4.6": _OPUS,
    "claude-opus-4.6-thinking": _OPUS,
    "claude-opus-4-6-20260201": _OPUS,
    # Claude Haiku (no Haiku upstream)
    "claude-haiku-4": _SONNET,
    "claude-3-haiku-20240307": _SONNET,
    "claude-haiku-4-5-20251001": _SONNET,
    # OpenAI names
    "gpt-4": _FLASH,
    "gpt-4-turbo": _FLASH,
    "gpt-4-turbo-preview": _FLASH,
    "gpt-4-0125-preview": _FLASH,
    "gpt-4-1106-preview": _FLASH,
    "gpt-4-0613": _FLASH,
    "gpt-4o": _FLASH,
    "gpt-4o-2024-05-13": _FLASH,
    "gpt-4o-2024-08-06": _FLASH,
    "gpt-4o-mini": _FLASH,
    "gpt-4o-mini-2024-07-18": _FLASH,
    "gpt-3.5-turbo": _FLASH,
    "gpt-3.5-turbo-16k": _FLASH,
    "gpt-3.5-turbo-0125": _FLASH,
    "gpt-3.5-turbo-1106": _FLASH,
    "gpt-3.5-turbo-0613": _FLASH,
    # Gemini
    "gemini-2.5-flash-lite": _FLASH,
    "gemini-2.5-flash-thinking": "gemini-2.5-flash-thinking",
    "gemini-3.1-pro-low": "gemini-3.1-pro-low",
    "gemini-3.1-pro-high": "gemini-pro-agent",
    "gemini-3.1-pro-preview": "gemini-3.1-pro-preview",
    "gemini-3.1-pro": "gemini-3.1-pro-preview",
    "gemini-3-pro-low": "gemini-3-pro-low",
    "gemini-3-pro-high": "gemini-pro-agent",
    "gemini-3-pro-preview": "gemini-3-pro-preview",
    "gemini-3-pro": "gemini-3-pro-preview",
    "gemini-2.5-flash": _FLASH,
    "gemini-3-flash": "gemini-3-flash",
    "gemini-3-pro-image": "gemini-3-pro-image",
    # Virtual id for background tasks (titles, summaries); overridable through custom_mapping.
    "internal-background-task": _FLASH,
}

_NO_RULES: Mapping[str, str] = MappingProxyType({})

# Forwarding chains (deprecated → new → newer) are followed this far; guards against cycles.
_MAX_FORWARD_HOPS = 4


def _forward(model: str, forwarding: Mapping[str, str]) -> str:
    seen = {model}
    for _ in range(_MAX_FORWARD_HOPS):
        nxt = forwarding.get(model)
        if not nxt or nxt in seen:
            break
        seen.add(nxt)
        model = nxt
    return model


def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _specificity(pattern: str) -> tuple[int, int, str]:
    # Sorts ascending → best first: most literal characters, then the longer pattern, then lexical.
    return (-(len(pattern) - pattern.count("*")), -len(pattern), pattern)


def wildcard_match(pattern: str, name: str) -> bool:
    """Case-sensitive glob where only ``*`` is special (``?`` and ``[`` are literal, unlike fnmatch)."""
    return _glob_regex(pattern).fullmatch(name) is not None


def resolve_model_route(
    model: str, custom_mapping: Mapping[str, str], forwarding: Mapping[str, str] = _NO_RULES
) -> str:
    """Upstream name for ``model``; the same inputs always give the same answer (wildcard ties included)."""
    fwd = forwarding or _NO_RULES
    if model in fwd:
        return _forward(model, fwd)
    target = custom_mapping.get(model)
    if target is None:
        matches = [p for p in custom_mapping if "*" in p and wildcard_match(p, model)]
        if matches:
            target = custom_mapping[min(matches, key=_specificity)]
    if target is None:
        target = BUILTIN_ROUTES.get(model, model)
    # A mapping may point at an id upstream has since deprecated.
    return _forward(target, fwd)


# ---------------------------------------------------------------------------------------------------------
# Family fallback: when the resolved name is not offered by any account.


@dataclass(frozen=True, slots=True)
class SameVersion:
    """Preference entry: an available Gemini model of ``family`` with the requested version number."""

    family: str


@dataclass(frozen=True, slots=True)
class Newest:
    """Preference entry: the newest available Gemini model of ``family``."""

    family: str


Preference = str | SameVersion | Newest

# Name → family, first matching row wins. ``None`` = leave the name alone (image models keep their
# size/ratio suffixes, which the image path reads).
FAMILY_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"image"), None),
    (re.compile(r"opus"), "opus"),
    (re.compile(r"haiku"), "haiku"),
    (re.compile(r"sonnet|^claude"), "sonnet"),
    (re.compile(r"^gemini.*flash-lite"), "flash-lite"),
    (re.compile(r"^gemini.*flash"), "flash"),
    (re.compile(r"^gemini.*pro"), "pro"),
    (re.compile(r"^(gpt|chatgpt|o\d|codex)"), "gpt"),
    (re.compile(r"^internal-background-task$"), "flash"),
)

# A family that changes when the requested name asks for thinking.
THINKING_FAMILY: dict[str, str] = {"sonnet": "sonnet-thinking"}

# gemini-pro-agent is the high tier of the current Pro; then the newest Pro by version.
_PRO_CHAIN: tuple[Preference, ...] = ("gemini-pro-agent", Newest("pro"))

# Family → upstream candidates in order of preference; the first one the pool offers wins.
FAMILY_PREFERENCES: dict[str, tuple[Preference, ...]] = {
    "opus": (_OPUS, _SONNET_THINKING, _SONNET, *_PRO_CHAIN, Newest("flash")),
    "sonnet-thinking": (_SONNET_THINKING, _SONNET, _OPUS, *_PRO_CHAIN, Newest("flash")),
    "sonnet": (_SONNET, _SONNET_THINKING, _OPUS, *_PRO_CHAIN, Newest("flash")),
    "haiku": (_SONNET, "gemini-3-flash", _FLASH, Newest("flash"), _SONNET_THINKING),
    "pro": (*_PRO_CHAIN, Newest("flash")),
    "flash": (SameVersion("flash"), Newest("flash"), Newest("flash-lite")),
    "flash-lite": (SameVersion("flash-lite"), Newest("flash-lite"), SameVersion("flash"), Newest("flash")),
    "gpt": (_FLASH, Newest("flash")),
}

# Gemini names: gemini-<version>-<family>[-<variant>] or gemini-<family>-<variant> (gemini-pro-agent).
_GEMINI_RE = re.compile(r"^gemini-(?:(\d+(?:\.\d+)*)-)?(flash-lite|flash|pro)(?:-(.*))?$")

# Within one version, the plain model first and reduced-thinking variants last.
VARIANT_RANK: dict[str, int] = {
    "": 0,
    "preview": 1,
    "high": 2,
    "agent": 2,
    "thinking": 3,
    "medium": 4,
    "low": 5,
    "extra-low": 6,
}
_UNKNOWN_VARIANT_RANK = 7
_VERSION_PARTS = 3


class _Gemini(NamedTuple):
    version: tuple[int, ...]
    family: str
    variant: str


def _parse_gemini(name: str) -> _Gemini | None:
    m = _GEMINI_RE.match(name.lower())
    if m is None or "image" in name.lower():
        return None
    version = tuple(int(x) for x in m.group(1).split(".")) if m.group(1) else ()
    return _Gemini(version, m.group(2), m.group(3) or "")


def model_family(name: str) -> str | None:
    """Routing family of ``name`` (opus, sonnet[-thinking], haiku, pro, flash, flash-lite, gpt) or None."""
    lower = name.lower()
    for pattern, family in FAMILY_PATTERNS:
        if pattern.search(lower):
            if family is not None and "thinking" in lower:
                return THINKING_FAMILY.get(family, family)
            return family
    return None


def _pick_gemini(pref: SameVersion | Newest, requested: str, available: Collection[str]) -> str | None:
    want = _parse_gemini(requested)
    candidates: list[tuple[tuple[int, ...], str]] = []
    for name in available:
        g = _parse_gemini(name)
        if g is None or g.family != pref.family:
            continue
        if isinstance(pref, SameVersion) and (want is None or not want.version or g.version != want.version):
            continue
        candidates.append((g.version, name))
    if not candidates:
        return None

    def rank(item: tuple[tuple[int, ...], str]) -> tuple[tuple[int, ...], int, int, str]:
        version, name = item
        variant = _parse_gemini(name)
        vrank = VARIANT_RANK.get(variant.variant if variant else "", _UNKNOWN_VARIANT_RANK)
        # Pad so (3,) compares as 3.0.0 against (3, 5); versionless names (gemini-pro-agent) sort last.
        newest_first = tuple(-v for v in (*version, 0, 0, 0)[:_VERSION_PARTS]) if version else (1,)
        return (newest_first, vrank, len(name), name)

    return min(candidates, key=rank)[1]


def _pick(family: str, requested: str, available: Collection[str]) -> str | None:
    for pref in FAMILY_PREFERENCES.get(family, ()):
        if isinstance(pref, str):
            if pref in available:
                return pref
        else:
            found = _pick_gemini(pref, requested, available)
            if found is not None:
                return found
    return None


def route_for_pool(
    model: str,
    custom_mapping: Mapping[str, str],
    forwarding: Mapping[str, str] | None,
    available: Collection[str],
) -> str:
    """Like resolve_model_route, but never a name the pool lacks when a same-family model exists."""
    routed = resolve_model_route(model, custom_mapping, forwarding or _NO_RULES)
    if not available or routed in available:
        return routed
    for name in (routed, model):
        family = model_family(name)
        picked = _pick(family, name, available) if family is not None else None
        if picked is not None:
            return picked
    return routed


# ---------------------------------------------------------------------------------------------------------
# Normalised quota ids (§7.3): the keys of quota filtering, quota protection and model-level lockouts.

# (substring, normalised id), first match wins; "image" rows are refined by _IMAGE_IDS below.
NORMALIZE_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("flash",), "gemini-3-flash"),
    (("pro",), "gemini-3-pro-high"),
    (("claude", "opus", "sonnet", "haiku"), "claude"),
)
_IMAGE_IDS = ("gemini-3.1-flash-image", "gemini-3-pro-image")  # (flash image, any other image)


def normalize_to_standard_id(name: str) -> str | None:
    """Quota group of a model name, or None when the raw name is its own key."""
    lower = name.lower()
    if "image" in lower:
        return _IMAGE_IDS[0] if "flash" in lower else _IMAGE_IDS[1]
    for needles, standard in NORMALIZE_RULES:
        if any(n in lower for n in needles):
            return standard
    return None


# ---------------------------------------------------------------------------------------------------------
# What a model can do (§7.5): Google's own description (fetchAvailableModels) first, this table for the rest.


class ModelSpec(NamedTuple):
    """What an upstream model can do: the most it may be asked to write, its default thinking budget, whether it
    thinks when asked."""

    max_output_tokens: int
    thinking_budget: int
    can_think: bool


MODEL_SPECS: dict[str, ModelSpec] = {
    "gemini-2.0-flash": ModelSpec(65535, 24576, True),
    "gemini-2.5-flash": ModelSpec(65535, 32768, True),
    "gemini-3-flash": ModelSpec(65536, 32768, True),
    "gemini-3-pro-high": ModelSpec(65536, 49152, True),
    "gemini-3.1-pro-preview": ModelSpec(65536, 49152, True),
    "claude-sonnet-4-6": ModelSpec(64000, 32768, True),
    "claude-opus-4-6-thinking": ModelSpec(64000, 32768, True),
    "gpt-oss-120b-medium": ModelSpec(32768, 0, False),
}
DEFAULT_MAX_OUTPUT_TOKENS = 65535
DEFAULT_THINKING_BUDGET = 24576
DEFAULT_CLAUDE_THINKING_BUDGET = 16000


def model_spec(name: str, account_max_output_tokens: int | None = None) -> ModelSpec:
    """Output/thinking limits for an upstream model from the static table; an account's own quota data overrides
    max output."""
    spec = MODEL_SPECS.get(name)
    if spec is None and name.endswith("-thinking"):
        spec = MODEL_SPECS.get(name.removesuffix("-thinking"))
    if spec is None:
        claude = "claude" in name.lower()
        spec = ModelSpec(
            DEFAULT_MAX_OUTPUT_TOKENS,
            DEFAULT_CLAUDE_THINKING_BUDGET if claude else DEFAULT_THINKING_BUDGET,
            # Every Claude model Antigravity serves has extended thinking; Gemini per is_thinking_model.
            claude or is_thinking_model(name),
        )
    if account_max_output_tokens:
        spec = spec._replace(max_output_tokens=account_max_output_tokens)
    return spec


def described_spec(
    name: str, supports_thinking: bool | None, thinking_budget: int | None, max_output_tokens: int | None
) -> ModelSpec:
    """What Google says `name` can do (fetchAvailableModels fields), the static table filling in what it omits.

    proto3 JSON drops false values, so a described model without `supportsThinking` cannot think; a `-thinking`
    id is the exception (its name is the contract).
    """
    static = model_spec(name)
    return ModelSpec(
        max_output_tokens if max_output_tokens and max_output_tokens > 0 else static.max_output_tokens,
        thinking_budget if thinking_budget and thinking_budget > 0 else static.thinking_budget,
        supports_thinking is True or "thinking" in name.lower(),
    )


def cautious_spec(a: ModelSpec, b: ModelSpec) -> ModelSpec:
    """Two accounts' descriptions of one model merged so a request built before the account is picked fits
    either: the smaller limits, thinking only if both can."""
    return ModelSpec(
        min(a.max_output_tokens, b.max_output_tokens),
        min(a.thinking_budget, b.thinking_budget),
        a.can_think and b.can_think,
    )


def is_thinking_model(name: str) -> bool:
    """Whether requests to this upstream model get a thinkingConfig by default (§6.2)."""
    lower = name.lower()
    if "thinking" in lower:
        return True
    if not lower.startswith("gemini") or "image" in lower or "flash-lite" in lower:
        return False
    return "flash" in lower or "-pro" in lower


# ---------------------------------------------------------------------------------------------------------
# Which names can be called, and the model lists (§7.4, narrowed to what answers).

# Google's own id prefixes (the quota filter of §4.6): while the pool's model lists are unknown, a name like this
# is plausibly real and is left for Google to judge.
UPSTREAM_PREFIXES = ("gemini-", "claude-", "gpt-")
# Routable but not a model anyone should pick from a list.
UNLISTED = frozenset({"internal-background-task"})


def statically_known(model: str, custom_mapping: Mapping[str, str], forwarding: Mapping[str, str]) -> bool:
    """Whether the tables alone know the name: custom_mapping (exact or wildcard), upstream forwarding, the
    built-in routes, a routing family, or one of Google's id prefixes."""
    return (
        model in custom_mapping
        or model in forwarding
        or model in BUILTIN_ROUTES
        or model_family(model) is not None
        or model.lower().startswith(UPSTREAM_PREFIXES)
        or any("*" in pattern and wildcard_match(pattern, model) for pattern in custom_mapping)
    )


def route_known(
    model: str,
    custom_mapping: Mapping[str, str],
    forwarding: Mapping[str, str] | None,
    offered: Collection[str],
    complete: bool,
) -> str | None:
    """The upstream model for `model`, or None when neither the mapping nor any account's model list knows it.

    With every account's list fetched (`complete`), a name is known when it routes (mapping, family fallback)
    to a model some account offers. Before that, unknown is not "none": a name the tables know goes upstream
    as routed and Google judges it; only a name nothing knows (`foo-bar`, `dall-e-3`) is refused.
    """
    routed = route_for_pool(model, custom_mapping, forwarding, offered)
    if routed in offered:
        return routed
    if is_variant(routed):  # an image model's size/ratio variant: known when its model is (the suffix stays)
        return routed if route_known(parse_variant(routed).model, {}, forwarding, offered, complete) else None
    if complete or not statically_known(model, custom_mapping, forwarding or _NO_RULES):
        return None
    return routed


def list_models(
    custom_mapping: Mapping[str, str], forwarding: Mapping[str, str] | None, offered: Collection[str], complete: bool
) -> list[str]:
    """Sorted ids for /v1/models, /v1/models/claude and /v1beta/models: every model an account offers (an image
    model with its size/ratio variants, §7.4) and every alias (custom_mapping, built-in table) that routes to one;
    never a pattern. While some account's list is unknown, the aliases the tables would send upstream are listed
    too."""
    ids = set(offered)
    for name in offered:
        if is_image_model(name):
            ids.update(image_variants(name))
    for name in (*custom_mapping, *BUILTIN_ROUTES):
        if "*" in name or name in UNLISTED or name in ids:
            continue
        if route_known(name, custom_mapping, forwarding, offered, complete) is not None:
            ids.add(name)
    return sorted(ids)
