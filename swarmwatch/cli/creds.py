"""``swarmwatch creds``: per-node NATS identities (nkeys) and the server config that confines them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import fail

creds_app = typer.Typer(help="Per-node NATS identities: a node may publish, probe and leave only as itself.", no_args_is_help=True)
app.add_typer(creds_app, name="creds")

_DIR = typer.Option(..., "--dir", help="Directory of the keys: DIR/<cluster>/<node>.nk (secret seed, 0600) and .pub.")


def _nodes(node: list[str] | None, nodes_file: Path | None) -> list[str]:
    """Node names from --node (repeatable) and --nodes-file (one per line, '#' comments)."""
    names = list(node or [])
    if nodes_file is not None:
        try:
            text = nodes_file.read_text()
        except OSError as exc:
            fail(f"--nodes-file {str(nodes_file)!r} cannot be read: {exc.strerror or exc}")
        names += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        fail("give at least one --node NAME or a --nodes-file")
    return names


@creds_app.command("issue")
def issue(
    directory: Path = _DIR,
    cluster: str = typer.Option(..., "--cluster", help="The nodes' cluster (subject token)."),
    node: Optional[list[str]] = typer.Option(None, "--node", help="A node name (repeatable)."),
    nodes_file: Optional[Path] = typer.Option(None, "--nodes-file", help="A fleet: one node name per line."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace existing keys (the old ones stop working at the next server reload)."),
) -> None:
    """Issue an nkey per node (kept if it exists); then render the server config with `creds server-config`."""
    from swarmwatch.creds import CredsError
    from swarmwatch.creds import issue as issue_one

    names = _nodes(node, nodes_file)
    try:
        ids = [issue_one(directory, cluster, n, rotate=rotate) for n in names]
    except (CredsError, ValueError) as exc:
        fail(str(exc))
    for i in ids:
        typer.echo(f"{i.cluster}/{i.node}\t{i.public_key}\t{i.seed_path}")
    typer.echo(
        f"{len(ids)} node identities in {directory}; give each node only its own .nk file (swarmwatch produce --nats-creds FILE), "
        "then run `swarmwatch creds server-config` and reload nats-server",
        err=True,
    )


@creds_app.command("revoke")
def revoke(
    directory: Path = _DIR,
    cluster: str = typer.Option(..., "--cluster", help="The node's cluster."),
    node: Optional[list[str]] = typer.Option(None, "--node", help="A node name (repeatable)."),
    nodes_file: Optional[Path] = typer.Option(None, "--nodes-file", help="One node name per line."),
) -> None:
    """Delete node keys; the server refuses them after `creds server-config` and a reload."""
    from swarmwatch.creds import revoke as revoke_one

    for n in _nodes(node, nodes_file):
        try:
            found = revoke_one(directory, cluster, n)
        except ValueError as exc:
            fail(str(exc))
        typer.echo(f"{cluster}/{n}: {'revoked' if found else 'had no key'}")


@creds_app.command("list")
def list_(directory: Path = _DIR) -> None:
    """Every issued identity: cluster/node, public key, seed file."""
    from swarmwatch.creds import CredsError, identities

    try:
        ids = identities(directory)
    except CredsError as exc:
        fail(str(exc))
    for i in ids:
        typer.echo(f"{i.cluster}/{i.node}\t{i.public_key}\t{i.seed_path}")


@creds_app.command("server-config")
def server_config(
    directory: Path = _DIR,
    template: Path = typer.Option(..., "--template", help="Server config with the BEGIN/END node identity markers (deploy/nats/auth.conf)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (may be the template itself; default: standard output)."),
) -> None:
    """Write the server's authorization config: the template with one confined nkey user per issued node."""
    from swarmwatch.creds import CredsError, identities, render_auth

    try:
        text = render_auth(template.read_text(), identities(directory))
    except OSError as exc:
        fail(f"--template {str(template)!r} cannot be read: {exc.strerror or exc}")
    except CredsError as exc:
        fail(str(exc))
    if output is None:
        typer.echo(text, nl=False)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(output)
    typer.echo(f"wrote {output}; reload the server (nats-server --signal reload) to apply it", err=True)
