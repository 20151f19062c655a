"""Scale-out: the shipped 3-node cluster config, R3 streams, two partitioned processors, one node lost.

Runs deploy/nats/cluster/n{1,2,3}.conf as shipped (mutual TLS on clients and
routes, the users of auth.conf) with only ports and paths changed, and connects
each role with its own least-privilege user.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy, ObjectStoreConfig
from nats.js.errors import NoStreamResponseError
from nats.errors import TimeoutError as NatsTimeoutError

from processors import Runtime, ThresholdRules, load_rules
from schemas import Alert, AlertStatus, MetricBatch, Sample, decode, encode, subjects
from swarmwatch.config import NatsConfig
from swarmwatch.connect import connect_options
from swarmwatch.streams import DERIVED, TELEMETRY, StreamLimits, ensure_streams
from tests.test_deploy_support import USERS, ClusterNode, ServerProcess, make_dev_certs, render_cluster

CLUSTER = "default"
NODES = [f"node-{i:02d}" for i in range(20)]
HOT_BEFORE = NODES[0::4]  # memory over 95 % before a server is lost
HOT_AFTER = NODES[1::4]  # ... and after
HOT_RULES = ("memory_usage_warning", "memory_usage_critical")
PARTITIONS = 2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[ClusterNode], dict[str, ServerProcess], Path]]:
    certs = make_dev_certs(tmp_path / "certs")
    nodes = render_cluster(tmp_path, certs)
    procs = {n.name: ServerProcess(n.conf, n.client_port, n.http_port).start() for n in nodes}
    try:
        for p in procs.values():
            p.wait_listening()
        yield nodes, procs, certs
    finally:
        for p in procs.values():
            p.stop()


def _cfg(role: str, certs: Path) -> NatsConfig:
    user, password = USERS[role]
    cert = "admin" if role == "admin" else role
    return NatsConfig(
        user=user, password=password, tls_ca=str(certs / "ca.pem"), tls_cert=str(certs / f"{cert}.pem"), tls_key=str(certs / f"{cert}-key.pem")
    )


async def _connect(nodes: list[ClusterNode], role: str, certs: Path, errors: list[str]) -> NATS:
    """A client with swarmwatch's connection settings that records errors (permission violations)."""

    async def on_error(exc: Exception) -> None:
        errors.append(f"{role}: {exc}")

    opts = connect_options(_cfg(role, certs), name=f"test-{role}")
    opts["error_cb"] = on_error
    return await nats.connect(servers=[n.url for n in nodes], **opts)


async def _wait_meta_leader(nc: NATS, timeout_s: float = 30.0) -> None:
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


def _batch(node: str, mem: float, ts: float, seq: int) -> bytes:
    return encode(
        MetricBatch(cluster=CLUSTER, node=node, ts=ts, seq=seq, samples=[Sample("mem.percent", mem, unit="%"), Sample("cpu.percent", 20.0, unit="%")])
    )


async def _publish_round(nc: NATS, hot: list[str], seq: int, timeout_s: float = 30.0) -> None:
    """One batch per node (``hot`` ones at 97 % memory), each retried until JetStream stores it."""
    js = nc.jetstream()
    ts = time.time()
    for node in NODES:
        data = _batch(node, 97.0 if node in hot else 40.0, ts, seq)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await js.publish(subjects.metrics(CLUSTER, node), data, timeout=2.0, headers={"Nats-Msg-Id": f"{node}:{seq}"})
                break
            except (NatsTimeoutError, NoStreamResponseError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _stored_alerts(nc: NATS) -> list[Alert]:
    """Every alert stored in DERIVED (an ephemeral ordered read from the start)."""
    js = nc.jetstream()
    info = await js.stream_info(DERIVED)
    out: list[Alert] = []
    if info.state.messages == 0:
        return out
    sub = await js.pull_subscribe("sw.alerts.>", stream=DERIVED, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30))
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except NatsTimeoutError:
                break
            for m in msgs:
                out.append(decode(m.data, Alert))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


async def _wait_alerts(nc: NATS, expected: set[tuple[str, str]], timeout_s: float = 30.0) -> list[Alert]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            alerts = await _stored_alerts(nc)
        except Exception:  # a leader election in progress
            alerts = []
        firing = {(a.rule, a.node) for a in alerts if a.status == AlertStatus.FIRING}
        if expected <= firing or time.monotonic() > deadline:
            return alerts
        await asyncio.sleep(0.5)


async def _consumer_state(nc: NATS, name: str) -> str:
    try:
        info = await nc.jetstream().consumer_info(TELEMETRY, name)
    except Exception as exc:
        return f"{name}: {exc!r}"
    return f"{name}: delivered={info.delivered} ack_floor={info.ack_floor} pending={info.num_pending} waiting={info.num_waiting} leader={info.cluster}"


def _firing_counts(alerts: list[Alert]) -> Counter[tuple[str, str]]:
    return Counter((a.rule, a.node) for a in alerts if a.status == AlertStatus.FIRING)


async def _leader(nc: NATS, stream: str) -> str | None:
    info = await nc.jetstream().stream_info(stream)
    return info.cluster.leader if info.cluster else None


async def _move_leader_off(nc: NATS, stream: str, server: str, timeout_s: float = 20.0) -> None:
    """Ask ``stream``'s leader to step down until another server leads it."""
    deadline = time.monotonic() + timeout_s
    while await _leader(nc, stream) == server:
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream} is still led by {server}")
        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(0.5)


async def _lose_a_server_and_keep_alerting(
    cluster: tuple[list[ClusterNode], dict[str, ServerProcess], Path], lose_leader_of: str
) -> None:
    """Round 1 of alerts, SIGKILL the server leading ``lose_leader_of``, round 2: every alert exactly once."""
    nodes, procs, certs = cluster
    errors: list[str] = []
    admin = await _connect(nodes, "admin", certs, errors)
    # the fleet's telemetry for 20 nodes from one connection: admin's (each node's own
    # identity may publish only its own subjects; tests/test_node_identity.py)
    producer = await _connect(nodes, "admin", certs, errors)
    workers = [await _connect(nodes, "processor", certs, errors) for _ in range(PARTITIONS)]
    runtimes: list[Runtime] = []
    try:
        await _wait_meta_leader(workers[0])
        js = workers[0].jetstream()
        # what `swarmwatch process` does with retention.replicas: 3, as the processor user
        await ensure_streams(js, StreamLimits(3600, replicas=3), StreamLimits(3600, replicas=3))
        # checkpoints replicated too: the runtime creates this store with one replica, and
        # a processor whose checkpoint store lives only on the lost server stops acking
        await js.create_object_store("sw_state", config=ObjectStoreConfig(replicas=3))
        for name in (TELEMETRY, DERIVED, "OBJ_sw_state"):
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2

        rules = load_rules(None)
        for i, nc in enumerate(workers):
            rt = Runtime(nc, [ThresholdRules(rules)], name=f"processor-{i}", partition=(i, PARTITIONS), checkpoint_interval_s=0.5)
            await rt.start()
            runtimes.append(rt)

        await _publish_round(producer, HOT_BEFORE, seq=1)
        expected = {(r, n) for n in HOT_BEFORE for r in HOT_RULES}
        alerts = await _wait_alerts(admin, expected)
        counts = _firing_counts(alerts)
        assert set(counts) == expected
        assert all(c == 1 for c in counts.values()), counts
        # each partition took its share of the nodes, none took all
        assert all(rt.stats.processed > 0 and rt.stats.other_partitions > 0 for rt in runtimes)
        assert sum(rt.stats.processed for rt in runtimes) == len(NODES)
        # round 1 checkpointed and acked everywhere
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            floors = [(await admin.jetstream().consumer_info(TELEMETRY, rt.name)).ack_floor.stream_seq for rt in runtimes]
            if all(f == len(NODES) for f in floors):
                break
            await asyncio.sleep(0.2)

        victim = await _leader(admin, lose_leader_of)
        assert victim in procs
        if lose_leader_of == TELEMETRY:  # only TELEMETRY's leader: outputs and checkpoints stay where they are
            for other in (DERIVED, "OBJ_sw_state"):
                await _move_leader_off(admin, other, victim)
        procs[victim].kill()  # SIGKILL: no lame-duck hand-over
        checkpoints_before = [rt.stats.checkpoints for rt in runtimes]

        await _publish_round(producer, HOT_AFTER, seq=2)
        expected |= {(r, n) for n in HOT_AFTER for r in HOT_RULES}
        alerts = await _wait_alerts(admin, expected, timeout_s=30.0)
        counts = _firing_counts(alerts)
        assert set(counts) == expected, (
            f"missing after losing {victim}: {sorted(expected - set(counts))}; runtimes: {[rt.stats for rt in runtimes]}; "
            f"consumers: {[await _consumer_state(admin, rt.name) for rt in runtimes]}"
        )
        assert all(c == 1 for c in counts.values()), counts
        assert (await _leader(admin, lose_leader_of)) not in (None, victim)
        # checkpoints (and so acks) go on without the lost server
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            rt.stats.checkpoints > before for rt, before in zip(runtimes, checkpoints_before)
        ):
            await asyncio.sleep(0.2)
        assert all(rt.stats.checkpoints > before for rt, before in zip(runtimes, checkpoints_before))
        assert not [e for e in errors if "ermission" in e], errors
    finally:
        for rt in runtimes:
            await rt.stop()
        for nc in (*workers, producer, admin):
            await nc.close()


@pytest.mark.timeout(110)
async def test_partitioned_processors_on_a_replicated_cluster_alert_once_and_survive_losing_the_telemetry_leader(
    cluster: tuple[list[ClusterNode], dict[str, ServerProcess], Path],
) -> None:
    await _lose_a_server_and_keep_alerting(cluster, TELEMETRY)


@pytest.mark.slow
@pytest.mark.timeout(110)
async def test_partitioned_processors_keep_alerting_after_losing_the_server_that_leads_derived(
    cluster: tuple[list[ClusterNode], dict[str, ServerProcess], Path],
) -> None:
    await _lose_a_server_and_keep_alerting(cluster, DERIVED)
