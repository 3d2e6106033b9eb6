"""Model routing: client model names → upstream Antigravity model names (reference §7).

Everything here is a table plus a few small functions reading it. The resolution order is
forwarding rules → exact custom mapping → wildcard custom mapping → ``BUILTIN_ROUTES`` → pass through,
and, when the pool's model list is known, a family fallback so that names newer than any table
(``claude-opus-5-5``, ``gemini-3.5-flash-lite``, ``gpt-5``) land on the nearest model the accounts offer
instead of an upstream 404.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

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
# Static specs (§7.5).


class ModelSpec(NamedTuple):
    max_output_tokens: int
    thinking_budget: int


MODEL_SPECS: dict[str, ModelSpec] = {
    "gemini-2.0-flash": ModelSpec(65535, 24576),
    "gemini-2.5-flash": ModelSpec(65535, 32768),
    "gemini-3-flash": ModelSpec(65536, 32768),
    "gemini-3-pro-high": ModelSpec(65536, 49152),
    "gemini-3.1-pro-preview": ModelSpec(65536, 49152),
    "claude-sonnet-4-6": ModelSpec(64000, 32768),
    "claude-opus-4-6-thinking": ModelSpec(64000, 32768),
    "gpt-oss-120b-medium": ModelSpec(32768, 0),
}
DEFAULT_MAX_OUTPUT_TOKENS = 65535
DEFAULT_THINKING_BUDGET = 24576
DEFAULT_CLAUDE_THINKING_BUDGET = 16000


def model_spec(name: str, account_max_output_tokens: int | None = None) -> ModelSpec:
    """Output/thinking limits for an upstream model; an account's own quota data overrides max output."""
    spec = MODEL_SPECS.get(name)
    if spec is None and name.endswith("-thinking"):
        spec = MODEL_SPECS.get(name.removesuffix("-thinking"))
    if spec is None:
        claude = "claude" in name.lower()
        spec = ModelSpec(
            DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_CLAUDE_THINKING_BUDGET if claude else DEFAULT_THINKING_BUDGET
        )
    if account_max_output_tokens:
        spec = spec._replace(max_output_tokens=account_max_output_tokens)
    return spec


def is_thinking_model(name: str) -> bool:
    """Whether requests to this upstream model get a thinkingConfig by default (§6.2)."""
    lower = name.lower()
    if "thinking" in lower:
        return True
    if not lower.startswith("gemini") or "image" in lower or "flash-lite" in lower:
        return False
    return "flash" in lower or "-pro" in lower


# ---------------------------------------------------------------------------------------------------------
# Model list (§7.4).

_IMAGE_BASE = "gemini-3-pro-image"
_IMAGE_SIZES = ("", "-2k", "-4k")
_IMAGE_RATIOS = ("", "-1x1", "-4x3", "-3x4", "-16x9", "-9x16", "-21x9")
IMAGE_VARIANTS: tuple[str, ...] = tuple(f"{_IMAGE_BASE}{s}{r}" for s in _IMAGE_SIZES for r in _IMAGE_RATIOS)
EXTRA_LISTED_MODELS: tuple[str, ...] = (
    "gemini-2.0-flash-exp",
    "gemini-2.5-flash",
    "gemini-3-flash",
    "gemini-3.1-pro-high",
    "gemini-3.1-pro-low",
)


def list_models(
    custom_mapping: Mapping[str, str], account_models: Iterable[str], only_raw_quota_models: bool = False
) -> list[str]:
    """Sorted, de-duplicated ids for /v1/models, /v1/models/claude and /v1beta/models."""
    ids: set[str] = set()
    for raw in account_models:
        ids.add(raw)
        standard = normalize_to_standard_id(raw)
        if standard is not None:
            ids.add(standard)
    if not only_raw_quota_models:
        ids.update(custom_mapping)
        ids.update(BUILTIN_ROUTES)
        ids.update(IMAGE_VARIANTS)
        ids.update(EXTRA_LISTED_MODELS)
    return sorted(ids)
