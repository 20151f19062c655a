"""Kubernetes manifests, systemd units and example configs: they parse, validate and say what docs/deploy.md says."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.rules import default_rules, load_rules
from swarmwatch.config import load_config
from tests.test_deploy_support import DEPLOY, NATS_DIR, make_dev_certs, nats_server_binary, server_env

K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
CONFIG = DEPLOY / "config"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Pod"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_k8s() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in _docs(p) if p.name != "kustomization.yaml"]


def _find(kind: str, name: str) -> dict[str, Any]:
    for _file, d in _all_k8s():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def _pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    return d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------------ Kubernetes


def test_every_kubernetes_manifest_parses_and_names_its_kind_and_namespace() -> None:
    docs = _all_k8s()
    assert len(docs) >= 10
    for file, d in docs:
        assert d.get("apiVersion") and d.get("kind"), file
        assert d["metadata"].get("name"), file
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace"), f"{file}: {d['kind']} {d['metadata']['name']} has no namespace"


def test_every_container_runs_unprivileged_read_only_and_bounded() -> None:
    seen = 0
    for file, d in _all_k8s():
        if d["kind"] not in WORKLOADS:
            continue
        spec = _pod_spec(d)
        where = f"{file}: {d['kind']} {d['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (where, c["name"])
            seen += 1
    assert seen >= 7


def test_only_the_producer_daemonset_gets_host_access_in_its_own_namespace() -> None:
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for _f, d in _all_k8s() if d["kind"] == "Namespace"}
    assert namespaces["swarmwatch"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for file, d in _all_k8s():
        if d["kind"] not in WORKLOADS:
            continue
        spec = _pod_spec(d)
        host = spec.get("hostPID") or spec.get("hostNetwork")
        if d["kind"] == "DaemonSet":
            assert spec["hostPID"] is True and d["metadata"]["namespace"] == "swarmwatch-agents"
        else:
            assert not host, f"{file}: {d['metadata']['name']} asks for host access"


def test_producer_daemonset_takes_its_interval_from_env_and_its_own_node_key_from_the_host() -> None:
    ds = _find("DaemonSet", "swarmwatch-producer")
    spec = _pod_spec(ds)
    (c,) = spec["containers"]
    args, env = c["args"], _env(c)
    assert args[0] == "produce"
    assert args[args.index("--interval") + 1] == "$(SW_INTERVAL)" and env["SW_INTERVAL"]["value"] == "1s"
    # no shared producer password: each node has its own key, on its own host, read-only
    assert "SWARMWATCH_NATS_PASSWORD" not in env and "--user" not in args and "--nats-user" not in args
    creds = args[args.index("--nats-creds") + 1]
    (mount,) = [m for m in c["volumeMounts"] if creds.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (vol,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert vol["hostPath"]["type"] == "Directory"
    assert "producer-default" not in (NATS_DIR / "auth.conf").read_text().split("# There is no shared producer user")[1]


def test_sidecar_example_takes_its_own_key_from_a_secret_of_its_own() -> None:
    pod = _find("Pod", "validator-7")
    (c,) = pod["spec"]["initContainers"]
    creds = c["args"][c["args"].index("--nats-creds") + 1]
    (mount,) = [m for m in c["volumeMounts"] if creds.startswith(m["mountPath"] + "/")]
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert vol["secret"]["secretName"] == f"swarmwatch-node-{pod['metadata']['name']}"


def test_processor_pods_take_their_ordinal_as_partition_and_name() -> None:
    sts = _find("StatefulSet", "processor")
    (c,) = _pod_spec(sts)["containers"]
    args, env = c["args"], _env(c)
    assert args[args.index("--partition") + 1] == "$(ORDINAL)/$(SW_PARTITIONS)"
    assert args[args.index("--name") + 1] == "processor-$(ORDINAL)"
    assert env["ORDINAL"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert int(env["SW_PARTITIONS"]["value"]) == sts["spec"]["replicas"] >= 2


def test_nats_statefulset_runs_three_servers_with_a_volume_claim_each() -> None:
    sts = _find("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert _find("PodDisruptionBudget", "nats")["spec"]["maxUnavailable"] == 1


def test_sinks_keep_files_on_a_volume_and_the_api_has_a_service() -> None:
    dep = _find("Deployment", "sinks")
    spec = _pod_spec(dep)
    assert {c["name"] for c in spec["containers"]} >= {"json", "parquet", "api"}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["swarmwatch-store"]
    _find("PersistentVolumeClaim", "swarmwatch-store")
    svc = _find("Service", "swarmwatch-api")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    api = next(c for c in spec["containers"] if c["name"] == "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"


def test_kubernetes_nats_conf_passes_the_servers_config_check(tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    conf_text = _find("ConfigMap", "nats-server-conf")["data"]["nats.conf"]
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    for name in ("auth.conf", "tls.conf"):  # the nats-shared ConfigMap is made from these files
        (conf_dir / name).write_text((NATS_DIR / name).read_text().replace("/etc/nats/certs/", f"{certs}/"))
    conf_text = conf_text.replace("/etc/nats/certs/", f"{certs}/").replace("/data/jetstream", str(tmp_path / "js"))
    conf_text = conf_text.replace("/var/run/nats/", f"{tmp_path}/")
    (conf_dir / "nats.conf").write_text(conf_text)
    res = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf_dir / "nats.conf")],
        capture_output=True, text=True, timeout=30, env={**server_env(), "SERVER_NAME": "nats-0"},
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_example_configs_in_the_secrets_are_valid_and_use_auth_conf_users(tmp_path: Path) -> None:
    auth = (NATS_DIR / "auth.conf").read_text()
    users = {}
    for secret in ("swarmwatch-processor-config", "swarmwatch-sinks-config"):
        f = tmp_path / f"{secret}.yaml"
        f.write_text(_find("Secret", secret)["stringData"]["swarmwatch.yaml"])
        cfg = load_config(f)
        assert f'user: "{cfg.nats.user}"' in auth
        users[secret] = cfg
    assert users["swarmwatch-processor-config"].retention.replicas == 3
    assert users["swarmwatch-sinks-config"].sinks.api_token


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_listed_manifest() -> None:
    res = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(res.stdout) if d]
    assert {"Namespace", "StatefulSet", "DaemonSet", "Deployment", "Service", "NetworkPolicy"} <= set(kinds)


# ------------------------------------------------------------------ example configs


def test_example_swarmwatch_config_is_valid() -> None:
    cfg = load_config(CONFIG / "swarmwatch.yaml")
    assert cfg.processor.rules == "/etc/swarmwatch/rules.yaml"
    assert cfg.retention.telemetry_s == 7 * 86400 and cfg.retention.derived_s == 30 * 86400


def test_example_rules_spell_out_the_built_in_defaults_exactly() -> None:
    rules = {r.name: r for r in load_rules(CONFIG / "rules.yaml")}
    for d in default_rules():
        assert rules[d.name] == d, d.name
    assert len(rules) > len(default_rules())


def test_example_notify_config_loads_with_its_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sinks.notify import load_config as load_notify

    text = (CONFIG / "notify.yaml").read_text()
    secret = tmp_path / "smtp_password"
    secret.write_text("pw")
    text = text.replace("/run/secrets/smtp_password", str(secret))
    # the values of deploy/systemd/sink-notify.env.example, which must name every variable
    example = dict(
        line.split("=", 1) for line in (SYSTEMD / "sink-notify.env.example").read_text().splitlines() if line and not line.startswith("#")
    )
    for var in re.findall(r"\$\{(SW_[A-Z_]+)\}", text):
        assert var in example, f"{var} is missing from sink-notify.env.example"
        monkeypatch.setenv(var, example[var])
    f = tmp_path / "notify.yaml"
    f.write_text(text)
    cfg = load_notify(f)
    assert {c.name for c in cfg.channels} == {"ops-slack", "ops-mail", "oncall-sms", "ml-webhook"}


# ------------------------------------------------------------------ systemd

UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".target"))


def _instance(unit: str) -> str:
    return unit.replace("@.", "@0.") if "@." in unit else unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every unit (templates as instance 0, with drop-ins) verifies without a single warning."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "swarmwatch").exists()
    for src in SYSTEMD.rglob("*"):
        if src.is_file() and not src.name.endswith(".example"):
            dst = tmp_path / src.relative_to(SYSTEMD)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text().replace("/opt/swarmwatch/venv/bin/", f"{venv_bin}/"))
    for unit in UNITS:
        res = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", _instance(unit)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        )
        out = (res.stdout + res.stderr).strip()
        assert res.returncode == 0 and out == "", f"{unit}:\n{out}"


def _settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.parametrize("unit", [u for u in UNITS if u.endswith(".service")])
def test_systemd_services_run_without_privileges_and_within_limits(unit: str) -> None:
    s = _settings(unit)
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "Restart": "always", "CapabilityBoundingSet": ""}.items():
        assert s.get(key) == [value], f"{unit}: {key}={s.get(key)}"
    assert s["CPUQuota"] and s["MemoryMax"] and s["TasksMax"]
    assert s["ExecStart"][0].startswith("/opt/swarmwatch/venv/bin/swarmwatch ")


def test_systemd_producer_takes_interval_from_environment_files_and_its_key_as_a_credential() -> None:
    for unit in ("swarmwatch-producer.service", "swarmwatch-producer@.service"):
        s = _settings(unit)
        assert "--interval ${SW_INTERVAL}" in s["ExecStart"][0]
        assert "--spool-dir %S/swarmwatch-producer" in s["ExecStart"][0]
        assert any(f.endswith(".env") for f in s["EnvironmentFile"])
        assert s["StateDirectory"]
        assert "--nats-creds %d/node.nk" in s["ExecStart"][0]
        assert s["LoadCredential"][0].startswith("node.nk:/etc/swarmwatch/identity/")
    assert "SWARMWATCH_NATS_PASSWORD=" not in (SYSTEMD / "producer.env.example").read_text()


def test_systemd_processor_template_takes_partition_from_the_instance() -> None:
    s = _settings("swarmwatch-processor@.service")
    assert "--name processor-%i --partition %i/${SW_PARTITIONS}" in s["ExecStart"][0]
    assert s["LoadCredential"] == ["swarmwatch.yaml:/etc/swarmwatch/processor.yaml"]
    assert "--config %d/swarmwatch.yaml" in s["ExecStart"][0]
