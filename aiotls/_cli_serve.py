"""``aiotls serve``: what ``openssl s_server -www`` is for.

A TLS server that answers each HTTP request with a page describing the client's
handshake (HTML, or JSON for a path ending in ``.json`` or ``Accept:
application/json``), or with ``--echo`` echoes raw bytes. Its first line of output
is ``listening on HOST:PORT``; then one line per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import sys
from pathlib import Path
from typing import Any

from . import pki
from ._aio.server import start_server
from ._cli_common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_tls_arguments,
    certificate_facts,
    context_options,
    handshake_facts,
    handshake_rows,
    keylog_writer,
    run_async,
    wrap,
    write_file,
)
from .context import SecureContext, create_secure_context
from .errors import TLSError

__all__ = ["register"]

PROG = "aiotls serve"
DEFAULT_NAMES = ["localhost", "127.0.0.1", "::1"]
#: Bounds of an HTTP request head: the whole of it, and how long it may take.
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 30.0
_CHUNK = 64 * 1024

EXAMPLES = """\
examples:
  aiotls serve                                 # ephemeral certificate, https://localhost:8443/
  aiotls serve --ca-out ca.pem                 # ... and write its CA for clients to trust
  aiotls serve --cert server.pem --key server.key --alpn h2,http/1.1
  aiotls serve --cert server.pem --key server.key --ca ca.pem --request-cert
  aiotls serve --port 0 --echo                 # raw echo on a free port
then, for instance:
  curl --cacert ca.pem https://localhost:8443/
  curl --cacert ca.pem https://localhost:8443/handshake.json
  openssl s_client -connect 127.0.0.1:8443 -CAfile ca.pem -servername localhost
"""


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``aiotls`` subcommands."""
    parser = commands.add_parser(
        "serve",
        parents=parents,
        help="a TLS server answering with a page about the client's handshake (or --echo)",
        description=wrap(
            "Serve TLS on HOST:PORT with --cert/--key, or with an ephemeral certificate "
            "(for --name, default localhost, 127.0.0.1 and ::1; --ca-out writes its CA). "
            "Each HTTP request gets a page describing the client's handshake: protocol, "
            "cipher, key exchange group, ALPN, SNI, session resumption and the client "
            "certificate (HTML, or JSON for a path ending in .json or Accept: "
            "application/json). With --echo, every byte comes back instead. The first line "
            "printed is 'listening on HOST:PORT'; then one line per connection. Stop it "
            "with Ctrl-C."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8443, help="port to listen on (%(default)s; 0: any free one)"
    )
    parser.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="a name or IP address for the ephemeral certificate (repeatable)",
    )
    parser.add_argument(
        "--ca-out", type=Path, metavar="FILE", help="write the ephemeral certificate's CA here"
    )
    add_tls_arguments(parser, ca_help="PEM CA certificates that client certificates must chain to")
    parser.add_argument(
        "--request-cert",
        action="store_true",
        help="ask clients for a certificate; the page shows whether it verified",
    )
    parser.add_argument(
        "--require-cert",
        action="store_true",
        help="refuse clients without a certificate that verifies against --ca",
    )
    parser.add_argument("--echo", action="store_true", help="echo raw bytes instead of the page")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the context from the flags (usage errors exit 2), then serve until stopped."""
    try:
        options = context_options(args)
        if args.cert is None:
            ca = pki.make_ca("aiotls serve ephemeral CA")
            options["key"], options["cert"] = ca.issue(args.name or DEFAULT_NAMES)
            if args.ca_out is not None:
                write_file(args.ca_out, ca.cert_pem, mode=0o644, replace=True)
        elif args.name or args.ca_out:
            raise ValueError("--name and --ca-out are for the ephemeral certificate, not --cert")
        if args.request_cert or args.require_cert:
            options["request_cert"] = True
            options["reject_unauthorized"] = args.require_cert
        context = create_secure_context(**options)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_async(_serve(args, context), args.loop)


def _report(message: str, exc: BaseException) -> None:
    """One line on stderr: what went wrong with a client, and Node's code."""
    code = getattr(exc, "code", None)
    print(f"{PROG}: {message}" + (f" [{code}]" if code else ""), file=sys.stderr, flush=True)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(args: argparse.Namespace, context: SecureContext) -> int:
    def report_failure(exc: Exception, transport: Any) -> None:
        peer = transport.get_extra_info("peername") if transport is not None else None
        _report(f"{_address(*peer[:2]) if peer else 'a client'}: handshake failed: {exc}", exc)

    with keylog_writer(args.keylog) as on_keylog:
        try:
            server = await start_server(
                _echo if args.echo else _page,
                args.host,
                args.port,
                context=context,
                on_tls_client_error=report_failure,
                on_keylog=on_keylog,
            )
        except OSError as exc:  # the address is taken, say
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        async with server:
            address = server.address()
            assert isinstance(address, dict)
            print(f"listening on {_address(address['address'], address['port'])}", flush=True)
            certificate = certificate_facts(context.certificates[0])
            print(
                f"certificate: {certificate['subject']}, issued by {certificate['issuer']}",
                flush=True,
            )
            if args.ca_out is not None:
                print(f"ephemeral CA written to {args.ca_out}", flush=True)
            await server.serve_forever()
    return EXIT_OK


def _connection_facts(writer: asyncio.StreamWriter) -> dict[str, Any]:
    """The client's handshake as the page shows it."""
    tls = writer.get_extra_info("tls")
    peer = writer.get_extra_info("peername")
    cert = tls.engine.get_peer_x509_certificate()
    return {
        "client": _address(*peer[:2]),
        **handshake_facts(tls),
        "client_certificate": certificate_facts(cert) if cert is not None else None,
        "client_authorized": bool(tls.authorized),
        "client_authorization_error": tls.authorization_error,
    }


def _log(facts: dict[str, Any]) -> None:
    """One line per connection on stdout."""
    cert = facts["client_certificate"]
    print(
        f"{facts['client']}: {facts['protocol']} {facts['cipher']} {facts['group']}"
        f" ALPN={facts['alpn'] or '-'} SNI={facts['servername'] or '-'}"
        f" client-cert={cert['subject'] if cert else '-'}"
        + (" (resumed)" if facts["session_reused"] else ""),
        flush=True,
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(TLSError, OSError):
        await writer.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back every byte until the client ends the connection."""
    facts = _connection_facts(writer)
    _log(facts)
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (TLSError, OSError) as exc:
        _report(f"{facts['client']}: {exc}", exc)
    finally:
        await _close(writer)


async def _read_head(reader: asyncio.StreamReader) -> list[bytes]:
    """The request line and headers, up to the blank line (CRLF or bare LF);
    ValueError when it grows past :data:`MAX_HEAD` or the client stops mid-way."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEAD:
            raise ValueError("request head too large")
        if not line.endswith(b"\n"):
            raise ValueError("connection ended inside the request head")
        if not line.strip():
            return lines
        lines.append(line.strip())


async def _page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one HTTP request with the page about this handshake, then close."""
    facts = _connection_facts(writer)
    _log(facts)
    try:
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await _read_head(reader)
        request = head[0].decode("latin-1") if head else ""
        method, _, rest = request.partition(" ")
        path = rest.split(" ")[0]
        accept = b"".join(h for h in head[1:] if h.lower().startswith(b"accept:"))
        as_json = path.split("?")[0].endswith(".json") or b"application/json" in accept
        facts["request"] = request
        if method not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"GET or HEAD only\n", "text/plain"
        elif as_json:
            status, kind = "200 OK", "application/json"
            body = json.dumps(facts, indent=2).encode() + b"\n"
        else:
            status, body, kind = "200 OK", _html(facts).encode(), "text/html; charset=utf-8"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + (body if method != "HEAD" else b"")
        )
        await writer.drain()
    except (TimeoutError, ValueError, TLSError, OSError):
        pass  # a client that sends no request (or a broken one) gets no page
    finally:
        await _close(writer)


def _html(facts: dict[str, Any]) -> str:
    """The handshake as a small HTML page (a table, like the terminal's)."""
    rows = [("client", facts["client"]), ("request", facts["request"])]
    rows += handshake_rows(facts)
    cert = facts["client_certificate"]
    if cert is None:
        rows.append(("client certificate", "(none)"))
    else:
        verdict = (
            "verified"
            if facts["client_authorized"]
            else f"NOT verified: {facts['client_authorization_error']}"
        )
        rows += [
            ("client certificate", cert["subject"]),
            ("issued by", cert["issuer"]),
            ("valid", f"{cert['valid_from']} to {cert['valid_to']}"),
            ("SHA-256", cert["fingerprint256"]),
            ("verification", verdict),
        ]
    cells = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"
        for label, value in rows
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>aiotls serve</title>'
        "</head>\n<body><h1>Your TLS handshake</h1>\n<table>\n"
        f"{cells}\n</table></body></html>\n"
    )
