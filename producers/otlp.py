"""OTLP metrics receiver: OpenTelemetry SDKs export to it over HTTP; it publishes MetricBatches.

``swarmwatch ingest otlp`` serves ``POST /v1/metrics`` (OTLP/HTTP, protobuf or
JSON, optionally gzip-compressed) and publishes what it receives to
``sw.metrics.<cluster>.<node>``, one batch per node and request. The answer
comes only after JetStream stored the batches, so an exporter retries what was
not stored (503, retryable).

Cluster and node come from resource attributes through a configurable
mapping, first attribute present wins (default cluster: ``swarmwatch.cluster``,
``service.namespace``; node: ``swarmwatch.node``, ``host.name``,
``service.instance.id``), else the receiver's defaults. Values are made into
subject tokens (other characters become ``-``, at most 64). Every sample keeps
its data point's attributes plus ``service`` (``service.name``), within the
caps (16 labels; a point over them is dropped and counted).

Mapping, in the spirit of the scrape bridge:

- gauge and non-monotonic sum: ``<name>`` as is;
- monotonic sum: ``<name>:rate`` per second (delta temporality: value over the
  point's interval; cumulative: between two exports, a reset or a new start
  time gives no rate);
- histogram and exponential histogram: ``<name>:p50``/``:p95``/``:p99`` over the
  interval's observations, ``<name>:mean`` and ``<name>_count:rate``;
- summary: ``<name>:p<q>`` from its quantiles.

OTLP/gRPC is not served: it would add grpcio (a large native dependency) to a
receiver that OTLP/HTTP already covers for every SDK.
"""
from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import math
import re
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.rates import CounterRates
from producers.scrape import DEFAULT_QUANTILES, bucket_quantile, quantile_name
from schemas.models import MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_SAMPLES_PER_BATCH, MetricBatch, Sample

log = logging.getLogger("swarmwatch.ingest.otlp")

DEFAULT_PORT = 4318  # the OTLP/HTTP port every SDK defaults to
DEFAULT_CLUSTER_ATTRS = ("swarmwatch.cluster", "service.namespace")
DEFAULT_NODE_ATTRS = ("swarmwatch.node", "host.name", "service.instance.id")
DEFAULT_MAX_SERIES = 100_000  # cumulative baselines kept (rates, histogram buckets); more are refused and counted
MAX_BODY_BYTES = 16 * 2**20
_BAD_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_DELTA = 1  # AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def to_token(value: str) -> str | None:
    """A resource attribute as a subject token (``web-1.example.com`` -> ``web-1-example-com``); None if empty."""
    tok = _BAD_TOKEN_CHARS.sub("-", value).strip("-")[:64].strip("-")
    return tok or None


def _any_value(v: Any) -> str:
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "array_value":
        return ",".join(_any_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return ",".join(f"{kv.key}={_any_value(kv.value)}" for kv in v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    val = getattr(v, kind)
    if kind == "bool_value":
        return "true" if val else "false"
    return str(val)


def _attrs(kvs: Iterable[Any]) -> dict[str, str]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


@dataclass
class ResourceMapping:
    """Which resource attributes name the cluster and the node (first present wins), and the defaults."""

    cluster: str = "default"
    node: str = "otlp"
    cluster_attrs: Sequence[str] = DEFAULT_CLUSTER_ATTRS
    node_attrs: Sequence[str] = DEFAULT_NODE_ATTRS

    def __post_init__(self) -> None:
        from schemas.subjects import check_token

        check_token(self.cluster, "cluster")
        check_token(self.node, "node")

    def place(self, attrs: Mapping[str, str]) -> tuple[str, str]:
        """(cluster, node) for a resource."""
        cluster = next((t for a in self.cluster_attrs if (t := to_token(attrs.get(a, ""))) is not None), self.cluster)
        node = next((t for a in self.node_attrs if (t := to_token(attrs.get(a, ""))) is not None), self.node)
        return cluster, node


@dataclass
class MapperStats:
    """What the receiver did with the points it got."""

    requests: int = 0
    points: int = 0
    samples: int = 0
    dropped: int = 0  # over the label caps, invalid names or values, over max_series
    batches: int = 0
    rejected: int = 0  # requests that could not be decoded
    failed: int = 0  # requests answered 503 because JetStream did not store them


class OtlpMapper:
    """Turns ExportMetricsServiceRequests into samples per (cluster, node); keeps cumulative baselines."""

    def __init__(self, mapping: ResourceMapping | None = None, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.mapping = mapping or ResourceMapping()
        self.quantiles = tuple(quantiles)
        self.max_series = max_series
        self.rates = CounterRates()
        self._starts: dict[str, int] = {}
        self._hist: dict[str, tuple[list[tuple[float, float]], float, float, int]] = {}
        self.stats = MapperStats()

    def convert(self, request: Any) -> dict[tuple[str, str], tuple[float, list[Sample]]]:
        """``{(cluster, node): (newest point time in UNIX s, samples)}`` for one request."""
        out: dict[tuple[str, str], tuple[float, list[Sample]]] = {}
        self.stats.requests += 1
        for rm in request.resource_metrics:
            rattrs = _attrs(rm.resource.attributes)
            cluster, node = self.mapping.place(rattrs)
            service = rattrs.get("service.name")
            base = {"service": service[:MAX_LABEL_VALUE_LEN]} if service else {}
            newest, samples = out.get((cluster, node), (0.0, []))
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    newest = max(newest, self._metric(metric, f"{cluster}.{node}", base, samples))
            out[(cluster, node)] = (newest, samples)
        return out

    def _labels(self, base: dict[str, str], kvs: Iterable[Any]) -> dict[str, str] | None:
        labels = _attrs(kvs)
        labels.update(base)
        if len(labels) > MAX_LABELS or any(
            not 1 <= len(k) <= MAX_LABEL_KEY_LEN or len(v) > MAX_LABEL_VALUE_LEN for k, v in labels.items()
        ):
            return None
        return labels

    def _add(self, out: list[Sample], name: str, value: float, unit: str | None, labels: dict[str, str] | None) -> None:
        if labels is None or not math.isfinite(value):
            self.stats.dropped += 1
            return
        try:
            out.append(Sample(name, float(value), unit or None, labels or None).validate())
            self.stats.samples += 1
        except (ValueError, TypeError):
            self.stats.dropped += 1

    def _room(self, key: str, table: Mapping[str, Any]) -> bool:
        """Whether a baseline for ``key`` may be kept (bounded state)."""
        if key in table or len(table) < self.max_series:
            return True
        self.stats.dropped += 1
        return False

    def _metric(self, m: Any, where: str, base: dict[str, str], out: list[Sample]) -> float:
        kind = m.WhichOneof("data")
        name, unit = m.name, (m.unit or None)
        newest = 0.0
        if kind == "gauge" or (kind == "sum" and not m.sum.is_monotonic):
            for p in getattr(m, kind).data_points:
                self.stats.points += 1
                newest = max(newest, p.time_unix_nano / 1e9)
                if p.flags & _NO_RECORDED_VALUE:
                    continue
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                self._add(out, name, value, unit, self._labels(base, p.attributes))
        elif kind == "sum":
            delta = m.sum.aggregation_temporality == _DELTA
            for p in m.sum.data_points:
                self.stats.points += 1
                newest = max(newest, p.time_unix_nano / 1e9)
                if p.flags & _NO_RECORDED_VALUE:
                    continue
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                labels = self._labels(base, p.attributes)
                rate = self._rate(f"{where}|{name}|{_key(labels)}", value, p, delta)
                if rate is not None:
                    self._add(out, name + ":rate", rate, f"{unit}/s" if unit else "/s", labels)
        elif kind in ("histogram", "exponential_histogram"):
            data = getattr(m, kind)
            delta = data.aggregation_temporality == _DELTA
            for p in data.data_points:
                self.stats.points += 1
                newest = max(newest, p.time_unix_nano / 1e9)
                if p.flags & _NO_RECORDED_VALUE:
                    continue
                buckets = _explicit(p) if kind == "histogram" else _exponential(p)
                self._histogram(out, name, unit, self._labels(base, p.attributes), f"{where}|{name}", p, buckets, delta)
        elif kind == "summary":
            for p in m.summary.data_points:
                self.stats.points += 1
                newest = max(newest, p.time_unix_nano / 1e9)
                labels = self._labels(base, p.attributes)
                for qv in p.quantile_values:
                    if 0.0 < qv.quantile < 1.0:
                        self._add(out, f"{name}:{quantile_name(qv.quantile)}", qv.value, unit, labels)
        return newest

    def _rate(self, key: str, value: float, p: Any, delta: bool) -> float | None:
        if delta:
            dt = (p.time_unix_nano - p.start_time_unix_nano) / 1e9
            return value / dt if dt > 0 and value >= 0 else None
        if not self._room(key, self._starts):
            return None
        start = p.start_time_unix_nano
        if self._starts.get(key, start) != start:  # the counter restarted
            self.rates.forget(key)
            self.rates.resets += 1
        self._starts[key] = start
        return self.rates.rate(key, value, p.time_unix_nano / 1e9)

    def _histogram(self, out: list[Sample], name: str, unit: str | None, labels: dict[str, str] | None, where: str,
                   p: Any, buckets: list[tuple[float, float]], delta: bool) -> None:
        key = f"{where}|{_key(labels)}"
        t_s = p.time_unix_nano / 1e9
        count, total = float(p.count), float(p.sum) if p.HasField("sum") else math.nan
        if delta:
            dt = (p.time_unix_nano - p.start_time_unix_nano) / 1e9
            d_buckets, d_count, d_sum = buckets, count, total
            rate = count / dt if dt > 0 else None
        else:
            if not self._room(key, self._hist):
                return
            prev = self._hist.get(key)
            self._hist[key] = (buckets, count, total, p.start_time_unix_nano)
            if (prev is None or prev[3] != p.start_time_unix_nano or count < prev[1]
                    or [b for b, _ in prev[0]] != [b for b, _ in buckets]):
                if prev is not None and (prev[3] != p.start_time_unix_nano or count < prev[1]):
                    self.rates.resets += 1
                self.rates.rate(key + "|count", count, t_s)
                return
            d_buckets = [(b, c - pc) for (b, c), (_, pc) in zip(buckets, prev[0])]
            d_count, d_sum = count - prev[1], total - prev[2]
            rate = self.rates.rate(key + "|count", count, t_s)
        if rate is not None:
            self._add(out, name + "_count:rate", rate, "/s", labels)
        if d_count <= 0:
            return
        if math.isfinite(d_sum):
            self._add(out, name + ":mean", d_sum / d_count, unit, labels)
        for q in self.quantiles:
            v = bucket_quantile(q, d_buckets)
            if v is not None:
                self._add(out, f"{name}:{quantile_name(q)}", v, unit, labels)


def _is_loopback(host: str) -> bool:
    import ipaddress

    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _key(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _explicit(p: Any) -> list[tuple[float, float]]:
    """Cumulative ``(upper_bound, count)`` buckets of an explicit-bounds histogram point (+Inf last)."""
    out, cum = [], 0.0
    bounds = list(p.explicit_bounds) + [math.inf]
    for bound, c in zip(bounds, p.bucket_counts):
        cum += c
        out.append((bound, cum))
    if out and not math.isinf(out[-1][0]):
        out.append((math.inf, cum))
    return out


def _exponential(p: Any) -> list[tuple[float, float]]:
    """Cumulative buckets of an exponential histogram point: negatives and zeros at 0, then base^(i+1) bounds."""
    base = 2.0 ** (2.0 ** -p.scale)
    cum = float(p.zero_count) + float(sum(p.negative.bucket_counts))
    out = [(0.0, cum)]
    for k, c in enumerate(p.positive.bucket_counts):
        cum += c
        try:
            bound = base ** (p.positive.offset + k + 1)
        except OverflowError:
            bound = math.inf
        if math.isinf(bound):
            break
        out.append((bound, cum))
    out.append((math.inf, float(p.count)))
    return out


def parse_request(body: bytes, content_type: str, content_encoding: str = "") -> Any:
    """An ExportMetricsServiceRequest from an OTLP/HTTP body; ValueError says what is wrong."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    enc = content_encoding.strip().lower()
    try:
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        elif enc not in ("", "identity"):
            raise ValueError(f"content encoding {content_encoding!r} is not supported; use gzip, deflate or none")
    except (OSError, zlib.error, EOFError) as exc:
        raise ValueError(f"body is not valid {enc}: {exc}") from None
    ctype = content_type.split(";")[0].strip().lower()
    req = ExportMetricsServiceRequest()
    if ctype == "application/json":
        try:
            json_format.Parse(body, req, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise ValueError(f"not an OTLP/JSON metrics request: {exc}") from None
    elif ctype in ("application/x-protobuf", "application/protobuf"):
        try:
            req.ParseFromString(body)
        except DecodeError as exc:
            raise ValueError(f"not an OTLP/protobuf metrics request: {exc}") from None
    else:
        raise ValueError(f"content type {content_type!r} is not supported; use application/x-protobuf or application/json")
    return req


@dataclass
class OtlpReceiver:
    """The HTTP endpoint plus the publishing: ``await receiver.start()``, ``receiver.url``, ``await receiver.stop()``."""

    nc: Any
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    mapping: ResourceMapping = field(default_factory=ResourceMapping)
    token: str | None = None  # required as ``Authorization: Bearer <token>`` when set
    publish_timeout_s: float = 5.0
    mapper: OtlpMapper = field(init=False)
    bound_port: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port!r} is out of range 0-65535")
        if not self.token and not _is_loopback(self.host):
            raise ValueError(f"refusing to receive OTLP on {self.host!r} without an access token: anyone who can reach "
                             "it could publish as any node. Pass --api-token (exporters send it as "
                             "OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer <token>'), or bind 127.0.0.1")
        self.mapper = OtlpMapper(self.mapping)
        self._seq: dict[tuple[str, str], int] = {}
        self._boot = f"{time.time_ns():x}"
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port or self.port}"

    @property
    def stats(self) -> MapperStats:
        return self.mapper.stats

    async def handle(self, body: bytes, content_type: str, content_encoding: str = "") -> tuple[int, str]:
        """Decode, map and publish one export; ``(HTTP status, error message)`` (200 and "" when stored)."""
        from nats.errors import Error as NatsError

        from schemas.codec import encode
        from schemas.subjects import metrics as metrics_subject

        try:
            req = parse_request(body, content_type, content_encoding)
        except ValueError as exc:
            self.stats.rejected += 1
            return 400, str(exc)
        async with self._lock:  # baselines and seq numbers change in request order
            per_node = self.mapper.convert(req)
        js = self.nc.jetstream()
        pending = []
        for (cluster, node), (newest, samples) in per_node.items():
            now = time.time()
            ts = newest if 0 < newest <= now + 60 else now
            for i in range(0, max(len(samples), 1), MAX_SAMPLES_PER_BATCH):
                chunk = samples[i:i + MAX_SAMPLES_PER_BATCH]
                if not chunk:
                    continue
                seq = self._seq.get((cluster, node), 0) + 1
                self._seq[(cluster, node)] = seq
                batch = MetricBatch(cluster, node, ts, chunk, seq)
                pending.append(js.publish(metrics_subject(cluster, node), encode(batch),
                                          timeout=self.publish_timeout_s,
                                          headers={"Nats-Msg-Id": f"otlp:{cluster}:{node}:{self._boot}:{seq}"}))
        try:
            await asyncio.gather(*pending)
        except (NatsError, asyncio.TimeoutError) as exc:
            self.stats.failed += 1
            return 503, f"not stored by JetStream: {type(exc).__name__}"
        self.stats.batches += len(pending)
        return 200, ""

    def app(self) -> Any:
        """The Starlette app: ``POST /v1/metrics`` and ``GET /health``."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def metrics(request: Request) -> Response:
            ctype = request.headers.get("content-type", "")
            as_json = ctype.split(";")[0].strip().lower() == "application/json"
            if self.token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {self.token}"):
                return _error(401, "missing or wrong access token (Authorization: Bearer <token>)", as_json)
            size = int(request.headers.get("content-length") or 0)
            if size > MAX_BODY_BYTES:
                return _error(413, f"body of {size} bytes is over the limit of {MAX_BODY_BYTES}", as_json)
            body = await request.body()
            status, message = await self.handle(body, ctype, request.headers.get("content-encoding", ""))
            if status != 200:
                return _error(status, message, as_json)
            if as_json:
                return JSONResponse({})
            return Response(ExportMetricsServiceResponse().SerializeToString(), media_type="application/x-protobuf")

        async def health(request: Request) -> Response:
            s = self.stats
            return JSONResponse({"status": "ok" if self.nc.is_connected else "degraded", "requests": s.requests,
                                 "points": s.points, "samples": s.samples, "dropped": s.dropped, "batches": s.batches,
                                 "rejected": s.rejected, "failed": s.failed})

        def _error(status: int, message: str, as_json: bool) -> Response:
            code = {400: 3, 401: 16, 413: 8}.get(status, 14)  # google.rpc.Code: INVALID_ARGUMENT, UNAUTHENTICATED, ...
            if as_json:
                return JSONResponse({"code": code, "message": message}, status_code=status)
            try:
                from google.rpc.status_pb2 import Status  # googleapis-common-protos, when installed
            except ImportError:
                return Response(message, status_code=status, media_type="text/plain")
            return Response(Status(code=code, message=message).SerializeToString(), status_code=status,
                            media_type="application/x-protobuf")

        return Starlette(routes=[Route("/v1/metrics", metrics, methods=["POST"]), Route("/health", health)])

    async def start(self) -> None:
        """Bind (a taken port is a clear OSError) and serve in this event loop."""
        import uvicorn

        from swarmwatch.http_serving import InProcessServer, bind_tcp, wait_started

        sock = bind_tcp(self.host, self.port, "receive OTLP", "pick another with --port")
        self.bound_port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off", access_log=False)
        self._server = InProcessServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="otlp-uvicorn")
        if not await wait_started(self._server, self._task, 20.0):
            if self._task.done():
                raise RuntimeError(f"OTLP receiver on {self.url} did not start: {self._task.exception()!r}")
            raise RuntimeError(f"OTLP receiver on {self.url} did not start within 20 s")
        log.info("receiving OTLP/HTTP metrics on %s/v1/metrics", self.url)

    async def stop(self) -> None:
        """Stop listening (in-flight requests finish)."""
        if self._task is not None and self._server is not None:
            from swarmwatch.http_serving import stop_serving

            await stop_serving(self._server, self._task)
            self._task = None
