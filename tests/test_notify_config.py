"""Notify config, routing and redaction: pure, no broker."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from schemas import Alert, AlertKind, AlertStatus, Severity
from sinks.notify import ConfigError, Inhibitor, NotifyConfig, Redactor, Router, load_config, parse_config, redact_url
from sinks.notify.redaction import scrubbed_logs


def alert(rule: str = "cpu_high", severity: str = "critical", cluster: str = "c1", node: str = "n1",
          status: AlertStatus = AlertStatus.FIRING, kind: AlertKind = AlertKind.THRESHOLD, aid: str | None = None) -> Alert:
    return Alert(
        id=aid or f"{rule}-{cluster}-{node}", status=status, severity=Severity(severity), kind=kind, rule=rule,
        cluster=cluster, node=node, started_at=time.time(), summary="s",
    )


CHANNELS = [
    {"name": "slack", "url": "json://127.0.0.1:9/slack"},
    {"name": "email", "url": "json://127.0.0.1:9/email"},
    {"name": "sms", "url": "json://127.0.0.1:9/sms", "primary": False},
]


def test_severity_routing_is_the_default_with_only_channel_urls() -> None:
    r = Router(parse_config({"channels": CHANNELS}))
    assert r.channels_for(alert(severity="critical")) == ("slack", "email", "sms")
    assert r.channels_for(alert(severity="warning")) == ("slack", "email")
    assert r.channels_for(alert(severity="info")) == ()


def test_team_route_on_cluster_and_rule_globs_replaces_the_default() -> None:
    cfg = parse_config({
        "channels": CHANNELS,
        "routes": [{"match": {"cluster": "gpu-*", "rule": "!node_unresponsive"}, "channels": ["email"]}],
    })
    r = Router(cfg)
    assert r.channels_for(alert(cluster="gpu-east", severity="critical")) == ("email",)
    assert r.channels_for(alert(cluster="gpu-east", rule="node_unresponsive")) == ("slack", "email", "sms")
    assert r.channels_for(alert(cluster="cpu-west", severity="warning")) == ("slack", "email")


def test_route_with_continue_adds_to_the_severity_default() -> None:
    cfg = parse_config({
        "channels": CHANNELS,
        "routes": [{"match": {"node": "db-*"}, "channels": ["sms"], "continue": True}],
    })
    assert Router(cfg).channels_for(alert(node="db-1", severity="warning")) == ("slack", "email", "sms")


def test_info_reaches_a_channel_only_through_a_route_naming_severity() -> None:
    cfg = parse_config({
        "channels": CHANNELS,
        "routes": [
            {"match": {"cluster": "c1"}, "channels": ["slack"]},
            {"match": {"severity": "info", "rule": "deploy_*"}, "channels": ["email"]},
        ],
    })
    r = Router(cfg)
    assert r.channels_for(alert(severity="info", rule="peer_churn")) == ()
    assert r.channels_for(alert(severity="info", rule="deploy_done")) == ("email",)


def test_cluster_wide_critical_inhibits_node_alerts_of_the_same_cluster_by_default() -> None:
    inh = Inhibitor(NotifyConfig().inhibit)
    outage = alert(rule="cluster_unreachable", node="_cluster", aid="outage")
    inh.observe(outage)
    assert inh.inhibited_by(alert(node="n1")) == "outage"
    assert inh.inhibited_by(alert(node="n1", cluster="c2")) is None
    assert inh.inhibited_by(outage) is None
    inh.observe(alert(rule="cluster_unreachable", node="_cluster", aid="outage", status=AlertStatus.RESOLVED))
    assert inh.inhibited_by(alert(node="n1")) is None


def test_placeholders_resolve_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SW_T_TOKEN", "tok-123456")
    secret = tmp_path / "bot"
    secret.write_text("111:botsecret\n")
    cfg = parse_config({"channels": [
        {"name": "a", "url": "json://127.0.0.1:9/${SW_T_TOKEN}"},
        {"name": "b", "url": f"tgram://${{file:{secret}}}/-100/"},
    ]})
    assert cfg.channels[0].url.get_secret_value() == "json://127.0.0.1:9/tok-123456"
    assert cfg.channels[1].url.get_secret_value() == "tgram://111:botsecret/-100/"
    assert "tok-123456" not in repr(cfg) and "botsecret" not in repr(cfg)


def test_missing_env_var_error_names_file_key_and_variable_not_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SW_T_MISSING", raising=False)
    with pytest.raises(ConfigError) as e:
        parse_config({"channels": [{"name": "a", "url": "slack://secretA/${SW_T_MISSING}"}]}, "ops.yaml")
    assert "ops.yaml" in str(e.value) and "notify.channels[0].url" in str(e.value) and "SW_T_MISSING" in str(e.value)
    assert "secretA" not in str(e.value)


def test_unknown_apprise_scheme_is_refused_with_the_scheme_only() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"channels": [{"name": "a", "url": "nosuchservice://user:pw123456@host/x"}]}, "ops.yaml")
    msg = str(e.value)
    assert "notify.channels[0].url" in msg and "nosuchservice://" in msg and "pw123456" not in msg


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"channels": [{"name": "a b", "url": "json://h/x"}]}, "notify.channels[0].name"),
        ({"channels": CHANNELS, "routes": [{"match": {"team": "x"}, "channels": ["slack"]}]}, "notify.routes[0].match"),
        ({"channels": CHANNELS, "routes": [{"match": {}, "channels": ["pager"]}]}, "'pager', which is not a channel"),
        ({"channels": CHANNELS, "grouping": {"critical": {"group_wait_s": -1, "group_interval_s": 1, "repeat_interval_s": 1}}},
         "notify.grouping.critical.group_wait_s"),
        ({"channels": CHANNELS, "grouping": {"group_by": ["host"]}}, "group_by entry 'host'"),
        ({"channels": CHANNELS, "colour": "red"}, "notify.colour"),
    ],
)
def test_config_errors_name_the_key_and_the_expected_form(doc: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, "ops.yaml")
    assert "ops.yaml" in str(e.value) and fragment in str(e.value)


def test_load_config_reads_the_notify_section_of_yaml_and_toml(tmp_path: Path) -> None:
    y = tmp_path / "sw.yaml"
    y.write_text("notify:\n  channels:\n    - name: hook\n      url: json://127.0.0.1:9/h\n  grouping:\n    group_by: [rule]\n")
    assert load_config(y).grouping.group_by == ["rule"]
    t = tmp_path / "sw.toml"
    t.write_text('[[notify.channels]]\nname = "hook"\nurl = "json://127.0.0.1:9/h"\nprimary = false\n')
    assert load_config(t).channels[0].primary is False
    bad = tmp_path / "other.yaml"
    bad.write_text("sinks: {}\n")
    with pytest.raises(ConfigError, match="no 'notify:' section"):
        load_config(bad)


def test_redacted_url_keeps_host_only_where_it_is_not_a_token() -> None:
    assert redact_url("slack://TA/TB/TC/#ops") == "slack://"
    assert redact_url("tgram://123:abc/-100/") == "tgram://"
    assert redact_url("json://user:pw@hooks.example.com:8080/path/tok") == "json://hooks.example.com:8080"
    assert redact_url("mailtos://me:pw@gmail.com?to=x@y") == "mailtos://gmail.com"


def test_redactor_scrubs_tokens_passwords_and_paths() -> None:
    r = Redactor(["slack://T0TEAMX/B0SECRET/XyzzyToken/#ops", "mailtos://me:hunter22@gmail.com", "json://h:1/hook/abc123def"])
    text = r("POST /services/T0TEAMX/B0SECRET/XyzzyToken login hunter22 url /hook/abc123def")
    for s in ("T0TEAMX", "B0SECRET", "XyzzyToken", "hunter22", "abc123def"):
        assert s not in text


def test_apprise_debug_logs_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    import apprise

    caplog.set_level(logging.DEBUG)
    url = "json://127.0.0.1:9/hook/verysecretpath"
    with scrubbed_logs([url]):
        apprise.Apprise().add(url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "verysecretpath" not in logged


async def test_notify_counters_become_self_metric_samples(nc: object) -> None:
    from sinks.notify import NotifySink, parse_config

    sink = NotifySink(nc, parse_config({"channels": [{"name": "hook", "url": "json://127.0.0.1:9/x"}]}))  # type: ignore[arg-type]
    names = {s.name for s in sink.self_samples()}
    assert "swarmwatch.notify.undeliverable" in names


def test_redactor_scrubs_short_and_percent_encoded_secrets_but_not_words_containing_them() -> None:
    r = Redactor(["mailtos://ops:pw@mail.example.com", "json://h:1/hook?token=k9&format=html", "ntfy://u:p%40ss%2Fw0rd@ntfy.example.com/topic"])
    text = r("auth failed for pw (pwd is set); token k9 rejected; password p@ss/w0rd or p%40ss%2Fw0rd or p%40ss%2fw0rd; format html")
    assert " pw " not in text and "k9" not in text and "p@ss/w0rd" not in text and "%40ss" not in text
    assert "pwd is set" in text and "format html" in text  # whole words only; non-secret query values stay


def test_notifications_are_sent_as_text_so_label_values_cannot_render_as_markup() -> None:
    import asyncio

    from aiosmtpd.controller import Controller

    from sinks.notify.config import ChannelConfig
    from sinks.notify.delivery import ChannelSender
    from swarmwatch.server import free_port

    got: list[str] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
            got.append(envelope.content.decode(errors="replace"))  # type: ignore[attr-defined]
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        cfg = ChannelConfig.model_validate(
            {"name": "mail", "url": f"mailto://127.0.0.1:{port}?from=sw@example.com&to=ops@example.com&format=html"}
        )
        sender = ChannelSender(cfg, Redactor(), timeout_s=10.0)
        asyncio.run(sender.send('[FIRING:1] node=<img src=x onerror=alert(1)>', '- c1/<b>n1</b> cpu: "hot" <script>x()</script>', "failure"))
    finally:
        ctl.stop()
    import email

    msg = email.message_from_string(got[0])
    html = next(p.get_payload(decode=True).decode() for p in msg.walk() if p.get_content_type() == "text/html")
    assert "<script>" not in html and "<b>n1</b>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;n1&lt;/b&gt;" in html
