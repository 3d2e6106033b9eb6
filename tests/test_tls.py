"""`--tls-cert/--tls-key`: agfast serves HTTPS itself (TLS 1.2+, HTTP/1.1 by ALPN) to SDKs that trust a test CA,
says https in its banner, and refuses to start on a missing or unusable certificate."""

from __future__ import annotations

import re
import socket
import ssl
import urllib.request
from pathlib import Path

import openai
import pytest
import trustme
from helpers import AgfastProcess, run_agfast, seed_account
from stack import KEY, agfast_on

from agfast.server import tls_context
from agfast.sim import GoogleSimulator


class TlsFiles:
    def __init__(self, tmp_path: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = tmp_path / "ca.pem"
        self.cert = tmp_path / "cert.pem"
        self.key = tmp_path / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert), append=True)
        cert.private_key_pem.write_to_path(str(self.key))


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path)


def test_openai_sdk_streams_over_https(sim: GoogleSimulator, tmp_path: Path, tls: TlsFiles) -> None:
    with agfast_on(sim, tmp_path / "data", tls_cert=tls.cert, tls_key=tls.key) as st:
        base = f"https://127.0.0.1:{st.port}/v1"
        trusted = ssl.create_default_context(cafile=str(tls.ca))
        with openai.DefaultHttpx2Client(verify=trusted) as http:
            client = openai.OpenAI(base_url=base, api_key=KEY, http_client=http, max_retries=0)
            stream = client.chat.completions.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text
        # TLS 1.2 or newer, HTTP/1.1 negotiated by ALPN
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", st.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            assert sock.selected_alpn_protocol() == "http/1.1"
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert st.server.state is not None
        assert tls_context(st.config).minimum_version == ssl.TLSVersion.TLSv1_2  # type: ignore[union-attr]


class HttpsAgfast(AgfastProcess):
    LISTENING = re.compile(r"listening on https://[^:]+:(\d+)")


def test_banner_says_https(tmp_path: Path, tls: TlsFiles) -> None:
    seed_account(tmp_path)
    args = ("--data-dir", str(tmp_path), "--port", "0", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
    with HttpsAgfast(*args) as proc:
        assert "https://127.0.0.1:" in proc.lines[-1]
        trusted = ssl.create_default_context(cafile=str(tls.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{proc.port}/healthz", context=trusted, timeout=5) as reply:
            assert reply.status == 200


def test_unusable_certificates_stop_the_start(tmp_path: Path, tls: TlsFiles) -> None:
    data = ("--data-dir", str(tmp_path), "--port", "0")
    missing = run_agfast(*data, "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(tls.key))
    assert missing.returncode == 2 and "tls_cert" in missing.stderr and "nope.pem" in missing.stderr
    alone = run_agfast(*data, "--tls-cert", str(tls.cert))
    assert alone.returncode == 2 and "tls_key" in alone.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = run_agfast(*data, "--tls-cert", str(garbage), "--tls-key", str(tls.key))
    assert bad.returncode == 1 and "cannot serve TLS" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
    swapped = run_agfast(*data, "--tls-cert", str(tls.cert), "--tls-key", str(tls.ca))
    assert swapped.returncode == 1 and "cannot serve TLS" in swapped.stderr
