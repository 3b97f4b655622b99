"""``aiotls connect HOST[:PORT]``: what ``openssl s_client`` is for.

Connects, shows what was negotiated, the server's chain, the OCSP staple and the
verification verdict, then (if the server was verified) pipes stdin to the server
and the server's data to stdout. The report goes to stdout when nothing is piped
(``--no-pipe``, ``--json``) and to stderr otherwise, so that stdout carries only
the server's bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from . import ocsp
from ._aio.client import open_connection
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
from .certinfo import check_server_identity
from .context import SecureContext, create_secure_context
from .demo import format_rows
from .errors import TLSError

__all__ = ["register"]

PROG = "aiotls connect"
DEFAULT_PORT = 443
_CHUNK = 64 * 1024

EXAMPLES = """\
examples:
  aiotls connect example.com                  # verify against the system store, then pipe
  aiotls connect example.com --no-pipe        # just the report (exit 0 if verified)
  aiotls connect 127.0.0.1:8443 --ca ca.pem --servername localhost
  aiotls connect localhost:8443 --ca ca.pem --cert client.pem --key client.key
  aiotls connect example.com --json --ocsp    # the report as JSON, with the OCSP staple
  aiotls connect example.com --session-out s.der --no-pipe
  aiotls connect example.com --session-in s.der --no-pipe   # "session: resumed"
  printf 'GET / HTTP/1.0\\r\\nHost: example.com\\r\\n\\r\\n' | aiotls connect example.com

exit status: 0 when the server was verified (chain and host name); 1 when it was
not (the reason is printed with Node's code, e.g. CERT_HAS_EXPIRED; --insecure
pipes anyway but keeps the status) or the connection failed; 2 for usage errors.
"""


def _target(text: str) -> tuple[str, int]:
    """HOST[:PORT], [IPv6]:PORT or a bare IPv6 address, as (host, port)."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"expected [IPv6]:PORT, got {text!r}")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT] with a port 1-65535, got {text!r}")
    return host, int(port)


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``connect`` to the ``aiotls`` subcommands."""
    parser = commands.add_parser(
        "connect",
        parents=parents,
        help="connect to a TLS server, show the handshake and chain, then pipe stdin/stdout",
        description=wrap(
            "Connect to HOST[:PORT] (port 443 by default), print what was negotiated, the "
            "server's certificate chain (subjects, issuers, validity, SHA-256 fingerprints), "
            "the OCSP staple's status (--ocsp) and the verification verdict; then, if the "
            "server was verified, send stdin to it and its data to stdout until either side "
            "ends (EOF on stdin sends close_notify and waits for the server to close). While "
            "piping, the report goes to stderr."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="HOST[:PORT]", type=_target)
    parser.add_argument(
        "--servername",
        metavar="NAME",
        help="SNI name and the name verified (default: HOST, no SNI for an IP address)",
    )
    add_tls_arguments(parser, ca_help="PEM CA certificates to trust instead of the system store")
    parser.add_argument(
        "--session-out", metavar="FILE", type=Path, help="save the TLS session (mode 0600)"
    )
    parser.add_argument(
        "--session-in", metavar="FILE", type=Path, help="resume the session saved in FILE"
    )
    parser.add_argument("--ocsp", action="store_true", help="ask for an OCSP staple and check it")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout; no piping"
    )
    parser.add_argument(
        "--no-pipe", "-n", action="store_true", help="print the report and close; no piping"
    )
    parser.add_argument(
        "--insecure",
        "-k",
        action="store_true",
        help="pipe even when the server was not verified (the exit status stays 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting after this long (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the context from the flags (usage errors exit 2), then connect."""
    try:
        options = context_options(args)
        # Judged after the handshake, as s_client does: the chain is shown either way.
        context = create_secure_context(reject_unauthorized=False, **options)
        session = args.session_in.read_bytes() if args.session_in else None
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_async(_connect(args, context, session), args.loop)


def _failure(exc: BaseException) -> tuple[str, str | None]:
    """A one-line reason and Node's code for an exception."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, TLSError):
        return "timed out", "ETIMEDOUT"
    code = getattr(exc, "code", None)
    if isinstance(exc, socket.gaierror):
        code = "ENOTFOUND"  # Node's code for a name that does not resolve
    elif code is None and isinstance(exc, OSError) and exc.errno is not None:
        code = errno.errorcode.get(exc.errno)
    return str(exc) or type(exc).__name__, code


def _ocsp_facts(staples: list[bytes | None], chain: list[x509.Certificate]) -> dict[str, Any]:
    """What the stapled OCSP response says about the leaf, checked against its issuer."""
    staple = staples[0] if staples else None
    if not staple:
        return {"stapled": False, "status": None, "error": None}
    facts: dict[str, Any] = {"stapled": True, "bytes": len(staple), "status": None, "error": None}
    if len(chain) < 2:
        facts["error"] = "the issuer is unknown, so the response cannot be checked"
        return facts
    try:
        facts["status"] = ocsp.verify(staple, chain[0], chain[1]).status
    except ocsp.OCSPError as exc:
        facts["error"] = str(exc)
    return facts


#: OpenSSL's words for the verify codes one meets most (Node prints the same).
_VERIFY_REASONS = {
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE": "unable to verify the first certificate",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": "unable to get local issuer certificate",
    "DEPTH_ZERO_SELF_SIGNED_CERT": "self-signed certificate",
    "SELF_SIGNED_CERT_IN_CHAIN": "self-signed certificate in certificate chain",
    "CERT_HAS_EXPIRED": "certificate has expired",
    "CERT_NOT_YET_VALID": "certificate is not yet valid",
}


def _verdict(tls: Any, check_host: str, trust: str) -> dict[str, Any]:
    """authorized, Node's code and a reason (for a host name mismatch, the identity
    check's own words; else what failed and which trust store was used)."""
    code = tls.authorization_error
    reason = None
    if code == "ERR_TLS_CERT_ALTNAME_INVALID":
        try:
            check_server_identity(check_host, tls.get_peer_certificate() or {})
        except TLSError as exc:
            reason = str(exc)
    elif code is not None:
        reason = f"{_VERIFY_REASONS.get(code, 'the chain did not verify')}; trusting {trust}"
    return {"authorized": bool(tls.authorized), "code": code, "reason": reason}


def _report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("server", f"{report['host']}:{report['port']} ({report['address']})")]
    rows += handshake_rows(report)
    rows.append(("handshake", f"{report['handshake_ms']:.1f} ms (TCP connect + TLS handshake)"))
    if report["ocsp"] is not None:
        staple = report["ocsp"]
        if not staple["stapled"]:
            text = "none stapled"
        elif staple["error"]:
            text = f"{staple['bytes']} bytes, NOT valid: {staple['error']}"
        else:
            text = f"{staple['bytes']} bytes, signed by the issuer, says {staple['status']}"
        rows.append(("OCSP staple", text))
    verdict = report["verification"]
    if verdict["authorized"]:
        rows.append(("verification", "OK (chain and host name verified)"))
    else:
        text = f"FAILED: {verdict['code']}"
        rows.append(
            ("verification", text + (f" ({verdict['reason']})" if verdict["reason"] else ""))
        )
    for depth, cert in enumerate(report["chain"]):
        expired = "" if cert["valid_now"] else "   NOT VALID NOW"
        rows += [
            (f"chain {depth} subject", cert["subject"]),
            ("        issuer", cert["issuer"]),
            ("        valid", f"{cert['valid_from']} to {cert['valid_to']}{expired}"),
            ("        SHA-256", cert["fingerprint256"]),
        ]
    return rows


async def _connect(args: argparse.Namespace, context: SecureContext, session: bytes | None) -> int:
    host, port = args.target
    check_host = args.servername or host
    staples: list[bytes | None] = []
    saved: list[bytes] = []

    def save_session(data: bytes) -> None:
        """Keep the latest session (TLS 1.3 servers send several tickets)."""
        try:
            write_file(args.session_out, data, mode=0o600, replace=True)  # it holds secrets
        except OSError as exc:
            print(f"{PROG}: --session-out: {exc}", file=sys.stderr, flush=True)
        else:
            saved.append(data)

    with keylog_writer(args.keylog) as on_keylog:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(args.timeout):
                reader, writer = await open_connection(
                    host,
                    port,
                    context=context,
                    servername=args.servername,
                    session=session,
                    request_ocsp=args.ocsp,
                    on_ocsp_response=staples.append if args.ocsp else None,
                    on_session=save_session if args.session_out else None,
                    on_keylog=on_keylog,
                )
        except (TLSError, OSError, TimeoutError) as exc:
            reason, code = _failure(exc)
            print(
                f"{PROG}: {host}:{port}: {reason}" + (f" [{code}]" if code else ""), file=sys.stderr
            )
            if args.json:
                print(json.dumps({"ok": False, "error": reason, "code": code}))
            return EXIT_FAILURE
        handshake_ms = (time.perf_counter() - started) * 1000
        tls = writer.get_extra_info("tls")
        chain = tls.engine.get_peer_x509_chain()
        verdict = _verdict(tls, check_host, str(args.ca) if args.ca else "the system store")
        report = {
            "ok": verdict["authorized"],
            "host": host,
            "port": port,
            "address": writer.get_extra_info("peername")[0],
            **handshake_facts(tls),
            "handshake_ms": round(handshake_ms, 3),
            "ocsp": _ocsp_facts(staples, chain) if args.ocsp else None,
            "verification": verdict,
            "chain": [certificate_facts(cert) for cert in chain],
        }
        pipe = not (args.json or args.no_pipe)
        if args.json:
            print(json.dumps(report, indent=2), flush=True)
        else:
            title = f"{PROG}: {host}:{port}"
            print(
                format_rows(title, _report_rows(report)),
                file=sys.stderr if pipe else sys.stdout,
                flush=True,
            )
        status = EXIT_OK if verdict["authorized"] else EXIT_FAILURE
        if status != EXIT_OK:
            print(f"{PROG}: server not verified: {verdict['code']}", file=sys.stderr, flush=True)
        try:
            if pipe and (status == EXIT_OK or args.insecure):
                await _pipe(reader, writer)
        except (TLSError, OSError) as exc:
            reason, code = _failure(exc)
            print(f"{PROG}: {reason}" + (f" [{code}]" if code else ""), file=sys.stderr)
            status = EXIT_FAILURE
        finally:
            writer.close()
            with contextlib.suppress(TLSError, OSError):
                await writer.wait_closed()
        if args.session_out and not saved:
            print(f"{PROG}: the server sent no session to save", file=sys.stderr)
    return status


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """stdin to the server (EOF: close_notify) and the server to stdout, until it closes."""
    pump = _StdinPump(writer)
    # A thread, because stdin may be a terminal, a pipe or a file; a daemon, because a
    # read from a terminal cannot be interrupted when the server closes first.
    threading.Thread(target=pump.read_stdin, daemon=True).start()
    stdout = sys.stdout.buffer
    while data := await reader.read(_CHUNK):
        stdout.write(data)
        stdout.flush()


class _StdinPump:
    """Moves stdin to ``writer`` one chunk at a time: the reading thread waits until the
    chunk has drained (so at most one chunk plus the transport's buffer is in memory)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._stopped = False

    def read_stdin(self) -> None:
        """The thread: read stdin until EOF (or until the connection is gone)."""
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        while not self._stopped:
            try:
                data = os.read(fd, _CHUNK)
            except OSError:
                data = b""
            ready = threading.Event()
            try:
                self._loop.call_soon_threadsafe(self._send, data, ready.set)
            except RuntimeError:  # the loop is closed: the connection is over
                return
            ready.wait()
            if not data:
                return

    def _send(self, data: bytes, ready: Callable[[], None]) -> None:
        """On the loop: write ``data`` (b"": close_notify), then call ``ready`` once drained."""
        writer = self._writer
        if writer.is_closing():
            self._stopped = True
        elif not data:
            writer.write_eof()
        else:
            writer.write(data)
            drained = self._loop.create_task(writer.drain())
            drained.add_done_callback(lambda task: self._drained(task, ready))
            return
        ready()

    def _drained(self, task: asyncio.Task[None], ready: Callable[[], None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._stopped = True  # the connection failed; the reading side reports it
        ready()
