"""The route table: every path agfast answers, in one screen."""

from __future__ import annotations

from agfast.api import anthropic, gemini, openai, service
from agfast.http.errors import Family
from agfast.http.router import GET, HEAD, POST, Router

GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")


def build_router() -> Router:
    r = Router()
    r.add((GET,), "/healthz", service.health, Family.OPENAI, health=True)
    r.add((GET,), "/health", service.health, Family.OPENAI, health=True)
    r.add((GET, HEAD), "/api/hello", service.hello, Family.ANTHROPIC, public=True)
    r.add((POST,), "/v1/api/event_logging", service.swallow, Family.ANTHROPIC)
    r.add((POST,), "/v1/api/event_logging/batch", service.swallow, Family.ANTHROPIC)

    r.add((GET,), "/v1/models", openai.list_models, Family.OPENAI)
    r.add((POST,), "/v1/chat/completions", openai.chat_completions, Family.OPENAI)
    r.add((POST,), "/v1/completions", openai.completions, Family.OPENAI)
    r.add((POST,), "/v1/responses", openai.responses, Family.OPENAI)
    r.add((POST,), "/responses", openai.responses, Family.OPENAI)

    r.add((POST,), "/v1/messages", anthropic.messages, Family.ANTHROPIC)
    r.add((POST,), "/v1/messages/count_tokens", anthropic.count_tokens, Family.ANTHROPIC)
    r.add((GET,), "/v1/models/claude", anthropic.list_models, Family.ANTHROPIC)

    r.add((GET,), "/v1beta/models", gemini.list_models, Family.GEMINI)
    for prefix in GEMINI_PREFIXES:
        r.add_model_action(prefix, "generateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "streamGenerateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "countTokens", (POST,), gemini.count_tokens, Family.GEMINI)
    r.add_model_action("/v1beta/models/", "", (GET,), gemini.get_model, Family.GEMINI)
    return r
