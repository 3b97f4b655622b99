"""A TLS line-echo server: ``aiotls.start_server`` with a SecureContext.

Run it, then connect with ``examples/echo_client.py`` (or ``openssl s_client``)::

    python examples/echo_server.py                      # ephemeral certificate
    python examples/echo_server.py --port 8443 --key server.key --cert server.pem

Without ``--key``/``--cert`` it makes an ephemeral CA and a certificate for
localhost/127.0.0.1/::1 in memory (:mod:`aiotls.pki`) and writes the CA
certificate to ``--ca-out`` (default: ``aiotls-example-ca.pem`` in the temporary
directory), which is where ``echo_client.py`` looks for it by default. Every line
a client sends comes back unchanged. A client that leaves without TLS close_notify
is reported as an error (its data may have been cut short) and the server goes on,
as in the README's example. ``--once`` exits after the first client (handy in
scripts and tests); otherwise stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile

import aiotls
from aiotls import pki

DEFAULT_CA_OUT = os.path.join(tempfile.gettempdir(), "aiotls-example-ca.pem")


def load_identity(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """The server's key and certificate chain: from files, or freshly made."""
    if args.key and args.cert:
        with open(args.key, "rb") as key, open(args.cert, "rb") as cert:
            return key.read(), cert.read()
    ca = pki.make_ca("aiotls example CA")
    with open(args.ca_out, "wb") as f:
        f.write(ca.cert_pem)
    print(f"ephemeral CA written to {args.ca_out}", flush=True)
    return ca.issue(["localhost", "127.0.0.1", "::1"])


async def main(args: argparse.Namespace) -> None:
    """Serve until interrupted (or until the first client leaves, with --once)."""
    key, cert = load_identity(args)
    context = aiotls.create_secure_context(key=key, cert=cert)
    done = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("tls")
        peer = writer.get_extra_info("peername")
        print(f"{peer[0]}:{peer[1]} connected, {tls.get_protocol()}", flush=True)
        try:
            async for line in reader:  # one line at a time, until the client closes
                writer.write(line)
                await writer.drain()
        except (aiotls.TLSError, ConnectionError) as exc:
            # e.g. TCP EOF without close_notify (ERR_SSL_UNEXPECTED_EOF_WHILE_READING):
            # TLS cannot tell it from a truncation attack, so aiotls reports it.
            print(f"{peer[0]}:{peer[1]} error: {exc}", flush=True)
        finally:
            writer.close()
            with contextlib.suppress(aiotls.TLSError, ConnectionError):
                await writer.wait_closed()
            print(f"{peer[0]}:{peer[1]} closed", flush=True)
            if args.once:
                done.set()

    server = await aiotls.start_server(echo, args.host, args.port, context=context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {args.host}:{port}", flush=True)
        await done.wait() if args.once else await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--key", help="PEM private key file (with --cert)")
    parser.add_argument("--cert", help="PEM certificate chain file (with --key)")
    parser.add_argument("--ca-out", default=DEFAULT_CA_OUT, help="where to write the ephemeral CA")
    parser.add_argument("--once", action="store_true", help="exit after the first client")
    arguments = parser.parse_args()
    if bool(arguments.key) != bool(arguments.cert):
        parser.error("--key and --cert go together")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments))
