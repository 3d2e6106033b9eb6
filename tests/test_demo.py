"""The README's first command, as a newcomer runs it: `agfast --demo`, then curl and both Gemini SDKs."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator

import orjson
import pytest
from google import genai
from google.genai import types
from helpers import AgfastProcess, request


@pytest.fixture(scope="module")
def demo() -> Iterator[AgfastProcess]:
    proc = AgfastProcess("--demo", "--port", "0", "--data-dir", "/nonexistent-ignored-by-demo")
    with proc:
        yield proc
        assert proc.stop() == 0


def test_demo_prints_what_a_newcomer_needs(demo: AgfastProcess) -> None:
    text = "".join(demo.lines)
    assert "agfast demo: Google simulator at http://127.0.0.1:" in text
    assert "3 accounts (demo1@sim.local, demo2@sim.local, demo3@sim.local)" in text
    assert "accounts: 3" in demo.lines[-1]


def test_demo_with_curl(demo: AgfastProcess) -> None:
    url = f"http://127.0.0.1:{demo.port}/v1beta/models/gemini-3-flash:generateContent"
    body = '{"contents":[{"role":"user","parts":[{"text":"Hello from curl"}]}]}'
    out = subprocess.run(
        ["curl", "-s", "-H", "Content-Type: application/json", "-d", body, url],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    doc = orjson.loads(out.stdout)
    assert doc["candidates"][0]["content"]["parts"][0]["text"] == "[gemini-3-flash] echo: Hello from curl"
    streamed = subprocess.run(
        ["curl", "-sN", "-d", body, url.replace(":generateContent", ":streamGenerateContent?alt=sse")],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    events = [line[6:] for line in streamed.stdout.split(b"\n") if line.startswith(b"data: ")]
    text = "".join(orjson.loads(e)["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == "[gemini-3-flash] echo: Hello from curl"


def test_demo_with_google_genai(demo: AgfastProcess) -> None:
    client = genai.Client(api_key="sk-demo", http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{demo.port}"))
    answer = client.models.generate_content(model="gemini-3-flash", contents="Hi from google-genai")
    assert answer.text == "[gemini-3-flash] echo: Hi from google-genai"
    chunks = list(client.models.generate_content_stream(model="gemini-3-flash", contents="Hi from google-genai"))
    assert "".join(c.text or "" for c in chunks) == answer.text
    assert any(m.name == "models/gemini-3-flash" for m in client.models.list())


def test_demo_with_google_generativeai_as_antigravity_docs_show(demo: AgfastProcess) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package announces its own deprecation on import
        import google.generativeai as legacy

        legacy.configure(
            api_key="sk-demo", transport="rest", client_options={"api_endpoint": f"http://127.0.0.1:{demo.port}"}
        )
        model = legacy.GenerativeModel("gemini-3-flash")
        answer = model.generate_content("Hi from the legacy SDK")
        assert answer.text == "[gemini-3-flash] echo: Hi from the legacy SDK"
        streamed = "".join(chunk.text for chunk in model.generate_content("Hi from the legacy SDK", stream=True))
        assert streamed == answer.text
        assert model.count_tokens("Hi from the legacy SDK").total_tokens > 0


def test_demo_health_and_models(demo: AgfastProcess) -> None:
    assert request(demo.port, "GET", "/healthz").status == 200
    ids = {m["id"] for m in request(demo.port, "GET", "/v1/models").json()["data"]}
    assert {"gemini-3-flash", "claude-sonnet-4-6"} <= ids
