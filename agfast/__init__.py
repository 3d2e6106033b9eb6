"""agfast: a fast local gateway from OpenAI, Anthropic and Gemini clients to Google Antigravity accounts."""

__version__ = "0.1.0"
