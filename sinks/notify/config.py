"""Configuration of the notification sink: channels, routes, grouping, inhibition, delivery.

The config lives under a ``notify:`` section of a YAML, TOML or JSON file.
Channel URLs are Apprise URLs and usually hold tokens, so they may use
``${ENV_VAR}`` or ``${file:/path/to/secret}`` placeholders, resolved at load.
A URL is never logged or put in an error: :func:`redact_url` gives the safe
form (the scheme, plus the host for plain HTTP/e-mail schemes).
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

LABELS = ("cluster", "node", "rule", "kind", "severity")
"""Alert labels that matchers, ``group_by`` and ``equal`` may name."""

CLUSTER_NODE = "_cluster"
"""The node token of a cluster-wide alert (e.g. a whole cluster unreachable)."""

DEFAULT_NOTIFY_BUCKET = "sw_notify"
DEFAULT_SILENCE_BUCKET = "sw_silences"
DEFAULT_DURABLE = "sink-notify"
DEFAULT_START_LOOKBACK_S = 300.0  # a new consumer starts this far back, so alerts raised just before start are paged

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
HOST_SAFE_SCHEMES = frozenset(  # schemes whose host part is a real host name, not a token
    {"json", "jsons", "form", "forms", "xml", "xmls", "mailto", "mailtos", "http", "https", "ntfy", "ntfys"}
)


class ConfigError(ValueError):
    """A notify config that cannot be used; the message names the file, the key and the expected form."""


def redact_url(url: str) -> str:
    """The loggable form of an Apprise URL: ``slack://`` or ``json://hooks.example.com:8080``.

    Only schemes whose host part is a real host name (HTTP-like and e-mail) keep
    it; for others (``slack://TOKEN/...``, ``tgram://BOTTOKEN/...``) the host is a
    secret and only the scheme is shown.
    """
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", url.strip())
    if not m:
        return "<unparseable url>"
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme not in HOST_SAFE_SCHEMES:
        return f"{scheme}://"
    hostport = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{hostport}"


def _check_matchers(value: dict[str, str], what: str) -> dict[str, str]:
    for k, v in value.items():
        if k not in LABELS:
            raise ValueError(f"{what} key {k!r} is not a label; expected one of {', '.join(LABELS)}")
        if not isinstance(v, str) or not v or v == "!":
            raise ValueError(f"{what} {k}={v!r} must be a non-empty glob such as 'cpu_*' or '!n1'")
    return value


class ChannelConfig(BaseModel):
    """One Apprise destination. ``primary`` channels also get warnings; the others only criticals."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: SecretStr
    primary: bool = True

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"channel name {v!r} must be 1-64 characters of letters, digits, '_' or '-'")
        return v

    @property
    def redacted(self) -> str:
        return f"{self.name} ({redact_url(self.url.get_secret_value())})"


class RouteConfig(BaseModel):
    """A per-team route: alerts whose labels match every glob go to ``channels``.

    Routes are tried in order; the first that matches decides, unless it sets
    ``continue: true``, in which case the next routes (and finally the default
    severity routing) are tried too. A route sends ``info`` alerts only if its
    ``match`` names ``severity`` explicitly.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    match: dict[str, str] = Field(default_factory=dict)
    channels: list[str]
    continue_: bool = Field(default=False, alias="continue")

    @field_validator("match")
    @classmethod
    def _match_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_matchers(v, "match")


class TimingConfig(BaseModel):
    """Grouping timers of one severity (seconds).

    ``group_wait_s``: how long a new group waits for companions before its first message.
    ``group_interval_s``: least time between two messages about changes in one group.
    ``repeat_interval_s``: a group still firing is re-sent this often.
    ``leading_edge``: the first message of a new group goes out at once; only
    the alerts that follow it within ``group_wait_s`` wait, and go out together
    ``group_wait_s`` after it (so a burst is at most two messages).
    """

    model_config = ConfigDict(extra="forbid")

    group_wait_s: float = Field(ge=0)
    group_interval_s: float = Field(ge=0)
    repeat_interval_s: float = Field(gt=0)
    leading_edge: bool = False


class GroupingConfig(BaseModel):
    """How alerts are batched into messages; timers per severity.

    Defaults page fast, against Alertmanager's 30 s ``group_wait``: a critical
    is sent on its leading edge (the first alert of a new group at once, the
    rest of its burst 0.5 s later in one second message), a warning waits 2 s.
    One rule evaluation over many nodes reaches the sink as a burst spread over
    tens of milliseconds (one publish per node); with a plain wait of 0 the
    first one or two alerts of a 100-node burst went out alone and the other 98
    waited ``group_interval_s`` (10 s) for a second message
    (bench/bench_notify.py). The leading edge pages the first alert in
    milliseconds and gathers the followers within half a second; warnings are
    not urgent to the second, so 2 s also absorbs slower processors. Later
    changes to a paged group wait at most ``group_interval_s`` (critical 10 s,
    warning 30 s).
    """

    model_config = ConfigDict(extra="forbid")

    group_by: list[str] = Field(default_factory=lambda: ["rule", "cluster", "severity"])
    critical: TimingConfig = TimingConfig(group_wait_s=0.5, group_interval_s=10.0, repeat_interval_s=3600.0, leading_edge=True)
    warning: TimingConfig = TimingConfig(group_wait_s=2.0, group_interval_s=30.0, repeat_interval_s=4 * 3600.0)
    info: TimingConfig = TimingConfig(group_wait_s=2.0, group_interval_s=30.0, repeat_interval_s=4 * 3600.0)

    @field_validator("critical", mode="after")
    @classmethod
    def _critical_leads(cls, v: TimingConfig) -> TimingConfig:
        """Critical timers given without ``leading_edge`` keep the leading edge on (the default)."""
        if "leading_edge" not in v.model_fields_set:
            return v.model_copy(update={"leading_edge": True})
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by_ok(cls, v: list[str]) -> list[str]:
        for k in v:
            if k not in LABELS:
                raise ValueError(f"group_by entry {k!r} is not a label; expected some of {', '.join(LABELS)}")
        return v

    def timing(self, severity: str) -> TimingConfig:
        return {"critical": self.critical, "warning": self.warning}.get(severity, self.info)


class InhibitRule(BaseModel):
    """While an alert matching ``source_match`` fires, alerts matching ``target_match``
    with the same values of the ``equal`` labels are not paged."""

    model_config = ConfigDict(extra="forbid")

    source_match: dict[str, str]
    target_match: dict[str, str] = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=lambda: ["cluster"])

    @field_validator("source_match", "target_match")
    @classmethod
    def _match_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_matchers(v, "match")

    @field_validator("equal")
    @classmethod
    def _equal_ok(cls, v: list[str]) -> list[str]:
        for k in v:
            if k not in LABELS:
                raise ValueError(f"equal entry {k!r} is not a label; expected some of {', '.join(LABELS)}")
        return v


def _default_inhibit() -> list[InhibitRule]:
    return [
        InhibitRule(
            source_match={"node": CLUSTER_NODE, "severity": "critical"},
            target_match={"node": f"!{CLUSTER_NODE}"},
            equal=["cluster"],
        )
    ]


class FlapConfig(BaseModel):
    """A (rule, cluster, node) that starts firing ``firings`` times within ``window_s``
    is flapping: one message says so, then its changes are held until it has been
    quiet (no new firing) for ``quiet_s``, and its final state is sent."""

    model_config = ConfigDict(extra="forbid")

    firings: int = Field(default=3, ge=2)
    window_s: float = Field(default=600.0, gt=0)
    quiet_s: float = Field(default=300.0, gt=0)


class DeliveryConfig(BaseModel):
    """Retries per channel: exponential backoff from ``backoff_initial_s`` to
    ``backoff_max_s`` until ``max_retry_s`` after the message was queued, then the
    message is dead-lettered to ``sw.dlq.notify``. ``timeout_s`` bounds one attempt."""

    model_config = ConfigDict(extra="forbid")

    max_retry_s: float = Field(default=300.0, ge=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    max_alerts_per_message: int = Field(default=20, ge=1)


class NotifyConfig(BaseModel):
    """The ``notify:`` section. With only ``channels`` set, routing is by severity:
    critical to every channel, warning to the primary ones, info to the log."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    grouping: GroupingConfig = Field(default_factory=GroupingConfig)
    inhibit: list[InhibitRule] = Field(default_factory=_default_inhibit)
    flap: FlapConfig = Field(default_factory=FlapConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    start_lookback_s: float = Field(default=DEFAULT_START_LOOKBACK_S, ge=0)
    tick_s: float = Field(default=0.2, gt=0)
    state_bucket: str = DEFAULT_NOTIFY_BUCKET
    silence_bucket: str = DEFAULT_SILENCE_BUCKET
    durable: str = DEFAULT_DURABLE
    _placeholder_values: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _names_ok(self) -> NotifyConfig:
        seen: set[str] = set()
        for ch in self.channels:
            if ch.name in seen:
                raise ValueError(f"channel name {ch.name!r} is used twice; names must be unique")
            seen.add(ch.name)
        for i, r in enumerate(self.routes):
            for name in r.channels:
                if name not in seen:
                    raise ValueError(
                        f"routes[{i}].channels names {name!r}, which is not a channel; "
                        f"expected one of {sorted(seen) or '(no channels configured)'}"
                    )
        return self

    def channel(self, name: str) -> ChannelConfig:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise KeyError(name)

    def secrets(self) -> list[str]:
        """Every channel URL (resolved) and every placeholder value, for scrubbing from logs and errors."""
        return [ch.url.get_secret_value() for ch in self.channels] + list(self._placeholder_values)


# --- loading -----------------------------------------------------------------


def resolve_placeholders(value: str, where: str, found: list[str] | None = None) -> str:
    """Replace ``${VAR}`` with the environment variable and ``${file:/path}`` with the
    file's content (trailing newline stripped). Errors name ``where``, never the value.
    The substituted values are appended to ``found`` (they are secrets)."""

    def sub(m: re.Match[str]) -> str:
        out = _lookup(m)
        if found is not None and out:
            found.append(out)
        return out

    def _lookup(m: re.Match[str]) -> str:
        ref = m.group(1).strip()
        if ref.startswith("file:"):
            path = Path(ref[5:]).expanduser()
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read secret file {str(path)!r}: {exc.strerror or exc}") from None
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", ref):
            raise ConfigError(f"{where}: placeholder ${{{ref}}} is invalid; expected ${{ENV_VAR}} or ${{file:/path}}")
        if ref not in os.environ:
            raise ConfigError(f"{where}: environment variable {ref} is not set")
        return os.environ[ref]

    return _PLACEHOLDER_RE.sub(sub, value)


def _check_apprise(url: str, where: str, secrets: list[str]) -> None:
    import apprise

    from sinks.notify.redaction import scrubbed_logs

    with scrubbed_logs([url, *secrets]):
        ok = apprise.Apprise().add(url)
    if not ok:
        raise ConfigError(
            f"{where}: Apprise cannot use this URL ({redact_url(url)}); expected a URL of a supported "
            "service such as slack://..., tgram://..., mailto://..., json://host/path (see https://appriseit.com/services/)"
        )


def parse_config(data: Any, source: str = "<config>", *, check_urls: bool = True) -> NotifyConfig:
    """Validate a ``notify`` mapping (already parsed) and resolve its secrets."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: key 'notify' must be a mapping, got {type(data).__name__}")
    data = dict(data)
    found: list[str] = []
    chans = data.get("channels")
    if chans is not None:
        if not isinstance(chans, list):
            raise ConfigError(f"{source}: key 'notify.channels' must be a list of {{name, url, primary}}")
        resolved = []
        for i, ch in enumerate(chans):
            if isinstance(ch, dict) and isinstance(ch.get("url"), str):
                ch = {**ch, "url": resolve_placeholders(ch["url"], f"{source}: key 'notify.channels[{i}].url'", found)}
            resolved.append(ch)
        data["channels"] = resolved
    try:
        cfg = NotifyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None
    cfg._placeholder_values = found
    if check_urls:
        for i, ch in enumerate(cfg.channels):
            _check_apprise(ch.url.get_secret_value(), f"{source}: key 'notify.channels[{i}].url' (channel {ch.name!r})", found)
    return cfg


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = "notify"
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: key '{loc}': {msg}")
    return "\n".join(lines)


def load_config(path: str | Path) -> NotifyConfig:
    """Read the ``notify:`` section of a YAML (.yaml/.yml), TOML (.toml) or JSON file
    (or the whole file, if it holds only that section's keys)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: config file is not UTF-8 text: {exc}") from None
    try:
        if p.suffix == ".toml":
            doc: Any = tomllib.loads(text)
        elif p.suffix == ".json":
            doc = json.loads(text)
        else:
            doc = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: config file is nested too deeply") from None
    if doc is None:
        doc = {}
    if isinstance(doc, dict) and "notify" in doc:
        return parse_config(doc["notify"], str(p))
    if isinstance(doc, dict) and "channels" in doc:  # a file holding just the notify section
        return parse_config(doc, str(p))
    raise ConfigError(f"{p}: no 'notify:' section; expected a top-level key 'notify' with 'channels: [...]'")

