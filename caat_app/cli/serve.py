"""`caat serve`: the dashboard in a browser, through textual-serve.

Each browser tab gets its own dashboard process (textual-serve runs the command per
connection and streams its terminal over a websocket). It binds to 127.0.0.1 by
default: the dashboard starts, cancels and deletes runs, so anyone who reaches the port
can too. For a lab server, keep the default and tunnel: `ssh -L 8000:127.0.0.1:8000
lab-server`, then open http://127.0.0.1:8000 on the laptop.
"""

from __future__ import annotations

import ipaddress
import shlex
import sys

import typer
from rich.text import Text

from caat_app.cli.base import open_store, out
from caat_app.cli.options import DbOption
from caat_app.errors import CaatError

_LAUNCH = "import sys; from caat_app.cli import main; sys.exit(main())"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_warning(host: str, port: int) -> str | None:
    """The warning for an address other machines can reach; None for localhost."""
    if _loopback(host):
        return None
    return (
        f"warning: listening on {host}: anyone who reaches port {port} can start, cancel and "
        "delete runs; prefer the default 127.0.0.1 and an SSH tunnel"
    )


def dashboard_command(db_url: str) -> str:
    """The shell command textual-serve runs for each browser tab: this caat's dashboard."""
    return shlex.join([sys.executable, "-c", _LAUNCH, "--db", db_url])


def serve_command(
    db: str | None = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="port to listen on"),
) -> None:
    """The dashboard in a web browser (textual-serve); localhost only unless --host says."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise CaatError("caat serve needs textual-serve: pip install 'caat[serve]'") from None
    store = open_store(db)
    url = store.url
    store.close()
    warning = address_warning(host, port)
    if warning:
        print(warning, file=sys.stderr)
    out.print(Text(f"caat dashboard for {url} at http://{host}:{port} (Ctrl-C stops)"))
    Server(dashboard_command(url), host=host, port=port, title="caat").serve()
