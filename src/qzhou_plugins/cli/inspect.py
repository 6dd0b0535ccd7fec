"""``inspect``: a local page over a database's collections, to see what retrieval returned and why.

The collections are reached as ``index`` and ``query`` reach them (``--db``, or ``--host``/``--port``
for a Chroma server, and ``--lexical-dir``); the page listens on ``--bind`` (127.0.0.1: this machine
only) at ``--port-of-page``. FastAPI and uvicorn (the ``inspect`` extra) are imported when it starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Any

from .errors import UsageError
from .where import add_where_options, check_where, describe_where, open_client

DEFAULT_PAGE_PORT = 8765
API_KEY_ENVIRONMENT = "QZHOU_INSPECT_API_KEY"


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``inspect`` to the sub-command set ``commands``."""
    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="a local page to search collections and see why each hit was found (docs/inspect.md)",
        description="Start a local page over the collections of a database: what each records, searches "
        "in each mode with every hit's dense, lexical, fused and rerank scores, the three modes side by "
        "side, each chunk with its neighbours, and plots of `eval retrieval --json` files. Needs the "
        "inspect extra.",
    )
    add_where_options(inspect, collection=False)
    inspect.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the page listens on (default: %(default)s: this machine only)",
    )
    inspect.add_argument(
        "--port-of-page",
        type=int,
        default=DEFAULT_PAGE_PORT,
        metavar="N",
        help="port of the page (default: %(default)s)",
    )
    inspect.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require this key on every request of the page (default: ${API_KEY_ENVIRONMENT})",
    )
    inspect.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the page may be reached by besides its address (repeatable); "
        "requests with another Host header are refused",
    )
    inspect.add_argument(
        "--eval",
        dest="evaluations",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="an `eval retrieval --json` file (or a folder of them) to plot (repeatable)",
    )
    inspect.set_defaults(handler=command_inspect)


def allowed_hosts(bind: str, extra: list[str]) -> set[str] | None:
    """The names a request's ``Host`` may have: the bound address (and localhost's names for a loopback
    one) and ``--allowed-host``; None (any) for a wildcard bind without ``--allowed-host``."""
    names = {name.lower() for name in extra}
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return names | {bind.lower()}
    if address.is_unspecified:
        return names or None
    shown = f"[{bind}]" if address.version == 6 else bind
    loopback = {"localhost", "127.0.0.1", "[::1]"} if address.is_loopback else set()
    return names | {shown} | loopback


def command_inspect(args: argparse.Namespace) -> int:
    """Serve the page until stopped."""
    check_where(args)
    if not 0 < args.port_of_page < 65536:
        raise UsageError(f"--port-of-page {args.port_of_page} must be from 1 to 65535")
    from ..inspector import require_inspect_extra

    require_inspect_extra()
    open_client(args, create=False)  # a missing database is refused now, with the command's message
    import uvicorn

    from ..inspector.app import create_app
    from ..inspector.catalog import Catalog
    from ..inspector.evaluations import read_files

    where = argparse.Namespace(db=args.db, host=args.host, port=args.port, lexical_dir=args.lexical_dir)
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENVIRONMENT) or None
    hosts = allowed_hosts(args.bind, args.allowed_host)
    app = create_app(
        Catalog(where), api_key=key, allowed_hosts=hosts, evaluation_files=read_files(args.evaluations)
    )
    shown = f"[{args.bind}]" if ":" in args.bind else args.bind
    address = f"http://{shown}:{args.port_of_page}/" + (f"#key={key}" if key else "")
    print(f"Inspecting the collections of {describe_where(args)} at {address}", flush=True)
    if hosts is None:
        print(
            "warning: --bind on every address and no --allowed-host: any Host header is answered", flush=True
        )
    uvicorn.run(app, host=args.bind, port=args.port_of_page, log_level="warning")
    return 0
