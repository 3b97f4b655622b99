"""The ``aiotls`` command line (also ``python -m aiotls``).

:func:`build_parser` registers the subcommands; each sets a ``run`` function that
takes the parsed arguments and returns the process exit code (0 success, 1 the
work failed, 2 usage; see :mod:`aiotls._cli_common`).

``aiotls demo``
    TLS echo over loopback with an ephemeral CA; prints what was negotiated
    (``--json`` for machine-readable output, ``--tls-version 1.2|1.3``).
``aiotls connect HOST[:PORT]``
    What ``openssl s_client`` is for (:mod:`aiotls._cli_connect`).
``aiotls serve``
    What ``openssl s_server -www`` is for (:mod:`aiotls._cli_serve`).
``aiotls cert ca|leaf|client|csr|p12``
    Local PKI files without openssl commands (:mod:`aiotls._cli_cert`).
``aiotls proxy``
    A TLS terminator: TLS in, plaintext to backends (:mod:`aiotls._cli_proxy`).

Subcommands that run an event loop take ``--loop asyncio|uvloop`` (uvloop when
installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from . import __version__, _cli_cert, _cli_connect, _cli_proxy, _cli_serve
from ._cli_common import EXIT_FAILURE, EXIT_OK, loop_parent, run_async
from .demo import TLS_VERSIONS, format_table, run_demo

__all__ = ["build_parser", "main"]


def _run_demo(args: argparse.Namespace) -> int:
    """``aiotls demo``: run the loopback echo and print the negotiated parameters."""
    try:
        result = run_async(asyncio.wait_for(run_demo(args.tls_version), args.timeout), args.loop)
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            reason = f"timed out after {args.timeout:g} s"
        else:
            reason = f"{type(exc).__name__}: {exc}"
            code = getattr(exc, "code", None)
            if code and str(code) not in reason:
                reason += f" [{code}]"
        print(f"aiotls demo: failed: {reason}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": reason}))
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_table(result))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="aiotls", description="asyncio TLS with the API of Node.js's tls module."
    )
    parser.add_argument("--version", action="version", version=f"aiotls {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    parents = [loop_parent()]
    demo = commands.add_parser(
        "demo",
        parents=parents,
        help="TLS echo over loopback with an ephemeral CA; show what was negotiated",
        description=(
            "Make an ephemeral CA and server certificate in memory, start an aiotls "
            "server on 127.0.0.1, connect an aiotls client that verifies it, echo a "
            "message and print the negotiated protocol, cipher, key exchange, ALPN "
            "and certificate."
        ),
    )
    demo.add_argument(
        "--tls-version",
        choices=sorted(TLS_VERSIONS),
        help="pin the client to this TLS version (default: negotiate)",
    )
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    demo.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)s)",
    )
    demo.set_defaults(run=_run_demo)
    for command in (_cli_connect, _cli_serve, _cli_cert, _cli_proxy):
        command.register(commands, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotls`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
