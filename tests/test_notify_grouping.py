"""Grouping, timers, flap damping and per-channel state: the pure Grouper, driven by a fake clock."""
from __future__ import annotations

from schemas import Alert, AlertKind, AlertStatus, Severity
from sinks.notify import FlapConfig, Grouper, GroupingConfig, Notification, render
from sinks.notify.grouping import FIRING, RESOLVED

T0 = 1_800_000_000.0
CH = ("slack", "email")


def alert(node: str, status: AlertStatus = AlertStatus.FIRING, rule: str = "cpu_high", severity: str = "critical",
          started: float = T0, cluster: str = "c1") -> Alert:
    return Alert(
        id=f"{rule}-{cluster}-{node}-{started}", status=status, severity=Severity(severity), kind=AlertKind.THRESHOLD,
        rule=rule, cluster=cluster, node=node, started_at=started, summary=f"{rule} on {node}",
        ended_at=None if status is AlertStatus.FIRING else started + 60,
    )


def resolved(a: Alert) -> Alert:
    return Alert(**{**{f: getattr(a, f) for f in a.__struct_fields__}, "status": AlertStatus.RESOLVED, "ended_at": a.started_at + 60})


def unmuted(_: Alert) -> str | None:
    return None


def grouper() -> Grouper:
    """Critical: no group wait (pages at once), 10 s interval; warning: the defaults."""
    g = GroupingConfig(critical={"group_wait_s": 0, "group_interval_s": 10, "repeat_interval_s": 3600})
    return Grouper(g, FlapConfig(firings=3, window_s=600, quiet_s=300))


def test_default_critical_pages_the_first_alert_at_once_and_its_burst_in_one_second_message() -> None:
    g = Grouper(GroupingConfig(), FlapConfig())
    sent: list[Notification] = []
    for i in range(100):  # one rule evaluation over 100 nodes, 2 ms apart; the sink evaluates after each
        now = T0 + i * 0.002
        g.observe(alert(f"n{i}"), CH, now)
        sent += g.due(now, unmuted, full=False)
    assert [len(n.firing) for n in sent] == [1, 1]  # the leading edge: the first alert, at once, per channel
    assert sent[0].firing[0].node == "n0" and sent[0].created_at == T0
    assert g.due(T0 + 0.4, unmuted) == []
    assert g.next_due == T0 + 0.5  # followers: group_wait_s after the leading message, not after the last arrival
    later = g.due(T0 + 0.5, unmuted)
    assert [len(n.firing) for n in later] == [99, 99]
    assert g.due(T0 + 5, unmuted) == []  # at most two messages per channel for the whole burst


def test_a_lone_critical_alert_is_one_message_with_no_follower_message() -> None:
    g = Grouper(GroupingConfig(), FlapConfig())
    g.observe(alert("n1"), CH, T0)
    assert len(g.due(T0, unmuted)) == 2
    assert g.due(T0 + 0.5, unmuted) == [] and g.due(T0 + 60, unmuted) == []


def test_after_the_follower_window_a_new_alert_waits_group_interval() -> None:
    g = Grouper(GroupingConfig(), FlapConfig())
    g.observe(alert("n1"), CH, T0)
    assert len(g.due(T0, unmuted)) == 2
    g.observe(alert("n2"), CH, T0 + 2)  # after group_wait_s: not a follower of the leading edge
    assert g.due(T0 + 2.5, unmuted) == []
    assert g.next_due == T0 + 10  # the critical group_interval_s from the leading message
    assert [len(n.firing) for n in g.due(T0 + 10, unmuted)] == [1, 1]


def test_followers_of_a_leading_edge_keep_their_short_wait_across_a_restart() -> None:
    g = Grouper(GroupingConfig(), FlapConfig())
    first = g.observe(alert("n1"), CH, T0)
    notes = g.due(T0, unmuted)
    confirm(g, notes)
    assert first is not None
    key, state = first.group, g.groups[first.group]
    g2 = Grouper(GroupingConfig(), FlapConfig())  # a restarted sink: records and group state reloaded
    g2.restore(first)
    g2.restore_group(key, state.last_sent, state.active, state.leading)
    g2.observe(alert("n2"), CH, T0 + 0.2)
    assert g2.due(T0 + 0.3, unmuted) == []
    assert [len(n.firing) for n in g2.due(T0 + 0.5, unmuted)] == [1, 1]  # at group_wait_s, not group_interval_s


def test_leading_edge_is_per_severity_off_for_warning_by_default_and_configurable() -> None:
    g = Grouper(GroupingConfig(), FlapConfig())
    g.observe(alert("n1", severity="warning"), CH, T0)
    assert g.due(T0, unmuted) == []  # warnings wait group_wait_s (2 s) for companions
    assert len(g.due(T0 + 2, unmuted)) == 2
    cfg = GroupingConfig(critical={"group_wait_s": 0.5, "group_interval_s": 10, "repeat_interval_s": 3600, "leading_edge": False},
                         warning={"group_wait_s": 2, "group_interval_s": 30, "repeat_interval_s": 3600, "leading_edge": True})
    g = Grouper(cfg, FlapConfig())
    g.observe(alert("c1"), CH, T0)
    g.observe(alert("w1", severity="warning", rule="mem_high"), CH, T0)
    assert [n.firing[0].node for n in g.due(T0, unmuted)] == ["w1", "w1"]
    assert [n.firing[0].node for n in g.due(T0 + 0.5, unmuted)] == ["c1", "c1"]


def test_critical_timers_given_without_leading_edge_keep_it_on() -> None:
    cfg = GroupingConfig(critical={"group_wait_s": 1, "group_interval_s": 10, "repeat_interval_s": 3600})
    assert cfg.critical.leading_edge and not cfg.warning.leading_edge


def confirm(g: Grouper, notes: list[Notification]) -> None:
    for n in notes:
        g.record(n.channel, n.refs())


def test_critical_pages_at_once_and_a_burst_makes_one_message_per_channel() -> None:
    g = grouper()
    for i in range(30):
        g.observe(alert(f"n{i}"), CH, T0)
    notes = g.due(T0, unmuted)
    assert [n.channel for n in notes] == ["slack", "email"]
    assert all(len(n.firing) == 30 for n in notes)
    assert g.due(T0 + 1, unmuted) == []


def test_warning_waits_group_wait_for_companions() -> None:
    g = grouper()
    g.observe(alert("n1", severity="warning"), CH, T0)
    assert g.due(T0 + 1.0, unmuted) == []
    g.observe(alert("n2", severity="warning"), CH, T0 + 1.5)
    notes = g.due(T0 + 2.0, unmuted)
    assert len(notes) == 2 and all(len(n.firing) == 2 for n in notes)


def test_later_changes_wait_for_group_interval() -> None:
    g = grouper()
    g.observe(alert("n1"), CH, T0)
    confirm(g, g.due(T0, unmuted))
    g.observe(alert("n2"), CH, T0 + 1)
    assert g.due(T0 + 5, unmuted) == []
    notes = g.due(T0 + 10, unmuted)
    assert [a.node for a in notes[0].firing] == ["n2"]


def test_groups_split_by_rule_and_cluster() -> None:
    g = grouper()
    g.observe(alert("n1", rule="cpu_high"), CH, T0)
    g.observe(alert("n1", rule="mem_high"), CH, T0)
    g.observe(alert("n1", cluster="c2"), CH, T0)
    assert len(g.due(T0, unmuted)) == 6  # 3 groups x 2 channels


def test_alert_that_fires_and_resolves_before_its_first_message_pages_nothing() -> None:
    g = grouper()
    a = alert("n1", severity="warning")
    g.observe(a, CH, T0)
    g.observe(resolved(a), CH, T0 + 1)
    assert g.due(T0 + 5, unmuted) == []
    assert [t.id for t in g.collect_done(T0 + 5)] == [a.id]


def test_resolve_is_sent_to_channels_that_got_the_firing_then_the_episode_is_retired() -> None:
    g = grouper()
    a = alert("n1")
    g.observe(a, CH, T0)
    confirm(g, g.due(T0, unmuted))
    g.observe(resolved(a), CH, T0 + 30)
    notes = g.due(T0 + 30, unmuted)
    assert [(n.channel, [x.node for x in n.resolved]) for n in notes] == [("slack", ["n1"]), ("email", ["n1"])]
    assert g.collect_done(T0 + 30) == []  # deliveries in flight: not yet retired
    confirm(g, notes)
    assert [t.id for t in g.collect_done(T0 + 31)] == [a.id]
    assert g.observe(a, CH, T0 + 32) is None  # a late duplicate of the firing pages nothing


def test_duplicate_firing_is_ignored() -> None:
    g = grouper()
    a = alert("n1")
    assert g.observe(a, CH, T0) is not None
    assert g.observe(a, CH, T0 + 0.1) is None
    assert g.duplicates == 1


def test_muted_alert_is_not_paged_but_the_resolve_of_a_paged_one_is() -> None:
    g = grouper()
    paged, silenced = alert("n1"), alert("n2")
    g.observe(paged, CH, T0)
    confirm(g, g.due(T0, unmuted))
    muted = {paged.id, silenced.id}
    g.observe(silenced, CH, T0 + 20)
    assert g.due(T0 + 20, lambda a: "silence" if a.id in muted else None) == []
    g.observe(resolved(paged), CH, T0 + 40)
    notes = g.due(T0 + 40, lambda a: "silence" if a.id in muted else None)
    assert [x.node for x in notes[0].resolved] == ["n1"] and notes[0].firing == []


def test_still_firing_group_is_repeated_after_repeat_interval() -> None:
    g = grouper()
    g.observe(alert("n1"), CH, T0)
    confirm(g, g.due(T0, unmuted))
    assert g.due(T0 + 3599, unmuted) == []
    notes = g.due(T0 + 3600, unmuted)
    assert len(notes) == 2 and all(n.repeat and [a.node for a in n.firing] == ["n1"] for n in notes)
    assert "reminder" in render(notes[0])[0]


def test_flapping_is_announced_once_then_held_until_quiet() -> None:
    g = grouper()
    sent: list[Notification] = []
    t = T0
    for i in range(10):  # the same node starts firing 10 times within a minute
        a = alert("n1", started=t)
        g.observe(a, CH, t)
        notes = g.due(t, unmuted)
        confirm(g, notes)
        sent += [n for n in notes if n.channel == "slack"]
        g.observe(resolved(a), CH, t + 3)
        notes = g.due(t + 3, unmuted)
        confirm(g, notes)
        sent += [n for n in notes if n.channel == "slack"]
        g.collect_done(t + 3)
        t += 6
    assert len(sent) <= 3
    assert sent[0].firing and any(n.flapping for n in sent)
    # quiet for quiet_s: the held final state goes out (the resolve of the paged firing)
    final = g.due(t + 300, unmuted)
    confirm(g, final)
    assert final and all(n.resolved and not n.firing for n in final)
    g.collect_done(t + 300)
    assert not g.alerts


def test_channel_state_is_per_channel() -> None:
    g = grouper()
    a = alert("n1")
    g.observe(a, CH, T0)
    notes = g.due(T0, unmuted)
    slack = next(n for n in notes if n.channel == "slack")
    g.record("slack", slack.refs())  # email's delivery still in flight
    t = g.alerts[a.id]
    assert t.recorded == {"slack": FIRING} and t.notified == {"slack": FIRING, "email": FIRING}
    g.record("email", [(a.id, FIRING)])
    g.observe(resolved(a), CH, T0 + 20)
    notes = g.due(T0 + 20, unmuted)
    g.record("slack", notes[0].refs())
    assert g.alerts[a.id].recorded == {"slack": RESOLVED, "email": FIRING}


def test_restored_record_pages_only_what_was_not_confirmed() -> None:
    g = grouper()
    a = alert("n1")
    g.observe(a, CH, T0)
    notes = g.due(T0, unmuted)
    g.record("slack", next(n for n in notes if n.channel == "slack").refs())
    saved = g.alerts[a.id]
    g2 = grouper()
    from sinks.notify.grouping import Tracked

    g2.restore(Tracked(saved.alert, saved.channels, saved.group, saved.received_at, saved.changed_at, recorded=dict(saved.recorded)))
    notes2 = g2.due(T0 + 1, unmuted)
    assert [n.channel for n in notes2] == ["email"]


def test_message_body_lists_alerts_and_caps_long_lists() -> None:
    g = grouper()
    for i in range(25):
        g.observe(alert(f"n{i:02d}"), CH, T0)
    n = g.due(T0, unmuted)[0]
    title, body = render(n, max_lines=20)
    assert title == "[FIRING:25] rule=cpu_high cluster=c1 severity=critical"
    assert "c1/n00 cpu_high" in body and "... and 5 more" in body
