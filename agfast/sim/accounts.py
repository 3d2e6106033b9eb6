"""Simulated Google accounts and the model catalog they can see."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MODELS",
    "DEPRECATED_MODEL_IDS",
    "MODEL_CATALOG",
    "TIERS",
    "ModelSpec",
    "SimAccount",
    "demo_accounts",
]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What Google advertises (and enforces) for one upstream model id."""

    name: str
    display_name: str
    family: str  # "gemini" | "claude" | "gpt"
    max_tokens: int
    max_output_tokens: int
    supports_thinking: bool = False
    thinking_budget: int = 0
    supports_images: bool = False
    recommended: bool = False
    # Gemini 3 rejects a current-turn functionCall without its thought signature; 2.5 and image models do not.
    strict_signatures: bool = False
    image_output: bool = False


_IMAGE_MIME = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "application/pdf")


def _m(name: str, display: str, family: str, context: int, max_out: int, budget: int = 0, **flags: bool) -> ModelSpec:
    return ModelSpec(
        name, display, family, context, max_out, supports_thinking=budget > 0, thinking_budget=budget, **flags
    )


_G = {"supports_images": True}
_G3 = {"supports_images": True, "strict_signatures": True}
MODEL_CATALOG: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _m("gemini-2.5-flash", "Gemini 2.5 Flash", "gemini", 1048576, 65536, 24576, **_G),
        _m("gemini-3-flash", "Gemini 3 Flash", "gemini", 1048576, 65536, 32768, recommended=True, **_G3),
        _m("gemini-3-pro-high", "Gemini 3 Pro (High)", "gemini", 1048576, 65536, 49152, recommended=True, **_G3),
        _m("gemini-3-pro-low", "Gemini 3 Pro (Low)", "gemini", 1048576, 65536, 8192, **_G3),
        _m(
            "gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", "gemini", 1048576, 65536, 49152, recommended=True, **_G3
        ),
        _m("gemini-pro-agent", "Gemini 3.1 Pro (High)", "gemini", 1048576, 65536, 10001, recommended=True, **_G3),
        _m("gemini-3.1-flash-lite", "Gemini 3.1 Flash Lite", "gemini", 1048576, 16384, **_G),
        _m("claude-sonnet-4-6", "Claude Sonnet 4.6", "claude", 200000, 64000, recommended=True, **_G),
        _m("claude-sonnet-4-6-thinking", "Claude Sonnet 4.6 (Thinking)", "claude", 200000, 64000, 32768, **_G),
        _m(
            "claude-opus-4-6-thinking",
            "Claude Opus 4.6 (Thinking)",
            "claude",
            200000,
            64000,
            32768,
            recommended=True,
            **_G,
        ),
        _m("gpt-oss-120b-medium", "GPT-OSS 120B (Medium)", "gpt", 131072, 32768),
        # Gemini 3 Pro Image thinks but, per Google's docs, does not enforce thought signatures.
        _m("gemini-3-pro-image", "Gemini 3 Pro Image", "gemini", 65536, 32768, 32768, image_output=True, **_G),
    )
}

DEFAULT_MODELS: tuple[str, ...] = tuple(MODEL_CATALOG)

# Retired ids Google answers with in fetchAvailableModels; the sim does not serve them (agfast must forward).
DEPRECATED_MODEL_IDS: dict[str, str] = {
    "gemini-3-pro-preview": "gemini-3.1-pro-preview",
    "claude-sonnet-4-5": "claude-sonnet-4-6",
    "claude-sonnet-4-5-thinking": "claude-sonnet-4-6-thinking",
    "claude-opus-4-5-thinking": "claude-opus-4-6-thinking",
}

# tier -> (currentTier, paidTier or None)
TIERS: dict[str, tuple[dict[str, object], dict[str, object] | None]] = {
    "FREE": ({"id": "free-tier", "name": "Free"}, None),
    "PRO": ({"id": "standard-tier", "name": "Gemini Code Assist"}, {"id": "g1-pro-tier", "name": "Google AI Pro"}),
    "ULTRA": (
        {"id": "standard-tier", "name": "Gemini Code Assist"},
        {"id": "g1-ultra-tier", "name": "Google AI Ultra"},
    ),
}


def supported_mime_types(spec: ModelSpec) -> dict[str, bool]:
    return dict.fromkeys(_IMAGE_MIME, True) if spec.supports_images else {}


@dataclass(slots=True)
class SimAccount:
    """One Google identity: its refresh token, Code Assist project, tier and per-model quota."""

    email: str
    refresh_token: str
    project_id: str = ""
    tier: str = "PRO"
    name: str = ""
    models: tuple[str, ...] = DEFAULT_MODELS
    remaining: dict[str, float] = field(default_factory=dict)
    default_remaining: float = 1.0
    reset_after: float = 5 * 3600.0
    revoked: bool = False
    client_id: str | None = None  # when set, refreshing with another OAuth client is unauthorized_client
    user_id: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.email.encode()).hexdigest()
        if not self.project_id:
            self.project_id = f"sim-{self.email.split('@')[0]}-{digest[:5]}"
        if not self.name:
            self.name = self.email.split("@")[0].replace(".", " ").title()
        if not self.user_id:
            self.user_id = str(100000000000000000000 + int(digest[:15], 16) % 10**20)
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; use one of {sorted(TIERS)}")

    def remaining_fraction(self, model: str) -> float:
        return self.remaining.get(model, self.default_remaining)


_DEMO_TIERS = ("PRO", "ULTRA", "FREE")


def demo_accounts(n: int = 3) -> list[SimAccount]:
    """Deterministic accounts so docs, tests and `agfast --demo` agree on emails and tokens."""
    return [
        SimAccount(
            email=f"demo{i}@sim.local",
            refresh_token=f"1//sim-refresh-demo{i}",
            project_id=f"sim-project-demo{i}",
            tier=_DEMO_TIERS[(i - 1) % len(_DEMO_TIERS)],
            name=f"Demo User {i}",
        )
        for i in range(1, n + 1)
    ]
