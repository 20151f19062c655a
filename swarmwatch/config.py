"""Configuration of ``swarmwatch up`` and the single-role commands (YAML or TOML).

Every section is optional; the embedded default needs no file at all::

    nats: {url: null}            # null: start the embedded nats-server
    data_dir: ./.swarmwatch
    cluster: default
    node: <hostname>
    producer: {interval: 1s, enabled: true, scrape: [], checks: []}   # scrape/checks: docs/ingest.md
    processor: {windows: [10s, 1m], allowed_lateness: 5s, rules: rules.yaml}
    sinks: {json: true, parquet: true, retention_days: 30}
    retention: {telemetry: 7d, derived: 30d, telemetry_max_size: 8GiB, derived_max_size: 8GiB, replicas: 1}

Errors name the file, the key and the expected form.
"""
from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from processors.configfile import ConfigError, format_validation_error, parse_duration, parse_size, read_config_file

_TOKEN_RE = re.compile(r"[^A-Za-z0-9_-]")
ALL_OPERATORS = ("rules", "windows", "liveness", "network", "byzantine", "anomaly")


def default_node_name() -> str:
    """This host's name as a subject token (other characters become '-')."""
    name = _TOKEN_RE.sub("-", socket.gethostname().split(".")[0])[:64].strip("-")
    return name or "node"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NatsConfig(_Section):
    url: str | None = None  # None: run the embedded server
    port: int = Field(4222, ge=0, le=65535)  # embedded server port (0 = any free port)
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


class ProducerConfig(_Section):
    enabled: bool = True
    interval_s: float = Field(1.0, alias="interval")
    watch_pid: int | None = None
    gpu: bool = True
    scrape: list[str | dict[str, Any]] = Field(default_factory=list)  # Prometheus exporters (docs/ingest.md)
    checks: list[str | dict[str, Any]] = Field(default_factory=list)  # HTTP health checks (docs/ingest.md)

    @model_validator(mode="after")
    def _sources(self) -> ProducerConfig:
        if self.scrape or self.checks:
            from producers.options import sources_from_entries

            sources_from_entries(self.scrape, self.checks)  # a bad URL, key or interval is named now, not at start
        return self

    @field_validator("interval_s", mode="before")
    @classmethod
    def _d(cls, v: Any) -> float:
        d = parse_duration(v)
        if d <= 0:
            raise ValueError("interval must be > 0")
        return d


class ProcessorConfig(_Section):
    enabled: bool = True
    name: str = "processor"
    windows_s: list[float] = Field(default_factory=lambda: [10.0, 60.0], alias="windows")
    allowed_lateness_s: float = Field(5.0, alias="allowed_lateness")
    rules: str | None = None  # path to a rules YAML/TOML; None = built-in defaults
    operators: list[str] = Field(default_factory=lambda: list(ALL_OPERATORS))
    liveness_timeout_s: float = Field(60.0, alias="liveness_timeout")
    expected_peers: int | None = None  # per cluster; None: the nodes seen
    checkpoint_interval_s: float = Field(2.0, alias="checkpoint_interval")
    filter: list[str] | None = None  # subjects, e.g. ["sw.metrics.eu-1.>", "sw.events.eu-1.>"]
    partition: str = "0/1"  # "i/n": this instance takes the nodes with crc32(cluster.node) % n == i

    @field_validator("partition")
    @classmethod
    def _part(cls, v: str) -> str:
        m = re.match(r"^(\d+)/(\d+)$", str(v).strip())
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise ValueError(f"partition {v!r} is invalid; expected I/N with 0 <= I < N, e.g. 0/4")
        return f"{int(m.group(1))}/{int(m.group(2))}"

    @field_validator("windows_s", mode="before")
    @classmethod
    def _ws(cls, v: Any) -> list[float]:
        if not isinstance(v, list):
            raise ValueError("expected a list of durations, e.g. [10s, 1m]")
        return [parse_duration(x) for x in v]

    @field_validator("operators", mode="before")
    @classmethod
    def _ops(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",") if x.strip()]
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a non-empty list of operators from {', '.join(ALL_OPERATORS)}")
        unknown = [x for x in v if x not in ALL_OPERATORS]
        if unknown:
            raise ValueError(f"unknown operator(s) {unknown}; expected some of {', '.join(ALL_OPERATORS)}")
        return list(dict.fromkeys(v))

    @field_validator("allowed_lateness_s", "liveness_timeout_s", "checkpoint_interval_s", mode="before")
    @classmethod
    def _d(cls, v: Any) -> float:
        return parse_duration(v)


class SinksConfig(_Section):
    json_: bool = Field(True, alias="json")
    parquet: bool = True
    out: str | None = Field(None, validation_alias=AliasChoices("store", "out"))  # the file store; default <data_dir>/store ("out": the old name)
    flush_interval_s: float = Field(2.0, alias="flush_interval")
    retention_days: float = 30.0
    notify: str | None = None  # path to a notification config (see docs/notify.md)
    api: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(8686, ge=0, le=65535)
    api_token: str | None = None
    # Host headers the API answers besides loopback names (a reverse proxy's name); ["*"]: any
    api_allowed_hosts: list[str] = []
    # browser origins besides the API's own that may call it and open /ws (e.g. https://grafana.example.com)
    api_allowed_origins: list[str] = []

    @field_validator("flush_interval_s", mode="before")
    @classmethod
    def _d(cls, v: Any) -> float:
        return parse_duration(v)


class RetentionConfig(_Section):
    telemetry_s: float = Field(7 * 86400.0, alias="telemetry")
    derived_s: float = Field(30 * 86400.0, alias="derived")
    telemetry_max_bytes: int = Field(8 * 1024**3, alias="telemetry_max_size")
    derived_max_bytes: int = Field(8 * 1024**3, alias="derived_max_size")
    replicas: int = Field(1, ge=1, le=5)

    @field_validator("telemetry_max_bytes", "derived_max_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    def limits(self) -> tuple[Any, Any]:
        """StreamLimits for TELEMETRY and DERIVED."""
        from swarmwatch.streams import StreamLimits

        return (
            StreamLimits(self.telemetry_s, self.telemetry_max_bytes, self.replicas),
            StreamLimits(self.derived_s, self.derived_max_bytes, self.replicas),
        )

    @field_validator("telemetry_s", "derived_s", mode="before")
    @classmethod
    def _d(cls, v: Any) -> float:
        return parse_duration(v)


class Config(_Section):
    """The whole configuration; ``Config()`` is the embedded default."""

    data_dir: str = ".swarmwatch"
    cluster: str = "default"
    node: str = Field(default_factory=default_node_name)
    log_level: str = "INFO"
    log_json: bool = False
    nats: NatsConfig = NatsConfig()
    producer: ProducerConfig = ProducerConfig()
    processor: ProcessorConfig = ProcessorConfig()
    sinks: SinksConfig = SinksConfig()
    retention: RetentionConfig = RetentionConfig()

    @field_validator("cluster", "node")
    @classmethod
    def _token(cls, v: str) -> str:
        from schemas import check_token

        check_token(v, "name")
        return v


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML/TOML config (or none) and apply ``overrides`` (dotted keys). Raises ConfigError."""
    raw: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        p = Path(path)
        source = str(p)
        loaded = read_config_file(p)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
        raw = loaded or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        cur = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[leaf] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
