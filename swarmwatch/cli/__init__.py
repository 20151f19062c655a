"""The ``swarmwatch`` command line. Sub-commands live in sibling modules and register here."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="swarmwatch",
    help="Fleet monitoring on NATS JetStream: producers, stream processors, sinks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
backtest_app = typer.Typer(help="Run operators offline over files.", no_args_is_help=True)
app.add_typer(backtest_app, name="backtest")
sink_app = typer.Typer(help="Run one sink on its own against any NATS URL.", no_args_is_help=True)
app.add_typer(sink_app, name="sink")

# --- registrations: each line imports a module that adds its commands to `app` or `backtest_app` ---
# (keep one import per line; helpers add theirs below this marker)
from swarmwatch.cli import alerts as _alerts  # noqa: E402,F401
from swarmwatch.cli import process as _process  # noqa: E402,F401
from swarmwatch.cli import backtest_byzantine as _backtest_byzantine  # noqa: E402,F401
from swarmwatch.cli import schema as _schema  # noqa: E402,F401
from swarmwatch.cli import up as _up  # noqa: E402,F401
from swarmwatch.cli import produce as _produce  # noqa: F401
from swarmwatch.cli import backtest_anomaly as _backtest_anomaly  # noqa: E402,F401
from swarmwatch.cli import sink_files as _sink_files  # noqa: E402,F401
from swarmwatch.cli import silence as _silence, sink_notify as _sink_notify  # noqa: E402,F401
from swarmwatch.cli import report as _report, sink_api as _sink_api  # noqa: E402,F401
from swarmwatch.cli import ingest as _ingest  # noqa: E402,F401
from swarmwatch.cli import replay as _replay  # noqa: E402,F401
from swarmwatch.cli import query as _query  # noqa: E402,F401
from swarmwatch.cli import incident as _incident  # noqa: E402,F401
from swarmwatch.cli import creds as _creds  # noqa: E402,F401
# --- end registrations ---


def main() -> None:
    """Console-script entry point."""
    app()
