"""``swarmwatch schema``: JSON Schema of the wire models for producers in other languages."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app


@app.command()
def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    old_out: Optional[Path] = typer.Option(None, "--out", hidden=True),
) -> None:
    """Print the JSON Schema (2020-12) of every message on sw.* subjects."""
    from swarmwatch.cli.common import renamed

    out = renamed("--output", output, "--out", old_out)
    import orjson

    from schemas import json_schema

    text = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode()
    if out:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text)
