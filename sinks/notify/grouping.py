"""Grouping, flap damping and per-channel notification state (pure: no NATS, no clock).

Every alert episode (one alert id) is a :class:`Tracked` record in a
:class:`Group` (same channels and same ``group_by`` labels). ``due(now, muted)``
returns the :class:`Notification` s to send now, one per channel, honouring
``group_wait_s`` / ``group_interval_s`` / ``repeat_interval_s``:

- a change waits ``group_wait_s`` from its arrival (so companions join it), and
  a group gets at most one message per ``group_interval_s``; a group still
  firing is re-sent every ``repeat_interval_s``;
- with ``leading_edge`` (default for critical) the first message of a new
  group goes out at once, and what follows it waits ``group_wait_s`` from that
  message and goes out as one second message (then ``group_interval_s`` rules);
- a message lists the alerts not yet paged as firing on that channel and the
  resolved ones whose firing was paged there; an alert that fires and resolves
  before its first message pages nothing;
- ``muted(alert)`` (silence, inhibition) holds back firing pages only, never a
  resolve whose firing was paged;
- a (rule, cluster, node, series) that starts firing ``flap.firings`` times
  within ``flap.window_s`` is flapping: it is announced once and its changes
  are held until it has not started firing for ``flap.quiet_s``.

``notified`` is what has been handed to a channel; ``recorded`` what the
channel's delivery outcome (sent or dead-lettered) confirmed. Only ``recorded``
is persisted, so after a restart anything not confirmed is sent again (at least
once) and nothing confirmed is paged twice.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas import Alert, AlertStatus

from sinks.notify.config import FlapConfig, GroupingConfig
from sinks.notify.routing import alert_labels

FIRING = "firing"
RESOLVED = "resolved"
_SEV_RANK = {"info": 0, "warning": 1, "critical": 2}

GroupKey = tuple[str, ...]
Identity = tuple[str, str, str, str]
Muted = Callable[[Alert], str | None]


def identity(alert: Alert) -> Identity:
    """What a person calls "the same alert": rule, cluster, node and series."""
    series = alert.details.get("series", "") if alert.details else ""
    return (alert.rule, alert.cluster, alert.node, str(series))


@dataclass(slots=True)
class Tracked:
    """One alert episode and what each channel has been told about it."""

    alert: Alert
    channels: tuple[str, ...]
    group: GroupKey
    received_at: float
    changed_at: float
    notified: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.alert.id

    @property
    def firing(self) -> bool:
        return self.alert.status is AlertStatus.FIRING

    def paged_firing(self) -> bool:
        return any(v == FIRING for v in self.notified.values())

    def is_done(self) -> bool:
        """Resolved, every channel told (or never paged), and no delivery in flight."""
        return not self.firing and not self.paged_firing() and self.recorded == self.notified


@dataclass(slots=True)
class Notification:
    """One message for one channel about one group."""

    channel: str
    group: GroupKey
    labels: dict[str, str]
    firing: list[Alert]
    resolved: list[Alert]
    flapping: list[Alert]
    repeat: bool
    created_at: float

    def refs(self) -> list[tuple[str, str]]:
        """(alert id, status) pairs whose delivery this message confirms."""
        return [(a.id, FIRING) for a in self.firing] + [(a.id, RESOLVED) for a in self.resolved]

    @property
    def severity(self) -> str:
        alerts = self.firing + self.resolved + self.flapping
        return max((a.severity.value for a in alerts), key=_SEV_RANK.__getitem__, default="info")


@dataclass(slots=True)
class Group:
    key: GroupKey
    labels: dict[str, str]
    channels: tuple[str, ...]
    members: dict[str, Tracked] = field(default_factory=dict)
    last_sent: float | None = None
    active: bool = False  # some firing alert of the group was paged and is not resolved
    interval_s: float = 0.0  # group_interval_s in force at the last message
    repeat_base: float = 0.0  # the repeat interval counts from here (the last message, or the last all-muted check)
    leading: bool = False  # the last message was a leading edge: followers wait group_wait_s from it
    dirty: bool = True  # something changed since the group was last evaluated
    wake_at: float = float("inf")  # when the group must be evaluated again even if nothing changes


@dataclass(slots=True)
class _Flap:
    firings: deque[float] = field(default_factory=deque)
    flapping: bool = False
    announced: bool = False
    since: float = 0.0
    last_firing: float = 0.0


class Grouper:
    """Holds every open alert episode, grouped; decides what to send and when."""

    def __init__(self, grouping: GroupingConfig, flap: FlapConfig) -> None:
        self.grouping = grouping
        self.flap = flap
        self.groups: dict[GroupKey, Group] = {}
        self.alerts: dict[str, Tracked] = {}
        self.tombstones: dict[str, float] = {}  # id -> time done; a late duplicate of these is ignored
        self._flaps: dict[Identity, _Flap] = {}
        self.next_due = float("inf")  # earliest time a waiting group falls due (set by ``due``)
        self._maybe_done: set[str] = set()
        self._emptied: set[GroupKey] = set()
        self.removed_groups: list[GroupKey] = []  # groups dropped by the last ``collect_done``
        self.duplicates = 0

    # --- inputs ---------------------------------------------------------------
    def group_key(self, alert: Alert, channels: tuple[str, ...]) -> tuple[GroupKey, dict[str, str]]:
        labels = alert_labels(alert)
        picked = {k: labels[k] for k in self.grouping.group_by}
        return (",".join(channels), *(f"{k}={v}" for k, v in picked.items())), picked

    def observe(self, alert: Alert, channels: tuple[str, ...], now: float) -> Tracked | None:
        """Take one alert message; return its record if it changed (to persist), None if a duplicate."""
        if alert.id in self.tombstones:
            self.duplicates += 1
            return None
        t = self.alerts.get(alert.id)
        if t is None:
            key, labels = self.group_key(alert, channels)
            t = Tracked(alert, channels, key, received_at=now, changed_at=now)
            self._add(t, labels)
            if t.firing:
                self._count_firing(alert, now)
            return t
        if t.alert.status is alert.status or not t.firing:
            self.duplicates += 1  # a redelivery, or a firing replayed after its resolve
            return None
        t.alert = alert
        t.changed_at = now
        self.groups[t.group].dirty = True
        self._maybe_done.add(t.id)
        return t

    def restore(self, t: Tracked, labels: dict[str, str] | None = None) -> None:
        """Re-add a record loaded from the state bucket (``notified`` = ``recorded``)."""
        t.notified = dict(t.recorded)
        if labels is None:
            labels = self.group_key(t.alert, t.channels)[1]
        self._add(t, labels)

    def restore_group(self, key: GroupKey, last_sent: float | None, active: bool, leading: bool = False) -> None:
        g = self.groups.get(key)
        if g is not None:
            g.last_sent, g.active, g.leading = last_sent, active, leading
            g.repeat_base = last_sent or 0.0
            g.dirty = True

    def _add(self, t: Tracked, labels: dict[str, str]) -> None:
        g = self.groups.get(t.group)
        if g is None:
            g = self.groups[t.group] = Group(t.group, labels, t.channels)
        g.members[t.id] = t
        g.dirty = True
        self.alerts[t.id] = t
        self._maybe_done.add(t.id)

    def _count_firing(self, alert: Alert, now: float) -> None:
        f = self._flaps.setdefault(identity(alert), _Flap())
        f.firings.append(now)
        while f.firings and f.firings[0] < now - self.flap.window_s:
            f.firings.popleft()
        f.last_firing = now
        if not f.flapping and len(f.firings) >= self.flap.firings:
            f.flapping, f.announced, f.since = True, False, now

    # --- outputs --------------------------------------------------------------
    def due(self, now: float, muted: Muted, *, full: bool = True) -> list[Notification]:
        """Notifications to send now; marks them as handed over (``notified``).

        ``full=False`` evaluates only groups that changed or whose timer is up;
        a full pass (say once a second, and whenever silences or inhibiting
        alerts change) also notices mutes lifted and flapping ended.
        """
        if full:
            self._end_flapping(now)
        nxt = float("inf")
        out: list[Notification] = []
        for g in list(self.groups.values()):
            if full or g.dirty or g.wake_at <= now:
                g.dirty = False
                out.extend(self._flush(g, now, muted))
            nxt = min(nxt, g.wake_at)
        self.next_due = nxt
        return out

    def _held(self, t: Tracked) -> bool:
        f = self._flaps.get(identity(t.alert))
        return f is not None and f.flapping

    def _end_flapping(self, now: float) -> None:
        for key in list(self._flaps):
            f = self._flaps[key]
            if f.flapping and now - f.last_firing >= self.flap.quiet_s:
                f.flapping = False
                f.firings.clear()
            if not f.flapping and (not f.firings or f.firings[-1] < now - self.flap.window_s):
                del self._flaps[key]

    def _flush(self, g: Group, now: float, muted: Muted) -> list[Notification]:
        per_channel: dict[str, tuple[list[Tracked], list[Tracked]]] = {}
        pending: list[Tracked] = []
        mute_cache: dict[str, bool] = {}

        def is_muted(t: Tracked) -> bool:
            if t.id not in mute_cache:
                mute_cache[t.id] = muted(t.alert) is not None
            return mute_cache[t.id]

        for ch in g.channels:
            fir = [t for t in g.members.values() if t.firing and t.notified.get(ch) != FIRING and not self._held(t) and not is_muted(t)]
            res = [t for t in g.members.values() if not t.firing and t.notified.get(ch) == FIRING and not self._held(t)]
            if fir or res:
                per_channel[ch] = (fir, res)
                pending.extend(fir)
                pending.extend(res)
        announce: dict[Identity, Tracked] = {}
        for t in g.members.values():
            f = self._flaps.get(identity(t.alert))
            if f is not None and f.flapping and not f.announced:
                prev = announce.get(identity(t.alert))
                if prev is None or t.alert.started_at > prev.alert.started_at:
                    announce[identity(t.alert)] = t
        repeat = False
        if not pending and not announce:
            timing = self.grouping.timing(self._max_severity(g.members.values()))
            if not g.active:
                g.wake_at = float("inf")
                return []
            if now < g.repeat_base + timing.repeat_interval_s:
                g.wake_at = g.repeat_base + timing.repeat_interval_s
                return []
            for ch in g.channels:
                fir = [t for t in g.members.values() if t.firing and t.notified.get(ch) == FIRING and not self._held(t) and not is_muted(t)]
                if fir:
                    per_channel[ch] = (fir, [])
            if not per_channel:
                g.repeat_base = now  # everything still firing is muted or held: check again after a full interval
                g.wake_at = now + timing.repeat_interval_s
                return []
            repeat = True
            g.leading = False
        else:
            items = pending + list(announce.values())
            timing = self.grouping.timing(self._max_severity(items))
            since = min([t.changed_at for t in pending] + [self._flaps[i].since for i in announce])
            lead = False
            if g.last_sent is None and timing.leading_edge and any(t.firing for t in pending):
                due_at = since  # leading edge: the first message of a new group goes out at once
                lead = True
            elif g.leading and g.last_sent is not None and since <= g.last_sent + timing.group_wait_s:
                due_at = g.last_sent + timing.group_wait_s  # followers of a leading edge: one message group_wait_s after it
            else:
                due_at = since + timing.group_wait_s
                if g.last_sent is not None:  # at most one message per group per group_interval_s
                    due_at = max(due_at, g.last_sent + timing.group_interval_s)
            if now < due_at:
                g.wake_at = due_at
                return []
            g.leading = lead
        flapping = [t.alert for t in announce.values()]
        for i in announce:
            self._flaps[i].announced = True
        out: list[Notification] = []
        for ch in g.channels:
            fir, res = per_channel.get(ch, ([], []))
            if not (fir or res or flapping):
                continue
            for t in fir:
                t.notified[ch] = FIRING
            for t in res:
                t.notified[ch] = RESOLVED
            out.append(Notification(ch, g.key, g.labels, [t.alert for t in fir], [t.alert for t in res], flapping, repeat, now))
        g.last_sent = g.repeat_base = now
        g.interval_s = timing.group_interval_s
        g.active = any(t.firing and t.paged_firing() for t in g.members.values())
        g.wake_at = now + timing.repeat_interval_s if g.active else float("inf")
        return out

    @staticmethod
    def _max_severity(items: Iterable[Tracked]) -> str:
        return max((t.alert.severity.value for t in items), key=_SEV_RANK.__getitem__, default="info")

    def record(self, channel: str, refs: Iterable[tuple[str, str]]) -> list[Tracked]:
        """Note a channel's delivery outcome for ``refs``; return the records to persist."""
        changed = []
        for aid, status in refs:
            t = self.alerts.get(aid)
            if t is not None and t.recorded.get(channel) != status:
                t.recorded[channel] = status
                changed.append(t)
                self._maybe_done.add(aid)
        return changed

    def collect_done(self, now: float) -> list[Tracked]:
        """Remove finished episodes (tombstoned so a late duplicate pages nothing); return them."""
        candidates, self._maybe_done = self._maybe_done, set()
        done = [t for aid in candidates if (t := self.alerts.get(aid)) is not None and t.is_done()]
        for t in done:
            del self.alerts[t.id]
            self.tombstones[t.id] = now
            g = self.groups.get(t.group)
            if g is not None:
                g.members.pop(t.id, None)
                g.active = any(m.firing and m.paged_firing() for m in g.members.values())
                if not g.members:
                    self._emptied.add(g.key)
        self.removed_groups = []
        for key in list(self._emptied):
            g = self.groups.get(key)
            if g is None or g.members:
                self._emptied.discard(key)
            elif g.last_sent is None or now - g.last_sent >= g.interval_s:
                # an empty group was kept while its last message was recent, so a re-fire honoured group_interval_s
                del self.groups[key]
                self._emptied.discard(key)
                self.removed_groups.append(key)
        return done

    def prune_tombstones(self, older_than: float) -> list[str]:
        """Forget tombstones stamped before ``older_than``; return their ids."""
        old = [aid for aid, ts in self.tombstones.items() if ts < older_than]
        for aid in old:
            del self.tombstones[aid]
        return old

    def stats(self) -> dict[str, Any]:
        return {
            "open_alerts": len(self.alerts),
            "groups": len(self.groups),
            "flapping": sum(1 for f in self._flaps.values() if f.flapping),
            "duplicates": self.duplicates,
        }
