"""Prometheus metrics: counters and histograms moved by each finished request, gauges read at scrape time.

`observe(record)` runs on the request path: every label child it touches is bound once and kept in a dict,
so a request costs a few dict lookups and lock-protected additions (see benchmarks/observers.py). State that
lives elsewhere (account states, open streams, the monitor's queue) is not mirrored on every change; it is
read through callbacks when Prometheus scrapes. The registry is agfast's own, never the process-global one,
so two servers in one process (tests) never share series.

`--workers N`: the supervisor sets PROMETHEUS_MULTIPROC_DIR (a fresh directory) before forking, so
prometheus-client keeps each worker's counters and histograms in mmap'd files there, and a scrape answered by
any worker sums every worker's files (MultiProcessCollector; a dead worker's counts stay in the sums). The
per-worker scrape-time values (open streams, the monitor's queue and drops) are copied into livesum gauges and
counters once a second and at each scrape; the pool's account states are shared, so the answering worker
reports them. The request path never pays prometheus-client's own counters (four Python calls and a lock per
`inc`, three of them per request for the histograms alone, and with `--workers` an mmap'd file write each):
its series are `_PlainFamily`s, Python numbers moved on the loop thread. A single process turns them into the
exposition text at scrape time; a worker relays what they moved into its multiprocess files with the
scrape-time values (each second and at each scrape it answers, and when it stops), so a scrape sees another
live worker's requests at most SAMPLE_EVERY late, and a worker killed outright loses at most that much.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agfast.record import RequestRecord
from agfast.upstream.retry import STATUS_POLICY

# The classic text format: every Prometheus version and compatible scraper reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
# A whole request, Google's generation included: from a cached hello to a five-minute agent turn.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Google's time to the first event: its queueing and prompt processing, seconds to a minute.
FIRST_BYTE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
# agfast's own time per request (conversion, pool, writes): tens of microseconds when healthy.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
ACCOUNT_STATES = ("available", "limited", "disabled")
TOKEN_KINDS = ("input", "output", "cached")
# Retries that moved to another account (the policy table says which); a 429 with a stated delay too long
# to wait out rotates as well, a short one is retried on the same account.
ROTATING_REASONS = frozenset({s.reason for s in STATUS_POLICY.values() if s.rotate} | {"rate_limited_delay"})
# The proxy's fixed routes; anything else is folded so a scanner's random paths cannot add series.
FIXED_ROUTES = frozenset(
    {
        "/health", "/healthz", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/responses",
        "/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/models/claude", "/v1beta/models",
        "/metrics",
    }
)  # fmt: skip
MODEL_PREFIXES = ("/v1beta/models/", "/v1/models/")
MODEL_ACTIONS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
# The environment variable prometheus-client reads at import to keep values in files (multiprocess mode).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker copies its scrape-time values into the shared files (`--workers N`): a scrape answered by
# another worker sees them at most this old.
SAMPLE_EVERY = 1.0
# Label children remembered per cache (keys hold raw paths, so a scanner could grow them); past it a child is
# looked up per request instead, slower but bounded. The series themselves are bounded by route_of().
MAX_CHILDREN = 4096


def route_of(path: str) -> str:
    """A low-cardinality route label: the query dropped, model names in Gemini paths replaced by {model}."""
    path = path.partition("?")[0]
    if path in FIXED_ROUTES:
        return path
    for prefix in MODEL_PREFIXES:
        if path.startswith(prefix):
            _, colon, action = path[len(prefix) :].rpartition(":")
            if colon and action in MODEL_ACTIONS:
                return f"{prefix}{{model}}:{action}"
            return prefix + "{model}"
    if path.startswith("/api/"):
        return "/api/*"
    return "other"


StateReader = Callable[[], Mapping[str, int]]


class _ScrapeTime(Collector):
    """Gauges whose truth lives elsewhere, read when Prometheus asks (`per_process=False`: only the pool's
    account states, which every worker shares; the rest is in the shared files)."""

    def __init__(
        self,
        account_states: StateReader | None,
        open_streams: Callable[[], int] | None,
        monitor_status: Callable[[], Mapping[str, Any]] | None,
        per_process: bool = True,
    ) -> None:
        self.account_states = account_states
        self.open_streams = open_streams
        self.monitor_status = monitor_status
        self.per_process = per_process

    def collect(self) -> Iterable[Metric]:
        if self.account_states is not None:
            states = self.account_states()
            family = GaugeMetricFamily("agfast_accounts", "Accounts in the pool by state.", labels=["state"])
            for state in ACCOUNT_STATES:
                family.add_metric([state], states.get(state, 0))
            yield family
        if not self.per_process:
            return
        if self.open_streams is not None:
            yield GaugeMetricFamily("agfast_open_streams", "Streamed answers in flight.", value=self.open_streams())
        if self.monitor_status is not None:
            status = self.monitor_status()
            yield GaugeMetricFamily(
                "agfast_monitor_queue_depth",
                "Request records waiting for the monitor's writer.",
                value=status["queued"],
            )
            dropped = CounterMetricFamily(
                "agfast_monitor_dropped",
                "What the monitor dropped because its queue was full (bodies first, then whole rows).",
                labels=["what"],
            )
            dropped.add_metric(["bodies"], status["dropped_bodies"])
            dropped.add_metric(["rows"], status["dropped_rows"])
            yield dropped
            yield CounterMetricFamily(
                "agfast_monitor_write_errors", "Monitor batches that failed to write.", value=status["write_errors"]
            )


def _remember(cache: dict[Any, Any], key: Any, child: Any) -> Any:
    """Keep a bound label child for the next request; a full cache only stops remembering."""
    if len(cache) < MAX_CHILDREN:
        cache[key] = child
    return child


# Whether counters and histograms carry a `_created` sample; prometheus-client reads the same variable.
USE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


class _PlainCounter:
    """One counter series in a Python float (only the loop thread moves it)."""

    __slots__ = ("created", "relayed", "target", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()
        self.relayed = 0.0  # `--workers`: how much of `value` is in the shared files already
        self.target: Any = None  # `--workers`: the multiprocess series it is relayed to

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def relay(self, family: Any, key: tuple[str, ...]) -> None:
        """Move the shared series by what this one moved since the last relay."""
        moved = self.value - self.relayed
        if moved:
            if self.target is None:
                self.target = family.labels(*key)
            self.target.inc(moved)
            self.relayed = self.value

    def samples(self, metric: Metric, name: str, labels: dict[str, str]) -> None:
        metric.add_sample(name + "_total", labels, self.value)
        if USE_CREATED:
            metric.add_sample(name + "_created", labels, self.created)


class _PlainHistogram:
    """One histogram series as per-bucket counts (`bounds` end with +Inf, as prometheus-client's do)."""

    __slots__ = ("bounds", "counts", "created", "relayed", "relayed_sum", "sum", "target")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()
        self.relayed = [0.0] * len(bounds)
        self.relayed_sum = 0.0
        self.target: Any = None

    def observe(self, amount: float) -> None:
        # prometheus-client's rule (the first bound the amount is <=) in one bisection, not a loop of calls.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def samples(self, metric: Metric, name: str, labels: dict[str, str]) -> None:
        acc = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            acc += count
            metric.add_sample(name + "_bucket", {**labels, "le": floatToGoString(bound)}, acc)
        metric.add_sample(name + "_count", labels, acc)
        metric.add_sample(name + "_sum", labels, self.sum)
        if USE_CREATED:
            metric.add_sample(name + "_created", labels, self.created)

    def relay(self, family: Any, key: tuple[str, ...]) -> None:
        """Move the shared histogram by the observations since the last relay: its per-bucket values and sum
        (prometheus-client 0.26's `_buckets`/`_sum`, what `observe` moves; the version is pinned)."""
        if self.counts == self.relayed:
            return
        if self.target is None:
            self.target = family.labels(*key)
        buckets = self.target._buckets
        for i, (now, before) in enumerate(zip(self.counts, self.relayed, strict=True)):
            if now != before:
                buckets[i].inc(now - before)
        self.target._sum.inc(self.sum - self.relayed_sum)
        self.relayed = self.counts[:]
        self.relayed_sum = self.sum


class _PlainFamily(Collector):
    """A labelled counter or histogram whose series are `_PlainCounter`/`_PlainHistogram`: `labels()` and the
    exposition (`collect`) give what prometheus-client's Counter/Histogram give, sample for sample."""

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], registry: CollectorRegistry,
        buckets: tuple[float, ...] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = None if buckets is None else (*buckets, float("inf"))
        self.series: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: object) -> Any:
        key = tuple(str(v) for v in values)
        child = self.series.get(key)
        if child is None:
            child = _PlainCounter() if self.bounds is None else _PlainHistogram(self.bounds)
            self.series[key] = child
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, "counter" if self.bounds is None else "histogram")
        for values, child in self.series.items():
            child.samples(metric, self.name, dict(zip(self.labelnames, values, strict=True)))
        return [metric]

    def shared_twin(self, registry: CollectorRegistry) -> Any:
        """The prometheus-client family of the same name, labels and buckets whose values live in the
        multiprocess files (`--workers`)."""
        if self.bounds is None:
            return Counter(self.name, self.documentation, self.labelnames, registry=registry)
        return Histogram(self.name, self.documentation, self.labelnames, buckets=self.bounds, registry=registry)

    def relay(self, twin: Any) -> None:
        for key, child in self.series.items():
            child.relay(twin, key)


class _Shared:
    """A worker's scrape-time values as multiprocess series: gauges summed over live workers, counters moved by
    what changed since the last copy."""

    COUNTED = (("bodies", "dropped_bodies"), ("rows", "dropped_rows"))

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open_streams = Gauge(
            "agfast_open_streams", "Streamed answers in flight.", multiprocess_mode="livesum", registry=registry
        )
        self.queue_depth = Gauge(
            "agfast_monitor_queue_depth", "Request records waiting for the monitor's writer.",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        dropped = Counter(
            "agfast_monitor_dropped",
            "What the monitor dropped because its queue was full (bodies first, then whole rows).",
            ("what",),
            registry=registry,
        )
        self.dropped = {what: dropped.labels(what) for what, _ in self.COUNTED}
        self.write_errors = Counter(
            "agfast_monitor_write_errors", "Monitor batches that failed to write.", registry=registry
        )
        self.seen: dict[str, int] = {"dropped_bodies": 0, "dropped_rows": 0, "write_errors": 0}

    def copy(
        self, open_streams: Callable[[], int] | None, monitor_status: Callable[[], Mapping[str, Any]] | None
    ) -> None:
        if open_streams is not None:
            self.open_streams.set(open_streams())
        if monitor_status is None:
            return
        status = monitor_status()
        self.queue_depth.set(status["queued"])
        for what, name in self.COUNTED:
            self.dropped[what].inc(self._moved(name, status[name]))
        self.write_errors.inc(self._moved("write_errors", status["write_errors"]))

    def _moved(self, name: str, now: int) -> int:
        """How far a count moved since the last copy (a monitor reopened starts again from 0)."""
        before, self.seen[name] = self.seen[name], now
        return now - before if now >= before else now


class Metrics:
    """agfast's registry; `observe` is a request observer, `render` the body of GET /metrics.

    `multiprocess_dir` (`--workers N`): the directory prometheus-client keeps every worker's values in; a
    scrape sums them. None: this process's own values."""

    def __init__(
        self,
        account_states: StateReader | None = None,
        open_streams: Callable[[], int] | None = None,
        monitor_status: Callable[[], Mapping[str, Any]] | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        # The request path counts in plain numbers either way; with `--workers` those families are only relayed
        # (`sample`) into prometheus-client's own series of the same names, which live in the shared files.
        plain = registry if multiprocess_dir is None else CollectorRegistry(auto_describe=False)
        counter = histogram = functools.partial(_PlainFamily, registry=plain)
        self.requests = counter(
            "agfast_requests", "Requests answered, by surface, route and status.", ("surface", "route", "status"),
        )  # fmt: skip
        self.duration = histogram(
            "agfast_request_duration_seconds", "Request head arrived to last byte written.", ("surface",),
            buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.first_byte = histogram(
            "agfast_upstream_first_byte_seconds", "Request head arrived to Google's first event.", ("surface",),
            buckets=FIRST_BYTE_BUCKETS,
        )  # fmt: skip
        self.overhead = histogram(
            "agfast_overhead_seconds", "agfast's own time per request: duration less time waiting on Google.",
            ("surface",), buckets=OVERHEAD_BUCKETS,
        )  # fmt: skip
        self.tokens = counter(
            "agfast_tokens", "Tokens by account, model sent to Google, and kind.", ("account", "model", "kind"),
        )  # fmt: skip
        self.key_requests = counter("agfast_key_requests", 'Requests by named API key ("" = the main key).', ("key",))
        self.key_tokens = counter("agfast_key_tokens", "Tokens by named API key and kind.", ("key", "kind"))
        self.retries = counter("agfast_retries", "Upstream attempts retried, by reason.", ("reason",))
        self.rotations = counter("agfast_rotations", "Retries that moved to another account, by reason.", ("reason",))
        self.multiprocess_dir = multiprocess_dir
        self.open_streams = open_streams
        self.monitor_status = monitor_status
        self._shared: _Shared | None = None
        self._relayed: list[tuple[_PlainFamily, Any]] = []
        if multiprocess_dir is None:
            registry.register(_ScrapeTime(account_states, open_streams, monitor_status))
            self.scraped = registry
        else:
            from prometheus_client import multiprocess

            # The series above live in the files; `registry` is never scraped (it would count this worker twice).
            self._shared = _Shared(registry)
            families = (self.requests, self.duration, self.first_byte, self.overhead, self.tokens,
                        self.key_requests, self.key_tokens, self.retries, self.rotations)  # fmt: skip
            self._relayed = [(family, family.shared_twin(registry)) for family in families]
            self.scraped = CollectorRegistry(auto_describe=True)
            multiprocess.MultiProcessCollector(self.scraped, multiprocess_dir)
            self.scraped.register(_ScrapeTime(account_states, None, None, per_process=False))
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, tuple[Any, Any, Any]] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._retries: dict[str, tuple[Any, Any]] = {}
        self._keys: dict[str, tuple[Any, Any, Any, Any]] = {}

    def observe(self, record: RequestRecord) -> None:
        """Move the counters and histograms by one finished request (the series are `_PlainCounter` and
        `_PlainHistogram`: counters are moved in place here, one call less per counter on every request)."""
        surface = record.protocol
        path = record.path
        key = (surface, path.partition("?")[0] if "?" in path else path, record.status)
        counter = self._requests.get(key)
        if counter is None:
            counter = _remember(self._requests, key, self.requests.labels(surface, route_of(key[1]), record.status))
        counter.value += 1
        latency = self._latency.get(surface)
        if latency is None:
            children = (self.duration.labels(surface), self.first_byte.labels(surface), self.overhead.labels(surface))
            latency = _remember(self._latency, surface, children)
        duration = record.duration
        latency[0].observe(duration)
        if record.first_byte:
            latency[1].observe(record.first_byte)
        latency[2].observe(max(0.0, duration - record.upstream_seconds))  # RequestRecord.overhead
        if record.input_tokens or record.output_tokens or record.cached_tokens:
            who = (record.account_email, record.mapped_model or record.model)
            tokens = self._tokens.get(who)
            if tokens is None:
                tokens = _remember(self._tokens, who, tuple(self.tokens.labels(*who, k) for k in TOKEN_KINDS))
            tokens[0].value += record.input_tokens
            tokens[1].value += record.output_tokens
            tokens[2].value += record.cached_tokens
        if record.key_name:
            named = self._keys.get(record.key_name)
            if named is None:
                name = record.key_name
                bound = (self.key_requests.labels(name), *(self.key_tokens.labels(name, k) for k in TOKEN_KINDS))
                named = _remember(self._keys, name, bound)
            named[0].inc()
            named[1].inc(record.input_tokens)
            named[2].inc(record.output_tokens)
            named[3].inc(record.cached_tokens)
        for reason in record.retries:
            pair = self._retries.get(reason)
            if pair is None:
                pair = _remember(self._retries, reason, (self.retries.labels(reason), self.rotations.labels(reason)))
            pair[0].inc()
            if reason in ROTATING_REASONS:
                pair[1].inc()

    def sample(self) -> None:
        """`--workers N`: copy this worker's scrape-time values into the shared files (each second, each scrape)."""
        if self._shared is not None:
            self._shared.copy(self.open_streams, self.monitor_status)
            for family, twin in self._relayed:
                family.relay(twin)

    async def sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    def render(self) -> tuple[bytes, bytes]:
        """The exposition text and its content type."""
        self.sample()
        return generate_latest(self.scraped), CONTENT_TYPE
