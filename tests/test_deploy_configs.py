"""The shipped NATS configs: the server accepts them, and auth.conf gives each role what it needs and no more."""
from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from processors import Runtime
from schemas import MetricBatch, Sample, encode, subjects
from swarmwatch.config import Config, NatsConfig
from producers.options import creds_options
from swarmwatch.connect import connect_options
from swarmwatch.pipeline import build_operators
from swarmwatch.streams import DERIVED, TELEMETRY, ensure_streams
from tests.test_deploy_support import (
    NATS_DIR,
    PASSWORDS,
    USERS,
    node_seed,
    ServerProcess,
    free_ports,
    make_dev_certs,
    nats_server_binary,
    render_file,
    server_env,
    single_server_with_auth,
)

SHIPPED = sorted(p.relative_to(NATS_DIR) for p in NATS_DIR.rglob("*.conf"))
VIOLATION = "permissions violation"  # nats-py lower-cases the server's -ERR text


def _check(conf: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("rel", SHIPPED, ids=str)
def test_every_shipped_nats_config_passes_the_servers_config_check(rel: Path, tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    out = tmp_path / "nats"
    for src in NATS_DIR.rglob("*.conf"):  # includes resolve relative to the including file
        render_file(src, out / src.parent.relative_to(NATS_DIR), certs=certs)
    res = _check(out / rel, server_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is valid" in res.stdout + res.stderr


def test_shipped_configs_cover_single_cluster_auth_and_tls() -> None:
    assert {str(p) for p in SHIPPED} >= {"single.conf", "auth.conf", "tls.conf", "cluster/n1.conf", "cluster/n2.conf", "cluster/n3.conf"}


def test_auth_config_refuses_to_start_without_its_password_variables(tmp_path: Path) -> None:
    env = {k: v for k, v in server_env().items() if k != "SW_PROCESSOR_PASSWORD"}
    res = _check(NATS_DIR / "auth.conf", env)
    assert res.returncode != 0
    assert "SW_PROCESSOR_PASSWORD" in res.stdout + res.stderr


def test_cluster_nodes_differ_only_in_their_server_name() -> None:
    texts = {n: (NATS_DIR / "cluster" / f"{n}.conf").read_text() for n in ("n1", "n2", "n3")}
    norm = {n: t.replace(f"server_name: {n}", "server_name: NODE").replace(f"node {n} ", "node NODE ").replace(f"cluster/{n}.conf", "cluster/NODE.conf") for n, t in texts.items()}
    assert norm["n1"] == norm["n2"] == norm["n3"]
    for n, t in texts.items():
        assert f"server_name: {n}" in t


# ------------------------------------------------------------------ a server with auth.conf


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[str]:
    """deploy/nats/single.conf on a random port with `include ./auth.conf` added, as docs/deploy.md says."""
    with single_server_with_auth(tmp_path) as (url, _srv):
        yield url


class Client:
    """A connection as one role (or, with ``seed``, one node identity) that records the errors the server sends it."""

    def __init__(self, role: str, seed: Path | None = None) -> None:
        self.role = role
        self.seed = seed
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def connect(self, url: str) -> NATS:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        if self.seed is not None:
            cfg = NatsConfig(creds=str(self.seed))
        else:
            user, password = USERS[self.role]
            cfg = NatsConfig(user=user, password=password)
        opts = connect_options(cfg, name=f"test-{self.role}")
        opts.update(error_cb=on_error, max_reconnect_attempts=2)
        self.nc = await nats.connect(url, **opts)
        return self.nc

    def violations(self) -> list[str]:
        return [e.lower() for e in self.errors if VIOLATION in e.lower()]

    async def wait_violation(self, fragment: str, timeout_s: float = 5.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in self.violations():
                if fragment.lower() in e:
                    return e
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permission violation mentioning {fragment!r}; errors: {self.errors}")


@pytest.fixture
async def roles(auth_server: str, tmp_path: Path) -> AsyncIterator[dict[str, Client]]:
    """processor, sinks, admin, and "producer": node-1's own identity."""
    clients = {role: Client(role) for role in USERS}
    clients["producer"] = Client("node-1", seed=node_seed(tmp_path, "node-1"))
    clients["victim"] = Client("victim", seed=node_seed(tmp_path, "victim"))
    for c in clients.values():
        await c.connect(auth_server)
    assert clients["admin"].nc is not None
    await ensure_streams(clients["admin"].nc.jetstream())
    try:
        yield clients
    finally:
        for c in clients.values():
            if c.nc is not None:
                await c.nc.close()


def _batch(node: str, mem: float, cluster: str = "default") -> bytes:
    return encode(MetricBatch(cluster=cluster, node=node, ts=time.time(), samples=[Sample("mem.percent", mem, unit="%")]))


async def test_a_node_can_publish_its_own_metrics_and_events_to_jetstream(roles: dict[str, Client]) -> None:
    nc = roles["producer"].nc
    assert nc is not None
    ack = await nc.jetstream().publish(subjects.metrics("default", "node-1"), _batch("node-1", 40.0), timeout=5)
    assert ack.stream == TELEMETRY and ack.seq == 1
    ev = await nc.jetstream().publish("sw.events.default.node-1.peer.join", b"{}", timeout=5)
    assert ev.stream == TELEMETRY
    assert roles["producer"].violations() == []


async def test_producer_cannot_publish_alerts_another_clusters_metrics_or_use_the_jetstream_api(roles: dict[str, Client]) -> None:
    prod = roles["producer"]
    nc = prod.nc
    assert nc is not None
    await nc.publish("sw.alerts.critical.default.node-1.cpu_usage_critical", b"{}")
    await nc.flush()
    await prod.wait_violation("sw.alerts.critical.default.node-1.cpu_usage_critical")
    await nc.publish(subjects.metrics("other", "node-1"), _batch("node-1", 40.0, cluster="other"))
    await nc.flush()
    await prod.wait_violation("sw.metrics.other.node-1")
    await nc.publish(f"$JS.API.STREAM.DELETE.{TELEMETRY}", b"")
    await nc.flush()
    await prod.wait_violation("$JS.API.STREAM.DELETE")
    # nothing of it reached the streams
    admin = roles["admin"].nc
    assert admin is not None
    assert (await admin.jetstream().stream_info(DERIVED)).state.messages == 0
    assert (await admin.jetstream().stream_info(TELEMETRY)).state.messages == 0


async def test_producer_cannot_read_other_nodes_metrics_or_alerts(roles: dict[str, Client]) -> None:
    prod = roles["producer"]
    assert prod.nc is not None
    await prod.nc.subscribe("sw.metrics.>")
    await prod.nc.flush()
    await prod.wait_violation("sw.metrics.>")
    await prod.nc.subscribe("sw.alerts.>")
    await prod.nc.flush()
    await prod.wait_violation("sw.alerts.>")


async def test_sinks_user_cannot_publish_alerts_or_delete_streams(roles: dict[str, Client]) -> None:
    sinks = roles["sinks"]
    assert sinks.nc is not None
    await sinks.nc.publish("sw.alerts.warning.default.node-1.fake", b"{}")
    await sinks.nc.publish(f"$JS.API.STREAM.DELETE.{DERIVED}", b"")
    await sinks.nc.flush()
    await sinks.wait_violation("sw.alerts.warning.default.node-1.fake")
    await sinks.wait_violation(f"$JS.API.STREAM.DELETE.{DERIVED}")


async def test_processor_user_cannot_publish_telemetry_or_purge_streams(roles: dict[str, Client]) -> None:
    proc = roles["processor"]
    assert proc.nc is not None
    await proc.nc.publish(subjects.metrics("default", "node-1"), _batch("node-1", 99.0))
    await proc.nc.publish(f"$JS.API.STREAM.PURGE.{TELEMETRY}", b"")
    await proc.nc.flush()
    await proc.wait_violation("sw.metrics.default.node-1")
    await proc.wait_violation(f"$JS.API.STREAM.PURGE.{TELEMETRY}")


async def test_a_producer_cannot_read_what_jetstream_delivers_to_the_processor(roles: dict[str, Client]) -> None:
    from processors import ThresholdRules

    spy, proc, victim = roles["producer"], roles["processor"], roles["victim"]
    assert spy.nc is not None and proc.nc is not None and victim.nc is not None
    seen: list[bytes] = []

    async def on_msg(msg: object) -> None:
        seen.append(getattr(msg, "data", b""))

    try:
        await spy.nc.subscribe("_INBOX.>", cb=on_msg)
    except Exception:
        pass  # a refused subscription is the wanted outcome
    await victim.nc.jetstream().publish(subjects.metrics("default", "victim"), _batch("victim", 50.0), timeout=5)
    runtime = Runtime(proc.nc, [ThresholdRules()], name="processor")
    await runtime.start()
    try:
        deadline = time.monotonic() + 10
        while runtime.stats.processed < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert runtime.stats.processed == 1
        await asyncio.sleep(0.3)
    finally:
        await runtime.stop()
    assert not [d for d in seen if b'"victim"' in d], "the producer read another node's metrics from the processor's inbox"


async def test_a_client_without_credentials_is_refused(auth_server: str) -> None:
    with pytest.raises(Exception) as info:
        await nats.connect(auth_server, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=3)
    assert "uthorization" in str(info.value)


async def test_each_role_runs_its_real_code_with_no_permission_violation(
    auth_server: str, roles: dict[str, Client], tmp_path: Path
) -> None:
    """Producer sidecar and peer probes, every operator of the processor, file and notification sinks."""
    from producers.probes import PeerProber
    from producers.sidecar import run_producer
    from sinks import FileSinkSettings, start_file_sinks
    from sinks.api import ApiServer
    from sinks.notify import NotifyConfig, NotifySink

    prod, proc, sink, node2 = roles["producer"], roles["processor"], roles["sinks"], Client("node-2", node_seed(tmp_path, "node-2"))
    await node2.connect(auth_server)
    assert prod.nc is not None and proc.nc is not None and sink.nc is not None and node2.nc is not None

    runtime = Runtime(proc.nc, build_operators(Config()), name="processor", checkpoint_interval_s=0.3)
    await runtime.start()
    file_sinks = await start_file_sinks(sink.nc, tmp_path / "store", ["json"], FileSinkSettings(flush_interval_s=0.3))
    notify = NotifySink(sink.nc, NotifyConfig())
    await notify.start()
    probers = [PeerProber(c.nc, "default", f"node-{i}", js=c.nc.jetstream(), interval_s=0.2, timeout_s=1.0) for i, c in ((1, prod), (2, node2))]
    try:
        for p in probers:
            await p.start()
        counters = await run_producer(
            auth_server,
            "default",
            "node-1",
            0.2,
            gpu=False,
            max_batches=3,
            connect_options=creds_options(str(node_seed(tmp_path, "node-1"))),
        )
        assert counters["sent"] >= 3
        await node2.nc.jetstream().publish(subjects.metrics("default", "node-2"), _batch("node-2", 97.0), timeout=5)
        deadline = time.monotonic() + 20
        results: list[object] = []
        while time.monotonic() < deadline:
            results = [r for _peer, r in await probers[0].probe_once() if getattr(r, "ok", False)]
            if results and notify.counts["alerts_in"] > 0 and runtime.stats.checkpoints > 0 and list((tmp_path / "store").rglob("*.jsonl*")):
                break
            await asyncio.sleep(0.3)
        assert results, "node-1 got no probe answer from node-2"
        assert runtime.stats.processed >= 4 and runtime.stats.checkpoints > 0
        assert notify.counts["alerts_in"] > 0
        assert list((tmp_path / "store").rglob("*.jsonl*"))
        # a restarted processor reads its checkpoint back from the sw_state object store
        await runtime.stop()
        runtime = Runtime(proc.nc, build_operators(Config()), name="processor", checkpoint_interval_s=0.3)
        await runtime.start()
        assert runtime._ckpt_seq > 0
        # the API backfills from DERIVED and follows the live subjects
        api = ApiServer(sink.nc, host="127.0.0.1", port=0)
        await api.start()
        await api.stop()
    finally:
        for p in probers:
            await p.stop()
        await notify.stop()
        for fs in file_sinks:
            await fs.stop()
        await runtime.stop()
        await node2.nc.close()
    for client in (roles["producer"], roles["processor"], roles["sinks"], node2):
        assert client.violations() == [], (client.role, client.errors)


def _role_config(tmp_path: Path, secret: str, password_var: str) -> Path:
    """The example config of deploy/k8s/secrets.example.yaml for a server without TLS, with the test password."""
    import yaml

    docs = [d for d in yaml.safe_load_all((NATS_DIR.parent / "k8s" / "secrets.example.yaml").read_text()) if d]
    (doc,) = [d for d in docs if d["metadata"]["name"] == secret]
    cfg = yaml.safe_load(doc["stringData"]["swarmwatch.yaml"])
    cfg["nats"] = {"user": cfg["nats"]["user"], "password": PASSWORDS[password_var]}
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["retention"] = {"replicas": 1}  # one server here
    cfg.get("processor", {}).pop("rules", None)
    if "sinks" in cfg:
        cfg["sinks"]["store"] = str(tmp_path / "store")
    out = tmp_path / f"{secret}.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


async def _wait_consumer(nc: NATS, stream: str, name: str, timeout_s: float = 30.0) -> None:
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.consumer_info(stream, name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_the_role_commands_run_under_their_users_from_the_example_configs(
    auth_server: str, roles: dict[str, Client], tmp_path: Path
) -> None:
    """`swarmwatch produce`, `process` and `sink json` as separate processes, each with its least-privilege user."""
    import os
    import signal
    import sys

    exe = str(Path(sys.executable).parent / "swarmwatch")
    admin = roles["admin"].nc
    assert admin is not None
    env = dict(os.environ)
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("produce", "process", "sink")}
    procs = {
        "process": subprocess.Popen(
            [exe, "process", "--nats", auth_server, "--config", str(_role_config(tmp_path, "swarmwatch-processor-config", "SW_PROCESSOR_PASSWORD"))],
            stdout=logs["process"], stderr=subprocess.STDOUT,
        ),
        "sink": subprocess.Popen(
            [exe, "sink", "json", "--nats", auth_server, "--config", str(_role_config(tmp_path, "swarmwatch-sinks-config", "SW_SINKS_PASSWORD"))],
            stdout=logs["sink"], stderr=subprocess.STDOUT,
        ),
        "produce": subprocess.Popen(
            [exe, "produce", "--nats", auth_server, "--cluster", "default", "--node", "node-9", "--nats-creds", str(node_seed(tmp_path, "node-9")),
             "--interval", "200ms", "--no-gpu", "--spool-dir", str(tmp_path / "spool")],
            stdout=logs["produce"], stderr=subprocess.STDOUT, env=env,
        ),
    }
    try:
        await _wait_consumer(admin, TELEMETRY, "processor")
        await _wait_consumer(admin, TELEMETRY, "sink-json")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = await admin.jetstream().consumer_info(TELEMETRY, "processor")
            if info.delivered.stream_seq >= 3 and list((tmp_path / "store").rglob("*.jsonl*")):
                break
            await asyncio.sleep(0.3)
        assert info.delivered.stream_seq >= 3, "the processor got no metrics from the producer"
        assert list((tmp_path / "store").rglob("*.jsonl*")), "the json sink wrote nothing"
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited {p.returncode}: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in procs.items():
            try:
                codes[name] = p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait(5)
        for fh in logs.values():
            fh.close()
    for name, code in codes.items():
        text = (tmp_path / f"{name}.log").read_text()
        assert code == 0, f"{name} exited {code}: {text[-2000:]}"
        assert "ermission" not in text, f"{name}: {text[-2000:]}"


async def test_tls_config_refuses_plain_text_and_clients_without_a_certificate(tmp_path: Path) -> None:
    """single.conf + tls.conf + auth.conf: only TLS clients with a CA-signed certificate and a password get in."""
    import ssl

    certs = make_dev_certs(tmp_path / "certs")
    port = free_ports(1)[0]
    conf = render_file(NATS_DIR / "single.conf", tmp_path, certs=certs, client_port=port)
    render_file(NATS_DIR / "tls.conf", tmp_path, certs=certs)
    render_file(NATS_DIR / "auth.conf", tmp_path)
    conf.write_text(conf.read_text() + "\ninclude ./tls.conf\ninclude ./auth.conf\n")
    srv = ServerProcess(conf, port).start()
    user, password = USERS["admin"]
    quick = {"max_reconnect_attempts": 0, "allow_reconnect": False, "connect_timeout": 3}
    try:
        srv.wait_listening()
        with pytest.raises(Exception):
            await nats.connect(f"nats://127.0.0.1:{port}", user=user, password=password, **quick)
        no_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with pytest.raises(Exception):
            await nats.connect(f"tls://127.0.0.1:{port}", user=user, password=password, tls=no_cert, **quick)
        opts = connect_options(
            NatsConfig(user=user, password=password, tls_ca=str(certs / "ca.pem"), tls_cert=str(certs / "admin.pem"), tls_key=str(certs / "admin-key.pem"))
        )
        opts.update(quick)
        nc = await nats.connect(f"tls://127.0.0.1:{port}", **opts)
        try:
            assert nc.is_connected
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()
    finally:
        srv.stop()


async def test_an_operator_runs_alerts_and_silence_as_the_admin_user_of_auth_conf(
    auth_server: str, roles: dict[str, Client], tmp_path: Path
) -> None:
    """`swarmwatch alerts` and `silence add|list|expire` log in with --config (nats: user/password) and see a firing alert."""
    import sys

    import yaml

    from processors import AlertTracker
    from schemas import AlertKind, Severity

    admin = roles["admin"].nc
    assert admin is not None
    (fired,) = AlertTracker("disk_full", AlertKind.THRESHOLD, Severity.CRITICAL).update(
        "default", "node-7", True, time.time() - 60, 97.0, metric="disk.percent", summary="disk 97 %"
    )
    await admin.jetstream().publish(fired.subject, encode(fired.message), headers={"Nats-Msg-Id": fired.msg_id})
    user, password = USERS["admin"]
    cfg = tmp_path / "operator.yaml"
    cfg.write_text(yaml.safe_dump({"nats": {"user": user, "password": password}}))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swarmwatch", *args, "--nats", auth_server, "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60)

    def alerts() -> str:
        import os
        import signal

        proc = subprocess.Popen([sys.executable, "-m", "swarmwatch", "alerts", "--nats", auth_server, "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
        assert proc.stdout is not None
        lines = []
        try:
            for line in proc.stdout:  # what fires now, then "listening on ..." once it follows
                lines.append(line)
                if "listening on" in line:
                    break
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        assert "error" not in err and "ermission" not in err, err
        return "".join(lines)

    shown = await asyncio.to_thread(alerts)
    assert "firing now: 1" in shown and "default/node-7 disk_full" in shown, shown
    added = await asyncio.to_thread(run, "silence", "add", "--match", "node=node-7", "--duration", "1h", "--by", "ops")
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[0]
    listed = await asyncio.to_thread(run, "silence", "list")
    assert listed.returncode == 0 and sid in listed.stdout and "active" in listed.stdout, listed.stderr
    expired = await asyncio.to_thread(run, "silence", "expire", sid)
    assert expired.returncode == 0 and "expired" in expired.stdout, expired.stderr
    assert roles["admin"].violations() == []
