"""Prometheus metrics move with observed records; the text parses with prometheus_client's own parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agfast.metrics import DURATION_BUCKETS, OVERHEAD_BUCKETS, Metrics, _PlainFamily, route_of
from agfast.monitor import Monitor
from agfast.record import RequestRecord


def record(
    path: str = "/v1/chat/completions",
    protocol: str = "openai",
    status: int = 200,
    *,
    tokens: tuple[int, int, int] = (10, 5, 2),
    retries: tuple[str, ...] = (),
    account: str = "a@example.com",
) -> RequestRecord:
    rec = RequestRecord("r", "POST", path, protocol, "127.0.0.1", 0.0)
    rec.status = status
    rec.duration = 1.5
    rec.first_byte = 0.4
    rec.upstream_seconds = 1.499
    rec.account_email = account
    rec.model = "gpt-4o"
    rec.mapped_model = "gemini-3-flash"
    rec.input_tokens, rec.output_tokens, rec.cached_tokens = tokens
    rec.retries = list(retries)
    return rec


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith(b"text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


ROUTES = [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1beta/models/g-3:streamGenerateContent?alt=sse&key=sk-x", "/v1beta/models/{model}:streamGenerateContent"),
    ("/v1beta/models/some-model", "/v1beta/models/{model}"),
    ("/v1/models/gemini-3-flash:generateContent", "/v1/models/{model}:generateContent"),
    ("/v1beta/models/x:evil", "/v1beta/models/{model}"),
    ("/api/logs?limit=5", "/api/*"),
    ("/wp-login.php", "other"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "route"), ROUTES)
def test_route_label(path: str, route: str) -> None:
    assert route_of(path) == route


def test_counters_and_histograms_move_with_traffic() -> None:
    metrics = Metrics()
    before = scrape(metrics)
    assert value(before, "agfast_requests_total", surface="openai", route="/v1/chat/completions", status="200") == 0
    for _ in range(3):
        metrics.observe(record())
    metrics.observe(record("/v1/messages", "anthropic", 429, tokens=(0, 0, 0), retries=("rate_limited", "overloaded")))
    metrics.observe(record("/v1beta/models/m1:generateContent", "gemini", retries=("rate_limited_grace",)))
    metrics.observe(record("/v1beta/models/m2:generateContent?key=sk-secret", "gemini", account="b@example.com"))
    after = scrape(metrics)
    chat = {"surface": "openai", "route": "/v1/chat/completions", "status": "200"}
    assert value(after, "agfast_requests_total", **chat) == 3
    assert value(after, "agfast_requests_total", surface="anthropic", route="/v1/messages", status="429") == 1
    gemini_route = {"surface": "gemini", "route": "/v1beta/models/{model}:generateContent", "status": "200"}
    assert value(after, "agfast_requests_total", **gemini_route) == 2
    tokens = {"account": "a@example.com", "model": "gemini-3-flash"}
    assert value(after, "agfast_tokens_total", kind="input", **tokens) == 40
    assert value(after, "agfast_tokens_total", kind="output", **tokens) == 20
    assert value(after, "agfast_tokens_total", kind="cached", **tokens) == 8
    assert value(after, "agfast_tokens_total", kind="input", account="b@example.com", model="gemini-3-flash") == 10
    assert value(after, "agfast_retries_total", reason="rate_limited") == 1
    assert value(after, "agfast_rotations_total", reason="rate_limited") == 1
    assert value(after, "agfast_retries_total", reason="overloaded") == 1
    assert value(after, "agfast_rotations_total", reason="overloaded") == 0  # overload is not the account's fault
    assert value(after, "agfast_rotations_total", reason="rate_limited_grace") == 0  # retried on the same account
    assert value(after, "agfast_request_duration_seconds_count", surface="openai") == 3
    assert value(after, "agfast_request_duration_seconds_bucket", surface="openai", le="1.0") == 0
    assert value(after, "agfast_request_duration_seconds_bucket", surface="openai", le="2.5") == 3
    assert value(after, "agfast_upstream_first_byte_seconds_bucket", surface="openai", le="0.5") == 3
    assert value(after, "agfast_overhead_seconds_bucket", surface="openai", le="0.001") == 3  # 1 ms of overhead
    assert value(after, "agfast_overhead_seconds_bucket", surface="openai", le="0.0005") == 0
    assert not any("sk-secret" in str(key) for key in after)


def test_scrape_time_gauges(tmp_path: Path) -> None:
    states = {"available": 2, "limited": 1}
    streams = [0]
    monitor = Monitor(tmp_path, queue_size=2)
    try:
        metrics = Metrics(lambda: states, lambda: streams[0], monitor.status)
        first = scrape(metrics)
        assert value(first, "agfast_accounts", state="available") == 2
        assert value(first, "agfast_accounts", state="disabled") == 0
        assert value(first, "agfast_open_streams") == 0
        assert value(first, "agfast_monitor_dropped_total", what="rows") == 0
        states["limited"] = 3
        streams[0] = 5
        assert monitor.pause()
        for _ in range(5):
            monitor.observe(record())
        second = scrape(metrics)
        assert value(second, "agfast_accounts", state="limited") == 3
        assert value(second, "agfast_open_streams") == 5
        assert value(second, "agfast_monitor_queue_depth") == 2
        assert value(second, "agfast_monitor_dropped_total", what="rows") == 3
        assert value(second, "agfast_monitor_dropped_total", what="bodies") == 0  # these records had no bodies
        monitor.resume()
        assert monitor.flush()
        assert value(scrape(metrics), "agfast_monitor_queue_depth") == 0
    finally:
        monitor.close()


def test_registries_are_separate() -> None:
    one, two = Metrics(), Metrics()
    one.observe(record())
    assert (
        value(scrape(two), "agfast_requests_total", surface="openai", route="/v1/chat/completions", status="200") == 0
    )


def _created_zeroed(text: bytes) -> list[str]:
    """Exposition lines with the `_created` timestamps (the moment a series was made) set to 0."""
    return [re.sub(r"(_created\{.*\}) \S+$", r"\1 0", line) for line in text.decode().splitlines()]


def test_plain_series_expose_exactly_what_prometheus_client_does() -> None:
    """One process counts its request-path series in plain numbers (`_PlainFamily`); the text a scrape gets is
    prometheus-client's own, line for line, bucket edges included."""
    observed = [0.0, 0.0001, 0.00025, 0.0003, 0.05, 0.051, 1.0, 2.5, 299.9, 300.0, 301.0, float("inf")]
    plain_registry, reference = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    for buckets in (DURATION_BUCKETS, OVERHEAD_BUCKETS):
        plain = _PlainFamily("h", "A histogram.", ("surface",), plain_registry, buckets=buckets)
        real = Histogram("h", "A histogram.", ("surface",), buckets=buckets, registry=reference)
        for i, amount in enumerate(observed):
            for family in (plain, real):
                family.labels(("openai", "gemini")[i % 2]).observe(amount)
        assert _created_zeroed(generate_latest(plain_registry)) == _created_zeroed(generate_latest(reference))
        plain_registry.unregister(plain)
        reference.unregister(real)
    plain = _PlainFamily("c", "A counter.", ("surface", "status"), plain_registry)
    real = Counter("c", "A counter.", ("surface", "status"), registry=reference)
    for family in (plain, real):
        family.labels("openai", 200).inc()
        family.labels("openai", 200).inc(2.5)
        family.labels("gemini", 429).inc(0)
    assert _created_zeroed(generate_latest(plain_registry)) == _created_zeroed(generate_latest(reference))


def test_relayed_series_in_steps_equal_prometheus_clients_own_counting() -> None:
    """`--workers`: a worker relays its plain series into prometheus-client's series (the shared files) by what
    moved since the last relay; after any number of relays the shared series say what direct counting says."""
    observed = [0.0, 0.0001, 0.0003, 0.05, 1.0, 2.5, 300.0, 301.0, 0.00025, 0.7]
    relayed_registry, reference = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    plain = _PlainFamily("h", "A histogram.", ("surface",), CollectorRegistry(), buckets=OVERHEAD_BUCKETS)
    twin = plain.shared_twin(relayed_registry)
    real = Histogram("h", "A histogram.", ("surface",), buckets=OVERHEAD_BUCKETS, registry=reference)
    counter = _PlainFamily("c", "A counter.", ("surface",), CollectorRegistry())
    counter_twin = counter.shared_twin(relayed_registry)
    real_counter = Counter("c", "A counter.", ("surface",), registry=reference)
    for i, amount in enumerate(observed):
        surface = ("openai", "gemini")[i % 2]
        plain.labels(surface).observe(amount)
        real.labels(surface).observe(amount)
        counter.labels(surface).inc(amount)
        real_counter.labels(surface).inc(amount)
        if i % 3 == 0:  # relays between some observations, none between others
            plain.relay(twin)
            counter.relay(counter_twin)
    plain.relay(twin)
    counter.relay(counter_twin)
    plain.relay(twin)  # nothing moved: nothing changes
    assert _created_zeroed(generate_latest(relayed_registry)) == _created_zeroed(generate_latest(reference))
