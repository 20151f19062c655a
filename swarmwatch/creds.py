"""Per-node NATS identities: one nkey per node, permissions that let it speak only for itself.

A node ``N`` of cluster ``C`` gets an nkey user whose permissions allow

- publishing ``sw.metrics.C.N`` and ``sw.events.C.N.>`` (its own data, its own
  ``peer.join``/``heartbeat``/``peer.leave``) and probe requests ``sw.probe.C.*``;
- subscribing to its own probe subject ``sw.probe.C.N`` only, to its cluster's
  discovery events, and to its own reply inbox ``_INBOX_<public key>.>``;
- reading (never writing) the ``sw_watch`` KV bucket of watched thresholds.

The server therefore authenticates the subject: a message on ``sw.metrics.C.N``
was sent with N's key (or by the admin role). The processor checks that the
payload names the same cluster and node as the subject.

Keys live in a directory (``DIR/<cluster>/<node>.nk`` secret seed, mode 0600;
``DIR/<cluster>/<node>.pub`` public key). ``render_auth`` splices one user entry
per ``.pub`` file into a server config template between two marker lines.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from schemas.subjects import check_token

BEGIN_MARKER = "# BEGIN swarmwatch node identities"
END_MARKER = "# END swarmwatch node identities"
RESPONSE_TTL = "30s"  # how long a node may answer a probe request it received
WATCH_BUCKET_API = (
    "$JS.API.STREAM.INFO.KV_sw_watch",
    "$JS.API.CONSUMER.CREATE.KV_sw_watch", "$JS.API.CONSUMER.CREATE.KV_sw_watch.>",
    "$JS.API.CONSUMER.INFO.KV_sw_watch.>", "$JS.API.CONSUMER.DELETE.KV_sw_watch.>",
    "$JS.FC.KV_sw_watch.>",
)
_PUBLIC_RE = re.compile(r"^U[A-Z2-7]{55}$")


class CredsError(ValueError):
    """A node identity cannot be issued, read or rendered; the message says which and why."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """One node's nkey: where its seed is and the public key the server knows it by."""

    cluster: str
    node: str
    public_key: str
    seed_path: Path

    @property
    def inbox_prefix(self) -> str:
        return node_inbox_prefix(self.public_key)


def node_inbox_prefix(public_key: str) -> str:
    """``_INBOX_<public key>``: replies to a node land where only that node may subscribe."""
    return f"_INBOX_{public_key}"


def node_permissions(cluster: str, node: str, public_key: str) -> dict[str, object]:
    """The NATS permissions of node ``node`` in ``cluster``: its own subjects and nothing of another node's."""
    c, n = check_token(cluster, "cluster"), check_token(node, "node")
    return {
        "publish": {"allow": [f"sw.metrics.{c}.{n}", f"sw.events.{c}.{n}.>", f"sw.probe.{c}.*", *WATCH_BUCKET_API]},
        "subscribe": {
            "allow": [
                f"sw.probe.{c}.{n}",  # answer probes sent to this node only
                f"sw.events.{c}.*.peer.>",  # discovery: peers' join and leave
                f"sw.events.{c}.*.heartbeat",
                f"{node_inbox_prefix(public_key)}.>",  # JetStream acks and probe replies
            ]
        },
        "allow_responses": {"max": 1, "expires": RESPONSE_TTL},
    }


def new_user_seed() -> bytes:
    """A fresh nkey user seed (``SU...``)."""
    import nkeys

    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def public_key_of(seed: bytes) -> str:
    """The public key (``U...``) of a user seed; CredsError if it is not one."""
    import nkeys

    try:
        kp = nkeys.from_seed(bytearray(seed.strip()))
        key = kp.public_key.decode()
    except Exception as exc:  # noqa: BLE001 - nkeys raises several types for one cause
        raise CredsError(f"not an nkey user seed: {exc}") from None
    if not key.startswith("U"):
        raise CredsError(f"seed is for {key[0]!r} keys, not a user (U)")
    return key


def _paths(root: Path, cluster: str, node: str) -> tuple[Path, Path]:
    d = root / check_token(cluster, "cluster")
    n = check_token(node, "node")
    return d / f"{n}.nk", d / f"{n}.pub"


def issue(root: str | Path, cluster: str, node: str, *, rotate: bool = False) -> NodeIdentity:
    """Create node ``node``'s key under ``root``; an existing key is kept unless ``rotate``."""
    seed_path, pub_path = _paths(Path(root), cluster, node)
    if seed_path.exists() and not rotate:
        return read(root, cluster, node)
    seed_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = new_user_seed()
    tmp = seed_path.with_suffix(".nk.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
    os.replace(tmp, seed_path)
    key = public_key_of(seed)
    pub_path.write_text(key + "\n")
    return NodeIdentity(cluster, node, key, seed_path)


def read(root: str | Path, cluster: str, node: str) -> NodeIdentity:
    """The identity issued for ``cluster``/``node`` under ``root``."""
    seed_path, pub_path = _paths(Path(root), cluster, node)
    if not pub_path.exists():
        raise CredsError(f"no identity for node {cluster}/{node} under {root}")
    key = pub_path.read_text().strip()
    if not _PUBLIC_RE.match(key):
        raise CredsError(f"{pub_path}: {key[:12]!r}... is not an nkey user public key")
    return NodeIdentity(cluster, node, key, seed_path)


def revoke(root: str | Path, cluster: str, node: str) -> bool:
    """Delete a node's key; False if it had none. The server forgets it at the next config render and reload."""
    seed_path, pub_path = _paths(Path(root), cluster, node)
    found = pub_path.exists()
    for p in (seed_path, pub_path):
        p.unlink(missing_ok=True)
    return found


def identities(root: str | Path) -> list[NodeIdentity]:
    """Every identity under ``root``, sorted by cluster and node."""
    out: list[NodeIdentity] = []
    base = Path(root)
    if not base.is_dir():
        raise CredsError(f"credentials directory {str(root)!r} does not exist")
    for pub in sorted(base.glob("*/*.pub")):
        out.append(read(base, pub.parent.name, pub.stem))
    keys = [i.public_key for i in out]
    if len(set(keys)) != len(keys):
        raise CredsError(f"{root}: two nodes share one public key; rotate one of them")
    return out


def users_block(ids: list[NodeIdentity], indent: str = "      ") -> str:
    """NATS config lines: one ``{ nkey: ..., permissions: ... }`` user entry per identity."""
    lines = []
    for i in ids:
        perms = json.dumps(node_permissions(i.cluster, i.node, i.public_key), separators=(", ", ": "))
        lines.append(f"{indent}# {i.cluster}/{i.node}")
        lines.append(f'{indent}{{ nkey: "{i.public_key}", permissions: {perms} }}')
    return "\n".join(lines)


def render_auth(template: str, ids: list[NodeIdentity]) -> str:
    """``template`` with the lines between the two marker lines replaced by ``ids``' user entries."""
    lines = template.splitlines()
    begin = [k for k, line in enumerate(lines) if line.strip().startswith(BEGIN_MARKER)]
    end = [k for k, line in enumerate(lines) if line.strip().startswith(END_MARKER)]
    if len(begin) != 1 or len(end) != 1 or begin[0] > end[0]:
        raise CredsError(f"the server config template needs one {BEGIN_MARKER!r} line and, after it, one {END_MARKER!r} line")
    indent = lines[begin[0]][: len(lines[begin[0]]) - len(lines[begin[0]].lstrip())]
    block = users_block(ids, indent).splitlines()
    return "\n".join([*lines[: begin[0] + 1], *block, *lines[end[0]:]]) + "\n"
